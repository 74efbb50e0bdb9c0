"""RandAugment and AutoAugment (policy v0) in JAX: augment.py's ops, on the accelerator.

The same 16 ops as augment.py (TF EfficientNet's, tensorflow/tpu
models/official/efficientnet/autoaugment.py), with the same semantics, including the surprising ones
augment.py lists (Solarize's threshold wrapping modulo 256, Posterize's shift clamped to 7,
Contrast's blend towards pixel count / 256, truncation where PIL rounds). Each op takes one uint8
image [H, W, 3] and its argument as a (traceable) array, so one jitted op serves every magnitude.
`randaugment` and `autoaugment` augment a uint8 batch [B, H, W, 3], each example with its own
choices drawn from its own key. No TensorFlow (the accelerator machines have none): the tables and
level maps come from augment_policies.py, shared with augment.py.

Bit for bit on XLA:CPU (tests/input/test_device_augment.py compares every op with augment.py's).
Two things make that take care. TF runs each op as separate kernels, which round every float32
product before it is added; XLA contracts a multiply and the add that consumes it into a fused
multiply-add, rounded once, and then a blend lands one level off for about one (pixel pair, factor)
in 2,000 and a shear samples the neighbouring pixel near half-pixel boundaries. So every product
that feeds a sum is a float32 value times an integer, computed by `_product`, whose result no
contraction changes; the grey conversion, whose products are not of that form, reads them from a
table. And the sums are TF's, in TF's order (a depthwise convolution adds its nine products row by
row). What remains platform-dependent is sin/cos: XLA:CPU calls glibc's, as TF's kernels do; on a
GPU, CUDA's are not correctly rounded, so a rotation there may sample a neighbouring pixel where a
source coordinate falls within ~1e-4 px of a half-pixel.

The random choices have augment.py's distributions (op uniformly, or sub-policy uniformly and each
op with its probability; sign of a rotation/shear/translation 1/2 each; cutout centre uniform over
the pixels) but come from JAX keys, so the streams differ from augment.py's.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence, Union

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.input.augment_policies import (AUTOAUGMENT_CUTOUT_CONST,
                                                     AUTOAUGMENT_TRANSLATE_CONST,
                                                     RANDAUGMENT_CUTOUT_CONST, RANDAUGMENT_OPS,
                                                     RANDAUGMENT_TRANSLATE_CONST, REPLACE,
                                                     UNLEVELLED_OPS, level_to_arg, policy_args)

Number = Union[float, int, jax.Array]

# Products whose result `_product` guarantees: an integer factor must be below this in magnitude.
_MAX_EXACT_INTEGER = 2**12


def _product(value: Number, integer: jax.Array) -> jax.Array:
  """`value · integer` in float32, rounded once, as TF's multiply kernel rounds it.

  XLA may contract a multiply and the add that consumes it into a fused multiply-add, which skips
  the product's rounding. Here `value = high + low`, each with 12 significant bits, so both partial
  products are exact for an integer below 2**12 and their sum is `value · integer` rounded once,
  whether or not XLA fuses either multiply into that add.

  Args:
    value: float32 scalar or array.
    integer: float32 array holding integers of magnitude below 2**12 (pixel values or their
      differences, pixel coordinates).

  Returns:
    float32, the broadcast shape.
  """
  value = jnp.asarray(value, jnp.float32)
  bits = lax.bitcast_convert_type(value, jnp.uint32)
  high = lax.bitcast_convert_type(bits & np.uint32(0xFFFFF000), jnp.float32)
  low = value - high
  return high * integer + low * integer


# ------------------------------------------------------------------------------------------------
# Pixel ops. All take and return uint8 [H, W, 3].


def blend(image1: jax.Array, image2: jax.Array, factor: Number) -> jax.Array:
  """`image1 + factor·(image2 - image1)` in float32, clipped and truncated to uint8 (as TF)."""
  image1 = jnp.asarray(image1).astype(jnp.float32)
  image2 = jnp.asarray(image2).astype(jnp.float32)
  blended = image1 + _product(factor, image2 - image1)
  return jnp.clip(blended, 0.0, 255.0).astype(jnp.uint8)


# tf.image.rgb_to_grayscale's float32 terms for each level (rows) and channel (columns): the level
# scaled to [0, 1] by float32(1/255), times the channel's weight, each product rounded.
_GREY_TERMS = (np.arange(256, dtype=np.float32)[:, None] * np.float32(1.0 / 255.0) *
               np.array([0.2989, 0.5870, 0.1140], np.float32))


def _grey(image: jax.Array) -> jax.Array:
  """tf.image.rgb_to_grayscale then grayscale_to_rgb, with TF's float32 arithmetic.

  TF sums the three terms left to right and converts back to uint8 as `trunc(grey · 255.5)`; this
  equals TF's for all 2**24 colours.
  """
  terms = jnp.asarray(_GREY_TERMS)
  grey = (terms[image[..., 0], 0] + terms[image[..., 1], 1]) + terms[image[..., 2], 2]
  grey = (grey * np.float32(255.5)).astype(jnp.uint8)
  return jnp.broadcast_to(grey[..., None], image.shape)


def auto_contrast(image: jax.Array) -> jax.Array:
  """Stretches each channel from its [lo, hi] towards [0, 255] (a flat channel is kept).

  TF's float32 arithmetic: `v·scale + offset`, `scale = 255 / (hi - lo)`, `offset = -lo·scale`,
  clipped and truncated (augment.py says why this differs from `(v - lo)·scale`).
  """
  pixels = image.astype(jnp.float32)
  low = pixels.min(axis=(0, 1))
  high = pixels.max(axis=(0, 1))
  # A flat channel has nothing to stretch: divide by a dummy 1, then keep the input unchanged.
  flat = high <= low
  scale = 255.0 / jnp.where(flat, 1.0, high - low)
  offset = _product(scale, -low)
  stretched = jnp.clip(_product(scale, pixels) + offset, 0.0, 255.0)
  return jnp.where(flat, pixels, stretched).astype(jnp.uint8)


def _equalize_channel(channel: jax.Array) -> jax.Array:
  """PIL's histogram equalisation of one uint8 [H, W] channel, as augment.py computes it."""
  values = channel.astype(jnp.int32)
  histogram = jnp.zeros(256, jnp.int32).at[values.ravel()].add(1)
  # PIL leaves the brightest populated bin out of the step so that it maps to 255.
  last_populated = jnp.max(jnp.where(histogram > 0, jnp.arange(256), -1))
  step = (histogram.sum() - histogram[last_populated]) // 255
  safe_step = jnp.maximum(step, 1)
  lut = (jnp.cumsum(histogram) + safe_step // 2) // safe_step
  lut = jnp.clip(jnp.concatenate([jnp.zeros(1, jnp.int32), lut[:-1]]), 0, 255)
  # step == 0 means (almost) a single grey level: PIL returns the channel unchanged.
  return jnp.where(step == 0, values, lut[values]).astype(jnp.uint8)


def equalize(image: jax.Array) -> jax.Array:
  """Per-channel histogram equalisation."""
  return jax.vmap(_equalize_channel, in_axes=2, out_axes=2)(image)


def invert(image: jax.Array) -> jax.Array:
  """`255 - image`."""
  return jnp.uint8(255) - image


def posterize(image: jax.Array, bits: Number) -> jax.Array:
  """Keeps the `bits` most significant bits, shifting by `min((8 - bits) mod 256, 7)` as TF does.

  So 0 bits and more than 8 bits keep only the top bit (augment.py's note on TF's uint8 shifts).
  """
  shift = jnp.minimum(jnp.mod(8 - jnp.asarray(bits).astype(jnp.int32), 256), 7).astype(jnp.uint8)
  return (image >> shift) << shift


def _as_uint8_threshold(threshold: Number) -> jax.Array:
  # TF compares a uint8 image with a Python int, which it converts to uint8 modulo 256.
  return jnp.mod(jnp.asarray(threshold).astype(jnp.int32), 256).astype(jnp.uint8)


def solarize(image: jax.Array, threshold: Number = 128) -> jax.Array:
  """Inverts every pixel at or above `threshold`, taken modulo 256 as TF does (256 inverts all)."""
  return jnp.where(image < _as_uint8_threshold(threshold), image, jnp.uint8(255) - image)


def solarize_add(image: jax.Array, addition: Number = 0, threshold: Number = 128) -> jax.Array:
  """Adds `addition` (the sum clipped to 0..255) to every pixel below `threshold`."""
  pixels = image.astype(jnp.int32)
  added = jnp.clip(pixels + jnp.asarray(addition).astype(jnp.int32), 0, 255).astype(jnp.uint8)
  return jnp.where(image < _as_uint8_threshold(threshold), added, image)


def color(image: jax.Array, factor: Number) -> jax.Array:
  """Saturation: 0 gives grey, 1 the original, >1 more saturated."""
  return blend(_grey(image), image, factor)


def contrast(image: jax.Array, factor: Number) -> jax.Array:
  """A blend towards a flat grey of `min(pixel count / 256, 255)`, truncated, as TF computes it."""
  height, width = image.shape[:2]
  return blend(jnp.full_like(image, min(height * width // 256, 255)), image, factor)


def brightness(image: jax.Array, factor: Number) -> jax.Array:
  """Brightness: 0 gives black, 1 the original."""
  return blend(jnp.zeros_like(image), image, factor)


# PIL's SMOOTH kernel, whose weights TF divides by 13 in float32.
_SMOOTH_WEIGHTS = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13.0)


def sharpness(image: jax.Array, factor: Number) -> jax.Array:
  """Sharpness via PIL's SMOOTH kernel: 0 gives the smoothed image, 1 the original, >1 sharper.

  The smoothed image is TF's depthwise convolution: the nine products added in row-major order,
  truncated to uint8; the 1-pixel border keeps the original pixels.
  """
  image = jnp.asarray(image)
  height, width = image.shape[:2]
  pixels = image.astype(jnp.float32)
  smoothed = None
  for row in range(3):
    for column in range(3):
      term = _product(_SMOOTH_WEIGHTS[row, column],
                      pixels[row:height - 2 + row, column:width - 2 + column])
      smoothed = term if smoothed is None else smoothed + term
  smoothed = jnp.clip(smoothed, 0.0, 255.0).astype(jnp.uint8)
  degenerate = image.at[1:-1, 1:-1].set(smoothed)
  return blend(degenerate, image, factor)


# ------------------------------------------------------------------------------------------------
# Geometric ops and cutout. All take and return uint8 [H, W, 3].


def _transform(image: jax.Array, x_coefficients: Sequence[Number],
               y_coefficients: Sequence[Number], replace: Number) -> jax.Array:
  """Affine map with nearest sampling, TF's ImageProjectiveTransformV3 kernel's arithmetic.

  Output pixel (x, y) takes the input pixel nearest to (a0·x + a1·y + a2, b0·x + b1·y + b2) for
  `x_coefficients` (a0, a1, a2) and `y_coefficients` (b0, b1, b2): the kernel's float32 sums in
  its order, each product rounded, then `std::round` (halves away from zero); pixels mapped from
  outside the image get `replace`.
  """
  height, width = image.shape[:2]
  if max(height, width) > _MAX_EXACT_INTEGER:
    raise ValueError(f'Images up to {_MAX_EXACT_INTEGER} px a side, got {image.shape}.')
  rows = jnp.arange(height, dtype=jnp.float32)[:, None]
  columns = jnp.arange(width, dtype=jnp.float32)[None, :]

  def nearest_source(coefficients):
    along_x, along_y, offset = coefficients
    offset = jnp.asarray(offset, jnp.float32)
    source = (_product(along_x, columns) + _product(along_y, rows)) + offset
    return lax.round(source, lax.RoundingMethod.AWAY_FROM_ZERO).astype(jnp.int32)

  source_x = nearest_source(x_coefficients)
  source_y = nearest_source(y_coefficients)
  inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
  sampled = image[jnp.clip(source_y, 0, height - 1), jnp.clip(source_x, 0, width - 1)]
  return jnp.where(inside[..., None], sampled, jnp.asarray(replace).astype(image.dtype))


def rotate(image: jax.Array, degrees: Number, replace: Number = REPLACE) -> jax.Array:
  """Rotates counter-clockwise (as displayed) by `degrees` about the image centre.

  tf.contrib.image.rotate's matrix, with its float32 operations in the same order (augment.py).
  """
  radians = jnp.asarray(degrees, jnp.float32) * np.float32(math.pi / 180.0)
  height, width = (np.float32(size - 1) for size in image.shape[:2])
  cos, sin = jnp.cos(radians), jnp.sin(radians)
  x_offset = (width - (_product(cos, width) - _product(sin, height))) / 2.0
  y_offset = (height - (_product(sin, width) + _product(cos, height))) / 2.0
  return _transform(image, (cos, -sin, x_offset), (sin, cos, y_offset), replace)


def shear_x(image: jax.Array, level: Number, replace: Number = REPLACE) -> jax.Array:
  """Horizontal shear: output (x, y) samples input (x + level·y, y)."""
  return _transform(image, (1.0, level, 0.0), (0.0, 1.0, 0.0), replace)


def shear_y(image: jax.Array, level: Number, replace: Number = REPLACE) -> jax.Array:
  """Vertical shear: output (x, y) samples input (x, level·x + y)."""
  return _transform(image, (1.0, 0.0, 0.0), (level, 1.0, 0.0), replace)


def translate_x(image: jax.Array, pixels: Number, replace: Number = REPLACE) -> jax.Array:
  """Shifts the content left by `pixels` (right when negative)."""
  return _transform(image, (1.0, 0.0, pixels), (0.0, 1.0, 0.0), replace)


def translate_y(image: jax.Array, pixels: Number, replace: Number = REPLACE) -> jax.Array:
  """Shifts the content up by `pixels` (down when negative)."""
  return _transform(image, (1.0, 0.0, 0.0), (0.0, 1.0, pixels), replace)


def cutout(image: jax.Array, pad_size: Number, center: Sequence[Number],
           replace: Number = REPLACE) -> jax.Array:
  """Fills rows [cy - pad_size, cy + pad_size) × the same columns around `center`, with `replace`.

  Args:
    image: uint8 [H, W, 3].
    pad_size: half the side of the square; 0 changes nothing.
    center: (row, column) of the square's centre; the square is clipped at the image borders.
    replace: fill value.

  Returns:
    uint8 [H, W, 3].
  """
  height, width = image.shape[:2]
  center_y, center_x = (jnp.asarray(c).astype(jnp.int32) for c in center)
  pad_size = jnp.asarray(pad_size).astype(jnp.int32)
  rows = jnp.arange(height)
  columns = jnp.arange(width)
  in_rows = (rows >= center_y - pad_size) & (rows < center_y + pad_size)
  in_columns = (columns >= center_x - pad_size) & (columns < center_x + pad_size)
  inside = in_rows[:, None, None] & in_columns[None, :, None]
  return jnp.where(inside, jnp.asarray(replace).astype(image.dtype), image)


# ------------------------------------------------------------------------------------------------
# Dispatch and the two policies.

_PIXEL_OPS = {'AutoContrast': auto_contrast, 'Equalize': equalize, 'Invert': invert,
              'Posterize': posterize, 'Solarize': solarize, 'SolarizeAdd': solarize_add,
              'Color': color, 'Contrast': contrast, 'Brightness': brightness,
              'Sharpness': sharpness}
_GEOMETRIC_OPS = {'Rotate': rotate, 'ShearX': shear_x, 'ShearY': shear_y,
                  'TranslateX': translate_x, 'TranslateY': translate_y}


def _random_sign(value: Number, key: jax.Array) -> jax.Array:
  """`value` or `-value` with probability 1/2 each (geometric ops go both ways)."""
  value = jnp.asarray(value, jnp.float32)
  return jnp.where(jax.random.uniform(key) < 0.5, -value, value)


def _random_center(image: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A pixel (row, column) drawn uniformly, as TF draws cutout centres."""
  row_key, column_key = jax.random.split(key)
  height, width = image.shape[:2]
  return (jax.random.randint(row_key, (), 0, height), jax.random.randint(column_key, (), 0, width))


def _apply_argument(name: str, image: jax.Array, argument: jax.Array, key: jax.Array, *,
                    replace: Number) -> jax.Array:
  """Op `name` with TF's argument (ignored by ops without one); sign / cutout centre from `key`."""
  if name in UNLEVELLED_OPS:
    return _PIXEL_OPS[name](image)
  if name in _PIXEL_OPS:
    return _PIXEL_OPS[name](image, argument)
  if name in _GEOMETRIC_OPS:
    return _GEOMETRIC_OPS[name](image, _random_sign(argument, key), replace)
  if name == 'Cutout':
    return cutout(image, argument, _random_center(image, key), replace)
  raise ValueError(f'Unknown augmentation op {name!r}; expected one of {RANDAUGMENT_OPS}.')


def _argument(name: str, level: Union[float, int], translate_const: float,
              cutout_const: float) -> float:
  """The op's single argument from `level_to_arg` (0 for ops without one)."""
  args = level_to_arg(name, level, translate_const=translate_const, cutout_const=cutout_const)
  return args[0] if args else 0.0


def apply_op(name: str, image: jax.Array, level: Union[float, int], key: jax.Array, *,
             replace: Number = REPLACE, translate_const: float = RANDAUGMENT_TRANSLATE_CONST,
             cutout_const: float = RANDAUGMENT_CUTOUT_CONST) -> jax.Array:
  """Applies augmentation op `name` at `level` (TF's 0..10 scale, may exceed 10).

  Args:
    name: one of `RANDAUGMENT_OPS`.
    image: uint8 [H, W, 3].
    level: magnitude, a Python number (mapped in double precision, as TF maps it).
    key: JAX PRNG key for the op's own randomness (sign of geometric ops, cutout centre).
    replace: fill value for pixels uncovered by geometric ops and cutout.
    translate_const: translation in pixels at level 10 (TF: 100 RandAugment, 250 AutoAugment).
    cutout_const: cutout half-side in pixels at level 10 (TF: 40 RandAugment, 100 AutoAugment).

  Returns:
    uint8 [H, W, 3].
  """
  argument = jnp.float32(_argument(name, level, translate_const, cutout_const))
  return _apply_argument(name, jnp.asarray(image), argument, key, replace=replace)


def _branches(replace: Number) -> list[Callable[[jax.Array, jax.Array, jax.Array], jax.Array]]:
  """One `(image, argument, key) -> image` per op of `RANDAUGMENT_OPS`, for `lax.switch`."""
  return [functools.partial(_apply_argument, name, replace=replace) for name in RANDAUGMENT_OPS]


def _check_batch(images: jax.Array) -> jax.Array:
  images = jnp.asarray(images)
  if images.dtype != jnp.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'Expected uint8 images [B, H, W, 3], got {images.dtype} {images.shape}.')
  return images


def randaugment_draws(seed: jax.Array, num_layers: int) -> tuple[jax.Array, jax.Array]:
  """One example's RandAugment choices: per layer, an op index (uniform) and the op's own key."""
  choice_key, ops_key = jax.random.split(seed)
  choices = jax.random.randint(choice_key, (num_layers,), 0, len(RANDAUGMENT_OPS))
  return choices, jax.random.split(ops_key, num_layers)


def autoaugment_draws(seed: jax.Array, probabilities: jax.Array
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One example's AutoAugment choices: a sub-policy, whether each of its ops applies, their keys.

  Args:
    seed: the example's PRNG key.
    probabilities: float32 [sub-policies, positions], each op's probability.

  Returns:
    (sub-policy index (uniform), bool [positions], a key per position).
  """
  probabilities = jnp.asarray(probabilities, jnp.float32)
  num_sub_policies, num_positions = probabilities.shape
  choice_key, apply_key, ops_key = jax.random.split(seed, 3)
  choice = jax.random.randint(choice_key, (), 0, num_sub_policies)
  # Applied with probability p (TF: floor(u + p) != 0, the same event as u >= 1 - p).
  applied = jax.random.uniform(apply_key, (num_positions,)) < probabilities[choice]
  return choice, applied, jax.random.split(ops_key, num_positions)


def randaugment(images: jax.Array, seeds: jax.Array, *, num_layers: int = 2,
                magnitude: float = 10, replace: Number = REPLACE,
                translate_const: float = RANDAUGMENT_TRANSLATE_CONST,
                cutout_const: float = RANDAUGMENT_CUTOUT_CONST) -> jax.Array:
  """RandAugment per example: `num_layers` times, an op drawn uniformly, always applied.

  As augment.randaugment, batched: each example draws its own ops from its own key. Under `vmap`
  the switch over ops evaluates all 16 and selects, so a layer costs every op once per example.

  Args:
    images: uint8 [B, H, W, 3].
    seeds: one JAX PRNG key per example ([B] typed keys or [B, 2] uint32), e.g.
      `fold_in(fold_in(seed, step), example_index)`.
    num_layers: N, the number of ops applied in sequence (static).
    magnitude: M on TF's scale, a Python number (static: mapped in double precision, as TF does).
    replace: fill value of geometric ops and cutout.
    translate_const: translation in pixels at level 10 (TF: 100, meant for 224+ px images).
    cutout_const: cutout half-side in pixels at level 10.

  Returns:
    uint8 [B, H, W, 3].
  """
  images = _check_batch(images)
  arguments = jnp.asarray([_argument(name, magnitude, translate_const, cutout_const)
                           for name in RANDAUGMENT_OPS], jnp.float32)
  branches = _branches(replace)

  def layer(image, inputs):
    choice, op_key = inputs
    return lax.switch(choice, branches, image, arguments[choice], op_key), None

  def augment_example(image, seed):
    # A scan rather than unrolled layers: the 16 branches are traced and compiled once.
    image, _ = lax.scan(layer, image, randaugment_draws(seed, num_layers))
    return image

  return jax.vmap(augment_example)(images, seeds)


def autoaugment(images: jax.Array, seeds: jax.Array, *, policy: str = 'v0',
                replace: Number = REPLACE, translate_const: float = AUTOAUGMENT_TRANSLATE_CONST,
                cutout_const: float = AUTOAUGMENT_CUTOUT_CONST) -> jax.Array:
  """AutoAugment per example: a sub-policy drawn uniformly, each op applied with its probability.

  As augment.autoaugment, batched: each example draws its own sub-policy from its own key.

  Args:
    images: uint8 [B, H, W, 3].
    seeds: one JAX PRNG key per example ([B] typed keys or [B, 2] uint32).
    policy: a key of `augment_policies.POLICIES` ('v0', the policy of the TF EfficientNet runs).
    replace: fill value of geometric ops and cutout.
    translate_const: translation in pixels at level 10 (TF AutoAugment: 250).
    cutout_const: cutout half-side in pixels at level 10 (TF AutoAugment: 100).

  Returns:
    uint8 [B, H, W, 3].
  """
  images = _check_batch(images)
  table = policy_args(policy, translate_const=translate_const, cutout_const=cutout_const)
  # Tables indexed [sub-policy, position]; TF's arguments (Python doubles) rounded once to float32,
  # the precision its ops receive them in (integer arguments are exact).
  op_ids = jnp.asarray([[RANDAUGMENT_OPS.index(name) for name, _, _ in s] for s in table])
  probabilities = jnp.asarray([[p for _, p, _ in s] for s in table], jnp.float32)
  arguments = jnp.asarray([[args[0] if args else 0.0 for _, _, args in s] for s in table],
                          jnp.float32)
  branches = _branches(replace)

  def position(image, inputs):
    op_id, applied, argument, op_key = inputs
    augmented = lax.switch(op_id, branches, image, argument, op_key)
    return jnp.where(applied, augmented, image), None

  def augment_example(image, seed):
    choice, applied, op_keys = autoaugment_draws(seed, probabilities)
    # A scan over the positions: the 16 branches are traced and compiled once.
    image, _ = lax.scan(position, image, (op_ids[choice], applied, arguments[choice], op_keys))
    return image

  return jax.vmap(augment_example)(images, seeds)
