"""RandAugment and AutoAugment (policy v0) in JAX: augment.py's ops, on the accelerator.

The same 16 ops as augment.py (TF EfficientNet's, tensorflow/tpu
models/official/efficientnet/autoaugment.py), with the same semantics, including the surprising ones
augment.py lists (Solarize's threshold wrapping modulo 256, Posterize's shift clamped to 7,
Contrast's blend towards pixel count / 256, truncation where PIL rounds). Each op takes one uint8
image [H, W, 3] and its argument as a (traceable) array, so one jitted op serves every magnitude.
`randaugment` and `autoaugment` augment a uint8 batch [B, H, W, 3], each example with its own
choices drawn from its own key. No TensorFlow (the accelerator machines have none): the tables and
level maps come from augment_policies.py, shared with augment.py.

A policy layer does not run all 16 ops on every example and select (what a `switch` over the ops
does under `vmap`); it runs a few stages on the batch, each the identity for the examples whose op
is not its own (`_layer`). Eight ops map each pixel through a function of its value, per channel:
Invert, Posterize, Solarize, SolarizeAdd, Contrast and Brightness, and AutoContrast and Equalize
given the image's histograms. Each becomes a table of 256 levels per example, computed by the op's
own arithmetic on every level, so a lookup gives the op's output bit for bit. The five geometric
ops are an affine map per example. Tables, maps and Cutout make one sampling pass; Color and
Sharpness blend with their degenerate images. The per-image ops are built from the same pieces,
so the tests that compare them with augment.py's pin the policies' arithmetic too.

Bit for bit on XLA:CPU (tests/input/test_device_augment.py compares every op with augment.py's).
Two things make that take care. TF runs each op as separate kernels, which round every float32
product before it is added; XLA contracts a multiply and the add that consumes it into a fused
multiply-add, rounded once, and then a blend lands one level off for about one (pixel pair, factor)
in 2,000 and a shear samples the neighbouring pixel near half-pixel boundaries. So every product
that feeds a sum is a float32 value times an integer, computed by `_product`, whose result no
contraction changes; the grey conversion, whose products are not of that form, reads them from a
table. And the sums are TF's, in TF's order (a depthwise convolution adds its nine products row by
row). Nor is a quotient computed on the device: XLA:GPU's float32 division is not correctly rounded,
so AutoContrast reads its `255 / span` from a table (an H200 put 23% of its values one level off
before). What remains platform-dependent is sin/cos: XLA:CPU calls glibc's, as TF's kernels do; on
a GPU, CUDA's are not correctly rounded, so a rotation there may sample a neighbouring pixel where
a source coordinate falls within ~1e-4 px of a half-pixel (none did on the H200 for the images of
benchmarks/device_augment_parity.py; docs/benchmarks.md).

The random choices have augment.py's distributions (op uniformly, or sub-policy uniformly and each
op with its probability; sign of a rotation/shear/translation 1/2 each; cutout centre uniform over
the pixels) but come from JAX keys, so the streams differ from augment.py's.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence, Union

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.input.augment_policies import (AUTOAUGMENT_CUTOUT_CONST,
                                                     AUTOAUGMENT_TRANSLATE_CONST,
                                                     RANDAUGMENT_CUTOUT_CONST, RANDAUGMENT_OPS,
                                                     RANDAUGMENT_TRANSLATE_CONST, REPLACE,
                                                     level_to_arg, policy_args)

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
# Batched building blocks: a layer runs on the whole batch [B, H, W, 3], each example with its own
# parameters. Each gather and scatter is per example (a batch axis in its operand and its indices),
# so a batch sharded over devices augments without any communication.


def _lookup(images: jax.Array, tables: jax.Array) -> jax.Array:
  """`tables[b, images[b, ..., c], c]`: uint8 [B, ..., 3] through each example's uint8 [256, 3]."""
  indices = (images.astype(jnp.int32) * 3 + np.arange(3)).reshape(len(images), -1)
  looked_up = jnp.take_along_axis(tables.reshape(len(tables), -1), indices, axis=1,
                                  mode='promise_in_bounds')
  return looked_up.reshape(images.shape)


def _histograms(images: jax.Array) -> jax.Array:
  """int32 [B, 256, 3]: each example's pixel count per level, per channel."""

  def histograms(image):
    indices = (image.reshape(-1, 3).astype(jnp.int32) + np.arange(3) * 256).ravel()
    # In bounds by construction; without the promise XLA:CPU checks every index.
    counts = jnp.zeros(3 * 256, jnp.int32).at[indices].add(1, mode='promise_in_bounds')
    return counts.reshape(3, 256).T

  return jax.vmap(histograms)(images)


def blend(image1: jax.Array, image2: jax.Array, factor: Number) -> jax.Array:
  """`image1 + factor·(image2 - image1)` in float32, clipped and truncated to uint8 (as TF)."""
  image1 = jnp.asarray(image1).astype(jnp.float32)
  image2 = jnp.asarray(image2).astype(jnp.float32)
  blended = image1 + _product(factor, image2 - image1)
  return jnp.clip(blended, 0.0, 255.0).astype(jnp.uint8)


# ------------------------------------------------------------------------------------------------
# Lookup tables: the pixel ops whose output is a function of the input pixel's value (per channel),
# computed on every level by the op's own arithmetic. Each takes one example's arguments.

# Every level in every channel: the identity table, and the "image" a table is computed on.
_LEVELS = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, 3))


# `255 / span` in float32, correctly rounded, for every span 1..255 (index 0: a dummy 1). Read from
# a table rather than divided on the device: XLA:GPU's float32 division is not correctly rounded,
# and where 255 / span is an integer (span 1, 3, 5, 15, 17, 51, 85) a quotient one ulp low truncates
# every stretched pixel one level down (measured on an H200: 23% of AutoContrast's values).
_AUTO_CONTRAST_SCALES = np.concatenate(
    [np.ones(1, np.float32), np.float32(255.0) / np.arange(1, 256, dtype=np.float32)])


def _auto_contrast_table(histograms: jax.Array) -> jax.Array:
  """AutoContrast for an image with these histograms (its range is their populated span).

  TF's float32 arithmetic: `v·scale + offset`, `scale = 255 / (hi - lo)`, `offset = -lo·scale`,
  clipped and truncated (augment.py says why this differs from `(v - lo)·scale`).
  """
  levels = jnp.arange(256, dtype=jnp.float32)[:, None]
  populated = histograms > 0
  low = jnp.min(jnp.where(populated, levels, 255.0), axis=0)
  high = jnp.max(jnp.where(populated, levels, 0.0), axis=0)
  # A flat channel has nothing to stretch: a dummy scale, then the input is kept unchanged.
  flat = high <= low
  span = jnp.where(flat, 0, high - low).astype(jnp.int32)
  scale = jnp.asarray(_AUTO_CONTRAST_SCALES)[span]
  offset = _product(scale, -low)
  stretched = jnp.clip(_product(scale, levels) + offset, 0.0, 255.0)
  return jnp.where(flat, levels, stretched).astype(jnp.uint8)


def _equalize_table(histograms: jax.Array) -> jax.Array:
  """PIL's histogram equalisation of each channel, as augment.py computes it."""
  levels = jnp.arange(256)[:, None]
  # PIL leaves the brightest populated bin out of the step so that it maps to 255.
  last_populated = jnp.max(jnp.where(histograms > 0, levels, -1), axis=0)
  last_count = jnp.take_along_axis(histograms, last_populated[None], axis=0)[0]
  step = (histograms.sum(axis=0) - last_count) // 255
  safe_step = jnp.maximum(step, 1)
  table = (jnp.cumsum(histograms, axis=0) + safe_step // 2) // safe_step
  table = jnp.clip(jnp.concatenate([jnp.zeros((1, 3), table.dtype), table[:-1]]), 0, 255)
  # step == 0 means (almost) a single grey level: PIL returns the channel unchanged.
  return jnp.where(step == 0, levels, table).astype(jnp.uint8)


def _invert_table() -> jax.Array:
  return jnp.uint8(255) - jnp.asarray(_LEVELS)


def _posterize_table(bits: Number) -> jax.Array:
  # TF's uint8 shift amount: 8 - bits modulo 256, which its CPU kernel clamps to 7.
  shift = jnp.minimum(jnp.mod(8 - jnp.asarray(bits).astype(jnp.int32), 256), 7).astype(jnp.uint8)
  return (jnp.asarray(_LEVELS) >> shift) << shift


def _as_uint8_threshold(threshold: Number) -> jax.Array:
  # TF compares a uint8 image with a Python int, which it converts to uint8 modulo 256.
  return jnp.mod(jnp.asarray(threshold).astype(jnp.int32), 256).astype(jnp.uint8)


def _solarize_table(threshold: Number) -> jax.Array:
  levels = jnp.asarray(_LEVELS)
  return jnp.where(levels < _as_uint8_threshold(threshold), levels, jnp.uint8(255) - levels)


def _solarize_add_table(addition: Number, threshold: Number = 128) -> jax.Array:
  levels = jnp.asarray(_LEVELS)
  added = jnp.clip(levels.astype(jnp.int32) + jnp.asarray(addition).astype(jnp.int32), 0, 255)
  return jnp.where(levels < _as_uint8_threshold(threshold), added.astype(jnp.uint8), levels)


def _contrast_level(height: int, width: int) -> int:
  """TF's Contrast blends towards `min(pixel count / 256, 255)`, truncated (augment.py)."""
  return min(height * width // 256, 255)


def _blend_table(level: int, factor: Number) -> jax.Array:
  """A blend from a flat `level` towards the image (Brightness: level 0; Contrast)."""
  return blend(jnp.full(_LEVELS.shape, level, jnp.uint8), _LEVELS, factor)


def _lookup_one(image: jax.Array, table: jax.Array) -> jax.Array:
  return _lookup(jnp.asarray(image)[None], table[None])[0]


# ------------------------------------------------------------------------------------------------
# Pixel ops. All take and return uint8 [H, W, 3]; all but Color and Sharpness are table lookups.


def auto_contrast(image: jax.Array) -> jax.Array:
  """Stretches each channel from its [lo, hi] towards [0, 255] (a flat channel is kept)."""
  return _lookup_one(image, _auto_contrast_table(_histograms(jnp.asarray(image)[None])[0]))


def equalize(image: jax.Array) -> jax.Array:
  """Per-channel histogram equalisation."""
  return _lookup_one(image, _equalize_table(_histograms(jnp.asarray(image)[None])[0]))


def invert(image: jax.Array) -> jax.Array:
  """`255 - image`."""
  return _lookup_one(image, _invert_table())


def posterize(image: jax.Array, bits: Number) -> jax.Array:
  """Keeps the `bits` most significant bits, shifting by `min((8 - bits) mod 256, 7)` as TF does.

  So 0 bits and more than 8 bits keep only the top bit (augment.py's note on TF's uint8 shifts).
  """
  return _lookup_one(image, _posterize_table(bits))


def solarize(image: jax.Array, threshold: Number = 128) -> jax.Array:
  """Inverts every pixel at or above `threshold`, taken modulo 256 as TF does (256 inverts all)."""
  return _lookup_one(image, _solarize_table(threshold))


def solarize_add(image: jax.Array, addition: Number = 0, threshold: Number = 128) -> jax.Array:
  """Adds `addition` (the sum clipped to 0..255) to every pixel below `threshold`."""
  return _lookup_one(image, _solarize_add_table(addition, threshold))


def contrast(image: jax.Array, factor: Number) -> jax.Array:
  """A blend towards a flat grey of `min(pixel count / 256, 255)`, truncated, as TF computes it."""
  return _lookup_one(image, _blend_table(_contrast_level(*image.shape[:2]), factor))


def brightness(image: jax.Array, factor: Number) -> jax.Array:
  """Brightness: 0 gives black, 1 the original."""
  return _lookup_one(image, _blend_table(0, factor))


# tf.image.rgb_to_grayscale's float32 terms for each level (rows) and channel (columns): the level
# scaled to [0, 1] by float32(1/255), times the channel's weight, each product rounded.
_GREY_TERMS = (np.arange(256, dtype=np.float32)[:, None] * np.float32(1.0 / 255.0) *
               np.array([0.2989, 0.5870, 0.1140], np.float32))


def _grey(images: jax.Array) -> jax.Array:
  """tf.image.rgb_to_grayscale then grayscale_to_rgb (any leading axes), with TF's arithmetic.

  TF sums the three terms left to right and converts back to uint8 as `trunc(grey · 255.5)`; this
  equals TF's for all 2**24 colours.
  """
  terms = [jnp.asarray(_GREY_TERMS[:, channel]) for channel in range(3)]
  grey = (terms[0][images[..., 0]] + terms[1][images[..., 1]]) + terms[2][images[..., 2]]
  grey = (grey * np.float32(255.5)).astype(jnp.uint8)
  return jnp.broadcast_to(grey[..., None], images.shape)


# PIL's SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]], whose weights TF divides by 13 in float32.
_SMOOTH_SIDE = np.float32(1.0) / np.float32(13.0)
_SMOOTH_CENTRE = np.float32(5.0) / np.float32(13.0)


def _smoothed(images: jax.Array) -> jax.Array:
  """Sharpness's degenerate images [B, H, W, 3]: TF's depthwise SMOOTH convolution, truncated.

  The nine products added in row-major order, as TF adds them. Each product is a weight times a
  pixel, so the eight side terms are one product per pixel, shared by its eight neighbours. The
  1-pixel border keeps the original pixels. Computed over the whole frame (the side terms padded
  with zeros, the border then put back) rather than written into the image's interior, which makes
  XLA:CPU compute the blend that consumes it pixel by pixel, several times slower.
  """
  height, width = images.shape[1:3]
  pixels = images.astype(jnp.float32)
  side = jnp.pad(_product(_SMOOTH_SIDE, pixels), ((0, 0), (1, 1), (1, 1), (0, 0)))
  centre = _product(_SMOOTH_CENTRE, pixels)
  smoothed = None
  for row in range(3):
    for column in range(3):
      term = (centre if (row, column) == (1, 1) else
              side[:, row:row + height, column:column + width])
      smoothed = term if smoothed is None else smoothed + term
  smoothed = jnp.clip(smoothed, 0.0, 255.0).astype(jnp.uint8)
  rows = jnp.arange(height)[:, None, None]
  columns = jnp.arange(width)[None, :, None]
  inner = (rows > 0) & (rows < height - 1) & (columns > 0) & (columns < width - 1)
  return jnp.where(inner, smoothed, images)


def color(image: jax.Array, factor: Number) -> jax.Array:
  """Saturation: 0 gives grey, 1 the original, >1 more saturated."""
  return blend(_grey(image), image, factor)


def sharpness(image: jax.Array, factor: Number) -> jax.Array:
  """Sharpness via PIL's SMOOTH kernel: 0 gives the smoothed image, 1 the original, >1 sharper."""
  image = jnp.asarray(image)
  return blend(_smoothed(image[None])[0], image, factor)


# ------------------------------------------------------------------------------------------------
# Geometric ops and cutout. All take and return uint8 [H, W, 3]. Each geometric op is an affine
# map [a0, a1, a2, b0, b1, b2] (`_resample`), so that any of them, or none, is one sampling pass.

_IDENTITY_MAP = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.float32)


def _cutout_mask(height: int, width: int, pad_size: Number, center: Sequence[Number]
                 ) -> jax.Array:
  """bool [H, W]: rows [cy - pad_size, cy + pad_size) × the same columns (none for pad_size 0)."""
  center_y, center_x = (jnp.asarray(c).astype(jnp.int32) for c in center)
  pad_size = jnp.asarray(pad_size).astype(jnp.int32)
  rows = jnp.arange(height)
  columns = jnp.arange(width)
  in_rows = (rows >= center_y - pad_size) & (rows < center_y + pad_size)
  in_columns = (columns >= center_x - pad_size) & (columns < center_x + pad_size)
  return in_rows[:, None] & in_columns[None, :]


def _resample(images: jax.Array, affine: jax.Array, replace: Number, *,
              tables: jax.Array | None = None, cut: jax.Array | None = None) -> jax.Array:
  """Each example's affine map with nearest sampling, TF's ImageProjectiveTransformV3 arithmetic.

  Output pixel (x, y) of example b takes the input pixel nearest to
  (a0·x + a1·y + a2, b0·x + b1·y + b2) for `affine[b]` = [a0, a1, a2, b0, b1, b2]: the kernel's
  float32 sums in its order, each product rounded, then `std::round` (halves away from zero);
  pixels mapped from outside the image get `replace`. The identity map samples every pixel from
  itself.

  Args:
    images: uint8 [B, H, W, 3].
    affine: float32 [B, 6].
    replace: fill value.
    tables: optional uint8 [B, 256, 3], looked up on the sampled pixels (not on the fill).
    cut: optional bool [B, H, W], output pixels filled with `replace` too (a cutout).

  Returns:
    uint8 [B, H, W, 3].
  """
  batch_size, height, width = images.shape[:3]
  if max(height, width) > _MAX_EXACT_INTEGER:
    raise ValueError(f'Images up to {_MAX_EXACT_INTEGER} px a side, got {images.shape[1:]}.')
  affine = jnp.asarray(affine, jnp.float32)[:, :, None, None]
  rows = jnp.arange(height, dtype=jnp.float32)[:, None]
  columns = jnp.arange(width, dtype=jnp.float32)[None, :]

  def nearest_source(along_x, along_y, offset):
    source = (_product(along_x, columns) + _product(along_y, rows)) + offset
    return lax.round(source, lax.RoundingMethod.AWAY_FROM_ZERO).astype(jnp.int32)

  source_x = nearest_source(affine[:, 0], affine[:, 1], affine[:, 2])
  source_y = nearest_source(affine[:, 3], affine[:, 4], affine[:, 5])
  inside = (source_x >= 0) & (source_x < width) & (source_y >= 0) & (source_y < height)
  if cut is not None:
    inside &= ~cut
  pixels = jnp.clip(source_y, 0, height - 1) * width + jnp.clip(source_x, 0, width - 1)
  sampled = jnp.take_along_axis(images.reshape(batch_size, -1, 3),
                                pixels.reshape(batch_size, -1, 1), axis=1, mode='promise_in_bounds')
  sampled = sampled.reshape(images.shape)
  if tables is not None:
    sampled = _lookup(sampled, tables)
  return jnp.where(inside[..., None], sampled, jnp.asarray(replace).astype(images.dtype))


def _rotation(degrees: Number, height: int, width: int) -> jax.Array:
  """tf.contrib.image.rotate's map, with its float32 operations in the same order (augment.py)."""
  radians = jnp.asarray(degrees, jnp.float32) * np.float32(math.pi / 180.0)
  height, width = np.float32(height - 1), np.float32(width - 1)
  cos, sin = jnp.cos(radians), jnp.sin(radians)
  x_offset = (width - (_product(cos, width) - _product(sin, height))) / 2.0
  y_offset = (height - (_product(sin, width) + _product(cos, height))) / 2.0
  return jnp.stack([cos, -sin, x_offset, sin, cos, y_offset])


def _affine_with(index: int, value: Number) -> jax.Array:
  """The identity map with entry `index` set to `value` (a shear or a translation)."""
  return jnp.asarray(_IDENTITY_MAP).at[index].set(jnp.asarray(value, jnp.float32))


# Each geometric op's map from its (signed) argument and the image's height and width.
_AFFINE_MAPS = {
    'Rotate': _rotation,
    'ShearX': lambda level, height, width: _affine_with(1, level),
    'ShearY': lambda level, height, width: _affine_with(3, level),
    'TranslateX': lambda pixels, height, width: _affine_with(2, pixels),
    'TranslateY': lambda pixels, height, width: _affine_with(5, pixels),
}


def _resample_one(image: jax.Array, affine: jax.Array, replace: Number) -> jax.Array:
  return _resample(jnp.asarray(image)[None], affine[None], replace)[0]


def rotate(image: jax.Array, degrees: Number, replace: Number = REPLACE) -> jax.Array:
  """Rotates counter-clockwise (as displayed) by `degrees` about the image centre."""
  return _resample_one(image, _rotation(degrees, *image.shape[:2]), replace)


def shear_x(image: jax.Array, level: Number, replace: Number = REPLACE) -> jax.Array:
  """Horizontal shear: output (x, y) samples input (x + level·y, y)."""
  return _resample_one(image, _affine_with(1, level), replace)


def shear_y(image: jax.Array, level: Number, replace: Number = REPLACE) -> jax.Array:
  """Vertical shear: output (x, y) samples input (x, level·x + y)."""
  return _resample_one(image, _affine_with(3, level), replace)


def translate_x(image: jax.Array, pixels: Number, replace: Number = REPLACE) -> jax.Array:
  """Shifts the content left by `pixels` (right when negative)."""
  return _resample_one(image, _affine_with(2, pixels), replace)


def translate_y(image: jax.Array, pixels: Number, replace: Number = REPLACE) -> jax.Array:
  """Shifts the content up by `pixels` (down when negative)."""
  return _resample_one(image, _affine_with(5, pixels), replace)


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
  inside = _cutout_mask(*image.shape[:2], pad_size, center)
  return jnp.where(inside[..., None], jnp.asarray(replace).astype(image.dtype), image)


# ------------------------------------------------------------------------------------------------
# One augmentation layer on a batch, and the two policies.

_OP_IDS = {name: index for index, name in enumerate(RANDAUGMENT_OPS)}
# The op id of "no op" (an AutoAugment op that is not applied).
_IDENTITY = len(RANDAUGMENT_OPS)


def _random_sign(value: Number, key: jax.Array) -> jax.Array:
  """`value` or `-value` with probability 1/2 each (geometric ops go both ways)."""
  value = jnp.asarray(value, jnp.float32)
  return jnp.where(jax.random.uniform(key) < 0.5, -value, value)


def _random_center(height: int, width: int, key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A pixel (row, column) drawn uniformly, as TF draws cutout centres."""
  row_key, column_key = jax.random.split(key)
  return (jax.random.randint(row_key, (), 0, height), jax.random.randint(column_key, (), 0, width))


def _layer(images: jax.Array, ops: jax.Array, arguments: jax.Array, keys: jax.Array, *,
           names: Sequence[str], replace: Number) -> jax.Array:
  """Each example's op (`ops[b]` of `RANDAUGMENT_OPS`, or none: `_IDENTITY`), in a few passes.

  Every example runs every stage, and each stage is the identity, exactly, for the examples whose
  op is not its own: the identity table (the table ops), the identity map and an empty cutout
  make one sampling pass with a table lookup; Color and Sharpness blend with their degenerate
  images, selected per example. So a layer costs a histogram, the sampling pass and the blends,
  whatever the ops, instead of all 16 ops.

  Args:
    images: uint8 [B, H, W, 3].
    ops: int32 [B], indices of `RANDAUGMENT_OPS` or `_IDENTITY`.
    arguments: float32 [B], each op's TF argument before the sign (ignored by ops without one).
    keys: [B] keys, each op's own randomness: the sign of a geometric op, a cutout's centre.
    names: the ops `ops` can hold (static): only their stages are built.
    replace: fill value of geometric ops and cutout.

  Returns:
    uint8 [B, H, W, 3].
  """
  for name in names:
    if name not in _OP_IDS:
      raise ValueError(f'Unknown augmentation op {name!r}; expected one of {RANDAUGMENT_OPS}.')
  height, width = images.shape[1:3]

  def chosen(*chosen_names):
    return functools.reduce(jnp.logical_or, [ops == _OP_IDS[name] for name in chosen_names])

  # The table ops: a table per example, looked up in the sampling pass.
  histograms = _histograms(images) if {'Equalize', 'AutoContrast'} & set(names) else None
  table_fns = {
      'AutoContrast': lambda: jax.vmap(_auto_contrast_table)(histograms),
      'Equalize': lambda: jax.vmap(_equalize_table)(histograms),
      'Invert': _invert_table,
      'Posterize': lambda: jax.vmap(_posterize_table)(arguments),
      'Solarize': lambda: jax.vmap(_solarize_table)(arguments),
      'SolarizeAdd': lambda: jax.vmap(_solarize_add_table)(arguments),
      'Contrast': lambda: jax.vmap(functools.partial(_blend_table,
                                                     _contrast_level(height, width)))(arguments),
      'Brightness': lambda: jax.vmap(functools.partial(_blend_table, 0))(arguments),
  }
  table_ops = [name for name in table_fns if name in names]
  tables = None
  if table_ops:
    # Selected as a masked reduction over the candidates, whose result XLA stores: selected
    # elementwise, the tables' arithmetic (an equalisation's divisions) would be fused into the
    # lookup and recomputed for every pixel.
    candidates = jnp.stack([jnp.broadcast_to(jnp.asarray(_LEVELS), (len(images), 256, 3))] +
                           [jnp.broadcast_to(table_fns[name](), (len(images), 256, 3))
                            for name in table_ops])
    selected = sum(index * chosen(name) for index, name in enumerate(table_ops, 1))
    mask = jnp.arange(len(candidates))[:, None, None, None] == selected[:, None, None]
    tables = jnp.max(jnp.where(mask, candidates, 0), axis=0)

  # The geometric ops, with a random sign, and Cutout.
  affine = jnp.broadcast_to(jnp.asarray(_IDENTITY_MAP), (len(images), 6))
  signed = jax.vmap(_random_sign)(arguments, keys)
  for name, affine_map in _AFFINE_MAPS.items():
    if name in names:
      affine = jnp.where(chosen(name)[:, None],
                         jax.vmap(functools.partial(affine_map, height=height, width=width))(
                             signed), affine)
  cut = None
  if 'Cutout' in names:
    centres = jax.vmap(functools.partial(_random_center, height, width))(keys)
    pad_sizes = jnp.where(chosen('Cutout'), arguments, 0.0)
    cut = jax.vmap(functools.partial(_cutout_mask, height, width))(pad_sizes, centres)
  resampled = images
  if tables is not None or cut is not None or set(_AFFINE_MAPS) & set(names):
    resampled = _resample(images, affine, replace, tables=tables, cut=cut)

  # Color and Sharpness: a blend with a degenerate image.
  degenerate_fns = {'Color': _grey, 'Sharpness': _smoothed}
  blend_ops = [name for name in degenerate_fns if name in names]
  if not blend_ops:
    return resampled
  degenerate = degenerate_fns[blend_ops[0]](images)
  for name in blend_ops[1:]:
    degenerate = jnp.where(chosen(name)[:, None, None, None], degenerate_fns[name](images),
                           degenerate)
  blended = blend(degenerate, images, arguments[:, None, None, None])
  return jnp.where(chosen(*blend_ops)[:, None, None, None], blended, resampled)


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
  if name not in _OP_IDS:
    raise ValueError(f'Unknown augmentation op {name!r}; expected one of {RANDAUGMENT_OPS}.')
  argument = jnp.float32(_argument(name, level, translate_const, cutout_const))
  return _layer(jnp.asarray(image)[None], jnp.full((1,), _OP_IDS[name], jnp.int32),
                argument[None], jnp.asarray(key)[None], names=(name,), replace=replace)[0]


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


def _layers(images: jax.Array, ops: jax.Array, arguments: jax.Array, keys: jax.Array, *,
            names: Sequence[str], replace: Number) -> jax.Array:
  """`_layer` for each column of `ops`, `arguments`, `keys` ([B, layers]), in order."""

  def layer(images, inputs):
    return _layer(images, *inputs, names=names, replace=replace), None

  # A scan rather than unrolled layers: the layer is traced and compiled once.
  images, _ = lax.scan(layer, images, (ops.T, arguments.T, jnp.swapaxes(keys, 0, 1)))
  return images


def randaugment(images: jax.Array, seeds: jax.Array, *, num_layers: int = 2,
                magnitude: float = 10, replace: Number = REPLACE,
                translate_const: float = RANDAUGMENT_TRANSLATE_CONST,
                cutout_const: float = RANDAUGMENT_CUTOUT_CONST) -> jax.Array:
  """RandAugment per example: `num_layers` times, an op drawn uniformly, always applied.

  As augment.randaugment, batched: each example draws its own ops from its own key. A layer costs
  a few passes over the batch whatever the ops (`_layer`), not all 16 ops.

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
  choices, keys = jax.vmap(functools.partial(randaugment_draws, num_layers=num_layers))(seeds)
  return _layers(images, choices, arguments[choices], keys, names=RANDAUGMENT_OPS,
                 replace=replace)


def autoaugment(images: jax.Array, seeds: jax.Array, *, policy: str = 'v0',
                replace: Number = REPLACE, translate_const: float = AUTOAUGMENT_TRANSLATE_CONST,
                cutout_const: float = AUTOAUGMENT_CUTOUT_CONST) -> jax.Array:
  """AutoAugment per example: a sub-policy drawn uniformly, each op applied with its probability.

  As augment.autoaugment, batched: each example draws its own sub-policy from its own key. A
  position costs a few passes over the batch (`_layer`, built for the policy's ops only: v0 has no
  Sharpness or Cutout).

  Args:
    images: uint8 [B, H, W, 3].
    seeds: one JAX PRNG key per example ([B] typed keys or [B, 2] uint32).
    policy: a key of `augment_policies.AUTOAUGMENT_POLICIES` ('v0', the policy of the TF
      EfficientNet runs).
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
  op_ids = jnp.asarray([[_OP_IDS[name] for name, _, _ in s] for s in table])
  probabilities = jnp.asarray([[p for _, p, _ in s] for s in table], jnp.float32)
  arguments = jnp.asarray([[args[0] if args else 0.0 for _, _, args in s] for s in table],
                          jnp.float32)
  # Only the policy's ops get their stages (v0 has no Sharpness or Cutout).
  names = {name for sub_policy in table for name, _, _ in sub_policy}
  names = tuple(name for name in RANDAUGMENT_OPS if name in names)
  choices, applied, keys = jax.vmap(autoaugment_draws, (0, None))(seeds, probabilities)
  ops = jnp.where(applied, op_ids[choices], _IDENTITY)
  return _layers(images, ops, arguments[choices], keys, names=names, replace=replace)
