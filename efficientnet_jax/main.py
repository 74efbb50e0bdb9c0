"""Trains and evaluates an EfficientNet; resumes from --workdir if it holds a checkpoint.

  python -m efficientnet_jax.main --config=configs/b4.py --workdir=runs/b4
  python -m efficientnet_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

Rerun the same command after a kill or preemption: it resumes exactly (README, "Fault tolerance").
Exit codes: 0 done or preempted (SIGTERM/SIGINT, checkpoint saved), 2 bad input (one `error:`
line on stderr, nothing written), 3 diverged (NaN/Inf; the last checkpoint is intact).
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from efficientnet_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/NAME.py[:arg]).',
                                lock_config=True)
cli.define_distributed_flags()
flags.mark_flags_as_required(['config', 'workdir'])


@cli.run
def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
  # pylint: disable-next=g-import-not-at-top
  from efficientnet_jax import compile_cache
  # Both before the backend starts (initialize_distributed queries it).
  compile_cache.set_backend_optimization_level(FLAGS.config.get('xla_backend_optimization_level'))
  if FLAGS.config.get('compilation_cache_dir'):
    compile_cache.enable(FLAGS.config.compilation_cache_dir)
  cli.initialize_distributed()
  import jax  # pylint: disable=g-import-not-at-top
  from efficientnet_jax import train  # pylint: disable=g-import-not-at-top
  logging.info('Process %d/%d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  logging.info('Config:\n%s', FLAGS.config)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
