"""Tests for preprocessing.py: decode/crop/resize/normalise, eagerly and inside tf.data."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from efficientnet_jax.input import augment_policies
from efficientnet_jax.input import normalization
from efficientnet_jax.input import preprocessing

SIZE = 32
SEED = tf.constant([5, 6], tf.int64)


def _photo(height=48, width=64):
  """A smooth image (JPEG-friendly) with distinct corners, so crops and flips are visible."""
  y, x = np.mgrid[0:height, 0:width]
  image = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
  return image.astype(np.uint8)


def _encode(image, image_format):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, image_format)
  return buffer.getvalue()


def _in_dataset(function, *args):
  ds = tf.data.Dataset.from_tensors(args).map(function, num_parallel_calls=2)
  return next(iter(ds)).numpy()


def test_normalizations():
  assert set(normalization.NORMALIZATIONS) >= {'imagenet', 'lite', 'inception', 'none'}
  mean, std = normalization.NORMALIZATIONS['imagenet']
  np.testing.assert_allclose(mean, [123.675, 116.28, 103.53])
  np.testing.assert_allclose(std, [58.395, 57.12, 57.375])
  lite = preprocessing.normalize(tf.constant([[[255, 127, 0]]], tf.uint8),
                                 *normalization.NORMALIZATIONS['lite'])
  np.testing.assert_allclose(lite.numpy().ravel(), [1.0, 0.0, -127 / 128])


def test_center_crop_window_follows_crop_padding_rule():
  window = [int(v) for v in preprocessing.center_crop_window(100, 200, 224, 32)]
  assert window == [7, 57, 87, 87]  # side = int(224/256·100); odd margins round the offset up.
  assert [int(v) for v in preprocessing.center_crop_window(8, 8, 32, 0)] == [0, 0, 8, 8]


def test_inception_crop_falls_back_to_center_crop():
  # No crop of area >= 8% with aspect in [3/4, 4/3] fits a 4×400 strip, so the sampler fails.
  random = preprocessing.inception_crop_window(4, 400, SEED, SIZE, 32)
  center = preprocessing.center_crop_window(4, 400, SIZE, 32)
  assert [int(v) for v in random] == [int(v) for v in center]


@pytest.mark.parametrize('image_format', ['JPEG', 'PNG', 'BMP', 'GIF'])
@pytest.mark.parametrize('mode', ['eager', 'dataset'])
def test_eval_decodes_every_format(image_format, mode):
  data = tf.constant(_encode(_photo(), image_format))
  function = lambda b: preprocessing.preprocess_for_eval(b, SIZE)
  out = function(data).numpy() if mode == 'eager' else _in_dataset(function, data)
  assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
  assert np.isfinite(out).all() and -3 < out.mean() < 3


def test_eval_bytes_and_decoded_paths_agree():
  image = _photo()
  from_bytes = preprocessing.preprocess_for_eval(tf.constant(_encode(image, 'PNG')), SIZE)
  from_pixels = preprocessing.eval_image(tf.constant(image), SIZE)
  np.testing.assert_array_equal(from_bytes, from_pixels)
  # JPEG decodes only the window; the result matches decoding everything up to JPEG noise.
  from_jpeg = preprocessing.preprocess_for_eval(tf.constant(_encode(image, 'JPEG')), SIZE)
  assert np.abs(from_jpeg.numpy() - from_pixels.numpy()).mean() < 0.1


@pytest.mark.parametrize('crop', preprocessing.TRAIN_CROPS)
@pytest.mark.parametrize('mode', ['eager', 'dataset'])
def test_train_crops(crop, mode):
  data = tf.constant(_encode(_photo(), 'JPEG'))
  function = lambda b, s: preprocessing.preprocess_for_train(b, SIZE, s, crop=crop)
  out = function(data, SEED).numpy() if mode == 'eager' else _in_dataset(function, data, SEED)
  assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32 and np.isfinite(out).all()
  np.testing.assert_array_equal(out, function(data, SEED))  # Stateless: same seed, same image.


@pytest.mark.parametrize('policy', augment_policies.AUGMENT_POLICIES)
def test_train_augment_policies(policy):
  data = tf.constant(_encode(_photo(), 'PNG'))
  function = lambda b, s: preprocessing.preprocess_for_train(b, SIZE, s, augment=policy,
                                                             randaugment_magnitude=17)
  out = _in_dataset(function, data, SEED)
  assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out, function(data, SEED))


def test_train_bytes_and_decoded_paths_agree():
  image = _photo()
  kwargs = dict(augment='randaugment', crop='inception')
  from_bytes = preprocessing.preprocess_for_train(tf.constant(_encode(image, 'PNG')), SIZE, SEED,
                                                  **kwargs)
  from_pixels = preprocessing.train_image(tf.constant(image), SIZE, SEED, **kwargs)
  np.testing.assert_array_equal(from_bytes, from_pixels)


def test_train_randomness_comes_from_the_seed_only():
  data = tf.constant(_encode(_photo(), 'PNG'))
  seeds = tf.constant([[i, 0] for i in range(12)], tf.int64)
  function = lambda s: preprocessing.preprocess_for_train(data, SIZE, s)
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(function, num_parallel_calls=4)
  in_dataset = np.stack(list(ds.as_numpy_iterator()))
  eager = np.stack([function(s).numpy() for s in seeds])
  np.testing.assert_array_equal(in_dataset, eager)
  assert len({bytes(x) for x in eager}) == len(eager)


def test_flip_mirrors_about_half_the_time():
  image = tf.constant(_photo())
  plain = preprocessing.train_image(image, SIZE, SEED, crop='resize', flip=False).numpy()
  flipped = [np.array_equal(preprocessing.train_image(image, SIZE, tf.constant([i, 1]),
                                                      crop='resize').numpy(), plain[:, ::-1])
             for i in range(16)]
  assert 0 < sum(flipped) < 16
  no_flip = [preprocessing.train_image(image, SIZE, tf.constant([i, 1]), crop='resize',
                                       flip=False).numpy() for i in range(4)]
  assert all(np.array_equal(x, plain) for x in no_flip)


def test_grey_and_tiny_images():
  digit = tf.constant(np.arange(64, dtype=np.uint8).reshape(8, 8, 1) * 4)
  out = preprocessing.train_image(digit, SIZE, SEED, crop='pad_crop', flip=False,
                                  augment='autoaugment')
  assert out.shape == (SIZE, SIZE, 3)
  out = preprocessing.eval_image(digit, SIZE, crop_padding=0, interpolation='bilinear',
                                 mean=(0, 0, 0), std=(1, 1, 1))
  assert out.shape == (SIZE, SIZE, 3)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_bad_arguments_raise():
  image = tf.constant(_photo())
  with pytest.raises(ValueError, match='crop'):
    preprocessing.train_image(image, SIZE, SEED, crop='random')
  with pytest.raises(ValueError, match='augment'):
    preprocessing.train_image(image, SIZE, SEED, augment='mixup')
  with pytest.raises(ValueError, match='interpolation'):
    preprocessing.eval_image(image, SIZE, interpolation='cubic')


# ------------------------------------------------------------------------------------------------
# Reduced-DCT-scale decode (`dct_scaling`).


def _smooth_jpeg(height=600, width=800):
  """A JPEG with no detail finer than ~100 px: every correct resample of a crop agrees on it."""
  coarse = np.random.default_rng(0).uniform(0, 255, (1, 5, 7, 3)).astype(np.float32)
  field = tf.image.resize(coarse, (height, width), 'bicubic')[0]
  return tf.io.encode_jpeg(tf.cast(tf.clip_by_value(field, 0, 255), tf.uint8), quality=95)


def _photos():
  """scikit-learn's two bundled photographs (427×640 JPEGs): real detail, real JPEG statistics."""
  import os  # pylint: disable=g-import-not-at-top
  import sklearn.datasets  # pylint: disable=g-import-not-at-top
  directory = os.path.join(os.path.dirname(sklearn.datasets.__file__), 'images')
  for name in ('china.jpg', 'flower.jpg'):
    with open(os.path.join(directory, name), 'rb') as f:
      yield name, tf.constant(f.read())


def test_dct_ratio_keeps_the_scaled_crop_at_least_the_output_size():
  assert [int(preprocessing.dct_ratio(side, 1000, 64)) for side in (63, 127, 128, 256, 512, 4096)
          ] == [1, 1, 2, 4, 8, 8]


def test_dct_scaling_is_the_recipe_bit_for_bit_when_the_crop_is_small():
  data = tf.constant(_encode(_photo(), 'JPEG'))  # 48×64: no crop is twice 32 px on both sides.
  for seed in range(4):
    seed = tf.constant([seed, 0], tf.int64)
    np.testing.assert_array_equal(
        preprocessing.preprocess_for_train(data, SIZE, seed, dct_scaling=True),
        preprocessing.preprocess_for_train(data, SIZE, seed))
  np.testing.assert_array_equal(preprocessing.preprocess_for_eval(data, SIZE, dct_scaling=True),
                                preprocessing.preprocess_for_eval(data, SIZE))


@pytest.mark.parametrize('size', [32, 96])
def test_dct_scaling_keeps_the_crop_geometry(size):
  # Measured: mean |Δ| ≤ 1.2 levels, max 6, over 20 crops at 32/64/128 px (JPEG's scaled inverse
  # DCT is not bit-exact). A crop misplaced by one scaled pixel moves these gradients by more.
  data = _smooth_jpeg()
  for seed in range(6):
    kwargs = dict(seed=tf.constant([seed, 1], tf.int64), output_uint8=True, flip=False)
    full = preprocessing.preprocess_for_train(data, size, **kwargs).numpy().astype(np.int32)
    scaled = preprocessing.preprocess_for_train(data, size, dct_scaling=True, **kwargs)
    difference = np.abs(full - scaled.numpy().astype(np.int32))
    assert difference.mean() <= 1.5 and difference.max() <= 8, (seed, difference.mean())


def test_dct_scaling_on_photos_is_a_low_passed_recipe_image():
  """On real photos the reduced-scale decode differs from TF's recipe about as much as an
  antialiased resize does, and is close to the antialiased resize (docs/benchmarks.md)."""
  for name, data in _photos():
    size = 64
    shape = tf.io.extract_jpeg_shape(data)
    window = preprocessing.center_crop_window(shape[0], shape[1], size, 32)
    crop = tf.io.decode_and_crop_jpeg(data, tf.stack(window), channels=3)
    as_uint8 = lambda x: tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8).numpy().astype(np.int32)
    recipe = as_uint8(tf.image.resize(crop, [size, size], 'bicubic'))
    antialiased = as_uint8(tf.image.resize(crop, [size, size], 'bicubic', antialias=True))
    scaled = as_uint8(preprocessing.preprocess_for_eval(data, size, dct_scaling=True,
                                                        mean=(0, 0, 0), std=(1, 1, 1)))
    assert int(preprocessing.dct_ratio(window[2], window[3], size)) == 4
    # Measured (china, flower): |scaled − antialiased| 3.3, 2.9; |scaled − recipe| 13.8, 8.4;
    # |antialiased − recipe| 13.0, 7.5 levels on average.
    assert np.abs(scaled - antialiased).mean() <= 4.5, name
    assert (np.abs(scaled - recipe).mean()
            <= 1.2 * np.abs(antialiased - recipe).mean() + 0.5), name
