"""RandAugment and AutoAugment (policy v0) on uint8 HWC images, in plain TF2 ops.

No tf.contrib / tensorflow_addons: the geometric ops use `ImageProjectiveTransformV3`. Every random
choice (which op, whether to apply it, the sign of a rotation/shear/translation, the cutout centre)
is drawn with stateless ops from an explicit `seed` (int tensor of shape [2]), so a given
(image, seed) always gives the same result, eagerly or inside `tf.data` with any parallelism.

Magnitude convention (TF EfficientNet's, behind its M=10/17/28; docs/reference.md §5): a level
is on AutoAugment's 0..10 scale (`MAX_LEVEL = 10` is the strongest setting AutoAugment searched),
and levels above 10 extrapolate the same linear maps, e.g. rotation `level/10 * 30` degrees, so
M=28 rotates up to 84°. timm instead clips M at 10 unless told otherwise; we do not, so b7's M=28
means what it meant in TF. Where extrapolation leaves an op's domain we clamp the argument
(posterize keeps 0..8 bits); solarize with a threshold above 255 is simply a no-op, as in TF.

Known deliberate deviations from TF's autoaugment.py:
  * Contrast blends towards the mean grey level (PIL's definition, which AutoAugment was searched
    with); TF divides the pixel *count* by 256 instead of averaging intensities.
  * Sharpness rounds its smoothed image (PIL) instead of truncating.
  * Posterize with 0 bits gives black (PIL's mask semantics) instead of depending on shift overflow.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence, Union

import tensorflow as tf

MAX_LEVEL = 10.0
Number = Union[float, int, tf.Tensor]

# The 16 ops RandAugment samples from (TF EfficientNet's list, same order).
RANDAUGMENT_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color',
                   'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX',
                   'TranslateY', 'Cutout', 'SolarizeAdd')

# AutoAugment ImageNet policy v0: 25 sub-policies of (op, probability, level); one sub-policy is
# picked uniformly per image and its two ops applied in order, each with its probability.
POLICY_V0 = (
    (('Equalize', 0.8, 1), ('ShearY', 0.8, 4)),
    (('Color', 0.4, 9), ('Equalize', 0.6, 3)),
    (('Color', 0.4, 1), ('Rotate', 0.6, 8)),
    (('Solarize', 0.8, 3), ('Equalize', 0.4, 7)),
    (('Solarize', 0.4, 2), ('Solarize', 0.6, 2)),
    (('Color', 0.2, 0), ('Equalize', 0.8, 8)),
    (('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)),
    (('ShearX', 0.2, 9), ('Rotate', 0.6, 8)),
    (('Color', 0.6, 1), ('Equalize', 1.0, 2)),
    (('Invert', 0.4, 9), ('Rotate', 0.6, 0)),
    (('Equalize', 1.0, 9), ('ShearY', 0.6, 3)),
    (('Color', 0.4, 7), ('Equalize', 0.6, 0)),
    (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)),
    (('Solarize', 0.6, 8), ('Color', 0.6, 9)),
    (('Solarize', 0.2, 4), ('Rotate', 0.8, 9)),
    (('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)),
    (('ShearX', 0.0, 0), ('Solarize', 0.8, 4)),
    (('ShearY', 0.8, 0), ('Color', 0.6, 4)),
    (('Color', 1.0, 0), ('Rotate', 0.6, 2)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 8)),
    (('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)),
    (('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)),
    (('Posterize', 0.8, 2), ('Solarize', 0.6, 10)),
    (('Solarize', 0.6, 8), ('Equalize', 0.6, 1)),
    (('Color', 0.8, 6), ('Rotate', 0.4, 5)),
)
POLICIES = {'v0': POLICY_V0}


# ------------------------------------------------------------------------------------------------
# Pixel ops. All take and return uint8 [H, W, 3].


def blend(image1: tf.Tensor, image2: tf.Tensor, factor: Number) -> tf.Tensor:
  """`image1 + factor·(image2 - image1)` clipped to uint8: factor 0 gives image1, 1 gives image2."""
  image1 = tf.cast(image1, tf.float32)
  image2 = tf.cast(image2, tf.float32)
  blended = image1 + tf.cast(factor, tf.float32) * (image2 - image1)
  return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def _grey(image: tf.Tensor) -> tf.Tensor:
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel so its darkest pixel becomes 0 and its brightest 255."""
  pixels = tf.cast(image, tf.float32)
  low = tf.reduce_min(pixels, axis=[0, 1])
  high = tf.reduce_max(pixels, axis=[0, 1])
  # A flat channel has nothing to stretch: divide by a dummy 1, then keep the input unchanged.
  flat = high <= low
  scale = 255.0 / tf.where(flat, 1.0, high - low)
  stretched = tf.clip_by_value((pixels - low) * scale, 0.0, 255.0)
  return tf.cast(tf.where(flat, pixels, stretched), tf.uint8)


def _equalize_channel(channel: tf.Tensor) -> tf.Tensor:
  """PIL's histogram equalisation of one uint8 [H, W] channel."""
  values = tf.cast(channel, tf.int32)
  histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256,
                               dtype=tf.int32)
  # PIL leaves the brightest populated bin out of the step so that it maps to 255.
  last_populated = tf.reduce_max(tf.where(histogram > 0, tf.range(256), -1))
  step = (tf.reduce_sum(histogram) - tf.gather(histogram, last_populated)) // 255
  safe_step = tf.maximum(step, 1)
  lut = (tf.cumsum(histogram) + safe_step // 2) // safe_step
  lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], axis=0), 0, 255)
  # step == 0 means (almost) a single grey level: PIL returns the channel unchanged.
  return tf.cast(tf.where(step == 0, values, tf.gather(lut, values)), tf.uint8)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """Per-channel histogram equalisation."""
  return tf.stack([_equalize_channel(image[:, :, c]) for c in range(3)], axis=-1)


def invert(image: tf.Tensor) -> tf.Tensor:
  """`255 - image`."""
  return 255 - image


def posterize(image: tf.Tensor, bits: Number) -> tf.Tensor:
  """Keeps the `bits` most significant bits of every pixel (clamped to 0..8; 0 gives black)."""
  bits = tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
  mask = tf.cast(256 - tf.bitwise.left_shift(1, 8 - bits), tf.uint8)
  return tf.bitwise.bitwise_and(image, mask)


def solarize(image: tf.Tensor, threshold: Number = 128) -> tf.Tensor:
  """Inverts every pixel at or above `threshold` (a threshold above 255 changes nothing)."""
  below = tf.cast(image, tf.int32) < tf.cast(threshold, tf.int32)
  return tf.where(below, image, 255 - image)


def solarize_add(image: tf.Tensor, addition: Number = 0, threshold: Number = 128) -> tf.Tensor:
  """Adds `addition` (clipped to 0..255) to every pixel below `threshold`."""
  pixels = tf.cast(image, tf.int32)
  added = tf.cast(tf.clip_by_value(pixels + tf.cast(addition, tf.int32), 0, 255), tf.uint8)
  return tf.where(pixels < tf.cast(threshold, tf.int32), added, image)


def color(image: tf.Tensor, factor: Number) -> tf.Tensor:
  """Saturation: 0 gives grey, 1 the original, >1 more saturated."""
  return blend(_grey(image), image, factor)


def contrast(image: tf.Tensor, factor: Number) -> tf.Tensor:
  """Contrast around the mean grey level: 0 gives a flat grey image, 1 the original."""
  mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
  return blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor: Number) -> tf.Tensor:
  """Brightness: 0 gives black, 1 the original."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: Number) -> tf.Tensor:
  """Sharpness via PIL's SMOOTH kernel: 0 gives the smoothed image, 1 the original, >1 sharper."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smoothed = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], 'VALID')
  smoothed = tf.cast(tf.clip_by_value(tf.round(smoothed[0]), 0.0, 255.0), tf.uint8)
  # The 1-pixel border has no full neighbourhood; PIL keeps it unchanged.
  inside = tf.pad(tf.ones_like(smoothed, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(inside, tf.pad(smoothed, [[1, 1], [1, 1], [0, 0]]), image)
  return blend(degenerate, image, factor)


def _transform(image: tf.Tensor, transform: Sequence[Number], replace: int) -> tf.Tensor:
  """Projective transform: output pixel (x, y) samples the input at the mapped point (nearest).

  `transform` is [a0, a1, a2, b0, b1, b2, c0, c1]: input x = a0·x + a1·y + a2,
  input y = b0·x + b1·y + b2 (c0 = c1 = 0 here). Pixels mapped from outside the image get `replace`.
  """
  transform = tf.cast(tf.stack([tf.cast(t, tf.float32) for t in transform]), tf.float32)
  result = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
      fill_value=tf.cast(replace, tf.float32), interpolation='NEAREST', fill_mode='CONSTANT')
  return tf.reshape(result[0], tf.shape(image))


def rotate(image: tf.Tensor, degrees: Number, replace: int = 128) -> tf.Tensor:
  """Rotates counter-clockwise by `degrees` about the image centre."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  shape = tf.cast(tf.shape(image), tf.float32)
  height, width = shape[0] - 1.0, shape[1] - 1.0
  cos, sin = tf.cos(radians), tf.sin(radians)
  x_offset = (width - (cos * width - sin * height)) / 2.0
  y_offset = (height - (sin * width + cos * height)) / 2.0
  return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0], replace)


def shear_x(image: tf.Tensor, level: Number, replace: int = 128) -> tf.Tensor:
  """Horizontal shear: output (x, y) samples input (x + level·y, y)."""
  return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def shear_y(image: tf.Tensor, level: Number, replace: int = 128) -> tf.Tensor:
  """Vertical shear: output (x, y) samples input (x, level·x + y)."""
  return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0], replace)


def translate_x(image: tf.Tensor, pixels: Number, replace: int = 128) -> tf.Tensor:
  """Shifts the content left by `pixels` (right when negative)."""
  return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def translate_y(image: tf.Tensor, pixels: Number, replace: int = 128) -> tf.Tensor:
  """Shifts the content up by `pixels` (down when negative)."""
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0], replace)


def cutout(image: tf.Tensor, pad_size: Number, seed: tf.Tensor, replace: int = 128) -> tf.Tensor:
  """Fills a square of side 2·pad_size (clipped at the borders), at a random centre, with `replace`.

  TF's cutout, with the centre drawn from `seed`.
  """
  shape = tf.shape(image)
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
  center_y = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=shape[0], dtype=tf.int32)
  center_x = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=shape[1], dtype=tf.int32)
  pad_size = tf.cast(pad_size, tf.int32)
  rows = tf.range(shape[0])
  cols = tf.range(shape[1])
  in_rows = (rows >= center_y - pad_size) & (rows < center_y + pad_size)
  in_cols = (cols >= center_x - pad_size) & (cols < center_x + pad_size)
  inside = in_rows[:, None, None] & in_cols[None, :, None]
  return tf.where(inside, tf.cast(replace, image.dtype), image)


# ------------------------------------------------------------------------------------------------
# Levels -> op arguments, and dispatch.


def _random_sign(value: Number, seed: tf.Tensor) -> tf.Tensor:
  """`value` or `-value` with probability 1/2 each (geometric ops go both ways)."""
  negate = tf.random.stateless_uniform([], seed) < 0.5
  value = tf.cast(value, tf.float32)
  return tf.where(negate, -value, value)


@tf.autograph.experimental.do_not_convert
def apply_op(name: str, image: tf.Tensor, level: Number, seed: tf.Tensor, *, replace: int = 128,
             translate_const: float = 100.0, cutout_const: float = 40.0) -> tf.Tensor:
  """Applies augmentation op `name` at `level` (TF's 0..10 scale, may exceed 10).

  Args:
    name: one of `RANDAUGMENT_OPS`.
    image: uint8 [H, W, 3].
    level: magnitude; mapped to the op's argument linearly as in TF's autoaugment.py.
    seed: int [2] tensor for the op's own randomness (sign of geometric ops, cutout centre).
    replace: fill value for pixels uncovered by geometric ops and cutout.
    translate_const: translation in pixels at level 10 (TF: 100 RandAugment, 250 AutoAugment).
    cutout_const: cutout half-side in pixels at level 10 (TF: 40 RandAugment, 100 AutoAugment).

  Returns:
    uint8 [H, W, 3] with the static shape of `image`.
  """
  fraction = level / MAX_LEVEL
  if name == 'AutoContrast':
    result = auto_contrast(image)
  elif name == 'Equalize':
    result = equalize(image)
  elif name == 'Invert':
    result = invert(image)
  elif name == 'Rotate':
    result = rotate(image, _random_sign(fraction * 30.0, seed), replace)
  elif name == 'Posterize':
    result = posterize(image, tf.cast(fraction * 4, tf.int32))
  elif name == 'Solarize':
    result = solarize(image, tf.cast(fraction * 256, tf.int32))
  elif name == 'SolarizeAdd':
    result = solarize_add(image, tf.cast(fraction * 110, tf.int32))
  elif name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    enhance = {'Color': color, 'Contrast': contrast, 'Brightness': brightness,
               'Sharpness': sharpness}[name]
    result = enhance(image, fraction * 1.8 + 0.1)
  elif name in ('ShearX', 'ShearY'):
    shear = shear_x if name == 'ShearX' else shear_y
    result = shear(image, _random_sign(fraction * 0.3, seed), replace)
  elif name in ('TranslateX', 'TranslateY'):
    translate = translate_x if name == 'TranslateX' else translate_y
    result = translate(image, _random_sign(fraction * translate_const, seed), replace)
  elif name == 'Cutout':
    result = cutout(image, tf.cast(fraction * cutout_const, tf.int32), seed, replace)
  else:
    raise ValueError(f'Unknown augmentation op {name!r}; expected one of {RANDAUGMENT_OPS}.')
  # Keep the static shape through the graph-building branches of switch_case.
  return tf.ensure_shape(result, image.shape)


@tf.autograph.experimental.do_not_convert
def randaugment(image: tf.Tensor, seed: tf.Tensor, *, num_layers: int = 2, magnitude: float = 10,
                replace: int = 128, translate_const: float = 100.0,
                cutout_const: float = 40.0) -> tf.Tensor:
  """RandAugment: `num_layers` times, an op drawn uniformly from `RANDAUGMENT_OPS`, at `magnitude`.

  As in TF, the chosen op is always applied and the magnitude is fixed (not sampled).

  Args:
    image: uint8 [H, W, 3].
    seed: int [2] tensor; all choices derive from it.
    num_layers: N, the number of ops applied in sequence.
    magnitude: M on TF's scale (10 = AutoAugment's maximum; TF used 17 for b5, 28 for b7/b8).
    replace: fill value of geometric ops and cutout.
    translate_const: translation in pixels at level 10 (TF: 100, meant for 224+ px images).
    cutout_const: cutout half-side in pixels at level 10.

  Returns:
    uint8 [H, W, 3].
  """
  image = tf.convert_to_tensor(image)
  layer_seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2 * num_layers)

  def layer(index: tf.Tensor, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    choice = tf.random.stateless_uniform([], layer_seeds[2 * index], minval=0,
                                         maxval=len(RANDAUGMENT_OPS), dtype=tf.int32)
    op_seed = layer_seeds[2 * index + 1]
    branches = [
        functools.partial(apply_op, name, image, float(magnitude), op_seed, replace=replace,
                          translate_const=translate_const, cutout_const=cutout_const)
        for name in RANDAUGMENT_OPS
    ]
    return index + 1, tf.switch_case(choice, branches)

  # A loop rather than unrolled layers: the 16 branches are built once, which halves tracing time.
  _, image = tf.while_loop(lambda index, _: index < num_layers, layer, (tf.constant(0), image))
  return image


@tf.autograph.experimental.do_not_convert
def autoaugment(image: tf.Tensor, seed: tf.Tensor, *, policy: str = 'v0', replace: int = 128,
                translate_const: float = 250.0, cutout_const: float = 100.0) -> tf.Tensor:
  """AutoAugment: a sub-policy of `policy` drawn uniformly, each op applied with its probability.

  Args:
    image: uint8 [H, W, 3].
    seed: int [2] tensor; all choices derive from it.
    policy: a key of `POLICIES` ('v0', the policy of the TF EfficientNet runs).
    replace: fill value of geometric ops and cutout.
    translate_const: translation in pixels at level 10 (TF AutoAugment: 250).
    cutout_const: cutout half-side in pixels at level 10 (TF AutoAugment: 100).

  Returns:
    uint8 [H, W, 3].
  """
  if policy not in POLICIES:
    raise ValueError(f'Unknown AutoAugment policy {policy!r}; expected one of {sorted(POLICIES)}.')
  sub_policies = POLICIES[policy]
  image = tf.convert_to_tensor(image)
  # Tables indexed [sub-policy, position]: each position is one switch over the 16 ops, built once
  # in a loop, instead of a branch per sub-policy (a much smaller graph, so much faster tracing).
  op_ids = tf.constant([[RANDAUGMENT_OPS.index(name) for name, _, _ in s] for s in sub_policies])
  probabilities = tf.constant([[p for _, p, _ in s] for s in sub_policies], tf.float32)
  levels = tf.constant([[float(level) for _, _, level in s] for s in sub_policies], tf.float32)
  num_positions = len(sub_policies[0])
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=1 + 2 * num_positions)
  choice = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=len(sub_policies),
                                       dtype=tf.int32)

  def position(index: tf.Tensor, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    level = levels[choice, index]
    op_seed = seeds[2 + 2 * index]
    branches = [
        functools.partial(apply_op, name, image, level, op_seed, replace=replace,
                          translate_const=translate_const, cutout_const=cutout_const)
        for name in RANDAUGMENT_OPS
    ]
    applied = tf.random.stateless_uniform([], seeds[1 + 2 * index]) < probabilities[choice, index]
    image = tf.cond(applied, lambda: tf.switch_case(op_ids[choice, index], branches),
                    lambda: image)
    return index + 1, image

  _, image = tf.while_loop(lambda index, _: index < num_positions, position,
                           (tf.constant(0), image))
  return image
