"""Bad inputs to `python -m efficientnet_jax.main`: one actionable line, exit 2, workdir untouched.

Each case runs the real command line in a subprocess against a workdir that already holds files
(or, for the checkpoint case, a whole run) and compares sizes and mtimes of everything in it
before and after. Config mistakes fail while the flags are parsed, the workdir and batch checks
before TensorFlow is imported, so most cases take a few seconds. `convert` given a file of the
wrong format and `predict` given a non-image file are covered in tests/test_convert_cli.py.
"""

import os
import subprocess

import pytest

import reliability_helpers as rh


def _run_main(workdir, *flags):
  result = subprocess.run(rh.main_args(workdir, *flags), cwd=rh.REPO, env=rh.environment(),
                          capture_output=True, text=True, timeout=rh.TIMEOUT_S, check=False)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert result.stderr.rstrip().endswith(errors[0])  # The last thing the user sees.
  return errors[0]


@pytest.fixture
def workdir(tmp_path):
  """A pre-existing workdir with a file and a folder in it."""
  path = tmp_path / 'workdir'
  (path / 'notes').mkdir(parents=True)
  (path / 'notes' / 'README').write_text('mine\n')
  return path


def _image_folder(root, bad_file: bool):
  """root/{train,test}/{a,b}/*.png, tiny real images; optionally one text file posing as PNG."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for split in ('train', 'test'):
    for label in ('a', 'b'):
      os.makedirs(root / split / label)
      for i in range(2):
        Image.new('RGB', (8, 8), (40 * i, 80, 120)).save(root / split / label / f'{i}.png')
  if bad_file:
    (root / 'train' / 'b' / 'notes.png').write_text('not an image\n')
  return root


FAST_CASES = {
    'unknown model': (['--config.model=b99'], ["Unknown model 'b99'", 'b0, b1']),
    'unknown config key': (['--config.lerning_rate=0.1'],
                           ["unknown config key 'lerning_rate'", "did you mean 'learning_rate'"]),
    'mistyped former key name': (['--config.rmsprop_dcay=0.9'],
                                 ["unknown config key 'rmsprop_dcay'",
                                  "did you mean 'rmsprop.decay'"]),
    'unknown key in the config argument': (
        [f'--config={rh.CONFIG}:lerning_rate=0.1'], ["'lerning_rate'", "'learning_rate'"]),
    'wrong value type': (['--config.batch_size=abc'],
                         ['--config.batch_size=abc', "expects an integer, got 'abc'"]),
    'batch not divisible by the devices': (['--config.batch_size=18'],
                                           ['batch_size=18', 'not divisible by the 4 devices',
                                            'multiple of 4']),
}


@pytest.mark.parametrize('case', FAST_CASES)
def test_config_mistake_is_one_line_and_touches_nothing(case, workdir):
  flags, expected = FAST_CASES[case]
  before = rh.snapshot(workdir)
  error = _run_main(workdir, *flags)
  assert all(text in error for text in expected), error
  assert rh.snapshot(workdir) == before


def test_workdir_that_cannot_be_written(tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  before = rh.snapshot(tmp_path)
  error = _run_main(a_file / 'workdir')
  assert f'--workdir {a_file / "workdir"}' in error and 'choose another --workdir' in error
  assert rh.snapshot(tmp_path) == before


@pytest.mark.parametrize('dataset', ['folder', 'cifar10'])
def test_missing_dataset_or_wrong_data_dir(dataset, workdir, tmp_path):
  data_dir = tmp_path / 'data'
  data_dir.mkdir()
  before = rh.snapshot(workdir)
  error = _run_main(workdir, f'--config.dataset={dataset}', f'--config.data_dir={data_dir}')
  if dataset == 'folder':
    assert "No 'train' split folder" in error and str(data_dir) in error
  else:
    assert "Dataset 'cifar10' not found" in error and 'tfds build cifar10' in error
  assert rh.snapshot(workdir) == before


def test_corrupt_image_in_folder_fails_by_default(workdir, tmp_path):
  data_dir = _image_folder(tmp_path / 'images', bad_file=True)
  before = rh.snapshot(workdir)
  error = _run_main(workdir, '--config.dataset=folder', f'--config.data_dir={data_dir}',
                    '--config.num_classes=2', '--config.eval_split=test')
  assert str(data_dir / 'train' / 'b' / 'notes.png') in error
  assert "bad_image_policy='skip'" in error
  assert rh.snapshot(workdir) == before


def test_corrupt_image_in_folder_is_skipped_and_counted_by_policy(tmp_path, caplog):
  from efficientnet_jax.input import sources  # pylint: disable=g-import-not-at-top
  import reliability_config  # pylint: disable=g-import-not-at-top
  config = reliability_config.get_config()
  config.update(dataset='folder', data_dir=str(_image_folder(tmp_path / 'images', True)),
                num_classes=2, eval_split='test', bad_image_policy='skip')
  info = sources.dataset_info(config)
  assert info.num_train_examples == 4 and info.num_eval_examples == 4
  assert any('Skipped 1 unreadable file(s)' in r.getMessage() and 'notes.png' in r.getMessage()
             for r in caplog.records)


@pytest.mark.slow
def test_checkpoint_of_another_variant_names_first_mismatching_parameter(reliability_reference,
                                                                          tmp_path):
  reference_dir, _ = reliability_reference
  workdir = rh.copy_run(reference_dir, tmp_path / 'run')
  before = rh.snapshot(workdir)
  error = _run_main(workdir, '--config.width=0.5')
  assert 'does not fit this model' in error and "['params']" in error
  assert 'in the checkpoint but' in error and '--workdir' in error
  assert rh.snapshot(workdir) == before
