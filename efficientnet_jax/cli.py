"""What the command-line entry points share: multi-process start-up and one-line errors."""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import flags
from absl import logging

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

FLAGS = flags.FLAGS


def define_distributed_flags() -> None:
  """The flags of a multi-process run started by hand (DESIGN.md)."""
  flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0, for a run started '
                      'by hand; omit to auto-detect a TPU pod or cluster.')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (with coordinator_address).')
  flags.DEFINE_integer('process_id', None, 'This process index (with coordinator_address).')


def initialize_distributed() -> None:
  """Joins a multi-process run: explicit flags, else jax's auto-detection, else one process."""
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.coordinator_address:
    if FLAGS.num_processes is None or FLAGS.process_id is None:
      raise UsageError('--coordinator_address needs --num_processes and --process_id too.')
    jax.distributed.initialize(FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
    return
  if _cluster_detected():
    jax.distributed.initialize()


def _cluster_detected() -> bool:
  """Environment markers of the clusters jax.distributed.initialize() can auto-detect."""
  markers = ('SLURM_JOB_ID', 'OMPI_MCA_orte_hnp_uri', 'TPU_WORKER_HOSTNAMES',
             'MEGASCALE_COORDINATOR_ADDRESS', 'JAX_COORDINATOR_ADDRESS')
  return any(m in os.environ for m in markers)


class UsageError(ValueError):
  """A bad command-line input; the message says how to fix it."""


# Errors that are the user's input, not a bug: shown as one line, exit code 2.
# Other exceptions are bugs and keep their traceback; EFFICIENTNET_JAX_TRACEBACK=1 shows it
# for these too.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, KeyError, FileNotFoundError, PermissionError, NotADirectoryError,
    IsADirectoryError)


def run(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """Wraps an absl main so that input errors print one line on stderr and exit 2."""
  def wrapped(argv):
    try:
      main(argv)
    except EXPECTED_ERRORS as e:
      if os.environ.get('EFFICIENTNET_JAX_TRACEBACK'):
        raise
      message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
      logging.flush()
      print(f'error: {" ".join(message.split())}', file=sys.stderr)
      sys.exit(2)
  return wrapped
