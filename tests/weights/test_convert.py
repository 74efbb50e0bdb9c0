"""Converted timm and efficientnet_pytorch weights: the reference's logits, or its structure.

Logits (numerically, within `TOLERANCE`): reference models randomly initialised (no downloads)
with randomised BN statistics, float32, eval mode, one random input at 64 px, for a
representative of each source and family:
* timm TF-ported (TF-'SAME' padding, BN epsilon 1e-3): B0; B2, whose widths and depths are both
  rounded; Lite0 (ReLU6, no SE, fixed stem and head);
* timm PyTorch-trained (symmetric padding, BN epsilon 1e-5): B0, and the same weights run with
  TF-'SAME' padding must miss (the comparison is sensitive enough);
* efficientnet_pytorch: B0, and a Lite0 in its naming (no `_se_*` tensors).
These run every per-layer rule of each converter (names, BN leaves, every kernel transposition,
SE 1×1 convs as Dense), its shape check and metadata, and each family's arithmetic (padding,
epsilon, activation).

Structure (`test_variant_structure`, `structure_check.py`), every other variant: timm TF-ported
B1, B3–B8, L2, Lite1–4; timm PyTorch-trained B1–B8, L2, Lite0–4; efficientnet_pytorch B1–B8, L2.
Between variants only the layout differs (blocks per stage, widths, Lite's unscaled stages), and
the check pins it exactly: the converter's mapping (`map_state_dict`) must hold exactly the
variables our model's `init` declares, names and shapes, each the tensor of the reference layer
in the same place of the network, in our layout, every reference tensor used once; the variant's
target (model, padding, BN epsilon) is checked too. The rest of a conversion (`common.finish`:
the same shape check, the metadata) is variant-independent and runs in full above. The reference
is the library's own model built on torch's 'meta' device: its names, shapes and layer order,
without memory or values (those are fabricated), so B8 and L2 cost seconds instead of building
and compiling a forward pass of up to 480M parameters. L2 is the same blocks at width 4.3 and
depth 5.3 in all three libraries and here, nothing of its own: it was run at 32 px only for its
size. `test_structure_check_catches` shows the check failing on the mapping errors it is for;
`test_reference_layer_order_is_forward_order` that the reference's layer order is its forward's.
"""

import gc

import pytest

import structure_check
from convert_helpers import (TOLERANCE, apply_converted, logits, random_images,
                             randomize_torch_batchnorm, relative_error, torch_logits,
                             torch_state_dict)
from efficientnet_jax.weights.converters import (
    efficientnet_pytorch as efficientnet_pytorch_converter)
from efficientnet_jax.models import scaling
from efficientnet_jax.weights.converters import timm as timm_converter

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')

# The models the logits comparisons check (timm names; efficientnet_pytorch's 'efficientnet-b0').
_LOGITS_CHECKED = {'tf_efficientnet_b0', 'tf_efficientnet_b2', 'tf_efficientnet_lite0',
                   'efficientnet_b0', 'efficientnet-b0'}
# Every other (library, model) is checked structurally. Ordered by variant: a variant's cases
# share one trace of our model (`structure_check.our_layers`), and pytest-xdist hands
# consecutive tests to the same worker. efficientnet_pytorch has B0–B8 and L2 (a Lite file in its
# naming is B0's without SE: `test_efficientnet_pytorch_lite_naming_without_se`).
_STRUCTURE_CASES = [
    (library, name)
    for variant in scaling.MODEL_NAMES  # b0 … b8, l2, lite0 … lite4
    for library, name in (('timm', f'tf_efficientnet_{variant}'),
                          ('timm', f'efficientnet_{variant}'),
                          ('efficientnet_pytorch', f'efficientnet-{variant}'))
    if name not in _LOGITS_CHECKED and not (library == 'efficientnet_pytorch' and 'lite' in name)]


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


def meta_timm_model(timm_name: str):
  """timm's model on the 'meta' device: its structure, without memory or values."""
  with torch.device('meta'):
    return timm.create_model(timm_name, pretrained=False)


def meta_efficientnet_pytorch_model(variant: str):
  from efficientnet_pytorch import EfficientNet  # pylint: disable=g-import-not-at-top
  with torch.device('meta'):
    return EfficientNet.from_name(f'efficientnet-{variant}', image_size=64)


def timm_mapping(timm_name: str):
  """(the converter's mapping, the reference) for timm's `timm_name` built on the meta device."""
  model = meta_timm_model(timm_name)
  reference = structure_check.torch_reference(model)
  return timm_converter.map_state_dict(structure_check.state_dict_of(model, reference)), reference


@pytest.mark.parametrize('timm_name', ['tf_efficientnet_b0', 'tf_efficientnet_b2',
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
  error = relative_error(logits(module, converted.variables, images),
                         torch_logits(reference, images))
  assert error > 10 * TOLERANCE  # About 9e-3 here.


def test_timm_plain_name_means_tf_weights():
  target = timm_converter.resolve_target('b0')
  assert (target.source_model, target.padding, target.bn_epsilon) == (
      'tf_efficientnet_b0', 'same', 1e-3)


@pytest.mark.parametrize('library,name', _STRUCTURE_CASES, ids=lambda case: case)
def test_variant_structure(library, name):
  """timm's TF-ported (tf_efficientnet_*) and PyTorch-trained (efficientnet_*) models and
  efficientnet_pytorch's (efficientnet-*): the mapping, and the family's padding and epsilon."""
  if library == 'timm':
    converter, model = timm_converter, meta_timm_model(name)
    padding, bn_epsilon = ('same', 1e-3) if name.startswith('tf_') else ('symmetric', 1e-5)
  else:
    pytest.importorskip('efficientnet_pytorch')
    converter = efficientnet_pytorch_converter
    model = meta_efficientnet_pytorch_model(name[len('efficientnet-'):])
    padding, bn_epsilon = 'same', 1e-3
  target = converter.resolve_target(name)
  assert (target.source_model, target.padding, target.bn_epsilon) == (name, padding, bn_epsilon)
  reference = structure_check.torch_reference(model)
  mapped = converter.map_state_dict(structure_check.state_dict_of(model, reference))
  structure_check.check_mapping(mapped, target.model, reference)


def _swap_blocks(mapped):
  # B0's blocks 12 and 13: the same stage, the same shapes.
  for path in [p for p in mapped if p[1] == 'blocks_12']:
    other = (path[0], 'blocks_13', *path[2:])
    mapped[path], mapped[other] = mapped[other], mapped[path]


def _mean_as_variance(mapped):
  mean, var = ('batch_stats', 'blocks_5', 'depthwise_bn', 'mean'), (
      'batch_stats', 'blocks_5', 'depthwise_bn', 'var')
  mapped[mean], mapped[var] = mapped[var], mapped[mean]


def _kernel_height_width_swapped(mapped):
  path = ('params', 'blocks_3', 'depthwise_conv', 'kernel')
  name, array = mapped[path]
  mapped[path] = (name, array.transpose(1, 0, 2, 3))


def _tensor_used_twice(mapped):
  mapped[('params', 'blocks_13', 'project_bn', 'bias')] = mapped[
      ('params', 'blocks_12', 'project_bn', 'bias')]


def _block_dropped(mapped):
  for path in [p for p in mapped if p[1] == 'blocks_15']:
    del mapped[path]


@pytest.fixture(scope='module')
def tf_b0_mapping():
  return timm_mapping('tf_efficientnet_b0')


def test_structure_check_passes_the_converters_mapping(tf_b0_mapping):
  """The converter's own TF-ported B0 mapping, the baseline of `test_structure_check_catches`."""
  mapped, reference = tf_b0_mapping
  structure_check.check_mapping(mapped, 'b0', reference)


@pytest.mark.parametrize('mutation', [_swap_blocks, _mean_as_variance,
                                      _kernel_height_width_swapped, _tensor_used_twice,
                                      _block_dropped],
                         ids=lambda f: f.__name__.lstrip('_'))
def test_structure_check_catches(mutation, tf_b0_mapping):
  """Each mapping error a variant could have (shapes all as declared but one) fails the check."""
  mapped, reference = dict(tf_b0_mapping[0]), tf_b0_mapping[1]
  mutation(mapped)
  with pytest.raises(AssertionError):
    structure_check.check_mapping(mapped, 'b0', reference)


@pytest.mark.parametrize('source,name', [('timm', 'tf_efficientnet_b0'),
                                         ('timm', 'efficientnet_b0'),
                                         ('timm', 'tf_efficientnet_lite0'),
                                         ('efficientnet_pytorch', 'b0')])
def test_reference_layer_order_is_forward_order(source, name):
  """The structural check pairs a torch model's layers in registration order with ours in call
  order: for these networks that is the order their forward pass runs them. One block builder
  serves all variants of a library (B0's and Lite's here), whose blocks are an `nn.Sequential`
  or `nn.ModuleList`, run in order however many there are."""
  if source == 'efficientnet_pytorch':
    pytest.importorskip('efficientnet_pytorch')
    model = meta_efficientnet_pytorch_model(name)
  else:
    model = meta_timm_model(name)
  registered = [layer for layer, _ in structure_check.torch_reference(model).layers]
  assert structure_check.torch_layers_in_forward_order(model) == registered


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


def test_efficientnet_pytorch_b0_matches():
  pytest.importorskip('efficientnet_pytorch')
  check_efficientnet_pytorch('b0')


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
