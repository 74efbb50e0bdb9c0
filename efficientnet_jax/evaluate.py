"""Evaluates the latest (or --step N) checkpoint of a run; the last stdout line is JSON.

  python -m efficientnet_jax.evaluate --config=configs/quickstart.py --workdir=runs/quickstart
  → {"step": 1200, "top1": 0.98, "top5": 1.0, "loss": 0.07, "ema_top1": ..., ...}

The work is `training.evaluation.evaluate_checkpoint`, the path every evaluation takes.
"""

import json
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
flags.adopt_module_key_flags(cli)  # --help lists the multi-process flags too.
flags.mark_flags_as_required(['config', 'workdir'])


@cli.run
def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
  cli.quiet_libraries()
  cli.initialize_distributed()
  # pylint: disable=g-import-not-at-top
  from efficientnet_jax.training import evaluation
  result = evaluation.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step)
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
