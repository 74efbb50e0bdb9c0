"""`train_and_evaluate(config, workdir)`: the training loop `main` runs.

The loop thinks in steps: epochs are converted once. The data position is the step (the input
pipeline is a deterministic function of seed and step), so a resumed run continues the same
example order without storing iterator state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from efficientnet_jax import checkpointing
from efficientnet_jax import input_pipeline
from efficientnet_jax import metrics as metrics_lib
from efficientnet_jax import optim
from efficientnet_jax import steps as steps_lib
from efficientnet_jax import train_state as state_lib
from efficientnet_jax import warm_start


class ConfigError(ValueError):
  """A config value that cannot work, with the fix in the message."""


class DivergenceError(RuntimeError):
  """The loss or the gradients became NaN/Inf and skipping is off."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a config means in steps, computed once."""
  steps_per_epoch: int
  total_steps: int
  image_size: int
  num_classes: int


def make_plan(config, info: input_pipeline.DatasetInfo, model) -> Plan:
  """Validates the config against the devices and dataset; converts epochs to steps."""
  devices = jax.device_count()
  if config.batch_size % devices:
    raise ConfigError(f'config.batch_size={config.batch_size} is not divisible by the {devices} '
                      f'devices; use a multiple of {devices}.')
  if config.batch_size % (devices * config.grad_accum_steps):
    raise ConfigError(f'config.batch_size={config.batch_size} must split into '
                      f'grad_accum_steps={config.grad_accum_steps} micro-batches of a multiple '
                      f'of the {devices} devices.')
  if config.num_classes != info.num_classes:
    raise ConfigError(f'config.num_classes={config.num_classes} but dataset {config.dataset!r} '
                      f'has {info.num_classes} classes; set --config.num_classes='
                      f'{info.num_classes}.')
  steps_per_epoch = max(1, info.num_train_examples // config.batch_size)
  total = config.total_steps or int(round(config.num_epochs * steps_per_epoch))
  return Plan(steps_per_epoch, total, config.image_size or model.resolution, info.num_classes)


def evaluate(config, state, eval_step, mesh) -> dict[str, float]:
  """One pass over the eval split; exact means over the real (unpadded) examples."""
  totals: dict[str, Any] = {}
  for batch in input_pipeline.eval_iterator(
      config, global_batch_size=config.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count()):
    out = eval_step(state, steps_lib.global_batch(batch, mesh))
    totals = out if not totals else jax.tree.map(lambda a, b: a + b, totals, out)
  totals = jax.device_get(totals)
  count = max(float(totals.pop('count')), 1.0)
  return {f'eval_{k}': float(v) / count for k, v in totals.items()}


def _check_workdir(workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK):
    raise ConfigError(f'--workdir {workdir} is not writable; choose a directory you can write.')


@dataclasses.dataclass
class Setup:
  """The model, its plan, the mesh, the optimizer and a freshly initialised state."""
  model: Any
  plan: Plan
  mesh: Any
  tx: Any
  state: state_lib.TrainState
  step_rng: jax.Array


def setup(config) -> Setup:
  """Builds everything a config needs before any checkpoint is read (no workdir access)."""
  info = input_pipeline.dataset_info(config)
  model = state_lib.model_from_config(config)
  plan = make_plan(config, info, model)
  if not config.image_size:
    config.image_size = plan.image_size  # The pipeline needs the concrete size.
  mesh = steps_lib.data_mesh()
  replicated, _ = steps_lib.shardings(mesh)
  tx = optim.create_optimizer(config, plan.steps_per_epoch)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  init = jax.jit(lambda r: state_lib.create_train_state(model, tx, r, plan.image_size,
                                                        use_ema=config.ema_decay > 0),
                 out_shardings=replicated)
  return Setup(model, plan, mesh, tx, init(init_rng), jax.device_put(step_rng, replicated))


def checkpointer_for(config, workdir: str, create: bool = True) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                    save_every=config.checkpoint_every_steps,
                                    keep=config.keep_checkpoints, create=create)


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains and evaluates; resumes from `workdir` if it holds a checkpoint.

  Returns:
    The final evaluation metrics.
  """
  s = setup(config)
  model, plan, mesh, tx, state, step_rng = (s.model, s.plan, s.mesh, s.tx, s.state, s.step_rng)
  _check_workdir(workdir)
  lr_fn = optim.learning_rate_schedule(config, plan.steps_per_epoch)
  checkpointer = checkpointer_for(config, workdir)
  if checkpointer.latest_step() is not None:
    state, meta, _ = checkpointer.restore(state)
    if meta.get('batch_size') != config.batch_size:
      logging.warning('Checkpoint was written with batch_size=%s, now %s: the data position '
                      'is counted in steps, so the example order shifts.',
                      meta.get('batch_size'), config.batch_size)
    logging.info('Resumed from %s at step %d.', checkpointer.directory, int(state.step))
  elif config.init_from:
    state = warm_start.init_from(state, config.init_from)
  start_step = int(state.step)

  train_step = steps_lib.jit_train_step(steps_lib.make_train_step(
      model, tx, label_smoothing=config.label_smoothing, ema_decay=config.ema_decay,
      grad_accum_steps=config.grad_accum_steps), mesh)
  eval_step = steps_lib.jit_eval_step(steps_lib.make_eval_step(model), mesh)

  is_main = jax.process_index() == 0
  logger = metrics_lib.MetricsLogger(workdir, total_steps=plan.total_steps,
                                     global_batch_size=config.batch_size,
                                     is_main_process=is_main, resume_step=start_step or None)
  guard = checkpointing.PreemptionGuard()
  meta = {'model': config.model, 'batch_size': config.batch_size,
          'num_classes': plan.num_classes, 'image_size': plan.image_size}
  batches = input_pipeline.train_iterator(
      config, global_batch_size=config.batch_size, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  pending: list[dict[str, jax.Array]] = []
  last_eval: dict[str, float] = {}
  step = start_step
  timer = _Throughput(config.batch_size, start_step)
  try:
    while step < plan.total_steps:
      if guard.should_stop():
        logging.warning('Preempted at step %d: checkpointing and exiting; rerun the same command '
                        'to resume.', step)
        break
      state, metrics = train_step(state, steps_lib.global_batch(next(batches), mesh), step_rng)
      pending.append(metrics)
      step += 1
      is_last = step == plan.total_steps
      if step % config.log_every_steps == 0 or is_last:
        summary = _summarise(pending, config)
        pending = []
        # The schedule counts applied updates; skipped (NaN) steps do not advance it.
        summary['learning_rate'] = float(lr_fn(step - 1 - int(state.skipped_steps)))
        summary['images_per_sec'] = timer.images_per_sec(step)
        logger.log_train(step, summary)
      if step % config.eval_every_steps == 0 or is_last:
        with timer.paused():
          last_eval = evaluate(config, state, eval_step, mesh)
        logger.write_scalars(step, last_eval)
        logging.info('Eval at step %d: %s', step, _format(last_eval))
        if is_main:
          print(f'eval step {step} | {_format(last_eval)}', flush=True)
      if step % config.checkpoint_every_steps == 0 or is_last:
        _summarise(pending, config)  # Never checkpoint past an unseen NaN step.
        checkpointer.save(step, state, meta, force=is_last)
    _summarise(pending, config)
    if step not in checkpointer.all_steps():  # Preempted, or the interval skipped it.
      checkpointer.save(step, state, meta, force=True)
  finally:
    checkpointer.wait()
    checkpointer.close()
    logger.close()
    guard.restore_handlers()
  return last_eval


def _summarise(pending: list[dict[str, jax.Array]], config) -> dict[str, float]:
  """Averages the pending step metrics (one device→host transfer); stops on NaN steps."""
  if not pending:
    return {}
  stacked = jax.device_get(pending)
  summary = {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}
  nonfinite = int(sum(m['nonfinite'] for m in stacked))
  summary['nonfinite'] = nonfinite
  if nonfinite and not config.skip_nonfinite_steps:
    raise DivergenceError(
        f'The loss or gradients became NaN/Inf ({nonfinite} step(s) in the last '
        f'{len(stacked)}); the state was not updated and the last checkpoint is intact. Lower '
        'config.learning_rate, or set config.skip_nonfinite_steps=True to skip such steps.')
  return summary


def _format(values: dict[str, float]) -> str:
  return ' | '.join(f'{k.removeprefix("eval_")} {v:.4f}' for k, v in values.items())


class _Throughput:
  """Training img/s between log steps, not counting time spent in evaluation."""

  def __init__(self, global_batch: int, step: int):
    self._batch, self._step, self._time, self._paused = global_batch, step, time.time(), 0.0

  def images_per_sec(self, step: int) -> float:
    now = time.time()
    elapsed = max(now - self._time - self._paused, 1e-9)
    rate = (step - self._step) * self._batch / elapsed
    self._step, self._time, self._paused = step, now, 0.0
    return rate

  @contextlib.contextmanager
  def paused(self):
    start = time.time()
    try:
      yield
    finally:
      self._paused += time.time() - start
