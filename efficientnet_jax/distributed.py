"""Joining a multi-process run: jax's own cluster detection, and which devices each process drives.

`start()` runs before any JAX computation (in `main`, `evaluate` and the experiment scripts):

* explicit `coordinator_address`, `num_processes`, `process_id` (a run started by hand): used;
* else every cluster jax can detect (`jax._src.clusters`: SLURM inside an `srun` job step, Open
  MPI's `mpirun`, Cloud TPU VMs through the GCE metadata server, TPUs on GKE, Kubernetes), asked
  in jax's order: the first present one gives the coordinator (`JAX_COORDINATOR_ADDRESS` or
  `JAX_COORDINATOR_PORT` override it, as in jax), the process count and this process's index;
* else one process. An `salloc` shell or the body of an sbatch script has `SLURM_JOB_ID` but no job
  step, so it is one process too; `srun` starts the processes of a multi-process run.

Devices: a process drives `local_device_ids` (GPU indices on its host; TPU hosts always drive
their own chips). The default: a process that is alone on its node drives every device it sees
(one process per node: 2 nodes × 8 GPUs → 2 processes × 8 devices); several processes on one node
each drive the one GPU of their local rank (jax's rule: one process per GPU → 16 × 1). Either way
the data mesh spans all 16 devices. `--local_device_ids=all` or `0,1,…` (or jax's
`JAX_LOCAL_DEVICE_IDS`) overrides the default, e.g. `all` where the scheduler already gives each
task its own GPUs (`srun --gpus-per-task=2`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

from efficientnet_jax.errors import UsageError

ALL_DEVICES = 'all'


@dataclasses.dataclass(frozen=True)
class Membership:
  """Where this process stands in a multi-process run (None: it runs alone)."""
  coordinator_address: str
  num_processes: int
  process_id: int
  local_device_ids: tuple[int, ...] | None  # None: every device the process sees.
  detected_by: str  # 'flags', or the name of jax's cluster environment.


def parse_local_device_ids(text: str | None) -> tuple[int, ...] | str | None:
  """`--local_device_ids`: None (the default rule), 'all', or device indices '0,1'."""
  if text is None or not text.strip():
    return None
  if text.strip() == ALL_DEVICES:
    return ALL_DEVICES
  try:
    ids = tuple(int(part) for part in text.split(','))
  except ValueError:
    raise UsageError(f'--local_device_ids={text}: expected "all" or device indices like '
                     '"0,1,2,3".') from None
  if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
    raise UsageError(f'--local_device_ids={text}: indices must be distinct and ≥ 0.')
  return ids


def membership(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: str | None = None,
               timeout_s: int = 300) -> Membership | None:
  """This process's place in a multi-process run, or None for a run of one process.

  Args:
    coordinator_address: HOST:PORT of process 0 for a run started by hand (with the next two).
    num_processes: the process count of a run started by hand.
    process_id: this process's index in a run started by hand.
    local_device_ids: the `--local_device_ids` text (None: `JAX_LOCAL_DEVICE_IDS`, else the
      default rule of the module docstring).
    timeout_s: how long jax's detection may wait for a TPU pod's coordinator to resolve.

  Raises:
    UsageError: incomplete or inconsistent hand-started flags, or bad device indices.
  """
  chosen = parse_local_device_ids(local_device_ids or os.environ.get('JAX_LOCAL_DEVICE_IDS'))
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise UsageError('--coordinator_address needs --num_processes and --process_id too.')
    if not 0 <= process_id < num_processes:
      raise UsageError(f'--process_id={process_id} must be in [0, {num_processes}).')
    return Membership(coordinator_address, num_processes, process_id,
                      None if chosen in (None, ALL_DEVICES) else chosen, 'flags')
  if num_processes is not None or process_id is not None:
    raise UsageError('--num_processes and --process_id need --coordinator_address too.')
  env = detected_cluster()
  if env is None:
    if chosen not in (None, ALL_DEVICES):
      raise UsageError('--local_device_ids applies to a multi-process run; one process drives '
                       'the devices it sees (choose them with CUDA_VISIBLE_DEVICES).')
    return None
  port = os.environ.get('JAX_COORDINATOR_PORT')
  address = (os.environ.get('JAX_COORDINATOR_ADDRESS') or
             env.get_coordinator_address(timeout_secs=timeout_s, override_coordinator_port=port))
  if chosen == ALL_DEVICES:
    ids = None
  elif chosen is not None:
    ids = chosen
  else:
    ids = _default_device_ids(env)
  return Membership(address, env.get_process_count(), env.get_process_id(), ids, env.name)


def detected_cluster():
  """The first cluster environment of jax's list that is present here, or None.

  The list and its order are jax's (`ClusterEnv._cluster_types`, filled as jax imports its
  cluster modules); opt-in environments (mpi4py) are skipped, as jax's own detection does.
  """
  from jax._src import clusters  # pylint: disable=g-import-not-at-top  (jax's detection)
  for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
    if not env.opt_in_only_method and env.is_env_present():
      return env
  return None


def _default_device_ids(env) -> tuple[int, ...] | None:
  """Alone on its node: every device it sees; else the local rank's GPU (jax's default)."""
  from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  if cloud_tpu_init.running_in_cloud_tpu_vm:
    return None  # A TPU host drives its own chips; jax never restricts them.
  local_rank = env.get_local_process_id()
  if local_rank is None or processes_on_this_node() == 1:
    return None
  return (local_rank,)


def processes_on_this_node() -> int | None:
  """How many processes of this run share this node, from the launcher's variables, or None."""
  if 'OMPI_COMM_WORLD_LOCAL_SIZE' in os.environ:
    return int(os.environ['OMPI_COMM_WORLD_LOCAL_SIZE'])
  per_node = os.environ.get('SLURM_STEP_TASKS_PER_NODE') or os.environ.get('SLURM_TASKS_PER_NODE')
  if per_node and 'SLURM_NODEID' in os.environ:
    counts = expand_tasks_per_node(per_node)
    node = int(os.environ['SLURM_NODEID'])
    return counts[node] if node < len(counts) else None
  return None


def expand_tasks_per_node(text: str) -> list[int]:
  """SLURM's compressed task counts per node, expanded: '2(x3),1' → [2, 2, 2, 1]."""
  counts = []
  for part in text.split(','):
    match = re.fullmatch(r'(\d+)(?:\(x(\d+)\))?', part.strip())
    if not match:
      raise ValueError(f'Cannot read SLURM tasks per node {text!r}.')
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  return counts


def start(member: Membership | None) -> None:
  """Joins the run `member` describes (nothing for one process); before any JAX computation."""
  if member is None:
    return
  import jax  # pylint: disable=g-import-not-at-top
  # Collectives between CPU processes need an implementation; gloo ships with jaxlib.
  if not jax.config.jax_cpu_collectives_implementation:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  # 'deactivate': the detection ran in `membership`; run again, jax would pin one GPU per
  # process on SLURM and Open MPI whatever `local_device_ids` said (None means "all" here).
  jax.distributed.initialize(member.coordinator_address, num_processes=member.num_processes,
                             process_id=member.process_id,
                             local_device_ids=_as_list(member.local_device_ids),
                             cluster_detection_method='deactivate')


def _as_list(ids: Sequence[int] | None) -> list[int] | None:
  return list(ids) if ids is not None else None
