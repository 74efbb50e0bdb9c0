"""URI run directories: `gs://` goes through etils' epath, other schemes are one error line.

What runs here without a network, each test with its working directory in tmp_path, which must
stay empty (the old failure: `os.path.abspath('gs://b/r')` is the local `./gs:/b/r`):

* validation (`setup.validate`, `evaluate_checkpoint`, the `main` command line) of supported and
  unsupported kinds of path;
* the run directory's file handling through `fake_gcs`, an in-memory stand-in for GCS: epath's own
  fsspec backend (the one it uses with gcsfs) over fsspec's MemoryFileSystem, plus a bucket object
  answering the one question orbax asks google-cloud-storage (hierarchical namespace or not).
  Through it go metrics.jsonl (appended, rewritten at a resume), the checkpointer's directory
  handling (orbax's CheckpointManager on the URI, unfinished writes, the set-aside of a damaged
  step, the last complete step), `evaluate`'s and `config.init_from`'s reads; the TensorBoard
  writer is checked to get the URI itself.

Not covered, because it reaches GCS without going through epath: orbax writing and reading a
checkpoint's arrays (tensorstore's `gcs` driver speaks HTTP to GCS itself, and no GCS emulator is
installed), and TensorBoard's event files (tf.summary writes through tf.io.gfile's built-in GCS
file system, which only a TensorFlow C++ plugin could replace).
"""

import os
import subprocess
import sys
import time
import types

from etils import epath
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.memory import MemoryFileSystem
import pytest

import reliability_config
import reliability_helpers as rh
from efficientnet_jax.errors import ConfigError
from efficientnet_jax.training import checkpointing
from efficientnet_jax.training import evaluation
from efficientnet_jax.training import metric_writers
from efficientnet_jax.training import run_paths
from efficientnet_jax.training import setup
from efficientnet_jax.training import warm_start

UNSUPPORTED = ['ftp://host/run', 's3://bucket/run', 'gs:/bucket/run', 'file:///tmp/run']


@pytest.fixture
def cwd(tmp_path, monkeypatch):
  """An empty working directory: where `./gs:/...` would appear."""
  monkeypatch.chdir(tmp_path)
  return tmp_path


class _FakeGcs(MemoryFileSystem):
  """fsspec's in-memory file system, addressed as `gs://bucket/path`."""

  protocol = ('gs', 'gcs')

  @classmethod
  def _strip_protocol(cls, path):
    return super()._strip_protocol(os.fspath(path).removeprefix('gs://'))


@pytest.fixture
def fake_gcs(cwd, monkeypatch):
  """`gs://` through epath (and so orbax's directory handling) lands in memory; yields the fs."""
  fs = _FakeGcs(global_store=False, skip_instance_cache=True)

  class Backend(type(epath_backend.fsspec_backend)):
    def fs(self, path):
      del path
      return fs

  # epath picks tf.io.gfile for gs:// when TensorFlow is installed: the fake replaces the fsspec
  # backend it would use otherwise.
  monkeypatch.setattr(gpath, '_is_tf_installed', lambda: False)
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, 'gs', Backend())  # pylint: disable=protected-access
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(gcs_utils, 'get_bucket',
                      lambda name: types.SimpleNamespace(hierarchical_namespace_enabled=False))
  monkeypatch.setattr(run_paths, 'gs_usable', lambda: True)
  yield fs
  assert not os.listdir(cwd), f'written locally: {os.listdir(cwd)}'


def _tiny_config(**overrides):
  config = reliability_config.get_config()
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def test_gs_workdir_is_validated_without_the_local_file_system(cwd, monkeypatch):
  """Validation never reads a gs:// workdir as a local path, and creates nothing."""
  (cwd / 'gs:').write_text('')  # Read as a local path, `gs://b/r` would lie under this file.
  monkeypatch.setattr(run_paths, 'gs_usable', lambda: True)
  setup.validate(_tiny_config(), 'gs://bucket/run')
  setup.validate(_tiny_config(init_from='gs://bucket/weights'), 'gs://bucket/run')
  assert os.listdir(cwd) == ['gs:']

  monkeypatch.setattr(run_paths, 'gs_usable', lambda: False)  # E.g. no google-cloud-storage.
  with pytest.raises(ConfigError, match='google-cloud-storage') as error:
    setup.validate(_tiny_config(), 'gs://bucket/run')
  assert '\n' not in str(error.value) and 'or use a local path' in str(error.value)
  with pytest.raises(ConfigError, match='names no bucket'):
    run_paths.check_workdir('gs:///run')
  assert os.listdir(cwd) == ['gs:']


@pytest.mark.parametrize('path', UNSUPPORTED + ['/gs/bucket/run'])
def test_unsupported_kind_of_path_is_one_line_naming_the_fix(path, cwd):
  with pytest.raises(ConfigError) as error:
    setup.validate(_tiny_config(), path)
  message = str(error.value)
  assert message.startswith(f'--workdir {path}') and '\n' not in message
  assert 'local' in message
  with pytest.raises(ConfigError, match='--config.init_from'):
    setup.validate(_tiny_config(init_from=path), str(cwd / 'run'))
  with pytest.raises(ConfigError):
    evaluation.evaluate_checkpoint(_tiny_config(), path)
  assert not os.listdir(cwd)


def test_unsupported_scheme_on_the_command_line_is_one_error_line(cwd):
  """s3:// is one epath can open (with s3fs), but orbax would write its arrays locally."""
  result = subprocess.run(
      [sys.executable, '-m', 'efficientnet_jax.main',
       f'--config={os.path.join(rh.REPO, rh.CONFIG)}', '--workdir=s3://bucket/run'],
      cwd=cwd, env=rh.environment(), capture_output=True, text=True, timeout=rh.TIMEOUT_S,
      check=False)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
  assert 'gs://bucket/path' in errors[0] and result.stderr.rstrip().endswith(errors[0])
  assert not os.listdir(cwd)


def _lines(fs, path):
  return [line for line in fs.cat_file(path).decode().splitlines()]


def test_metrics_go_to_the_uri(fake_gcs, monkeypatch):
  clu_writers = pytest.importorskip('clu.metric_writers')
  logdirs = []
  monkeypatch.setattr(clu_writers, 'create_default_writer', lambda logdir, just_logging: (
      logdirs.append(logdir) or clu_writers.LoggingWriter()))
  workdir = 'gs://bucket/run'
  with metric_writers.MetricsLogger(workdir, total_steps=4, global_batch_size=8,
                                    is_main_process=True) as logger:
    for step in (1, 2, 3):
      logger.write_scalars(step, {'train_loss': 1.0 / step})
  assert len(_lines(fake_gcs, 'gs://bucket/run/metrics.jsonl')) == 3

  # A resume from step 2 rewrites the file without step 3, then appends to it.
  with metric_writers.MetricsLogger(workdir, total_steps=4, global_batch_size=8,
                                    is_main_process=True, resume_step=2) as logger:
    logger.write_scalars(3, {'train_loss': 0.5})
    logger.write_scalars(4, {'train_loss': 0.25})
  lines = _lines(fake_gcs, 'gs://bucket/run/metrics.jsonl')
  assert [line.split(',')[0] for line in lines] == [f'{{"step": {s}' for s in (1, 2, 3, 4)]
  assert '"train_loss": 0.5' in lines[2]
  assert not fake_gcs.exists('gs://bucket/run/metrics.jsonl.tmp')
  assert logdirs == [workdir, workdir]  # TensorBoard gets the URI itself.


def _wait_until_gone(fs, path, timeout_s=30.0):
  """Orbax removes unfinished writes in a background thread."""
  deadline = time.monotonic() + timeout_s
  while fs.exists(path) and time.monotonic() < deadline:
    time.sleep(0.05)
  return not fs.exists(path)


def test_checkpoint_directory_is_the_uri(fake_gcs, caplog):
  run = epath.Path('gs://bucket/run/checkpoints')
  (run / '2').mkdir(parents=True)
  (run / '2' / 'commit_success.txt').write_text('done')  # Orbax's mark of a finished step.
  (run / '4').mkdir()  # On GCS orbax writes in place: no mark, an unfinished write.
  (run / '4' / 'part').write_text('')
  (run / '6.orbax-checkpoint-tmp').mkdir()

  config = _tiny_config()
  checkpointer = checkpointing.for_run(config, 'gs://bucket/run')
  try:
    assert os.fspath(checkpointer.directory) == 'gs://bucket/run/checkpoints'
    assert checkpointer.path(2) == 'gs://bucket/run/checkpoints/2'
    warned = ' '.join(r.getMessage() for r in caplog.records if 'unfinished' in r.getMessage())
    assert 'gs://bucket/run/checkpoints/4 ' in warned
    assert 'gs://bucket/run/checkpoints/6.orbax-checkpoint-tmp ' in warned
    assert checkpointer.last_complete_step() == 2
    assert checkpointer.all_steps() == [2]  # Orbax lists the URI through epath too.
    assert _wait_until_gone(fake_gcs, 'gs://bucket/run/checkpoints/4')
    assert _wait_until_gone(fake_gcs, 'gs://bucket/run/checkpoints/6.orbax-checkpoint-tmp')

    checkpointer.damaged_steps = [2]
    assert checkpointer.set_aside_damaged() == ['gs://bucket/run/checkpoints/2.damaged']
    assert fake_gcs.exists('gs://bucket/run/checkpoints/2.damaged/commit_success.txt')
    assert not fake_gcs.exists('gs://bucket/run/checkpoints/2')
  finally:
    checkpointer.close()

  with pytest.raises(FileNotFoundError, match='gs://bucket/other/checkpoints'):
    checkpointing.for_run(config, 'gs://bucket/other', create=False)
  with pytest.raises(FileNotFoundError, match='--workdir gs://bucket/other does not exist'):
    evaluation.evaluate_checkpoint(config, 'gs://bucket/other')
  (epath.Path('gs://bucket/empty') / 'checkpoints').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="init_from='gs://bucket/empty' holds no checkpoint"):
    warm_start.read_variables('gs://bucket/empty')

