"""`train_and_evaluate(config, workdir)`: the training loop `main` runs.

The loop thinks in steps: epochs are converted once. The data position is the step (the input
pipeline is a deterministic function of seed and step), so a resumed run continues the same
example order without storing iterator state, and a run killed at any moment and rerun ends
bit-identical to an uninterrupted one (README, "Fault tolerance").

Inputs are checked cheapest first (workdir, model name, batch against devices, then the data,
then a checkpoint's shapes) so that a mistake fails in seconds, before the model is compiled and
before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np
from absl import logging

from efficientnet_jax import checkpointing
from efficientnet_jax import metrics as metrics_lib
from efficientnet_jax import optim
from efficientnet_jax import steps as steps_lib
from efficientnet_jax import train_state as state_lib
from efficientnet_jax import warm_start

if TYPE_CHECKING:
  from efficientnet_jax import input_pipeline

ConfigError = steps_lib.ConfigError


class DivergenceError(RuntimeError):
  """The loss or the gradients became NaN/Inf and skipping is off."""

  exit_code = 3  # `cli.run` prints the message as one line and exits with this code.


def _pipeline():
  """The input pipeline, imported on first use: it loads TensorFlow (~10 s), and the checks that
  need no data (workdir, model name, batch against devices) should fail faster than that."""
  # pylint: disable-next=g-import-not-at-top,redefined-outer-name
  from efficientnet_jax import input_pipeline
  return input_pipeline


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a config means in steps, computed once."""
  steps_per_epoch: int
  total_steps: int
  image_size: int
  num_classes: int


def make_plan(config, info: input_pipeline.DatasetInfo, model) -> Plan:
  """Validates the config against the dataset; converts epochs to steps."""
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
  for batch in _pipeline().eval_iterator(
      config, global_batch_size=config.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count()):
    out = eval_step(state, steps_lib.global_batch(batch, mesh))
    totals = out if not totals else jax.tree.map(lambda a, b: a + b, totals, out)
  totals = jax.device_get(totals)
  count = max(float(totals.pop('count')), 1.0)
  return {f'eval_{k}': float(v) / count for k, v in totals.items()}


def check_workdir(workdir: str) -> None:
  """Raises ConfigError unless `workdir` is, or can be created as, a writable directory.

  Creates nothing, so that a run failing on a later check leaves no trace. `os.access` is right
  for root too on what matters here (read-only file systems, a file in the path); a permission
  it cannot see (root-squashed NFS) fails at the first write, also as one line.
  """
  path = os.path.abspath(workdir)
  existing = path
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f'--workdir {workdir} cannot be a directory: {existing} is a file; choose '
                      'another --workdir.')
  if not os.access(existing, os.W_OK | os.X_OK):
    where = '' if existing == path else f' (it would be created in {existing})'
    raise ConfigError(f'--workdir {workdir} is not writable{where}; choose a directory you can '
                      'write.')


@dataclasses.dataclass
class Setup:
  """The model, its plan, the mesh, the optimizer and the train state's shapes.

  `state` (a freshly initialised state) is computed on first use: a resumed run restores into
  `abstract_state` and never compiles the initialiser.
  """
  model: Any
  plan: Plan
  mesh: Any
  tx: Any
  abstract_state: state_lib.TrainState
  step_rng: jax.Array
  init_state: Callable[[], state_lib.TrainState]

  @functools.cached_property
  def state(self) -> state_lib.TrainState:
    return self.init_state()


def setup(config) -> Setup:
  """Builds everything a config needs before any checkpoint is read (no workdir access)."""
  model = state_lib.model_from_config(config)  # An unknown model name fails here.
  steps_lib.check_global_batch(config.batch_size, config.grad_accum_steps, jax.device_count())
  info = _pipeline().dataset_info(config)
  plan = make_plan(config, info, model)
  if not config.image_size:
    config.image_size = plan.image_size  # The pipeline needs the concrete size.
  mesh = steps_lib.data_mesh()
  replicated, _ = steps_lib.shardings(mesh)
  tx = optim.create_optimizer(config, plan.steps_per_epoch)
  # Keys are made inside jit with replicated outputs: on several processes a host array cannot
  # be put on the global mesh (device_put needs addressable devices).
  rngs = lambda: jax.random.split(jax.random.key(config.seed))
  init = jax.jit(lambda: state_lib.create_train_state(model, tx, rngs()[0], plan.image_size,
                                                      use_ema=config.ema_decay > 0),
                 out_shardings=replicated)
  step_rng = jax.jit(lambda: rngs()[1], out_shardings=replicated)()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          jax.eval_shape(init))
  return Setup(model, plan, mesh, tx, abstract, step_rng, init)


def checkpointer_for(config, workdir: str, create: bool = True) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                    save_every=config.checkpoint_every_steps,
                                    keep=config.keep_checkpoints, create=create)


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains and evaluates; resumes from `workdir` if it holds a checkpoint.

  SIGTERM/SIGINT (from the start, set-up included) end the run at the next step boundary with a
  checkpoint of that step; the function then returns normally.

  Returns:
    The final evaluation metrics ({} when preempted or already finished).

  Raises:
    DivergenceError: a NaN/Inf step while `config.skip_nonfinite_steps` is off.
  """
  guard = checkpointing.PreemptionGuard()
  try:
    return _train_and_evaluate(config, workdir, guard)
  finally:
    guard.restore_handlers()


def _train_and_evaluate(config, workdir: str, guard: checkpointing.PreemptionGuard
                        ) -> dict[str, float]:
  check_workdir(workdir)
  s = setup(config)
  model, plan, mesh, tx, step_rng = s.model, s.plan, s.mesh, s.tx, s.step_rng
  lr_fn = optim.learning_rate_schedule(config, plan.steps_per_epoch)
  checkpointer = checkpointer_for(config, workdir)
  if checkpointer.latest_step() is not None:
    state, meta, _ = checkpointer.restore(s.abstract_state)
    checkpointer.set_aside_damaged()
    if meta.get('batch_size') != config.batch_size:
      logging.warning('Checkpoint was written with batch_size=%s, now %s: the data position '
                      'is counted in steps, so the example order shifts.',
                      meta.get('batch_size'), config.batch_size)
    logging.info('Resumed from %s at step %d.', checkpointer.directory, int(state.step))
  elif config.init_from:
    state = warm_start.init_from(s.state, config.init_from)
  else:
    state = s.state
  start_step = int(state.step)

  train_step = steps_lib.jit_train_step(steps_lib.make_train_step(
      model, tx, label_smoothing=config.label_smoothing, ema_decay=config.ema_decay,
      grad_accum_steps=config.grad_accum_steps), mesh)
  eval_step = steps_lib.jit_eval_step(steps_lib.make_eval_step(model), mesh)

  is_main = jax.process_index() == 0
  # resume_step also for a fresh start: lines a killed earlier attempt wrote are dropped.
  logger = metrics_lib.MetricsLogger(workdir, total_steps=plan.total_steps,
                                     global_batch_size=config.batch_size,
                                     is_main_process=is_main, resume_step=start_step)
  meta = {'model': config.model, 'batch_size': config.batch_size,
          'num_classes': plan.num_classes, 'image_size': plan.image_size}
  batches = _pipeline().train_iterator(
      config, global_batch_size=config.batch_size, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  hooks = _TestHooks.from_environment()
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  last_eval: dict[str, float] = {}
  step = start_step
  timer = _Throughput(config.batch_size, start_step)
  check = lambda: _summarise(pending, config, checkpointer)
  preempted = False
  try:
    while step < plan.total_steps:
      if guard.should_stop():  # Agreed by all processes, so all stop at this step.
        preempted = True
        break
      batch = hooks.poison(step + 1, next(batches))
      state, metrics = train_step(state, steps_lib.global_batch(batch, mesh), step_rng)
      step += 1
      pending.append((step, metrics))
      hooks.after_step()
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
          last_eval = evaluate(config, state, eval_step, mesh)
        logger.write_scalars(step, last_eval)
        logging.info('Eval at step %d: %s', step, _format(last_eval))
        if is_main:
          print(f'eval step {step} | {_format(last_eval)}', flush=True)
      if step % config.checkpoint_every_steps == 0 or is_last:
        check()  # Never checkpoint past an unseen NaN step.
        checkpointer.save(step, state, meta, force=is_last)
    check()
    if step > start_step and step not in checkpointer.all_steps():
      checkpointer.save(step, state, meta, force=True)  # Preempted, or off the interval.
    if preempted:
      checkpointer.wait()  # The promise to the scheduler: this step is on disk before exit 0.
      _report_preemption(guard.received or 'a signal on another process', step, checkpointer,
                         is_main)
  finally:
    checkpointer.wait()
    checkpointer.close()
    logger.close()
  return last_eval


def _report_preemption(signal_name: str, step: int, checkpointer, is_main: bool) -> None:
  where = (f'with its checkpoint in {checkpointer.path(step)}' if step in checkpointer.all_steps()
           else 'before the first step, so there was nothing to save')
  message = (f'{signal_name} received: stopped at step {step} {where}; rerun the same command '
             'to resume.')
  logging.warning('%s', message)
  if is_main:
    print(message, flush=True)


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


@dataclasses.dataclass(frozen=True)
class _TestHooks:
  """Test-only fault injection, driven by environment variables that real runs never set.

  EFFICIENTNET_JAX_TEST_NONFINITE_STEP=N[:inf]: the images of the batch of step N (1-based, as
    logged) become NaN (or +Inf), so that step's loss and gradients are non-finite.
  EFFICIENTNET_JAX_TEST_STEP_DELAY=S: sleep S seconds after each step, so that a test can signal
    or kill a run between steps of its choosing.
  """
  nonfinite_step: int | None = None
  nonfinite_value: float = float('nan')
  step_delay: float = 0.0

  @classmethod
  def from_environment(cls) -> _TestHooks:
    poison = os.environ.get('EFFICIENTNET_JAX_TEST_NONFINITE_STEP', '')
    step, _, value = poison.partition(':')
    return cls(nonfinite_step=int(step) if step else None,
               nonfinite_value=float(value or 'nan'),
               step_delay=float(os.environ.get('EFFICIENTNET_JAX_TEST_STEP_DELAY', '0')))

  def poison(self, step: int, batch: dict[str, Any]) -> dict[str, Any]:
    if step != self.nonfinite_step:
      return batch
    logging.warning('Test hook: the images of step %d are %s.', step, self.nonfinite_value)
    return {**batch, 'image': np.full_like(batch['image'], self.nonfinite_value)}

  def after_step(self) -> None:
    if self.step_delay:
      time.sleep(self.step_delay)


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
