"""Trains and evaluates an EfficientNet; resumes from --workdir if it holds a checkpoint.

  python -m efficientnet_jax.main --config=configs/b4.py --workdir=runs/b4
  python -m efficientnet_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

Rerun the same command after a kill or preemption: it resumes exactly (README, "Fault tolerance").
Exit codes (`errors.py`): 0 finished, 75 preempted (SIGTERM/SIGINT: its checkpoint is on disk,
rerun to resume; a scheduler requeues on it), 2 bad input (one `error:` line on stderr, nothing
written), 3 diverged (NaN/Inf; the last checkpoint is intact), 4 a checkpoint write failed (the
earlier checkpoints are intact).
"""

import sys
from typing import Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from efficientnet_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/NAME.py[:arg]).',
                                lock_config=True)
cli.define_distributed_flags()
flags.adopt_module_key_flags(cli)  # --help lists the multi-process flags too.
flags.mark_flags_as_required(['config', 'workdir'])


def run(config, workdir: str, hooks: Sequence = ()) -> None:
  """What `main` does after parsing its flags: start-up, checks, the config, training.

  Args:
    config: the parsed config.
    workdir: the run directory.
    hooks: `training.hooks.StepHook`s for the loop (tests inject faults through them).
  """
  # pylint: disable=g-import-not-at-top  (XLA's flags and the cache must precede the backend)
  from efficientnet_jax.training import compile_cache
  from efficientnet_jax.training import xla_options
  xla_options.apply(backend_optimization_level=config.xla_backend_optimization_level,
                    cpu_opt_preset=config.xla_cpu_opt_preset)
  if config.compilation_cache_dir:
    compile_cache.enable(config.compilation_cache_dir)
  cli.initialize_distributed()
  import jax
  from absl import logging
  from efficientnet_jax import config as config_lib
  from efficientnet_jax import host_malloc
  from efficientnet_jax.training import checkpointing
  from efficientnet_jax.training import loop
  from efficientnet_jax.training import quiet_orbax
  from efficientnet_jax.training import setup
  quiet_orbax.install(checkpointing.is_write_failure)  # A failed write is reported once.
  setup.validate(config, workdir)  # Seconds, before the config is printed or anything written.
  logging.info('Devices: %s; host malloc: %s', jax.devices(), host_malloc.in_use())
  if jax.process_count() > 1:
    print(f'Process {jax.process_index()}/{jax.process_count()} of a multi-process run, local '
          f'devices: {jax.local_devices()}', flush=True)
  if jax.process_index() == 0:
    print(str(config).rstrip(), flush=True)
    print(config_lib.describe_recipe(config), flush=True)
  loop.train_and_evaluate(config, workdir, hooks=hooks, validated=True)


@cli.run
def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
  cli.quiet_libraries()
  run(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
