"""compound_search.py with a window to preempt trial 1 in: what tests/studies/test_launch.py launches.

  PREEMPTED_SEARCH_MARK=PATH python tests/studies/preempted_search.py --config=... --workdir=... \
      [--item=N | any flag of compound_search.py]

The first process to train trial 1 (PATH does not exist yet) writes 'PID PPID' to PATH when its
first step is about to run (its own pid and its parent's: under experiments/launch.py, the
submitit array task), and sleeps `STEP_DELAY_S` before and after each step
(`fault_injection.Faults`), so that the test can signal the task between steps 1 and 2. Every
later process (the resumed item, the other trials) runs as compound_search.py does: a sleep
changes no number, so the results are the plain search's.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [REPO, os.path.join(REPO, 'tests')]  # experiments/ and tests/fault_injection.py

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

import fault_injection
from efficientnet_jax import cli
from efficientnet_jax.studies import comparisons
from efficientnet_jax.studies import sweep
from efficientnet_jax.training import loop
from experiments import compound_search

MARK_ENV = 'PREEMPTED_SEARCH_MARK'
STEP_DELAY_S = 5.0


class _Announce(fault_injection.Faults):
  """Writes the mark at the first step, then sleeps around each step."""

  def __init__(self, mark: str):
    super().__init__(step_delay=STEP_DELAY_S)
    self.mark = mark

  def before_step(self, step, batch):
    if step == 1:
      with open(self.mark + '.tmp', 'w') as f:
        f.write(f'{os.getpid()} {os.getppid()}\n')
      os.replace(self.mark + '.tmp', self.mark)
    return super().before_step(step, batch)


_train_and_evaluate = loop.train_and_evaluate


def _train_with_window(config, workdir, hooks=(), **kwargs):
  mark = os.environ.get(MARK_ENV)
  if mark and os.path.basename(workdir) == '1' and not os.path.exists(mark):
    hooks = [*hooks, _Announce(mark)]
  return _train_and_evaluate(config, workdir, hooks, **kwargs)


if __name__ == '__main__':
  loop.train_and_evaluate = _train_with_window  # `sweep.run_trial` looks it up at each call.
  sweep.define_flags()
  flags.adopt_module_key_flags(sweep)
  app.run(sweep.main(compound_search.plan, compound_search.summarize,
                     comparisons.search_claims),
          flags_parser=cli.parse_flags)
