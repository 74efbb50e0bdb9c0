"""Hostile and damaged weight files: refused with one line, nothing in them run, nothing written.

* A `.pth` whose unpickling would run code (here: create a marker file) is refused by
  `torch.load(weights_only=True)`; the marker proves nothing ran, and a control unpickles the
  same payload unsafely to prove that it would have.
* `.safetensors` and Keras `.h5` files cut short, or damaged inside, are one-line errors.
* An `.h5` of a few kB declaring arrays of 120 GB (HDF5 fills data never written) is refused
  before anything is read, and so is a `.keras` archive whose weights member inflates far beyond
  the archive's size (a zip bomb).
"""

import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import reliability_helpers as rh
from efficientnet_jax.weights import converters
from efficientnet_jax.weights.converters import keras
from efficientnet_jax.weights.converters import torch_files


class _CreatesFile:
  """Unpickling it opens (so creates) `path`: the smallest stand-in for running any code."""

  def __init__(self, path: str):
    self.path = path

  def __reduce__(self):
    return open, (self.path, 'w')


def _convert_cli(*args):
  return subprocess.run([sys.executable, '-m', 'efficientnet_jax.convert', *args], cwd=rh.REPO,
                        env=rh.environment(devices=1), capture_output=True, text=True,
                        timeout=rh.TIMEOUT_S, check=False)


# ------------------------------------------------------------------------------------------------
# .pth files that would run code.


def _payload_file(tmp_path, kind: str, marker) -> str:
  """A weights file holding a _CreatesFile(marker): torch's zip format, or a legacy pickle."""
  path = str(tmp_path / f'{kind}.pth')
  payload = {'state_dict': {'conv_stem.weight': _CreatesFile(str(marker))}}
  if kind == 'zip':
    torch = pytest.importorskip('torch')
    torch.save(payload, path)
  else:
    with open(path, 'wb') as f:
      pickle.dump(payload, f, protocol=2)
  assert not os.path.exists(marker)
  return path


@pytest.mark.parametrize('kind', ['zip', 'legacy'])
def test_pth_that_would_run_code_is_refused_without_running_it(kind, tmp_path):
  pytest.importorskip('torch')
  marker = tmp_path / 'ran'
  path = _payload_file(tmp_path, kind, marker)
  with pytest.raises(ValueError) as error:
    converters.convert_file('timm', 'tf_efficientnet_b0', path)
  message = str(error.value)
  assert not marker.exists(), 'unpickling ran the payload'
  assert '\n' not in message and '\x1b' not in message
  assert 'refused before anything in it ran' in message and 'call io.open' in message
  assert path in message and 'weights_only=False' in message

  # The control: the same file unpickled without torch's guard runs the payload.
  if kind == 'legacy':
    with open(path, 'rb') as f:
      pickle.load(f)  # noqa: S301  (the point of the control)
  else:
    import torch  # pylint: disable=g-import-not-at-top
    torch.load(path, weights_only=False)
  assert marker.exists()


def test_convert_cli_refuses_code_in_a_pth_with_one_line_and_writes_nothing(tmp_path):
  pytest.importorskip('torch')
  marker = tmp_path / 'ran'
  path = _payload_file(tmp_path, 'zip', marker)
  output = tmp_path / 'out' / 'b0'
  result = _convert_cli('--source=timm', '--model=tf_efficientnet_b0', f'--input={path}',
                        f'--output={output}')
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert 'refused before anything in it ran' in errors[0]
  assert not marker.exists()
  assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------------------------------------------
# .safetensors cut short.


@pytest.fixture
def safetensors_file(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  path = tmp_path / 'whole.safetensors'
  save_file({'conv_stem.weight': rng.randn(32, 3, 3, 3).astype(np.float32),
             'bn1.weight': rng.randn(32).astype(np.float32)}, str(path))
  return path


@pytest.mark.parametrize('keep', ['all but 100 bytes', 'part of the header', 'the length only'])
def test_truncated_safetensors_is_one_line(keep, safetensors_file, tmp_path):
  data = safetensors_file.read_bytes()
  size = {'all but 100 bytes': len(data) - 100, 'part of the header': 40,
          'the length only': 9}[keep]
  path = tmp_path / 'cut.safetensors'
  path.write_bytes(data[:size])
  with pytest.raises(ValueError) as error:
    torch_files.load_state_dict(str(path), 'timm')
  message = str(error.value)
  assert '\n' not in message and str(path) in message
  assert 'not a readable safetensors file' in message and 'download or copy it again' in message
  assert len(torch_files.load_state_dict(str(safetensors_file), 'timm')) == 2  # The whole one.


# ------------------------------------------------------------------------------------------------
# Keras .h5 cut short, damaged, or declaring more than it holds.


def _keras_h5(path, shape=(3, 3, 3, 32), data=True):
  """A legacy Keras weights file holding one layer, stem_conv, with a kernel of `shape`."""
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = [b'stem_conv']
    group = f.create_group('stem_conv')
    group.attrs['weight_names'] = [b'stem_conv/kernel:0']
    if data:
      group.create_dataset('stem_conv/kernel:0',
                           data=np.random.RandomState(0).randn(*shape).astype(np.float32))
    else:  # Declared, never written: HDF5 returns its fill value for all of it.
      group.create_dataset('stem_conv/kernel:0', shape=shape, dtype='float32')
  return path


@pytest.mark.parametrize('fraction', [0.99, 0.5, 0.01])
def test_truncated_h5_is_one_line(fraction, tmp_path):
  data = _keras_h5(tmp_path / 'whole.h5').read_bytes()
  assert set(keras.read_weights(str(tmp_path / 'whole.h5'))) == {'stem_conv'}
  path = tmp_path / 'cut.h5'
  path.write_bytes(data[:int(len(data) * fraction)])
  with pytest.raises(ValueError) as error:
    keras.read_weights(str(path))
  message = str(error.value)
  assert '\n' not in message and str(path) in message
  assert 'is cut short' in message and 'download or copy it again' in message


def test_damaged_h5_is_one_line_wherever_the_damage_is(tmp_path):
  data = _keras_h5(tmp_path / 'whole.h5').read_bytes()
  refused = 0
  for start in range(0, len(data), 400):  # Every 400-byte stretch overwritten in turn.
    damaged = bytearray(data)
    damaged[start:start + 400] = b'\xff' * len(damaged[start:start + 400])
    path = tmp_path / f'damaged_{start}.h5'
    path.write_bytes(bytes(damaged))
    try:
      keras.read_weights(str(path))  # Damage in the array data itself goes unseen: no checksums.
    except ValueError as error:
      assert '\n' not in str(error) and str(path) in str(error)
      refused += 1
  assert refused >= 5  # The superblock, heaps and symbol tables: h5py's several error types.


def test_h5_declaring_far_more_than_it_holds_is_refused_before_reading(tmp_path):
  path = _keras_h5(tmp_path / 'bomb.h5', shape=(100_000, 100_000, 3), data=False)
  assert path.stat().st_size < 100_000
  with pytest.raises(ValueError, match=r'declares 120,000,000,000 bytes of arrays in a [\d,]+-byte '
                                       'file'):
    keras.read_weights(str(path))
  # A file of the same layout that holds what it declares is read.
  assert keras.read_weights(str(_keras_h5(tmp_path / 'real.h5')))['stem_conv']['kernel'].shape == (
      3, 3, 3, 32)


def test_keras_archive_whose_weights_inflate_far_beyond_it_is_refused_before_unpacking(tmp_path):
  path = tmp_path / 'bomb.keras'
  with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_DEFLATED) as archive:
    with archive.open('model.weights.h5', 'w') as member:
      for _ in range(64):  # 64 MiB of zeros deflate to about 64 kB.
        member.write(bytes(1 << 20))
  assert path.stat().st_size < 1 << 20
  with pytest.raises(ValueError, match=r'declares a 67,108,864-byte model.weights.h5 in a '
                                       r'[\d,]+-byte archive'):
    keras.read_weights(str(path))
  # An archive holding a real weights file is read.
  real = tmp_path / 'real.keras'
  with zipfile.ZipFile(real, 'w', compression=zipfile.ZIP_DEFLATED) as archive:
    archive.write(_keras_h5(tmp_path / 'real.h5'), 'model.weights.h5')
  assert set(keras.read_weights(str(real))) == {'stem_conv'}
