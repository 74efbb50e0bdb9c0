"""A converted timm checkpoint fine-tunes on the digits through config.init_from."""

import importlib.util
import json
import os

import numpy as np
import pytest

from efficientnet_jax.training import loop
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


@pytest.mark.slow
def test_converted_weights_finetune_on_digits(tmp_path):
  torch.manual_seed(0)
  reference = timm.create_model('tf_efficientnet_lite0', pretrained=False)
  weights = tmp_path / 'lite0.pth'
  torch.save(reference.state_dict(), weights)
  converted = str(tmp_path / 'converted')
  from efficientnet_jax.weights import converters  # pylint: disable=g-import-not-at-top
  result = converters.convert_file('timm', 'lite0', str(weights))
  pretrained.save_converted(converted, 'lite0', result.variables, result.meta)

  config = _finetune_config(model='lite0', init_from=converted, image_size=32, batch_size=16,
                            total_steps=20, log_every_steps=5, eval_every_steps=20,
                            checkpoint_every_steps=20, normalization='inception',
                            learning_rate=0.05)
  workdir = str(tmp_path / 'run')
  s = setup.from_config(config)
  source = warm_start.read_variables(converted)
  # The backbone comes from the converted weights, the head is fresh with the new shape.
  started = warm_start.init_from(s.state, converted)
  np.testing.assert_array_equal(np.asarray(started.params['stem_conv']['kernel']),
                                np.asarray(source['params']['stem_conv']['kernel']))
  assert started.params['classifier']['kernel'].shape == (1280, 10)
  assert source['params']['classifier']['kernel'].shape == (1280, 1000)

  loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    losses = [json.loads(l)['train_loss'] for l in f if 'train_loss' in l]
  assert len(losses) == 4
  assert losses[-1] < losses[0], losses
