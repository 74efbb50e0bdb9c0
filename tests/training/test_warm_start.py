"""A converted timm checkpoint starts a fine-tune through config.init_from: its backbone, a fresh head.

The fine-tune itself, with real ImageNet weights and the README's command, trains and evaluates in
test_finetune_recipe.py.
"""

import importlib.util
import os

import flax
import numpy as np
import pytest

from efficientnet_jax.training import setup
from efficientnet_jax.training import warm_start
from efficientnet_jax.weights import pretrained

torch = pytest.importorskip('torch')
timm = pytest.importorskip('timm')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _finetune_config(**overrides):
  path = os.path.join(ROOT, 'configs', 'finetune.py')
  module_spec = importlib.util.spec_from_file_location('finetune', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(None)
  config.lock()  # As config_flags does: a mistyped key raises.
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def test_init_from_converted_weights_takes_the_backbone_and_a_fresh_head(tmp_path):
  torch.manual_seed(0)
  reference = timm.create_model('tf_efficientnet_lite0', pretrained=False)
  weights = tmp_path / 'lite0.pth'
  torch.save(reference.state_dict(), weights)
  converted = str(tmp_path / 'converted')
  from efficientnet_jax.weights import converters  # pylint: disable=g-import-not-at-top
  result = converters.convert_file('timm', 'lite0', str(weights))
  pretrained.save_converted(converted, 'lite0', result.variables, result.meta)

  config = _finetune_config(model='lite0', init_from=converted, image_size=32, batch_size=16,
                            normalization='inception')
  s = setup.from_config(config)
  source = warm_start.read_variables(converted)
  started = warm_start.init_from(s.state, converted)
  # Every backbone variable (BN moving statistics included) is the converted one; the head is
  # fresh, shaped for the digits' 10 classes.
  for collection in ('params', 'batch_stats'):
    ours = flax.traverse_util.flatten_dict(getattr(started, collection))
    theirs = flax.traverse_util.flatten_dict(source[collection])
    backbone = [path for path in ours if path[0] != 'classifier']
    assert backbone and set(backbone) <= set(theirs)
    for path in backbone:
      np.testing.assert_array_equal(np.asarray(ours[path]), np.asarray(theirs[path]), path)
  assert started.params['classifier']['kernel'].shape == (1280, 10)
  assert source['params']['classifier']['kernel'].shape == (1280, 1000)
