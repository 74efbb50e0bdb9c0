"""Evaluates the latest (or --step N) checkpoint of a run; the last stdout line is JSON.

  python -m efficientnet_jax.evaluate --config=configs/quickstart.py --workdir=runs/quickstart
  → {"step": 1200, "top1": 0.98, "top5": 1.0, "loss": 0.07, "ema_top1": ..., ...}
"""

import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from efficientnet_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'The run directory (holds checkpoints/).')
flags.DEFINE_integer('step', None, 'Checkpoint step to evaluate (default: the latest).')
config_flags.DEFINE_config_file('config', None, 'The run\'s config file (configs/NAME.py[:arg]).',
                                lock_config=True)
cli.define_distributed_flags()
flags.mark_flags_as_required(['config', 'workdir'])


def evaluate_checkpoint(config, workdir: str, step: int | None = None) -> dict:
  """Restores a checkpoint of `workdir` and evaluates it on config's eval split."""
  from efficientnet_jax import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from efficientnet_jax import train  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'--workdir {workdir} does not exist.')
  s = train.setup(config)
  checkpointer = train.checkpointer_for(config, workdir, create=False)
  try:
    state, _, restored_step = checkpointer.restore(s.abstract_state, step)
  finally:
    checkpointer.close()
  eval_step = steps_lib.jit_eval_step(steps_lib.make_eval_step(s.model), s.mesh)
  metrics = train.evaluate(config, state, eval_step, s.mesh)
  result = {'step': restored_step}
  for key in ('top1', 'top5', 'loss', 'ema_top1', 'ema_top5', 'ema_loss'):
    result[key] = metrics.get(f'eval_{key}')
  return result


@cli.run
def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
  cli.initialize_distributed()
  result = evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step)
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
