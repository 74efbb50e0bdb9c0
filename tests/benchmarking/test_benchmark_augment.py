"""`benchmark --augment_on_device`: the timed train step augments uint8 images on the device.

Traced, not compiled: B0 shrunk to width and depth 0.25 (as test_benchmark.py's compile) with the
state's zeros in place of its initialiser, so the test costs a trace of the step.
"""

import jax
import numpy as np
import pytest

from efficientnet_jax import benchmark
from efficientnet_jax import config as config_lib
from efficientnet_jax.benchmarking import harness
from efficientnet_jax.errors import UsageError
from efficientnet_jax.input import device_augment
from efficientnet_jax.input import device_preprocessing
from efficientnet_jax.models import scaling
from efficientnet_jax.training import setup

TINY_B0 = scaling.Variant(width=0.25, depth=0.25, resolution=224, dropout=0.2)


def _fake_train_state(s: setup.Setup):
  """Zeros shaped like the real state: checks wiring without compiling the initialiser."""
  return jax.tree.map(lambda x: jax.device_put(np.zeros(x.shape, x.dtype), x.sharding),
                      s.abstract_state)


def test_the_timed_step_augments_uint8_images_with_the_recipes_policy(monkeypatch):
  monkeypatch.setitem(scaling.VARIANTS, 'b0', TINY_B0)
  monkeypatch.setattr(setup.Setup, 'state', property(_fake_train_state))
  augmented = []
  real_autoaugment = device_augment.autoaugment

  def autoaugment(images, keys, **kwargs):
    augmented.append((images.dtype, images.shape, keys.shape))
    return real_autoaugment(images, keys, **kwargs)

  monkeypatch.setattr(device_augment, 'autoaugment', autoaugment)
  bench = harness.build('b0', batch=8, resolution=32, depthwise_impl='conv',
                        augment_on_device=True)
  assert bench.config.augment.policy == 'autoaugment'
  assert device_preprocessing.augment_on_device(bench.config)
  state, batch, _ = bench.args
  assert batch['image'].dtype == np.uint8
  lowered = bench.jitted.lower(*bench.args)
  # The global batch of 8, whole: each position's key is its index in the global batch.
  assert augmented == [(np.uint8, (8, 32, 32, 3), (8,))]
  assert 'tensor<8x32x32x3xui8>' in lowered.as_text()
  assert lowered.out_info[0].step.shape == state.step.shape


@pytest.mark.parametrize('backend', ['cpu', 'gpu'])
def test_without_the_flag_the_recipe_is_the_builders_own(backend, monkeypatch):
  # As on an accelerator too (the GPU session's tests failed here when they assumed a CPU).
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  built = config_lib.get_config('b0', batch_size=8, image_size=32, dtype='bfloat16', remat=False,
                                depthwise_impl='auto')
  # The builder's default (None) augments on the device where JAX runs on an accelerator; the
  # benchmark without the flag times the step without augmentation everywhere.
  if device_preprocessing.augment_on_device(built):
    built.augment.on_device = False
  assert harness.recipe('b0', batch=8, resolution=32).to_dict() == built.to_dict()
  assert not device_preprocessing.augment_on_device(harness.recipe('b0', batch=8, resolution=32))
  assert device_preprocessing.augment_on_device(
      harness.recipe('b0', batch=8, resolution=32, augment_on_device=True))
  images = harness.synthetic_batch(8, 32, uint8=True)['image']
  assert images.dtype == np.uint8 and images.shape == (8, 32, 32, 3)


def test_the_flag_is_for_the_train_step_and_shows_in_the_report():
  with pytest.raises(UsageError, match='--mode=train'):
    harness.validate('b0', batch=8, resolution=32, mode='infer', dtype='bfloat16',
                     augment_on_device=True)
  result = {'model': 'b0', 'mode': 'train', 'batch': 8, 'resolution': 32, 'dtype': 'bfloat16',
            'remat': False, 'devices': 1, 'device_kind': 'cpu', 'images_per_sec': 10.0,
            'step_ms_median': 1.0, 'step_ms_pipelined': 1.0, 'mfu': None,
            'peak_memory_bytes': None, 'compile_s': 1.0, 'lower_s': 1.0,
            'flops_per_image': 1e9, 'augment_on_device': True, 'augment_policy': 'autoaugment'}
  assert '+ autoaugment on the device' in benchmark.format_summary(result).splitlines()[0]


def test_another_policy_replaces_the_recipes_and_needs_the_device_flag():
  config = harness.recipe('b0', batch=8, resolution=32, augment_on_device=True,
                          augment_policy='randaugment')
  assert config.augment.policy == 'randaugment'
  assert device_preprocessing.augment_on_device(config)
  with pytest.raises(UsageError, match='add --augment_on_device'):
    harness.validate('b0', batch=8, resolution=32, mode='train', dtype='bfloat16',
                     augment_policy='randaugment')
  with pytest.raises(UsageError, match='autoaugment, randaugment'):
    harness.validate('b0', batch=8, resolution=32, mode='train', dtype='bfloat16',
                     augment_on_device=True, augment_policy='augmix')
