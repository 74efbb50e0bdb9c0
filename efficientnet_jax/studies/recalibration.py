"""Evaluating a trial's checkpoint, optionally after recalibrating its BatchNorm statistics.

Both go through `training.evaluation.evaluate_checkpoint`; recalibration is its `transform`,
which re-estimates the BN statistics with the trial's final weights.

Why: a proxy trial is a few hundred steps, and the weights still move fast near its end. BN's
running statistics (momentum 0.99: a ~100-step memory) then describe *earlier* weights, and the
standard eval can collapse, so that a ranking measures the lag rather than the model (figures in
experiments/README.md). Re-estimating the statistics over a few training batches with the final
weights (as weight-sharing NAS evaluates short-trained subnetworks) removes the lag without
changing training. The trained checkpoint is not modified; results keep both evals (`top1`,
`recal_top1`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _population_stats(per_batch: list[Any]) -> Any:
  """Exact statistics of the union of equal-size batches from their per-batch mean and var.

  mean = E[mean_b]; var = E[var_b] + Var[mean_b] (the law of total variance).
  """
  def combine(*stats):
    means = jnp.stack([s['mean'] for s in stats])
    variances = jnp.stack([s['var'] for s in stats])
    return {'mean': means.mean(0), 'var': variances.mean(0) + means.var(0)}
  return jax.tree.map(combine, *per_batch, is_leaf=lambda x: isinstance(x, dict) and 'var' in x)


def checkpoint_metrics(config, directory: str, num_batches: int = 0,
                       batch_size: int = 64) -> dict[str, float]:
  """Evaluates the latest checkpoint of `directory`, after re-estimating BN statistics if asked.

  With recalibration, the raw and (when present) the EMA weights each get their own statistics.

  Args:
    config: the trial's training config.
    directory: the trial's workdir (holds checkpoints/).
    num_batches: training batches to estimate the statistics on (augmented as in training);
      0: evaluate with the checkpoint's own running statistics.
    batch_size: images per recalibration batch.

  Returns:
    The eval metrics without the 'eval_' prefix: top1, top5, loss, ema_top1, ….
  """
  # pylint: disable-next=g-import-not-at-top  (TensorFlow's import is slow; only trials need it)
  from efficientnet_jax.training import evaluation
  transform = None
  if num_batches:
    transform = lambda s, state: _recalibrate(s.model, state, config, num_batches, batch_size)
  result = evaluation.evaluate_checkpoint(config, directory, transform=transform)
  result.pop('step')
  return result


def checkpoint_predictions(config, directory: str, num_batches: int = 0,
                           batch_size: int = 64) -> tuple[dict[str, Any], dict[str, Any]]:
  """The latest checkpoint's metrics and per-example correctness, raw and recalibrated.

  Restores once, evaluates the raw state, then (with `num_batches`) the recalibrated one, each
  with `evaluation.evaluate_per_example`: the figures are those `checkpoint_metrics` gives, and
  each correctness array's mean is its metric exactly.

  Returns:
    (metrics, predictions): metrics as `checkpoint_metrics` names them (top1, …, ema_loss), the
    recalibrated ones prefixed 'recal_'; predictions {'labels', 'top1', 'ema_top1' (with EMA),
    'recal_top1', 'recal_ema_top1' (with recalibration), 'groups' (when the source groups its
    examples)}, numpy arrays in the eval split's order.
  """
  # pylint: disable-next=g-import-not-at-top  (TensorFlow's import is slow; only trials need it)
  from efficientnet_jax.training import evaluation
  s, state, _ = evaluation.restore(config, directory)
  step = evaluation.per_example_eval_step(s.model, s.mesh)
  states = {'': state}
  if num_batches:
    states['recal_'] = _recalibrate(s.model, state, config, num_batches, batch_size)
  metrics, predictions = {}, {}
  for prefix, evaluated in states.items():
    figures, correct = evaluation.evaluate_per_example(s.config, evaluated, step, s.mesh)
    figures = {k.removeprefix('eval_'): v for k, v in figures.items()}
    metrics.update({f'{prefix}{k}': figures.get(k) for k in evaluation.RESULT_KEYS})
    labels, groups = correct.pop('labels'), correct.pop('groups', None)
    predictions.update({'labels': labels, **({} if groups is None else {'groups': groups}),
                        **{f'{prefix}{k}': v for k, v in correct.items()}})
  return metrics, predictions


def _train_images_fn(config):
  """`(train batch images, step) -> model input`: augmented on the device if training does so."""
  from efficientnet_jax.input import device_preprocessing  # pylint: disable=g-import-not-at-top
  if not device_preprocessing.augment_on_device(config):
    return lambda images, step: images
  return jax.jit(device_preprocessing.train_images_fn(config))


def _recalibrate(model, state, config, num_batches: int, batch_size: int):
  """The state with BN statistics re-estimated over `num_batches` training batches."""
  from efficientnet_jax.input import pipeline  # pylint: disable=g-import-not-at-top
  # Momentum 0 makes the "running" statistics exactly the batch's; no dropout or drop-path, so
  # the forward pass is the eval network with batch statistics.
  stats_model = model.clone(bn_momentum=0.0, dropout_rate=0.0, drop_path_rate=0.0)

  @jax.jit
  def batch_stats(variables, images):
    _, updates = stats_model.apply(variables, images, train=True, mutable=['batch_stats'])
    return updates['batch_stats']

  batches = pipeline.train_iterator(config, global_batch_size=batch_size)
  prepare = _train_images_fn(config)
  images = [prepare(next(batches)['image'], step) for step in range(num_batches)]

  def recalibrate(variables):
    return _population_stats([batch_stats(variables, x) for x in images])

  state = state.replace(batch_stats=recalibrate(state.variables()))
  if state.ema is not None:
    ema = dict(state.ema)
    state = state.replace(ema={**ema, 'batch_stats': recalibrate(ema)})
  return state
