"""Multi-process start-up (`distributed.py`) in faked cluster environments.

The clusters are jax's own detection code, fed what a real cluster would give it: SLURM's
variables, and for a Cloud TPU VM pod a local HTTP server answering as the GCE metadata server.
`jax.distributed.initialize` itself is replaced by a recorder (joining needs the other processes;
tests/training/test_multihost.py joins for real).
"""

import http.server
import threading

import jax
import pytest
from jax._src import cloud_tpu_init
from jax._src.clusters import cloud_tpu_cluster

from efficientnet_jax import distributed
from efficientnet_jax.errors import UsageError

SLURM_JOB = {'SLURM_JOB_ID': '4242', 'SLURM_NTASKS': '16', 'SLURM_PROCID': '0',
             'SLURM_LOCALID': '0', 'SLURM_NODEID': '0'}
# What `srun` adds: the job step.
SLURM_STEP = {'SLURM_STEP_NODELIST': 'gpu[007-008]', 'SLURM_STEP_NUM_NODES': '2'}
CLUSTER_VARIABLES = ('SLURM_', 'OMPI_', 'JAX_COORDINATOR', 'JAX_LOCAL_DEVICE_IDS',
                     'KUBERNETES_SERVICE_HOST', 'MEGASCALE_', 'TPU_')


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
  """Starts every test outside any cluster, whatever the machine running the tests is."""
  import os  # pylint: disable=g-import-not-at-top
  for name in list(os.environ):
    if name.startswith(CLUSTER_VARIABLES):
      monkeypatch.delenv(name)


@pytest.fixture
def joined(monkeypatch):
  """Records the arguments of `jax.distributed.initialize` instead of joining a run."""
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *a, **k: calls.append((a, k)))
  return calls


def _slurm(monkeypatch, *, step: bool, tasks_per_node: str = '8(x2)', procid: int = 11,
           localid: int = 3, nodeid: int = 1):
  variables = {**SLURM_JOB, 'SLURM_PROCID': str(procid), 'SLURM_LOCALID': str(localid),
               'SLURM_NODEID': str(nodeid), 'SLURM_TASKS_PER_NODE': tasks_per_node}
  if step:
    variables |= {**SLURM_STEP, 'SLURM_STEP_TASKS_PER_NODE': tasks_per_node}
  for name, value in variables.items():
    monkeypatch.setenv(name, value)


def test_one_process_outside_any_cluster(joined):
  assert distributed.membership() is None
  distributed.start(distributed.membership())
  assert not joined


def test_slurm_without_a_job_step_is_one_process(monkeypatch, joined):
  """An salloc shell or an sbatch script's body: SLURM_JOB_ID, no step: one process."""
  _slurm(monkeypatch, step=False)
  assert distributed.membership() is None
  distributed.start(distributed.membership())
  assert not joined


def test_srun_one_task_per_gpu_drives_the_local_rank_gpu(monkeypatch, joined):
  _slurm(monkeypatch, step=True, tasks_per_node='8(x2)', procid=11, localid=3)
  member = distributed.membership()
  assert member == distributed.Membership('gpu007:' + str(4242 % 4096 + 61440), 16, 11, (3,),
                                          'slurm')
  distributed.start(member)
  (args, kwargs), = joined
  assert args == (member.coordinator_address,)
  assert kwargs['num_processes'] == 16 and kwargs['process_id'] == 11
  assert kwargs['local_device_ids'] == [3]
  # The detection ran once, here: jax must not pin the devices again.
  assert kwargs['cluster_detection_method'] == 'deactivate'


def test_srun_one_task_per_node_drives_every_gpu(monkeypatch, joined):
  _slurm(monkeypatch, step=True, tasks_per_node='1(x2)', procid=1, localid=0)
  monkeypatch.setenv('SLURM_NTASKS', '2')
  member = distributed.membership()
  assert (member.num_processes, member.process_id, member.local_device_ids) == (2, 1, None)
  distributed.start(member)
  assert joined[0][1]['local_device_ids'] is None  # None: every device the process sees.


@pytest.mark.parametrize('flag, expected', [('all', None), ('2,3', (2, 3))])
def test_local_device_ids_override_the_default(monkeypatch, flag, expected):
  _slurm(monkeypatch, step=True)
  assert distributed.membership(local_device_ids=flag).local_device_ids == expected


def test_jax_variable_chooses_the_devices_too(monkeypatch):
  _slurm(monkeypatch, step=True)
  monkeypatch.setenv('JAX_LOCAL_DEVICE_IDS', '0,1,2,3')
  assert distributed.membership().local_device_ids == (0, 1, 2, 3)


@pytest.mark.parametrize('flags, message', [
    ({'coordinator_address': 'h:1234'}, 'needs --num_processes and --process_id'),
    ({'coordinator_address': 'h:1234', 'num_processes': 2, 'process_id': 2}, 'must be in'),
    ({'num_processes': 2}, 'need --coordinator_address'),
    ({'local_device_ids': 'gpu0'}, 'expected "all" or device indices'),
    ({'local_device_ids': '1,1'}, 'distinct'),
    ({'local_device_ids': '0'}, 'applies to a multi-process run'),
])
def test_bad_flags_are_one_line_errors(flags, message):
  with pytest.raises(UsageError, match=message) as error:
    distributed.membership(**flags)
  assert '\n' not in str(error.value)


def test_hand_started_run_uses_the_flags(joined):
  member = distributed.membership('10.0.0.1:1234', 4, 2, '0,1')
  assert member == distributed.Membership('10.0.0.1:1234', 4, 2, (0, 1), 'flags')


def test_slurm_task_counts_expand():
  assert distributed.expand_tasks_per_node('2(x3),1') == [2, 2, 2, 1]
  assert distributed.expand_tasks_per_node('8') == [8]
  with pytest.raises(ValueError):
    distributed.expand_tasks_per_node('two')


class _MetadataServer(http.server.BaseHTTPRequestHandler):
  """The GCE metadata server of worker 2 of a 4-host TPU VM pod (v4-32)."""

  ATTRIBUTES = {'agent-worker-number': '2',
                'worker-network-endpoints': '127.0.0.1,10.1.0.2,10.1.0.3,10.1.0.4',
                'tpu-env': "ACCELERATOR_TYPE: 'v4-32'\n"}

  def do_GET(self):  # pylint: disable=invalid-name
    key = self.path.rsplit('/', 1)[-1]
    ok = self.headers.get('Metadata-Flavor') == 'Google' and key in self.ATTRIBUTES
    body = self.ATTRIBUTES.get(key, 'not found').encode() if ok else b'not found'
    self.send_response(200 if ok else 404)
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):  # Quiet.
    pass


def test_tpu_vm_pod_found_through_the_metadata_server_joins(monkeypatch, joined):
  """`gcloud compute tpus tpu-vm ssh --worker=all`: no variables, only the metadata server."""
  server = http.server.HTTPServer(('127.0.0.1', 0), _MetadataServer)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    monkeypatch.setenv('GCE_METADATA_IP', f'127.0.0.1:{server.server_port}')
    # What `import jax` finds on a TPU VM (libtpu and its chips); jax's modules keep copies.
    for module in (cloud_tpu_init, cloud_tpu_cluster):
      monkeypatch.setattr(module, 'running_in_cloud_tpu_vm', True)
    member = distributed.membership()
    distributed.start(member)
  finally:
    server.shutdown()
  assert member == distributed.Membership('127.0.0.1:8482', 4, 2, None, 'gcetpu')
  (args, kwargs), = joined
  assert args == ('127.0.0.1:8482',) and kwargs['process_id'] == 2
  assert kwargs['local_device_ids'] is None
