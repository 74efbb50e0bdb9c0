"""Scale-out of the train input pipeline over CPU machines with TensorFlow's tf.data service.

`config.data_service_address` (`grpc://HOST:PORT`) sends the train preprocessing to a fleet of
tf.data service workers that a dispatcher coordinates (`start_dispatcher`, `start_worker`; the
command line is `python -m efficientnet_jax.data_service`). Unset (the default), the pipeline is
the local one. The eval pipeline is always local.

What travels: the trainer builds its train dataset as usual and the service runs its graph (pure
TF ops, no Python) on the workers. The dataset is one of whole per-process batches keyed by
global step (`pipeline._IndexedTrain.keyed`): `range(start_step, 2**62)` → (step, this
process's batch of that step). `ShardingPolicy.DYNAMIC` hands the steps to the workers one at a
time, so every step is produced once (at most once: a worker that dies takes the steps it was
working on with it), in an order that depends on the workers' timing. The trainer puts them back
in step order (`in_step_order`), so its stream is byte-identical to the local pipeline's whatever
the timing: the batch of a step is a pure function of (config.seed, step), computed by the same
functions on a worker as locally.

Determinism and resume: as for the local pipeline (the data position is the step), with or
without the service and whatever the number of workers; a resumed run starts a new job at its
checkpoint's step. A lost step (a worker died) cannot be recovered within the job: once more than
`REORDER_WINDOW` later steps wait for it, the iterator raises `DataServiceError`; rerunning the
command resumes from the last checkpoint with a fresh job.

Multi-process runs: each process distributes its own dataset (its slice of each global batch) as
its own job, named after the config, the process and the start step plus a random suffix (TF's
docs: a job name must not be reused within the service's lifetime, since a consumer naming an
existing job joins it and reads on from where that job is).

Security: the servers listen on every interface, unauthenticated, and a worker runs any graph it
is sent, which can read and write the worker's files (`exposure_notice`, the line the launcher
prints; docs/security.md).

TFDS datasets are refused (`check_source`): their order comes from a shuffle buffer streaming
over files, which cannot be keyed by step, so through the service it would depend on the
workers' timing and a resume could not find its position. Prepare them as an image folder.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import time
import uuid
from typing import Any, Iterator

import tensorflow as tf

from efficientnet_jax import config as config_lib
from efficientnet_jax import errors

# How many later steps may wait for a missing one before it counts as lost. In normal running the
# steps in flight are about (workers × steps each worker runs ahead, a few); the waiting batches
# are held in host memory (64 batches of 128 uint8 224-px images: 1.2 GB).
REORDER_WINDOW = 64
# How long the trainer waits for the dispatcher to accept a connection before giving up (TF's
# client would retry forever, silently).
CONNECT_TIMEOUT_S = 60.0
_JOB_PREFIX = 'efficientnet_jax'
_SIOCGIFADDR = 0x8915  # Linux's ioctl: an interface's IPv4 address.


class DataServiceError(RuntimeError):
  """The tf.data service lost a step (a worker died); rerunning resumes from the checkpoint."""

  exit_code = errors.RETRY_EXIT_CODE  # EX_TEMPFAIL: rerunning the command resumes.


# ------------------------------------------------------------------------------------------------
# Servers.


def start_dispatcher(port: int = 0, **config: Any) -> tf.data.experimental.service.DispatchServer:
  """Starts a dispatcher serving on `port` (0: a free one) and returns it (`.target`, `.join()`).

  No work directory and no fault tolerance: the job state lives in memory. A dispatcher that
  dies ends every job, and the trainers' reruns resume from their checkpoints with new jobs.

  Args:
    port: the port to serve on; 0: a free one.
    **config: further `tf.data.experimental.service.DispatcherConfig` fields.
  """
  service = tf.data.experimental.service
  return service.DispatchServer(service.DispatcherConfig(port=port, fault_tolerant_mode=False,
                                                         **config))


def start_worker(dispatcher_address: str, port: int = 0, worker_address: str | None = None,
                 **config: Any) -> tf.data.experimental.service.WorkerServer:
  """Starts a worker that registers with the dispatcher at `dispatcher_address` (HOST:PORT).

  Args:
    dispatcher_address: the dispatcher's HOST:PORT (a `grpc://` prefix is dropped).
    port: the port this worker serves on; 0: a free one.
    worker_address: HOST:PORT under which trainers reach this worker ('%port%' is replaced by the
      bound port); None: 'localhost:%port%' (TF's default), right only when the trainers run on
      this machine.
    **config: further `tf.data.experimental.service.WorkerConfig` fields.

  Returns:
    The running worker (`.join()` blocks while it serves).
  """
  service = tf.data.experimental.service
  if worker_address is not None:
    config['worker_address'] = worker_address
  return service.WorkerServer(service.WorkerConfig(
      dispatcher_address=dispatcher_address.removeprefix('grpc://'), port=port, **config))


def interfaces() -> list[str]:
  """This machine's network interfaces, each as 'NAME' or 'NAME ADDRESS' (its IPv4 address).

  The address comes from Linux's SIOCGIFADDR ioctl; elsewhere, or for an interface without an
  IPv4 address, the name alone.
  """
  named = []
  for _, name in socket.if_nameindex():
    address = None
    try:
      import fcntl  # pylint: disable=g-import-not-at-top  (Unix only)
      with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack('256s', name[:15].encode())
        address = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)[20:24])
    except (ImportError, OSError):
      pass
    named.append(f'{name} {address}' if address else name)
  return named


def exposure_notice(role: str, port: int) -> str:
  """The line a server prints at start: where anyone can reach it, and that nothing checks who.

  TensorFlow's tf.data servers (2.21) listen on every interface, IPv4 and IPv6:
  `DispatcherConfig` and `WorkerConfig` have a port and no address to bind, and their one
  protocol, 'grpc', has no credentials. A worker runs whatever dataset graph it is sent, and a
  graph can read any file the worker's user can read and return it, or write one
  (docs/security.md).

  Args:
    role: 'dispatcher' or 'worker'.
    port: the port it serves on.
  """
  whose = 'its workers\' user' if role == 'dispatcher' else 'this user'
  return (f'warning: no authentication: this tf.data service {role} on port {port} answers '
          f'anyone who reaches any interface of this machine ({", ".join(interfaces())}; '
          f'TensorFlow {tf.__version__} cannot listen on fewer), who can then read and write any '
          f'file {whose} can, i.e. run code as them. Serve only on a trusted private network, '
          'behind a firewall or through an SSH tunnel (docs/security.md).')


# ------------------------------------------------------------------------------------------------
# The trainer's side.


def check_source(config, is_indexed: bool) -> None:
  """Raises ConfigError for a service address that is malformed or set with a TFDS dataset."""
  config_lib.check_data_service_address(config.data_service_address)
  if config.data_service_address and not is_indexed:
    raise errors.ConfigError(
        f'config.data_service_address needs a dataset with a per-step order (digits or an image '
        f'folder), but TFDS dataset {config.dataset!r} is read through a streaming shuffle buffer '
        'that the service would make depend on worker timing and could not resume; prepare it as '
        'an image folder (--config.dataset=folder --config.data_dir=DIR) or unset '
        '--config.data_service_address.')


def job_name(config, process_index: int, process_count: int, start_step: int) -> str:
  """A job name of its own for this run, process and start: a rerun never joins a stale job."""
  text = json.dumps(config.to_dict(), sort_keys=True, default=str)
  digest = hashlib.sha256(text.encode()).hexdigest()[:12]
  return (f'{_JOB_PREFIX}-{digest}-process{process_index}of{process_count}-step{start_step}-'
          f'{uuid.uuid4().hex[:8]}')


def wait_for_dispatcher(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
  """Returns once the dispatcher at `address` accepts TCP connections; raises ConfigError if not.

  TF's client retries an unreachable dispatcher forever without a word, so the trainer checks
  first (retrying, for a dispatcher started at the same time as the training).
  """
  host, port = config_lib.split_data_service_address(address)
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, port), timeout=5):
        return
    except OSError as error:
      if time.monotonic() >= deadline:
        raise errors.ConfigError(
            f'No tf.data service dispatcher answers at {address} ({error}) after {timeout_s:.0f} '
            's; start one there (python -m efficientnet_jax.data_service --dispatcher '
            f'--port={port}) or fix --config.data_service_address.') from None
      time.sleep(1.0)


def in_step_order(keyed: Iterator[tuple[Any, Any]], start_step: int,
                  window: int = REORDER_WINDOW) -> Iterator[Any]:
  """Yields the batches of (step, batch) pairs in step order from `start_step`, without gaps.

  Args:
    keyed: (step, batch) pairs, each step once, in any order.
    start_step: the first step to yield.
    window: how many later steps may wait for the next one before it is taken for lost.

  Yields:
    The batches of steps start_step, start_step + 1, …

  Raises:
    DataServiceError: a step never arrived while more than `window` later ones did, a step came
      twice, or the stream ended.
  """
  waiting: dict[int, Any] = {}
  expected = start_step
  for step, batch in keyed:
    step = int(step)
    if step < expected or step in waiting:
      raise DataServiceError(f'The tf.data service delivered step {step} twice; rerun the same '
                             'command to resume from the last checkpoint with a new job.')
    waiting[step] = batch
    while expected in waiting:
      yield waiting.pop(expected)
      expected += 1
    if len(waiting) > window:
      raise DataServiceError(
          f'Train step {expected} never came from the tf.data service while {len(waiting)} '
          'later steps did: a worker probably died and its steps were lost (or the fleet runs '
          f'more than {window} steps ahead); rerun the same command to resume from the last '
          'checkpoint with a new job.')
  raise DataServiceError(f'The tf.data service stream ended before step {expected}; rerun the '
                         'same command to resume from the last checkpoint.')


def distributed(keyed: tf.data.Dataset, address: str, name: str, start_step: int,
                window: int = REORDER_WINDOW) -> Iterator[Any]:
  """Runs the (step, batch) dataset `keyed` on the service's workers; yields in step order.

  Args:
    keyed: (step, batch) elements for steps `start_step`, `start_step` + 1, …, from one
      `Dataset.range` source (so that DYNAMIC sharding splits it by step).
    address: the dispatcher, `grpc://HOST:PORT` or `HOST:PORT`.
    name: the job's name (`job_name`).
    start_step: the first step of `keyed`.
    window: `in_step_order`'s window.

  Returns:
    An endless iterator of numpy batches, in step order.
  """
  wait_for_dispatcher(address)
  service = tf.data.experimental.service
  ds = keyed.apply(service.distribute(processing_mode=service.ShardingPolicy.DYNAMIC,
                                      service=address, job_name=name))
  # The iterator (and the job) is made here, so that a failure surfaces at the call.
  return in_step_order(ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator(), start_step, window)
