"""The convert / predict command lines, the converted-directory format and the error paths."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from convert_helpers import (TOLERANCE, logits, random_images, randomize_torch_batchnorm,
                             relative_error, torch_logits)
from efficientnet_jax.weights import converters
from efficientnet_jax.weights import pretrained

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASS_FILE = os.path.join(REPO, 'efficientnet_jax', 'data', 'imagenet_classes.txt')


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             CUDA_VISIBLE_DEVICES='')
  env.pop('EFFICIENTNET_JAX_TRACEBACK', None)
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
  return [line for line in result.stderr.splitlines() if line.startswith('error:')]


def timm_file(directory, name: str, seed: int = 0, file_name: str | None = None):
  """Saves a randomised timm model's state dict (as NAME.pth by default); returns (path, model)."""
  torch.manual_seed(seed)
  model = timm.create_model(name, pretrained=False)
  randomize_torch_batchnorm(model, seed)
  path = str(directory / (file_name or f'{name}.pth'))
  torch.save(model.state_dict(), path)
  return path, model


@pytest.fixture(scope='module')
def tf_b0(tmp_path_factory):
  return timm_file(tmp_path_factory.mktemp('timm'), 'tf_efficientnet_b0')


@pytest.fixture(scope='module')
def converted_dir(tf_b0, tmp_path_factory):
  """The convert CLI's output for tf_efficientnet_b0, and its stdout."""
  output = tmp_path_factory.mktemp('converted') / 'b0'
  # A recorded resolution of 64 px (an override flag) keeps predict's compile and run small.
  result = run_module('efficientnet_jax.convert', '--source=timm',
                      '--model=tf_efficientnet_b0', f'--input={tf_b0[0]}', f'--output={output}',
                      '--resolution=64')
  assert result.returncode == 0, result.stderr
  return output, result.stdout


def test_convert_cli_prints_dir_and_writes_meta(converted_dir):
  output, stdout = converted_dir
  assert stdout.strip().splitlines()[-1] == str(output)
  meta = json.loads((output / 'meta.json').read_text())
  assert meta['model'] == 'b0' and meta['source'] == 'timm'
  assert meta['num_classes'] == 1000 and meta['padding'] == 'same'
  assert meta['format_version'] == pretrained.FORMAT_VERSION
  assert set(meta['preprocessing']) == {'mean', 'std', 'crop_padding', 'interpolation',
                                        'resolution'}
  assert meta['preprocessing']['resolution'] == 64  # --resolution; the default is 224.
  assert meta['preprocessing']['crop_padding'] == 32
  # No staging directory is left beside the output.
  assert sorted(os.listdir(output.parent)) == ['b0']


def test_load_pretrained_round_trip_gives_reference_logits(converted_dir, tf_b0):
  output, _ = converted_dir
  module, variables = pretrained.load_pretrained(str(output), model='b0')
  images = random_images(64)
  error = relative_error(logits(module, variables, images), torch_logits(tf_b0[1], images))
  assert error < TOLERANCE
  meta, raw = pretrained.read_converted(str(output))
  assert meta['model'] == 'b0'
  assert isinstance(raw['params']['stem_conv']['kernel'], np.ndarray)
  assert set(raw) == {'params', 'batch_stats'}


def test_load_pretrained_converts_foreign_file_in_memory(tf_b0):
  module, variables = pretrained.load_pretrained(tf_b0[0], model='tf_efficientnet_b0',
                                                 source='timm')
  assert module.padding == 'same' and module.num_classes == 1000
  images = random_images(64)
  assert relative_error(logits(module, variables, images),
                        torch_logits(tf_b0[1], images)) < TOLERANCE


def test_predict_json_on_png(converted_dir, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  output, _ = converted_dir
  image = tmp_path / 'noise.png'
  Image.fromarray(np.random.RandomState(0).randint(0, 256, (90, 120, 3), np.uint8)).save(image)
  result = run_module('efficientnet_jax.predict', '--model=b0', f'--weights={output}', '--json',
                      str(image))
  assert result.returncode == 0, result.stderr
  predictions = json.loads(result.stdout.strip().splitlines()[-1])
  with open(CLASS_FILE) as f:
    names = f.read().splitlines()
  assert [p['image'] for p in predictions] == [str(image)]
  top5 = predictions[0]['top5']
  assert len(top5) == 5
  probs = [entry['prob'] for entry in top5]
  assert probs == sorted(probs, reverse=True) and all(p >= 0 for p in probs)
  assert sum(probs) <= 1 + 1e-6
  for entry in top5:
    assert entry['name'] == names[entry['class_id']]


def test_predict_non_image_names_file(converted_dir):
  output, _ = converted_dir
  not_image = os.path.join(REPO, 'requirements.txt')
  result = run_module('efficientnet_jax.predict', '--model=b0', f'--weights={output}',
                      not_image)
  assert result.returncode != 0
  errors = error_lines(result)
  assert len(errors) == 1 and not_image in errors[0], result.stderr


def test_predict_model_must_match_meta(converted_dir):
  from efficientnet_jax import predict  # pylint: disable=g-import-not-at-top
  output, _ = converted_dir
  with pytest.raises(ValueError, match="for model 'b0', not 'b1'"):
    predict.predict_files('b1', str(output), [CLASS_FILE])


def test_convert_cli_b1_weights_into_b0_fails_and_writes_nothing(tmp_path):
  # A file name that does not say which model it holds: the shape check finds the mismatch.
  path, _ = timm_file(tmp_path, 'tf_efficientnet_b1', file_name='weights.pth')
  output = tmp_path / 'out' / 'b0'
  result = run_module('efficientnet_jax.convert', '--source=timm', '--model=tf_efficientnet_b0',
                      f'--input={path}', f'--output={output}')
  assert result.returncode != 0
  errors = error_lines(result)
  assert len(errors) == 1, result.stderr
  assert 'blocks_1/depthwise_conv/kernel' in errors[0] and 'blocks.0.1.conv_dw.weight' in errors[0]
  assert '(3, 3, 1, 16)' in errors[0] and '(3, 3, 1, 96)' in errors[0]
  assert not output.exists()
  assert not (tmp_path / 'out').exists() or not os.listdir(tmp_path / 'out')


def test_convert_cli_unknown_source_lists_supported(tmp_path):
  result = run_module('efficientnet_jax.convert', '--source=onnx', '--model=b0',
                      f'--input={CLASS_FILE}', f'--output={tmp_path / "out"}')
  assert result.returncode != 0
  errors = error_lines(result)
  assert len(errors) == 1 and 'timm, efficientnet_pytorch, keras' in errors[0]
  assert not (tmp_path / 'out').exists()


def test_convert_cli_wrong_format_file(tmp_path):
  text_file = tmp_path / 'notes.pth'
  text_file.write_text('not a state dict\n')
  result = run_module('efficientnet_jax.convert', '--source=timm', '--model=b0',
                      f'--input={text_file}', f'--output={tmp_path / "out"}')
  assert result.returncode != 0
  errors = error_lines(result)
  assert len(errors) == 1 and str(text_file) in errors[0]
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('source', converters.SOURCES)
def test_wrong_format_file_is_one_line_error(source, tmp_path):
  text_file = tmp_path / 'weights.bin'
  text_file.write_text('hello\n')
  with pytest.raises(ValueError) as error:
    converters.convert_file(source, 'b0', str(text_file))
  assert '\n' not in str(error.value) and str(text_file) in str(error.value)


def test_efficientnet_pytorch_b1_into_b0_names_layer_and_shapes():
  pytest.importorskip('efficientnet_pytorch')
  from efficientnet_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from efficientnet_jax.weights.converters import efficientnet_pytorch as converter
  state = {k: v.numpy() for k, v in EfficientNet.from_name('efficientnet-b1').state_dict().items()}
  with pytest.raises(ValueError) as error:
    converter.convert_state_dict(state, converter.resolve_target('b0'))
  message = str(error.value)
  assert '\n' not in message
  assert "blocks_1/depthwise_conv/kernel" in message and '_blocks.1._depthwise_conv' in message
  assert '(3, 3, 1, 16)' in message and '(3, 3, 1, 96)' in message


def test_state_dict_of_other_source_is_named(tf_b0):
  with pytest.raises(ValueError, match='use --source=timm'):
    converters.convert_file('efficientnet_pytorch', 'b0', tf_b0[0])


def test_unknown_source_lists_supported(tf_b0):
  with pytest.raises(ValueError, match='timm, efficientnet_pytorch, keras'):
    pretrained.load_pretrained(tf_b0[0], model='b0', source='caffe')
  with pytest.raises(ValueError, match='timm, efficientnet_pytorch, keras'):
    converters.get_converter('caffe')


def test_missing_torch_says_what_to_install(tf_b0, monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError.
  with pytest.raises(ImportError, match='pip install torch'):
    converters.convert_file('timm', 'tf_efficientnet_b0', tf_b0[0])


def test_safetensors_input(tmp_path):
  safetensors_torch = pytest.importorskip('safetensors.torch')
  model = timm.create_model('efficientnet_b0', pretrained=False)
  path = str(tmp_path / 'model.safetensors')
  safetensors_torch.save_file(model.state_dict(), path)
  converted = converters.convert_file('timm', 'efficientnet_b0', path,
                                      preprocessing={'resolution': 256, 'crop_padding': 0})
  assert converted.meta['padding'] == 'symmetric' and converted.meta['bn_epsilon'] == 1e-5
  assert converted.meta['preprocessing']['resolution'] == 256


def test_save_converted_keeps_non_empty_dir_unless_overwrite(tmp_path):
  variables = {'params': {'stem_conv': {'kernel': np.ones((3, 3, 3, 32), np.float32)}},
               'batch_stats': {'stem_bn': {'mean': np.zeros((32,), np.float32)}}}
  meta = {'model': 'b0', 'source': 'timm', 'num_classes': 1000, 'padding': 'same',
          'preprocessing': {}}
  output = tmp_path / 'out'
  output.mkdir()
  (output / 'keep.txt').write_text('x')
  with pytest.raises(ValueError, match='--overwrite'):
    pretrained.save_converted(str(output), 'b0', variables, meta)
  assert (output / 'keep.txt').exists()
  pretrained.save_converted(str(output), 'b0', variables, meta, overwrite=True)
  assert not (output / 'keep.txt').exists()
  _, restored = pretrained.read_converted(str(output))
  np.testing.assert_array_equal(restored['params']['stem_conv']['kernel'], 1.0)
  assert sorted(os.listdir(tmp_path)) == ['out']


def test_read_converted_rejects_plain_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match='meta.json'):
    pretrained.read_converted(str(tmp_path))


def test_class_file_matches_timm_synsets():
  info = os.path.join(os.path.dirname(timm.__file__), 'data', '_info')
  with open(os.path.join(info, 'imagenet_synsets.txt')) as f:
    synsets = f.read().split()
  with open(os.path.join(info, 'imagenet_synset_to_lemma.txt')) as f:
    lemmas = dict(line.rstrip('\n').split('\t', 1) for line in f if line.strip())
  with open(CLASS_FILE) as f:
    names = f.read().splitlines()
  assert names == [lemmas[s] for s in synsets] and len(names) == 1000


def test_convert_cli_refuses_a_model_of_the_other_family_named_by_the_file(tmp_path):
  # timm's own release name: PyTorch-trained weights, which `--model=b1` (TF-ported) would
  # convert with the wrong padding and BN epsilon.
  path, _ = timm_file(tmp_path, 'efficientnet_b1', file_name='efficientnet_b1_ra-533bc792.pth')
  output = tmp_path / 'out'
  result = run_module('efficientnet_jax.convert', '--source=timm', '--model=b1',
                      f'--input={path}', f'--output={output}')
  assert result.returncode == 2, result.stderr
  errors = error_lines(result)
  assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
  assert 'efficientnet_b1' in errors[0] and '--model=efficientnet_b1.' in errors[0]
  assert 'file name' in errors[0] and not output.exists()


def test_declared_model_comes_from_arch_config_json_or_file_name(tmp_path):
  timm_converter = converters.get_converter('timm')
  assert timm_converter.declared_model('/w/tf_efficientnet_b0_aa-827b6e33.pth') == (
      'tf_efficientnet_b0', 'its file name')
  assert timm_converter.declared_model('/w/efficientnet_lite0.ra_in1k.safetensors')[0] == (
      'efficientnet_lite0')
  assert timm_converter.declared_model('/w/model.safetensors') is None
  assert timm_converter.declared_model('/w/model.pth', arch='efficientnet_b2')[0] == (
      'efficientnet_b2')
  (tmp_path / 'config.json').write_text(json.dumps({'architecture': 'efficientnet_b3'}))
  assert timm_converter.declared_model(str(tmp_path / 'model.safetensors')) == (
      'efficientnet_b3', str(tmp_path / 'config.json'))
  # Consistent names pass; a plain variant name agrees with a tf_ file.
  target = timm_converter.resolve_target('b0')
  timm_converter.check_declared_model('/w/tf_efficientnet_b0.pth', None, 'b0', target)
  with pytest.raises(ValueError, match='pass --model=efficientnet_b2'):
    timm_converter.check_declared_model('/w/model.pth', 'efficientnet_b2', 'tf_efficientnet_b2',
                                        timm_converter.resolve_target('tf_efficientnet_b2'))


def test_training_checkpoint_arch_is_read_with_the_state_dict(tmp_path):
  model = timm.create_model('efficientnet_b0', pretrained=False)
  path = tmp_path / 'checkpoint-10.pth.tar'
  torch.save({'epoch': 10, 'arch': 'efficientnet_b0', 'state_dict': model.state_dict()}, path)
  with pytest.raises(ValueError, match="from its 'arch' entry.*pass --model=efficientnet_b0"):
    converters.convert_file('timm', 'tf_efficientnet_b0', str(path))
  assert converters.convert_file('timm', 'efficientnet_b0', str(path)).meta['padding'] == (
      'symmetric')
