"""Evaluation: one pass over the eval split, and restore-and-evaluate a checkpoint.

The one path every evaluation takes: the training loop calls `evaluate` on its live state; the
`evaluate` CLI, the scaling studies (with BN recalibration as a `transform`) and the tests call
`evaluate_checkpoint`, which restores into the abstract state (nothing is initialised or
compiled but the eval step) and then runs the same `evaluate`.

`evaluate_per_example` is the same pass with each example's top-1 correctness besides the
figures (the scaling studies save it per seed for their intervals, `studies/statistics.py`): its
step is the eval step's own function with the per-example outputs added, so its figures are the
eval step's, and the correctness it returns sums to its top-1 exactly (checked on every batch).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from efficientnet_jax.training import checkpointing
from efficientnet_jax.training import run_paths
from efficientnet_jax.training import setup as setup_lib
from efficientnet_jax.training import steps as steps_lib

# The fields the evaluate CLI's JSON always has (besides `step`).
RESULT_KEYS = ('top1', 'top5', 'loss', 'ema_top1', 'ema_top5', 'ema_loss')


def evaluate(config, state, eval_step, mesh) -> dict[str, float]:
  """One pass over the eval split; exact means over the real (unpadded) examples.

  Returns:
    {'eval_top1', 'eval_top5', 'eval_loss'} and their 'eval_ema_' twins when the state has EMA
    weights. With fewer than 5 classes 'top5' is top-k over all k classes, and 'eval_top5_k'
    says which k.
  """
  totals: dict[str, Any] = {}
  for batch in _eval_batches(config, mesh):
    out = eval_step(state, batch)
    totals = out if not totals else jax.tree.map(lambda a, b: a + b, totals, out)
  return _means(config, totals)


def per_example_eval_step(model, mesh):
  """`step(state, batch) -> (sums, per_example)`, jitted over the mesh like `Setup.eval_step`.

  `sums` is the eval step's output (`steps.make_eval_step`); `per_example` holds, for each
  example of the global batch (replicated to every process), 'top1' (argmax == label), its
  'ema_top1' twin with EMA weights, 'label' and 'mask'. The forward pass is written twice in the
  program; XLA computes it once (common subexpressions), and `evaluate_per_example` checks that
  the correctness sums to the step's top-1.
  """
  eval_step = steps_lib.make_eval_step(model)

  def correct(variables, batch):
    logits = model.apply(variables, batch['image'], train=False).astype(jnp.float32)
    return jnp.argmax(logits, -1) == batch['label']

  def step(state, batch):
    per_example = {'label': batch['label'], 'mask': batch['mask'],
                   'top1': correct(state.variables(), batch)}
    if state.ema is not None:
      per_example['ema_top1'] = correct(state.variables(ema=True), batch)
    return eval_step(state, batch), per_example

  replicated, batch_sharded = steps_lib.shardings(mesh)
  return jax.jit(step, in_shardings=(replicated, batch_sharded), out_shardings=replicated)


def evaluate_per_example(config, state, step, mesh) -> tuple[dict[str, float],
                                                             dict[str, np.ndarray]]:
  """`evaluate` with each example's top-1 correctness, in the eval split's order.

  Args:
    step: a `per_example_eval_step`.

  Returns:
    (the metrics `evaluate` returns, {'labels': int32 [N], 'top1': uint8 [N] and, with EMA
    weights, 'ema_top1', plus 'groups' [N] when the source groups its examples}). N is the
    number of eval examples, in the source's order (the TFDS split's for TFDS datasets, however
    many processes read it); `top1`'s mean is the metrics' 'eval_top1' exactly.

  Raises:
    RuntimeError: a batch's correctness does not sum to its top-1 (it cannot, unless XLA
      computed the two forward passes differently).
  """
  totals: dict[str, Any] = {}
  parts: list[dict[str, np.ndarray]] = []
  for batch in _eval_batches(config, mesh):
    out, per_example = jax.device_get(step(state, batch))
    for name in ('top1', 'ema_top1'):
      counted = int(np.sum(per_example[name] * per_example['mask'])) if name in out else None
      if counted is not None and counted != int(out[name]):
        raise RuntimeError(f'Per-example {name} sums to {counted} where the eval step counts '
                           f'{int(out[name])}: the two forward passes differ.')
    parts.append(per_example)
    totals = out if not totals else jax.tree.map(lambda a, b: a + b, totals, out)
  metrics = _means(config, totals)
  ordered = _in_source_order(config, {k: np.stack([p[k] for p in parts]) for k in parts[0]})
  predictions = {'labels': ordered.pop('label').astype(np.int32),
                 **{k: v.astype(np.uint8) for k, v in ordered.items()}}
  groups = _source_groups(config)
  if groups is not None:
    predictions['groups'] = groups
  return metrics, predictions


def _eval_batches(config, mesh):
  """The eval split's global batches (`pipeline.eval_iterator`, this process's part of each)."""
  from efficientnet_jax.input import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  for batch in pipeline.eval_iterator(
      config, global_batch_size=config.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count()):
    yield steps_lib.global_batch(batch, mesh)


def _in_source_order(config, batches: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Per-example values of the global batches [batches, B] in the source's order, padding out.

  An indexed source's global batch b holds positions [b·B, (b+1)·B) (`pipeline.eval_iterator`);
  a TFDS split is read as one contiguous shard per process, process p's part of every global
  batch being its next B/P examples, so its values are regrouped process by process.
  """
  from efficientnet_jax.input import sources  # pylint: disable=g-import-not-at-top  (TensorFlow)
  mask = batches.pop('mask')
  count = jax.process_count()
  if not isinstance(sources.source(config, config.eval_split), sources.IndexedSource) and (
      count > 1):
    def by_process(x):
      return np.swapaxes(x.reshape(x.shape[0], count, -1), 0, 1).reshape(count, -1)
    keep = by_process(mask).reshape(-1) > 0
    return {k: by_process(v).reshape(-1)[keep] for k, v in batches.items()}
  keep = mask.reshape(-1) > 0
  return {k: v.reshape(-1)[keep] for k, v in batches.items()}


def _source_groups(config) -> np.ndarray | None:
  """The eval source's group ids in its order (`IndexedSource.groups`), or None."""
  from efficientnet_jax.input import sources  # pylint: disable=g-import-not-at-top  (TensorFlow)
  groups = getattr(sources.source(config, config.eval_split), 'groups', None)
  return None if groups is None else np.asarray(groups)


def _means(config, totals: dict[str, Any]) -> dict[str, float]:
  """The eval metrics from the summed batch outputs: each sum over the real examples' count."""
  totals = jax.device_get(totals)
  count = max(float(totals.pop('count')), 1.0)
  metrics = {f'eval_{k}': float(v) / count for k, v in totals.items()}
  k = steps_lib.top5_k(config.num_classes)
  if k < steps_lib.TOP_K:
    metrics['eval_top5_k'] = k
  return metrics


def evaluate_checkpoint(config, workdir: str, step: int | None = None, *,
                        transform: Callable[[setup_lib.Setup, Any], Any] | None = None
                        ) -> dict[str, Any]:
  """Restores a checkpoint of `workdir` (the latest, or `step`) and evaluates it.

  Args:
    config: the run's config.
    workdir: the run directory (holds checkpoints/): a local path or a `gs://` URI.
    step: the checkpoint to evaluate; None for the latest readable one.
    transform: `(setup, state) -> state` applied before evaluating (e.g. BN recalibration).

  Returns:
    {'step', 'top1', 'top5', 'loss', 'ema_top1', 'ema_top5', 'ema_loss'} (the EMA fields None
    without EMA), and 'top5_k' with fewer than 5 classes.

  Raises:
    ConfigError: `workdir` is neither a local path nor a gs:// URI (`run_paths.check_path_kind`).
    FileNotFoundError: no workdir, or no readable checkpoint in it.
    IncompatibleCheckpointError: the checkpoint holds another model than the config builds.
  """
  s, state, restored_step = restore(config, workdir, step)
  if transform is not None:
    state = transform(s, state)
  metrics = {k.removeprefix('eval_'): v
             for k, v in evaluate(s.config, state, s.eval_step, s.mesh).items()}
  return {'step': restored_step, **{k: metrics.get(k) for k in RESULT_KEYS},
          **{k: v for k, v in metrics.items() if k not in RESULT_KEYS}}


def restore(config, workdir: str, step: int | None = None) -> tuple[setup_lib.Setup, Any, int]:
  """(setup, restored state, its step): a checkpoint of `workdir` (the latest, or `step`).

  Raises as `evaluate_checkpoint` does.
  """
  run_paths.check_path_kind(workdir)  # A local path or a gs:// URI, else one line.
  if not epath.Path(workdir).is_dir():
    raise FileNotFoundError(f'--workdir {workdir} does not exist.')
  s = setup_lib.from_config(config)
  checkpointer = checkpointing.for_run(s.config, workdir, create=False)
  try:
    state, _, restored_step = checkpointer.restore(s.abstract_state, step)
  finally:
    checkpointer.close()
  return s, state, restored_step
