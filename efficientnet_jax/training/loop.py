"""`train_and_evaluate(config, workdir)`: the training loop `main` runs.

The loop thinks in steps: epochs are converted once (`setup.Plan`). The data position is the step
(the input pipeline is a deterministic function of seed and step), so a resumed run continues the
same example order without storing iterator state, and a run killed at any moment and rerun ends
bit-identical to an uninterrupted one (README, "Fault tolerance").

Per step: the hooks' `before_step` (none in real runs), the jitted train step, the hooks'
`after_step`; every `log_every_steps` one progress line, every `eval_every_steps` one evaluation
line, every `checkpoint_every_steps` a checkpoint. SIGTERM/SIGINT stop the loop at a step
boundary that all processes agree on (`preemption.py`), with a checkpoint of that step, and raise
`Preempted`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Sequence

import jax
import numpy as np
from absl import logging

from efficientnet_jax.errors import DivergenceError, Preempted
from efficientnet_jax.training import checkpointing
from efficientnet_jax.training import evaluation
from efficientnet_jax.training import hooks as hooks_lib
from efficientnet_jax.training import metric_writers
from efficientnet_jax.training import optimizer
from efficientnet_jax.training import preemption
from efficientnet_jax.training import setup as setup_lib
from efficientnet_jax.training import steps as steps_lib
from efficientnet_jax.training import warm_start


def announce(message: str) -> None:
  """A line the user should see (resumed, initialised from, preempted): stdout on process 0."""
  logging.info('%s', message)
  if jax.process_index() == 0:
    print(message, flush=True)


def train_and_evaluate(config, workdir: str, hooks: Sequence[hooks_lib.StepHook] = (), *,
                       validated: bool = False) -> dict[str, float]:
  """Trains and evaluates; resumes from `workdir` if it holds a checkpoint.

  SIGTERM/SIGINT (from the start, set-up included) end the run at the next agreed step boundary
  with a checkpoint of that step, on disk before `Preempted` is raised.

  Args:
    config: the run's config; it is not changed.
    workdir: the run directory.
    hooks: called before and after each step (tests inject faults through them).
    validated: the caller has run `setup.validate(config, workdir)` already (`main` does, before
      it prints the config), so it is not run again.

  Returns:
    The final evaluation metrics ({} when already finished).

  Raises:
    Preempted: stopped by a signal (exit code 75 in the tools: rerun to resume).
    DivergenceError: a NaN/Inf step while `config.skip_nonfinite_steps` is off.
  """
  guard = preemption.PreemptionGuard()
  try:
    return _train_and_evaluate(config, workdir, guard, hooks, validated)
  finally:
    guard.restore_handlers()


def _train_and_evaluate(config, workdir: str, guard: preemption.PreemptionGuard,
                        hooks: Sequence[hooks_lib.StepHook], validated: bool) -> dict[str, float]:
  if not validated:
    setup_lib.validate(config, workdir)
  s = setup_lib.build(config, setup_lib.plan_for_dataset(config))
  config = s.config  # Resolved: the input pipeline needs the concrete image size.
  plan, mesh, step_rng = s.plan, s.mesh, s.step_rng
  lr_fn = optimizer.learning_rate_schedule(config, plan.steps_per_epoch)
  checkpointer = checkpointing.for_run(config, workdir)
  unlogged = []
  if checkpointer.latest_step() is not None:
    state, meta, _ = checkpointer.restore(s.abstract_state)
    checkpointer.set_aside_damaged()
    if meta.get('batch_size') != config.batch_size:
      logging.warning('Checkpoint was written with batch_size=%s, now %s: the data position '
                      'is counted in steps, so the example order shifts.',
                      meta.get('batch_size'), config.batch_size)
    unlogged = _unlogged_from_json(meta.get(UNLOGGED_KEY, []))
    announce(f'Resumed from {checkpointer.directory} at step {int(state.step)}.')
  elif config.init_from:
    state = warm_start.init_from(s.state, config.init_from)
    announce(f'Initialised from {config.init_from}.')
  else:
    state = s.state
  start_step = int(state.step)
  train_step, eval_step = s.train_step, s.eval_step
  warning = setup_lib.bn_memory_warning(config.bn_momentum, plan.total_steps)
  if warning and start_step == 0:
    announce(warning)

  is_main = jax.process_index() == 0
  # resume_step also for a fresh start: lines a killed earlier attempt wrote are dropped.
  logger = metric_writers.MetricsLogger(workdir, total_steps=plan.total_steps,
                                        global_batch_size=config.batch_size,
                                        is_main_process=is_main, resume_step=start_step)
  meta = {'model': config.model, 'batch_size': config.batch_size,
          'num_classes': plan.num_classes, 'image_size': plan.image_size}
  from efficientnet_jax.input import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  batches = pipeline.train_iterator(
      config, global_batch_size=config.batch_size, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  # The steps since the last log line, with those a stopped run had not logged yet.
  pending: list[tuple[int, dict[str, jax.Array]]] = unlogged
  last_eval: dict[str, float] = {}
  step = start_step
  timer = _Throughput(config.batch_size, start_step)
  check = lambda: _summarise(pending, config, checkpointer)
  preempted = False
  with contextlib.ExitStack() as cleanup:
    # Run last to first, each even if an earlier one raised: the last write lands (or its
    # failure is reported), orbax's threads stop, the metric files close.
    cleanup.callback(logger.close)
    cleanup.callback(checkpointer.close)
    cleanup.callback(checkpointer.wait)
    while step < plan.total_steps:
      if guard.should_stop():  # Agreed by all processes, so all stop at this step.
        preempted = True
        break
      batch = next(batches)
      for hook in hooks:
        batch = hook.before_step(step + 1, batch)
      state, metrics = train_step(state, steps_lib.global_batch(batch, mesh), step_rng)
      step += 1
      pending.append((step, metrics))
      for hook in hooks:
        hook.after_step(step)
      is_last = step == plan.total_steps
      if step % config.log_every_steps == 0 or is_last:
        summary = check()
        pending = []
        # The schedule counts applied updates; skipped (NaN) steps do not advance it.
        skipped = int(state.skipped_steps)
        summary['skipped_steps'] = skipped
        summary['learning_rate'] = float(lr_fn(step - 1 - skipped))
        summary['images_per_sec'] = timer.images_per_sec(step)
        logger.log_train(step, summary)
      if step % config.eval_every_steps == 0 or is_last:
        with timer.paused():
          last_eval = evaluation.evaluate(config, state, eval_step, mesh)
        logger.write_scalars(step, last_eval)
        logging.info('Eval at step %d: %s', step, _format(last_eval))
        if is_main:
          print(f'eval step {step} | {_format(last_eval)}', flush=True)
      if step % config.checkpoint_every_steps == 0 or is_last:
        check()  # Never checkpoint past an unseen NaN step.
        checkpointer.save(step, state, _with_unlogged(meta, pending), force=is_last)
    check()
    if step > start_step and step not in checkpointer.all_steps():
      # Preempted, or off the interval.
      checkpointer.save(step, state, _with_unlogged(meta, pending), force=True)
    if preempted:
      checkpointer.wait()  # The promise to the scheduler: this step is on disk before exit 75.
      message = _preemption_message(guard.received, step, checkpointer)
  if preempted:
    raise Preempted(message)
  return last_eval


# A checkpoint's meta keeps the metrics of its steps after the last log line: the resumed run
# logs that interval's mean over the same per-step values as an uninterrupted run, bit for bit.
UNLOGGED_KEY = 'unlogged_step_metrics'


def _with_unlogged(meta: dict, pending: list[tuple[int, dict[str, jax.Array]]]) -> dict:
  values = jax.device_get([metrics for _, metrics in pending])
  # Each value with its dtype: the interval's mean must be taken in the same precision.
  return {**meta, UNLOGGED_KEY: [
      {'step': step, 'metrics': {k: [np.asarray(v).item(), np.asarray(v).dtype.str]
                                 for k, v in m.items()}}
      for (step, _), m in zip(pending, values)]}


def _unlogged_from_json(entries: list[dict]) -> list[tuple[int, dict[str, np.ndarray]]]:
  return [(e['step'], {k: np.asarray(value, dtype) for k, (value, dtype) in e['metrics'].items()})
          for e in entries]


def _preemption_message(signal_name: str, step: int, checkpointer) -> str:
  where = (f'with its checkpoint in {checkpointer.path(step)}' if step in checkpointer.all_steps()
           else 'before the first step, so there was nothing to save')
  return (f'{signal_name} received: stopped at step {step} {where}; rerun the same command to '
          'resume.')


def _summarise(pending: list[tuple[int, dict[str, jax.Array]]], config,
               checkpointer: checkpointing.Checkpointer) -> dict[str, float]:
  """Averages the pending step metrics (one device→host transfer); stops on NaN steps."""
  if not pending:
    return {}
  stacked = jax.device_get([metrics for _, metrics in pending])
  summary = {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}
  bad_steps = [step for (step, _), m in zip(pending, stacked) if m['nonfinite']]
  summary['nonfinite'] = len(bad_steps)
  if bad_steps and not config.skip_nonfinite_steps:
    last = checkpointer.latest_step()
    kept = (f'the last checkpoint ({checkpointer.path(last)}) is intact' if last is not None
            else 'no checkpoint was written yet')
    raise DivergenceError(
        f'Training diverged: the loss or gradients were NaN/Inf at step {bad_steps[0]} '
        f'({len(bad_steps)} of the last {len(pending)} steps); that update was not applied and '
        f'{kept}. Lower config.learning_rate, or set config.skip_nonfinite_steps=True to skip '
        'such steps.')
  if bad_steps:
    logging.warning('Skipped %d NaN/Inf step(s): %s (config.skip_nonfinite_steps).',
                    len(bad_steps), bad_steps)
  return summary


def _format(values: dict[str, float]) -> str:
  return ' | '.join(f'{k.removeprefix("eval_")} {v:.4f}' if isinstance(v, float) else
                    f'{k.removeprefix("eval_")} {v}' for k, v in values.items())


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
