"""Evaluation: one pass over the eval split, and restore-and-evaluate a checkpoint.

The one path every evaluation takes: the training loop calls `evaluate` on its live state; the
`evaluate` CLI, the scaling studies (with BN recalibration as a `transform`) and the tests call
`evaluate_checkpoint`, which restores into the abstract state (nothing is initialised or
compiled but the eval step) and then runs the same `evaluate`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
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
  from efficientnet_jax.input import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  totals: dict[str, Any] = {}
  for batch in pipeline.eval_iterator(
      config, global_batch_size=config.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count()):
    out = eval_step(state, steps_lib.global_batch(batch, mesh))
    totals = out if not totals else jax.tree.map(lambda a, b: a + b, totals, out)
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
  run_paths.check_path_kind(workdir)  # A local path or a gs:// URI, else one line.
  if not epath.Path(workdir).is_dir():
    raise FileNotFoundError(f'--workdir {workdir} does not exist.')
  s = setup_lib.from_config(config)
  checkpointer = checkpointing.for_run(s.config, workdir, create=False)
  try:
    state, _, restored_step = checkpointer.restore(s.abstract_state, step)
  finally:
    checkpointer.close()
  if transform is not None:
    state = transform(s, state)
  metrics = {k.removeprefix('eval_'): v
             for k, v in evaluate(s.config, state, s.eval_step, s.mesh).items()}
  return {'step': restored_step, **{k: metrics.get(k) for k in RESULT_KEYS},
          **{k: v for k, v in metrics.items() if k not in RESULT_KEYS}}
