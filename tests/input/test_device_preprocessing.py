"""Augmentation on the device: the host's uint8 images, the switch, the step's preprocessing.

With `augment.on_device` the host pipeline yields the uint8 image its own augmentation would have
received, and the train step's preprocessing (jitted alone here: no train step is compiled)
normalises it with the host's float32 arithmetic, so the model gets the host path's batch.
"""

import jax
import numpy as np
import pytest

from efficientnet_jax import config as config_lib
from efficientnet_jax.input import device_augment
from efficientnet_jax.input import device_preprocessing
from efficientnet_jax.input import normalization
from efficientnet_jax.input import pipeline


def _config(on_device, policy='none', **overrides):
  """The builder's digits config at 32 px, flipped, with `overrides` set after."""
  config = config_lib.get_config('b0', dataset='digits', image_size=32, normalization='imagenet',
                                 interpolation='bilinear', shuffle_buffer=64,
                                 bad_image_policy='skip',
                                 **{'augment.flip': True, 'augment.policy': policy,
                                    'augment.on_device': on_device})
  config.update(overrides)
  return config


def _batch(config, start_step=3):
  return next(pipeline.train_iterator(config, global_batch_size=16, start_step=start_step))


def test_host_yields_the_uint8_image_its_augmentation_would_receive():
  # Normalisation 'none' shows the host path's float image; bilinear makes it non-integral.
  host = _batch(_config(False, normalization='none'))
  on_device = _batch(_config(True, normalization='none'))
  assert on_device['image'].dtype == np.uint8 and on_device['image'].shape == (16, 32, 32, 3)
  np.testing.assert_array_equal(on_device['label'], host['label'])
  # The same crop, resize and flip, clipped and truncated as before the host's augmentation.
  np.testing.assert_array_equal(on_device['image'],
                                np.clip(host['image'], 0, 255).astype(np.uint8))


def test_policy_none_on_device_gives_the_model_the_host_batch_bit_for_bit():
  # Nearest resizing keeps the pixels integral, so the host path has nothing to round either.
  host = _batch(_config(False, interpolation='nearest'))
  config = _config(True, interpolation='nearest')
  on_device = _batch(config)
  assert host['image'].dtype == np.float32 and on_device['image'].dtype == np.uint8
  model_input = jax.jit(device_preprocessing.train_images_fn(config))(on_device['image'], 3)
  assert model_input.dtype == np.float32
  np.testing.assert_array_equal(np.asarray(model_input), host['image'])


def test_on_device_is_auto_by_default(monkeypatch):
  assert not device_preprocessing.augment_on_device(_config(None, policy='autoaugment'))
  assert device_preprocessing.augment_on_device(_config(True))
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  for policy, expected in (('autoaugment', True), ('randaugment', True), ('none', False)):
    config = _config(None)
    config.augment.policy = policy
    assert device_preprocessing.augment_on_device(config) is expected, policy
  assert not device_preprocessing.augment_on_device(_config(False, policy='autoaugment'))


def test_each_position_has_its_key_from_seed_step_and_index():
  keys = device_preprocessing.example_keys(7, 5, 4)
  base = jax.random.key(7 + device_preprocessing.AUGMENT_KEY_SALT)
  for index in range(4):
    expected = jax.random.fold_in(jax.random.fold_in(base, 5), index)
    np.testing.assert_array_equal(jax.random.key_data(keys[index]),
                                  jax.random.key_data(expected))
  other_step = device_preprocessing.example_keys(7, 6, 4)
  assert not np.array_equal(jax.random.key_data(keys), jax.random.key_data(other_step))


@pytest.mark.parametrize('policy, function, kwargs', [
    ('randaugment', 'randaugment', {'num_layers': 3, 'magnitude': 17}),
    ('autoaugment', 'autoaugment', {}),
])
def test_the_configured_policy_is_applied(monkeypatch, policy, function, kwargs):
  calls = []

  def spy(images, keys, **called_with):
    calls.append((images.shape, keys.shape, called_with))
    return images

  monkeypatch.setattr(device_augment, function, spy)
  config = _config(True)
  config.augment.update(policy=policy, randaugment_layers=3, randaugment_magnitude=17)
  images = np.zeros((4, 8, 8, 3), np.uint8)
  jax.eval_shape(device_preprocessing.train_images_fn(config), images, 0)
  assert calls == [((4, 8, 8, 3), (4,), kwargs)]


@pytest.mark.parametrize('name', sorted(normalization.NORMALIZATIONS))
def test_normalisation_equals_the_hosts_for_every_level(name):
  from efficientnet_jax.input import preprocessing  # pylint: disable=g-import-not-at-top
  mean, std = normalization.NORMALIZATIONS[name]
  levels = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None, None], (256, 1, 1, 3))
  np.testing.assert_array_equal(np.asarray(device_preprocessing.normalize(levels, mean, std)),
                                preprocessing.normalize(levels, mean, std).numpy())
