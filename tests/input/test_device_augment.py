"""device_augment.py (the augmentation ops in JAX, for the accelerator) against augment.py's TF ops.

Every op must equal augment.py's bit for bit (augment.py itself equals TF EfficientNet's
autoaugment.py, test_augment_tf_reference.py), on two photos (scikit-learn's sample images,
subsampled to 48×64) and the uint8 edge cases of augment.py's tests, at RandAugment magnitudes
0/5/10/17/28 (and small ones for translations and cutouts), both signs of the geometric ops.
The policies must give each example TF's ops for that example's own draws, under jit on a batch
sharded over the 4 test devices as the training step shards it, and draw ops, sub-policies and
applications with TF's probabilities.

Compiles are few: each op is jitted once with its argument traced, vmapped over the images, and
called for every magnitude; each policy once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_sample_image
import tensorflow as tf

from efficientnet_jax.input import augment
from efficientnet_jax.input import augment_policies as policies
from efficientnet_jax.input import device_augment
from efficientnet_jax.training import steps

OP_FUNCTIONS = {
    'AutoContrast': 'auto_contrast', 'Equalize': 'equalize', 'Invert': 'invert',
    'Rotate': 'rotate', 'Posterize': 'posterize', 'Solarize': 'solarize',
    'SolarizeAdd': 'solarize_add', 'Color': 'color', 'Contrast': 'contrast',
    'Brightness': 'brightness', 'Sharpness': 'sharpness', 'ShearX': 'shear_x', 'ShearY': 'shear_y',
    'TranslateX': 'translate_x', 'TranslateY': 'translate_y', 'Cutout': 'cutout',
}
# RandAugment magnitudes: TF's runs used 10 (17 for B5, 28 for B7); 0 and 5 complete the range.
# TF's ops surprise at several: Solarize's threshold wraps at 10 (256 -> 0 inverts everything), 17
# (179) and 28 (204); Posterize keeps only the top bit at 0 bits (M < 2.5) and at 11 bits (28).
LEVELS = (0, 5, 10, 17, 28)
# From 5 up, translations (50+ px) and cutouts (20+ px half-side) cover most of these images.
SMALL_LEVELS = (0.5, 1, 2)
CUTOUT_CENTERS = ((1, 18), (46, 60))  # Squares clipped at the top; at the bottom right.


@functools.cache
def _images() -> np.ndarray:
  """uint8 [8, 48, 64, 3]: two photos, then the edge cases of augment.py's tests."""
  china, flower = (load_sample_image(name)[::6, ::6] for name in ('china.jpg', 'flower.jpg'))
  shape = (48, 64, 3)
  rng = np.random.default_rng(0)
  # Red 99..124, green one level, blue one level but 40 pixels: AutoContrast's float32 surprises.
  low_contrast = np.empty(shape, np.uint8)
  low_contrast[..., 0] = rng.integers(99, 125, shape[:2])
  low_contrast[..., 1] = 77
  low_contrast[..., 2] = 200
  low_contrast.reshape(-1, 3)[:40, 2] = 201
  two_levels = np.full(shape, 100, np.uint8)
  two_levels[:24] = 120
  return np.stack([
      china[8:56, 16:80], flower[8:56, 24:88], rng.integers(0, 256, shape, dtype=np.uint8),
      low_contrast, two_levels, np.full(shape, 77, np.uint8), np.zeros(shape, np.uint8),
      np.full(shape, 255, np.uint8)])


def _argument(name, level, **constants) -> float:
  """The op's TF argument at `level` (0 for ops without one)."""
  return (policies.level_to_arg(name, level, **constants) or (0.0,))[0]


def _arguments(name: str) -> list[float]:
  """The op's distinct arguments over the test levels and signs."""
  levels = (0,) if name in policies.UNLEVELLED_OPS else LEVELS
  arguments = [_argument(name, level) for level in levels]
  if name in ('TranslateX', 'TranslateY', 'Cutout'):
    arguments += [_argument(name, level) for level in SMALL_LEVELS]
    # AutoAugment's constants too: half-pixel translations (12.5 px), which TF rounds away from 0.
    arguments += [_argument(name, level, translate_const=policies.AUTOAUGMENT_TRANSLATE_CONST,
                            cutout_const=policies.AUTOAUGMENT_CUTOUT_CONST)
                  for level in SMALL_LEVELS]
  signs = (1, -1) if name in policies.SIGNED_OPS else (1,)
  return sorted({sign * argument for argument in arguments for sign in signs})


def _tf_op(name, image, argument, center):
  op = getattr(augment, OP_FUNCTIONS[name])
  if name in policies.UNLEVELLED_OPS:
    return op(image).numpy()
  if name == 'Cutout':
    return op(image, argument, center).numpy()
  return op(image, argument).numpy()


def _jitted_op(name):
  """`(images, argument, center) -> images`: the JAX op per image; argument and centre traced."""
  op = getattr(device_augment, OP_FUNCTIONS[name])

  def apply(image, argument, center):
    if name in policies.UNLEVELLED_OPS:
      return op(image)
    if name == 'Cutout':
      return op(image, argument, center)
    return op(image, argument)

  return jax.jit(jax.vmap(apply, in_axes=(0, None, None)))


def _check_equal(actual, expected, description):
  difference = np.abs(np.asarray(actual, np.int32) - expected)
  assert not difference.any(), (f'{description}: {np.count_nonzero(difference)} values differ, '
                                f'by up to {difference.max()}')


@pytest.mark.parametrize('name', policies.RANDAUGMENT_OPS)
def test_op_equals_tf_op(name):
  images = _images()
  op = _jitted_op(name)
  centers = CUTOUT_CENTERS if name == 'Cutout' else ((0, 0),)
  for argument in _arguments(name):
    for center in centers:
      actual = np.asarray(op(images, np.float32(argument), np.array(center, np.int32)))
      assert actual.dtype == np.uint8 and actual.shape == images.shape
      for index, image in enumerate(images):
        _check_equal(actual[index], _tf_op(name, tf.constant(image), argument, center),
                     f'{name}({argument}, centre {center}) on image {index}')


@pytest.mark.parametrize('name, level', [('Solarize', 10), ('Posterize', 28), ('Color', 6),
                                         ('SolarizeAdd', 21), ('TranslateX', 0.5)])
def test_apply_op_maps_levels_as_tf(name, level):
  # Levels where TF's mapping surprises: Solarize 10 inverts everything, Posterize 28 keeps the top
  # bit, Color 6 and SolarizeAdd 21 need the map in double precision; TranslateX takes either sign.
  image = _images()[0, :16, :16]
  actual = np.asarray(device_augment.apply_op(name, image, level, jax.random.key(3)))
  outcomes = {augment.apply_op(name, tf.constant(image), level, tf.constant([seed, 0], tf.int64))
              .numpy().tobytes() for seed in range(8)}
  assert actual.tobytes() in outcomes


# ------------------------------------------------------------------------------------------------
# The policies: each example's output must be TF's ops for that example's draws (its ops or
# sub-policy and which of its ops apply, `randaugment_draws` / `autoaugment_draws`), with either
# sign, since the sign and a cutout's centre are drawn inside the op. At M=28 a RandAugment cutout
# (half-side 112) covers a 32×32 image wherever its centre lands, so its output is known too.

POLICY_SIZE = 32
EXAMPLES_PER_IMAGE = 4
RANDAUGMENT = dict(num_layers=2, magnitude=28)


def _policy_images() -> np.ndarray:
  """uint8 [4, 32, 32, 3]: the photos, the noise and the low-contrast image, cropped."""
  return _images()[:4, 8:8 + POLICY_SIZE, 16:16 + POLICY_SIZE]


def _drawn_ops(policy, keys) -> list[list[tuple[str, float]]]:
  """Per key, the (op name, TF argument) sequence it draws."""
  if policy == 'randaugment':
    choices, _ = jax.vmap(functools.partial(device_augment.randaugment_draws,
                                            num_layers=RANDAUGMENT['num_layers']))(keys)
    names = [[policies.RANDAUGMENT_OPS[c] for c in example] for example in np.asarray(choices)]
    return [[(name, _argument(name, RANDAUGMENT['magnitude'])) for name in example]
            for example in names]
  table = policies.policy_args('v0')
  probabilities = np.array([[p for _, p, _ in sub_policy] for sub_policy in table], np.float32)
  sub_policies, applied, _ = jax.vmap(device_augment.autoaugment_draws, (0, None))(
      keys, probabilities)
  return [[(name, args[0] if args else 0.0)
           for (name, _, args), on in zip(table[sub_policy], example_applied) if on]
          for sub_policy, example_applied in zip(np.asarray(sub_policies), np.asarray(applied))]


def _tf_outputs(image, ops) -> set[bytes]:
  """TF's outputs of `ops` ((name, argument) pairs) applied in order to `image`, for every sign."""
  results = [image]
  for name, argument in ops:
    signs = (1, -1) if name in policies.SIGNED_OPS else (1,)
    results = [_tf_op(name, tf.constant(result), sign * argument, (0, 0))
               for result in results for sign in signs]
  return {np.asarray(result).tobytes() for result in results}


def _sharded(array):
  """`array` split over the test devices along its batch axis, as the training step's batch."""
  _, batch_sharded = steps.shardings(steps.data_mesh())
  return jax.device_put(array, batch_sharded)


@pytest.mark.parametrize('policy', ['randaugment', 'autoaugment'])
def test_policy_applies_each_examples_draws_on_sharded_batch(policy):
  if policy == 'randaugment':
    augment_batch = jax.jit(functools.partial(device_augment.randaugment, **RANDAUGMENT))
  else:
    augment_batch = jax.jit(device_augment.autoaugment)
  images = np.repeat(_policy_images(), EXAMPLES_PER_IMAGE, axis=0)
  keys = jax.random.split(jax.random.key(0), len(images))
  result = augment_batch(_sharded(images), _sharded(keys))
  assert result.dtype == jnp.uint8 and result.shape == images.shape
  assert result.sharding.is_equivalent_to(_sharded(images).sharding, result.ndim)
  result = np.asarray(result)
  drawn = _drawn_ops(policy, keys)
  for index, (image, output, ops) in enumerate(zip(images, result, drawn)):
    assert output.tobytes() in _tf_outputs(image, ops), f'example {index}: TF\'s {ops} differ'
  # Each example draws its own ops (all examples sharing one draw would give one sequence).
  assert len({tuple(name for name, _ in ops) for ops in drawn}) >= 4, drawn
  # Deterministic, and an example's result follows its own key wherever it is in the batch.
  np.testing.assert_array_equal(augment_batch(_sharded(images), _sharded(keys)), result)
  order = np.roll(np.arange(len(images)), 5)
  np.testing.assert_array_equal(augment_batch(_sharded(images[order]), _sharded(keys[order])),
                                result[order])


def test_draws_have_tf_probabilities():
  # TF's distributions: RandAugment's op uniform over the 16; AutoAugment's sub-policy uniform over
  # the 25, each op applied with its probability (exactly never at 0, always at 1).
  keys = jax.random.split(jax.random.key(1), 20_000)
  choices, _ = jax.jit(jax.vmap(functools.partial(device_augment.randaugment_draws,
                                                  num_layers=2)))(keys)
  frequencies = np.bincount(np.asarray(choices).ravel(), minlength=16) / choices.size
  np.testing.assert_allclose(frequencies, 1 / 16, atol=0.006)  # ~5 standard deviations.
  probabilities = np.array([[p for _, p, _ in s] for s in policies.POLICY_V0], np.float32)
  sub_policies, applied, _ = jax.jit(jax.vmap(device_augment.autoaugment_draws, (0, None)))(
      keys, probabilities)
  sub_policies, applied = np.asarray(sub_policies), np.asarray(applied)
  np.testing.assert_allclose(np.bincount(sub_policies, minlength=25) / len(keys), 1 / 25,
                             atol=0.007)
  for index, row in enumerate(probabilities):
    rate = applied[sub_policies == index].mean(axis=0)
    np.testing.assert_allclose(rate, row, atol=0.09, err_msg=f'sub-policy {index}')
    assert not applied[sub_policies == index][:, row == 0].any()
    assert applied[sub_policies == index][:, row == 1].all()


def test_bad_inputs_raise():
  keys = jax.random.split(jax.random.key(0), 2)
  with pytest.raises(ValueError, match='uint8 images'):
    device_augment.randaugment(np.zeros((2, 8, 8, 3), np.float32), keys)
  with pytest.raises(ValueError, match='Unknown AutoAugment policy'):
    device_augment.autoaugment(np.zeros((2, 8, 8, 3), np.uint8), keys, policy='v3')
  with pytest.raises(ValueError, match='Unknown augmentation op'):
    device_augment.apply_op('Blur', np.zeros((8, 8, 3), np.uint8), 5, keys[0])
