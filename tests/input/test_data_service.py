"""The train pipeline through a tf.data service: a dispatcher and two workers on localhost.

The servers run in this process (free ports, no work directory), as the tf.data service's own
tests do; the trainer side is the real one (`pipeline.train_iterator` with
`data_service_address`), so the graph the workers run is the one a remote fleet would get.
"""

import json
import os
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

import reliability_config
import reliability_helpers as rh
from efficientnet_jax import config as config_lib
from efficientnet_jax.errors import ConfigError
from efficientnet_jax.input import data_service
from efficientnet_jax.input import pipeline


def _without_autotune(distributed):
  """`data_service.distributed` sending its dataset with tf.data's autotuning off."""

  def wrapped(keyed, *args, **kwargs):
    options = tf.data.Options()
    options.autotune.enabled = False
    return distributed(keyed.with_options(options), *args, **kwargs)

  return wrapped


@pytest.fixture(scope='module')
def service():
  """grpc://localhost:PORT of a dispatcher with two workers."""
  with pytest.MonkeyPatch.context() as patch:
    # Stopping a worker waits for each of its tasks' autotuners to wake (up to a minute each):
    # the datasets sent to these workers have tf.data's autotuning off.
    patch.setattr(data_service, 'distributed', _without_autotune(data_service.distributed))
    dispatcher = data_service.start_dispatcher()
    address = dispatcher.target.split('://')[1]
    workers = [data_service.start_worker(address) for _ in range(2)]
    yield dispatcher.target
    for server in workers + [dispatcher]:
      server.stop()


def _config(**overrides):
  """The builder's digits config at 16 px with RandAugment, with `overrides` set after."""
  # RandAugment: every per-example seed matters, and a batch costs little.
  config = config_lib.get_config('b0', dataset='digits', image_size=16, seed=3,
                                 normalization='imagenet', interpolation='bilinear',
                                 shuffle_buffer=64, bad_image_policy='skip',
                                 **{'augment.flip': True, 'augment.policy': 'randaugment',
                                    'augment.randaugment_magnitude': 10})
  config.update(overrides)
  return config


def _cheap(**overrides):
  """8 px, no augmentation policy: for the tests about order rather than pixels."""
  config = _config(image_size=8, **overrides)
  config.augment.policy = 'none'
  return config


def _take(iterator, n):
  batches = [next(iterator) for _ in range(n)]
  del iterator  # Releases the job now, while the dispatcher is up.
  return batches


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      assert x[key].dtype == y[key].dtype
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# 1437 // 8 = 179 steps per epoch: steps 176..181 cross into the second epoch.
START, STEPS = 176, 6


def test_service_batches_equal_the_local_ones_byte_for_byte(service):
  local = _take(pipeline.train_iterator(_config(), global_batch_size=8, start_step=START), STEPS)
  served = _take(pipeline.train_iterator(_config(data_service_address=service),
                                         global_batch_size=8, start_step=START), STEPS)
  _assert_same(served, local)


def test_resumed_service_iterator_equals_the_tail_of_a_fresh_one(service):
  config = _cheap(data_service_address=service)
  fresh = _take(pipeline.train_iterator(config, global_batch_size=8), START + STEPS)
  resumed = _take(pipeline.train_iterator(config, global_batch_size=8, start_step=START), STEPS)
  _assert_same(resumed, fresh[START:])


def test_each_process_gets_its_own_slice(service):
  slices = [_take(pipeline.train_iterator(_cheap(data_service_address=service),
                                          global_batch_size=8, start_step=START, process_index=p,
                                          process_count=2), 2) for p in range(2)]
  whole = _take(pipeline.train_iterator(_cheap(), global_batch_size=8, start_step=START), 2)
  for step in range(2):
    for key in whole[step]:
      np.testing.assert_array_equal(
          np.concatenate([slices[0][step][key], slices[1][step][key]]), whole[step][key])


# ------------------------------------------------------------------------------------------------
# The reorder buffer, without servers.


def test_reorder_buffer_yields_in_step_order():
  arrivals = [(5, 'e'), (3, 'c'), (4, 'd'), (7, 'g'), (6, 'f')]
  ordered = data_service.in_step_order(iter(arrivals + [(8, 'h')]), start_step=3, window=3)
  assert [next(ordered) for _ in range(6)] == list('cdefgh')


def test_lost_step_is_a_one_line_error_that_says_to_rerun():
  arrivals = iter([(11, 'x'), (12, 'x'), (13, 'x'), (14, 'x')])  # Step 10 never comes.
  with pytest.raises(data_service.DataServiceError, match=r'step 10 never came.*rerun') as error:
    next(data_service.in_step_order(arrivals, start_step=10, window=3))
  assert '\n' not in str(error.value)
  assert error.value.exit_code != 0


# ------------------------------------------------------------------------------------------------
# Configuration and launcher errors.


@pytest.mark.parametrize('address', ['grpc://10.0.0.2:5050', 'dispatcher.example:5050',
                                     '[::1]:5050', None])
def test_config_accepts_dispatcher_addresses(address):
  config_lib.check_data_service_address(address)


@pytest.mark.parametrize('address', ['http://host:5050', 'host', 'host:0', 'grpc://host:99999',
                                     'grpc://:5050', 'host:port'])
def test_config_refuses_other_addresses_with_the_fix(address):
  with pytest.raises(ConfigError, match='use grpc://HOST:PORT'):
    config_lib.check_data_service_address(address)
  with pytest.raises(ConfigError, match='use grpc://HOST:PORT'):
    config_lib.get_config('b0', f'smoke,data_service_address={address}')


def test_bad_address_set_by_flag_fails_at_the_pipeline():
  # `--config.data_service_address=...` bypasses get_config: the pipeline checks it again.
  with pytest.raises(ConfigError, match='not a tf.data service dispatcher address'):
    pipeline.train_iterator(_config(data_service_address='nohost'), global_batch_size=8)


def test_tfds_dataset_with_the_service_is_refused():
  config = _config(dataset='imagenet2012', data_service_address='grpc://localhost:5050')
  with pytest.raises(ConfigError, match='TFDS dataset .*dataset=folder'):
    data_service.check_source(config, is_indexed=False)
  data_service.check_source(config, is_indexed=True)


def test_unreachable_dispatcher_is_a_one_line_error_naming_the_launcher():
  with pytest.raises(ConfigError, match='No tf.data service dispatcher answers at localhost:1 .*'
                                        'efficientnet_jax.data_service --dispatcher --port=1'):
    data_service.wait_for_dispatcher('localhost:1', timeout_s=0)


@pytest.mark.parametrize('flags', [['--worker', '--port=5051'],
                                   ['--worker', '--dispatcher_address=host', '--port=5051']])
def test_launcher_bad_arguments_are_one_line_and_exit_2(flags):
  result = subprocess.run([sys.executable, '-m', 'efficientnet_jax.data_service', *flags],
                          cwd=rh.REPO, env=rh.environment(), capture_output=True, text=True,
                          timeout=120, check=False)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]


# ------------------------------------------------------------------------------------------------
# What the servers expose (docs/security.md).


def _listening_addresses(port):
  """The local addresses of the sockets listening on TCP `port`, from /proc/net/tcp{,6}."""
  found = set()
  for table in ('/proc/net/tcp', '/proc/net/tcp6'):
    with open(table) as f:
      for line in f.readlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(':')
        if state == '0A' and int(hex_port, 16) == port:  # 0A: LISTEN.
          found.add(address)
  return found


@pytest.mark.skipif(not os.path.exists('/proc/net/tcp6'), reason='reads Linux /proc/net')
def test_servers_listen_on_every_interface_as_the_notice_says():
  # The start line's claim: TensorFlow binds the wildcard address, IPv4 and IPv6, not loopback.
  dispatcher = data_service.start_dispatcher()
  worker = data_service.start_worker(dispatcher.target.split('://')[1])
  try:
    for target in (dispatcher.target, worker._address):  # pylint: disable=protected-access
      port = int(target.rsplit(':', 1)[1])
      addresses = _listening_addresses(port)
      assert addresses and addresses <= {'00000000', '0' * 32}, (target, addresses)
  finally:
    worker.stop()
    dispatcher.stop()


def _start_lines(args, timeout_s=120):
  """Starts the launcher, returns its output lines once it says it serves and warns; stops it."""
  process = subprocess.Popen([sys.executable, '-m', 'efficientnet_jax.data_service', *args],
                             cwd=rh.REPO, env=rh.environment(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  lines = []
  timer = threading.Timer(timeout_s, process.kill)  # A launcher that never says it: no hang.
  timer.start()
  try:
    for line in process.stdout:
      lines.append(line.rstrip('\n'))
      if any('serving at' in x for x in lines) and any(x.startswith('warning:') for x in lines):
        break
  finally:
    timer.cancel()
    process.kill()
    process.wait()
  return lines


@pytest.mark.parametrize('role', ['dispatcher', 'worker'])
def test_launcher_start_line_says_where_it_listens_and_that_nothing_authenticates(role):
  dispatcher = data_service.start_dispatcher() if role == 'worker' else None
  port = rh.free_port()
  args = [f'--{role}', f'--port={port}']
  if dispatcher:
    args.append(f'--dispatcher_address={dispatcher.target}')
  try:
    lines = _start_lines(args)
  finally:
    if dispatcher:
      dispatcher.stop()
  warnings = [line for line in lines if line.startswith('warning:')]
  assert len(warnings) == 1, lines
  warning = warnings[0]
  assert f'tf.data service {role} on port {port}' in warning
  assert 'no authentication' in warning and 'any interface of this machine' in warning
  # Every interface of the machine, by name.
  for _, name in socket.if_nameindex():
    assert name in warning
  assert 'read and write any file' in warning and 'docs/security.md' in warning


# ------------------------------------------------------------------------------------------------
# Training through the service.


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [(line['step'], line['train_loss']) for line in map(json.loads, f)
            if 'train_loss' in line]


@pytest.mark.slow  # Half a minute on a loaded 2-core machine: two short runs of the tiny model.
def test_training_through_the_service_equals_training_locally(service, tmp_path):
  # tests/training/test_loop.py's tiny config: its train and eval steps come from the
  # persistent compilation cache, and both runs share this process's compiled programs.
  from efficientnet_jax.training import loop  # pylint: disable=g-import-not-at-top
  results = {}
  for name, address in (('local', None), ('served', service)):
    config = config_lib.get_config('b0', **dict(
        reliability_config.PROGRAM, total_steps=2, log_every_steps=1, eval_every_steps=2,
        checkpoint_every_steps=2, data_service_address=address))
    results[name] = loop.train_and_evaluate(config, str(tmp_path / name))
  assert _losses(tmp_path / 'served') == _losses(tmp_path / 'local')
  assert len(_losses(tmp_path / 'local')) == 2
  assert results['served'] == results['local']
