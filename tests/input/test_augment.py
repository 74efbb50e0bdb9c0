"""Tests for augment.py: every op eagerly and in tf.data, op semantics, RandAugment/AutoAugment."""

import numpy as np
import pytest
import tensorflow as tf

from efficientnet_jax.input import augment
from efficientnet_jax.input import augment_policies as policies

SEED = tf.constant([3, 4], tf.int64)


def _image(height=24, width=40, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _in_dataset(function, image):
  """Runs `function(image)` inside a parallel tf.data map, as the input pipeline does."""
  ds = tf.data.Dataset.from_tensors(image).map(function, num_parallel_calls=2)
  return next(iter(ds)).numpy()


@pytest.mark.parametrize('name', policies.RANDAUGMENT_OPS)
def test_op_eager_and_in_dataset(name):
  image = _image()

  def op(x):
    return augment.apply_op(name, x, 7.0, SEED)

  eager = op(tf.constant(image)).numpy()
  assert eager.dtype == np.uint8 and eager.shape == image.shape
  np.testing.assert_array_equal(eager, _in_dataset(op, image))


@pytest.mark.parametrize('name', policies.RANDAUGMENT_OPS)
def test_op_accepts_levels_above_ten(name):
  # TF uses M=28 for b7 (docs/reference.md §5); it extrapolates the level maps linearly, which
  # must stay valid.
  result = augment.apply_op(name, tf.constant(_image()), 28.0, SEED)
  assert result.dtype == tf.uint8 and result.shape == (24, 40, 3)


def test_pixel_ops():
  image = _image()
  np.testing.assert_array_equal(augment.invert(image), 255 - image)
  np.testing.assert_array_equal(augment.solarize(image, 128),
                                np.where(image < 128, image, 255 - image))
  # TF's threshold wraps modulo 256 (uint8): 256 (level 10) inverts everything, 435 (M=17) is 179.
  np.testing.assert_array_equal(augment.solarize(image, 256), 255 - image)
  np.testing.assert_array_equal(augment.solarize(image, 435), augment.solarize(image, 179))
  np.testing.assert_array_equal(augment.posterize(image, 3), image & 0b11100000)
  np.testing.assert_array_equal(augment.posterize(image, 8), image)
  # TF's shift of 8 - bits is clamped to 7: 0 bits and > 8 bits (M=28: 11) keep the top bit.
  np.testing.assert_array_equal(augment.posterize(image, 0), image & 0b10000000)
  np.testing.assert_array_equal(augment.posterize(image, 11), image & 0b10000000)
  added = np.minimum(image.astype(int) + 50, 255).astype(np.uint8)
  np.testing.assert_array_equal(augment.solarize_add(image, 50, 128),
                                np.where(image < 128, added, image))


def test_blend_ops():
  image = _image()
  np.testing.assert_array_equal(augment.brightness(image, 1.0), image)
  np.testing.assert_array_equal(augment.brightness(image, 0.0), np.zeros_like(image))
  np.testing.assert_array_equal(augment.sharpness(image, 1.0), image)
  np.testing.assert_array_equal(augment.contrast(image, 1.0), image)
  grey = augment.color(image, 0.0).numpy()
  assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
  # TF's Contrast blends towards pixel count / 256 (here 24·40/256 -> 3), not the mean grey level.
  np.testing.assert_array_equal(augment.contrast(image, 0.0), np.full_like(image, 3))
  assert augment.brightness(image, 3.0).numpy().max() == 255  # Extrapolation clips, never wraps.


def test_auto_contrast_and_equalize():
  dull = np.full((8, 8, 3), 100, np.uint8)
  dull[:4] = 120
  stretched = augment.auto_contrast(dull).numpy()
  assert stretched.min() == 0 and stretched.max() == 255
  flat = np.full((8, 8, 3), 77, np.uint8)
  np.testing.assert_array_equal(augment.auto_contrast(flat), flat)
  np.testing.assert_array_equal(augment.equalize(flat), flat)


def test_pixel_ops_match_pil():
  # AutoAugment was searched with PIL's ops; TF's (and ours) agree up to rounding, except Contrast
  # (TF blends towards pixel count / 256, not PIL's mean grey level).
  from PIL import Image, ImageEnhance, ImageOps  # pylint: disable=g-import-not-at-top
  image = (np.random.default_rng(1).beta(2, 5, (40, 30, 3)) * 200 + 10).astype(np.uint8)
  pil = Image.fromarray(image)
  pairs = [
      (ImageOps.equalize(pil), augment.equalize(image)),
      (ImageOps.autocontrast(pil), augment.auto_contrast(image)),
      (ImageEnhance.Sharpness(pil).enhance(1.7), augment.sharpness(image, 1.7)),
      (ImageEnhance.Color(pil).enhance(0.3), augment.color(image, 0.3)),
  ]
  for expected, actual in pairs:
    np.testing.assert_allclose(np.asarray(expected, np.int32), actual.numpy().astype(np.int32),
                               atol=1)


def test_geometric_ops():
  image = _image(16, 16)
  for op in (augment.rotate, augment.shear_x, augment.shear_y, augment.translate_x,
             augment.translate_y):
    np.testing.assert_array_equal(op(image, 0.0), image)
  shifted = augment.translate_x(image, 3.0, replace=7).numpy()
  np.testing.assert_array_equal(shifted[:, :-3], image[:, 3:])
  assert (shifted[:, -3:] == 7).all()
  shifted = augment.translate_y(image, -2.0, replace=7).numpy()
  np.testing.assert_array_equal(shifted[2:], image[:-2])
  np.testing.assert_array_equal(augment.rotate(image, 90.0), np.rot90(image))


def test_cutout():
  image = np.zeros((20, 20, 3), np.uint8)
  out = augment.cutout(image, 3, (10, 1), replace=200).numpy()
  expected = np.zeros_like(image)
  expected[7:13, 0:4] = 200  # Rows 10-3 .. 10+3 (exclusive), columns clipped at the left border.
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_array_equal(augment.cutout(image, 0, (10, 1), replace=200), image)
  # Through apply_op the centre is drawn from the seed: same seed, same square.
  out = augment.apply_op('Cutout', image, 1, SEED, replace=200, cutout_const=30).numpy()
  rows, cols = np.nonzero(out[..., 0])
  assert (out[rows, cols] == 200).all()
  assert rows.max() - rows.min() + 1 <= 6 and cols.max() - cols.min() + 1 <= 6
  np.testing.assert_array_equal(
      out, augment.apply_op('Cutout', image, 1, SEED, replace=200, cutout_const=30))


def test_policy_v0_table():
  assert len(policies.POLICY_V0) == 25
  for sub_policy in policies.POLICY_V0:
    for name, probability, level in sub_policy:
      assert name in policies.RANDAUGMENT_OPS and 0 <= probability <= 1 and 0 <= level <= 10


@pytest.mark.parametrize('policy', ['randaugment', 'autoaugment'])
def test_policies_are_deterministic_stateless(policy):
  image = _image(32, 32)
  if policy == 'randaugment':
    function = lambda x, seed: augment.randaugment(x, seed, num_layers=2, magnitude=10)
  else:
    function = augment.autoaugment
  seeds = tf.constant([[i, 9] for i in range(8)], tf.int64)
  eager = np.stack([function(tf.constant(image), seed).numpy() for seed in seeds])
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda seed: function(image, seed),
                                                     num_parallel_calls=4, deterministic=False)
  # Even with non-deterministic element order, each seed gives its image: compare as a set.
  in_dataset = np.stack(list(ds.as_numpy_iterator()))
  assert sorted(map(bytes, eager)) == sorted(map(bytes, in_dataset))
  assert eager.dtype == np.uint8 and eager.shape == (8, 32, 32, 3)
  assert len({bytes(e) for e in eager}) > 4  # Different seeds pick different ops.


def test_randaugment_zero_layers_is_identity():
  image = _image()
  np.testing.assert_array_equal(augment.randaugment(image, SEED, num_layers=0), image)


def test_unknown_names_raise():
  with pytest.raises(ValueError, match='Unknown augmentation op'):
    augment.apply_op('Blur', tf.constant(_image()), 5.0, SEED)
  with pytest.raises(ValueError, match='Unknown AutoAugment policy'):
    augment.autoaugment(_image(), SEED, policy='v3')


def test_level_is_a_python_number():
  # Level maps are evaluated in double precision, as TF's are; a float32 tensor level would not be.
  assert policies.level_to_arg('SolarizeAdd', 21) == (231,)
  with pytest.raises(TypeError, match='Python number'):
    policies.level_to_arg('Rotate', tf.constant(5.0))
