"""Test-only faults, injected through the training loop's one hook (`training.hooks.StepHook`).

In-process:
  loop.train_and_evaluate(config, workdir, hooks=[Faults(nonfinite_step=3)])

As the real `main` with the hook installed (what the subprocess reliability tests launch):
  python tests/fault_injection.py --config=... --workdir=... \
      [--fault_nonfinite_step=N[:inf]] [--fault_step_delay=S]

  --fault_nonfinite_step=N[:inf]  the images of step N (1-based, as logged) become NaN (or +Inf),
                                  so that step's loss and gradients are non-finite.
  --fault_step_delay=S            sleep S seconds after each step, and before the first one, so
                                  that a test can signal or kill the run between steps (or
                                  during set-up: the first step announces itself on stdout).
  --fault_file_size_limit=BYTES   no file this process writes may grow past BYTES (RLIMIT_FSIZE,
                                  set once the flags are parsed): checkpoint writes fail as they
                                  do on a full disk.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import numpy as np
from absl import app
from absl import flags

from efficientnet_jax import cli
from efficientnet_jax.training import hooks

FIRST_STEP_LINE = 'fault injection: the first step is about to run'


class Faults(hooks.StepHook):
  """Poisons one step's batch and slows every step down; announces the first step."""

  def __init__(self, nonfinite_step: int | None = None, nonfinite_value: float = float('nan'),
               step_delay: float = 0.0):
    self.nonfinite_step = nonfinite_step
    self.nonfinite_value = nonfinite_value
    self.step_delay = step_delay
    self._started = False

  @classmethod
  def from_flag_values(cls, nonfinite_step: str | None, step_delay: float) -> Faults:
    """From the command line's `--fault_nonfinite_step=N[:inf]` and `--fault_step_delay=S`."""
    step, _, value = (nonfinite_step or '').partition(':')
    return cls(nonfinite_step=int(step) if step else None,
               nonfinite_value=float(value or 'nan'), step_delay=step_delay)

  def before_step(self, step: int, batch: dict[str, Any]) -> dict[str, Any]:
    if not self._started:
      self._started = True
      print(FIRST_STEP_LINE, flush=True)
      time.sleep(self.step_delay)
    if step != self.nonfinite_step:
      return batch
    return {**batch, 'image': np.full_like(batch['image'], self.nonfinite_value)}

  def after_step(self, step: int) -> None:
    time.sleep(self.step_delay)


def _run_main_with_faults() -> None:
  """`python -m efficientnet_jax.main` with a `Faults` hook from the `--fault_*` flags."""
  # pylint: disable-next=g-import-not-at-top  (defines main's flags: only when run as a program)
  from efficientnet_jax import main as main_cli
  nonfinite_step = flags.DEFINE_string(
      'fault_nonfinite_step', None, 'N or N:inf: the images of step N become NaN (or +Inf).')
  step_delay = flags.DEFINE_float(
      'fault_step_delay', 0.0, 'Seconds to sleep after each step (and before the first).')
  file_size_limit = flags.DEFINE_integer(
      'fault_file_size_limit', None, 'Largest file this process may write, in bytes.')

  @cli.run
  def main(argv):
    if len(argv) > 1:
      raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
    cli.quiet_libraries()
    if file_size_limit.value is not None:
      # CPython ignores SIGXFSZ, so a write past the limit fails with EFBIG instead of killing.
      hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
      resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit.value, hard))
    faults = Faults.from_flag_values(nonfinite_step.value, step_delay.value)
    main_cli.run(main_cli.FLAGS.config, main_cli.FLAGS.workdir, hooks=[faults])

  sys.exit(app.run(main, flags_parser=cli.parse_flags))


if __name__ == '__main__':
  _run_main_with_faults()
