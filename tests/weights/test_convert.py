"""Converted timm and efficientnet_pytorch weights give the reference model's logits.

Reference models are randomly initialised (no downloads) with randomised BN statistics; both run
in float32, eval mode, on the same random input at a small resolution.
"""

import gc

import pytest

from convert_helpers import (TOLERANCE, apply_converted, random_images, randomize_torch_batchnorm,
                             relative_error, torch_logits, torch_state_dict)
from efficientnet_jax.weights.converters import (
    efficientnet_pytorch as efficientnet_pytorch_converter)
from efficientnet_jax.weights.converters import timm as timm_converter

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')

_SLOW_TF = ['b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'b8', 'lite1', 'lite2', 'lite3', 'lite4']
_SLOW_TIMM_TRAINED = ['b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'b8', 'lite0', 'lite1', 'lite2',
                      'lite3', 'lite4']


def check_timm(timm_name: str, size: int = 64) -> float:
  torch.manual_seed(0)
  reference = timm.create_model(timm_name, pretrained=False)
  randomize_torch_batchnorm(reference)
  images = random_images(size)
  expected = torch_logits(reference, images)
  converted = timm_converter.convert_state_dict(
      torch_state_dict(reference), timm_converter.resolve_target(timm_name))
  del reference
  error = relative_error(apply_converted(converted, images), expected)
  gc.collect()
  print(f'timm {timm_name}: relative error {error:.2e}')  # Shown with pytest -s.
  assert error < TOLERANCE, f'{timm_name}: relative error {error:.2e}'
  return error


@pytest.mark.parametrize('timm_name', ['tf_efficientnet_b0', 'tf_efficientnet_b1',
                                       'tf_efficientnet_lite0'])
def test_timm_tf_models_match(timm_name):
  check_timm(timm_name)


def test_timm_trained_model_matches_with_symmetric_padding():
  check_timm('efficientnet_b0')
  target = timm_converter.resolve_target('efficientnet_b0')
  assert (target.model, target.padding, target.bn_epsilon) == ('b0', 'symmetric', 1e-5)


def test_wrong_padding_is_caught_by_the_comparison():
  """The check is sensitive enough: timm-trained weights run with TF-SAME padding miss by far."""
  from efficientnet_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  reference = timm.create_model('efficientnet_b0', pretrained=False)
  randomize_torch_batchnorm(reference)
  images = random_images(64)
  converted = timm_converter.convert_state_dict(
      torch_state_dict(reference), timm_converter.resolve_target('efficientnet_b0'))
  module = pretrained.build_module(dict(converted.meta, padding='same'))
  error = relative_error(module.apply(converted.variables, images, train=False),
                         torch_logits(reference, images))
  assert error > 10 * TOLERANCE  # About 9e-3 here.


def test_timm_plain_name_means_tf_weights():
  target = timm_converter.resolve_target('b0')
  assert (target.source_model, target.padding, target.bn_epsilon) == (
      'tf_efficientnet_b0', 'same', 1e-3)


@pytest.mark.slow
@pytest.mark.parametrize('variant', _SLOW_TF)
def test_timm_tf_variants_match(variant):
  check_timm(f'tf_efficientnet_{variant}', 64)


@pytest.mark.slow
def test_timm_tf_l2_matches():
  check_timm('tf_efficientnet_l2', 32)


@pytest.mark.slow
@pytest.mark.parametrize('variant', _SLOW_TIMM_TRAINED)
def test_timm_trained_variants_match(variant):
  check_timm(f'efficientnet_{variant}', 64)


def check_efficientnet_pytorch(variant: str, size: int = 64) -> float:
  from efficientnet_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  # Its TF-'SAME' padding is static, computed for image_size: build it for the test's size.
  reference = EfficientNet.from_name(f'efficientnet-{variant}', image_size=size)
  randomize_torch_batchnorm(reference)
  images = random_images(size)
  expected = torch_logits(reference, images)
  converted = efficientnet_pytorch_converter.convert_state_dict(
      torch_state_dict(reference), efficientnet_pytorch_converter.resolve_target(variant))
  del reference
  error = relative_error(apply_converted(converted, images), expected)
  gc.collect()
  print(f'efficientnet_pytorch efficientnet-{variant}: relative error {error:.2e}')
  assert error < TOLERANCE, f'efficientnet-{variant}: relative error {error:.2e}'
  return error


@pytest.mark.parametrize('variant', ['b0', 'b1'])
def test_efficientnet_pytorch_models_match(variant):
  pytest.importorskip('efficientnet_pytorch')
  check_efficientnet_pytorch(variant)


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'b8'])
def test_efficientnet_pytorch_variants_match(variant):
  pytest.importorskip('efficientnet_pytorch')
  check_efficientnet_pytorch(variant)


@pytest.mark.slow
def test_efficientnet_pytorch_l2_matches():
  pytest.importorskip('efficientnet_pytorch')
  check_efficientnet_pytorch('l2', 32)


def test_efficientnet_pytorch_lite_naming_without_se():
  """A Lite file in efficientnet_pytorch naming: its blocks have no _se_* tensors."""
  pytest.importorskip('efficientnet_pytorch')
  from efficientnet_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
  from efficientnet_pytorch import utils  # pylint: disable=g-import-not-at-top
  # TF's Lite0 blocks are B0's without SE (stem 32, head 1280 fixed; at width 1.0 no change).
  blocks, params = utils.efficientnet(1.0, 1.0, image_size=64, dropout_rate=0.2)
  blocks = [b._replace(se_ratio=None) for b in blocks]
  torch.manual_seed(0)
  reference = EfficientNet(blocks, params)
  # Lite uses ReLU6 everywhere efficientnet_pytorch uses swish.
  reference._swish = torch.nn.ReLU6()  # pylint: disable=protected-access
  for block in reference._blocks:  # pylint: disable=protected-access
    block._swish = torch.nn.ReLU6()  # pylint: disable=protected-access
  randomize_torch_batchnorm(reference)
  images = random_images(64)
  expected = torch_logits(reference, images)
  state = torch_state_dict(reference)
  assert not any('_se_' in name for name in state)
  converted = efficientnet_pytorch_converter.convert_state_dict(
      state, efficientnet_pytorch_converter.resolve_target('lite0'))
  error = relative_error(apply_converted(converted, images), expected)
  print(f'efficientnet_pytorch lite0 naming: relative error {error:.2e}')
  assert error < TOLERANCE
  assert converted.meta['preprocessing']['mean'] == [127.0] * 3
