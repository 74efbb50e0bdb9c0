"""RandAugment and AutoAugment (policy v0) on uint8 HWC images, in plain TF2 ops.

Every op computes exactly what TF EfficientNet's augmentation code computes -- tensorflow/tpu
models/official/efficientnet/autoaugment.py, which produced the published EfficientNet numbers --
bit for bit on uint8, including where that code departs from its own comments and from PIL (listed
below). tests/input/test_augment_tf_reference.py checks every op, the v0 table and the RandAugment
op list against outputs of that file (tests/input/data/tf_reference/README.md says how they were
made).

The op names, the v0 table and the level→argument map (`level_to_arg`, with the magnitude
convention: levels above 10 extrapolate, evaluated in Python doubles as TF does) are in
augment_policies.py, which has no TensorFlow, so that device_augment.py (the same ops in JAX, for
the accelerator) shares them. The notes on where TF's ops behave surprisingly stay here, next to
each other and to the ops.

No tf.contrib / tensorflow_addons: the geometric ops use `ImageProjectiveTransformV3`. Only the
random draws differ from TF: every random choice (which op or sub-policy, whether to apply it, the
sign of a rotation/shear/translation, the cutout centre) has TF's distribution but is drawn with
stateless ops from an explicit `seed` (int tensor of shape [2]), so a given (image, seed) always
gives the same result, eagerly or inside `tf.data` with any parallelism.

TF behaviour kept on purpose (surprising, but it is what the published models were trained with):
  * RandAugment draws a probability U(0.2, 0.8) for each op and never uses it: the chosen op is
    always applied.
  * Solarize: TF compares the uint8 image with the threshold converted to uint8, which wraps modulo
    256: level 10 gives 256 -> 0 and inverts the whole image (v0 has ('Solarize', 0.6, 10)); M=17
    gives 435 -> 179, M=28 716 -> 204.
  * Posterize shifts right then left by `8 - bits` as uint8 shift amounts, which TF's CPU kernel
    clamps to 7: 0 bits (levels below 2.5, e.g. v0's ('Posterize', 0.8, 2)) and more than 8 bits
    (levels from 22.5, e.g. M=28 gives 11) keep only the top bit, instead of black / the image.
  * Contrast blends towards `min(pixel count / 256, 255)`, truncated (TF sums a 256-bin histogram
    where it meant to average it), not towards the mean grey level: 196 for a 224×224 image.
  * Sharpness truncates its smoothed image where PIL rounds, and AutoContrast evaluates PIL's
    `v·scale + offset` in float32 where PIL uses doubles, so both differ from PIL by one level here
    and there (AutoContrast can even map a channel's brightest pixel to 254).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence, Union

import numpy as np
import tensorflow as tf

from efficientnet_jax.input.augment_policies import (AUTOAUGMENT_CUTOUT_CONST,
                                                     AUTOAUGMENT_TRANSLATE_CONST,
                                                     RANDAUGMENT_CUTOUT_CONST, RANDAUGMENT_OPS,
                                                     RANDAUGMENT_TRANSLATE_CONST, REPLACE,
                                                     UNLEVELLED_OPS, level_to_arg, policy_args)

Number = Union[float, int, tf.Tensor]


# ------------------------------------------------------------------------------------------------
# Pixel ops. All take and return uint8 [H, W, 3].
#
# They compute TF's values with cheaper kernels: on CPU, `tf.where` (SelectV2) and `tf.gather`
# cost about 5 ns per element, and an elementwise op broadcasting a per-channel [3] vector along
# the innermost axis about as much, while a plain elementwise op, a cast or a comparison costs well
# under 1 ns. So selections become arithmetic (exact on integers, or where the rejected branch
# equals the kept one), per-channel work runs on a channels-first copy, whose [3, 1, 1] broadcasts
# are cheap, and a lookup table is applied with `tf.gather_nd`, about twice as fast as `tf.gather`.


def blend(image1: tf.Tensor, image2: tf.Tensor, factor: Number) -> tf.Tensor:
  """`image1 + factor·(image2 - image1)` in float32, clipped and truncated to uint8.

  Factor 0 gives image1 and 1 gives image2. TF returns the inputs at exactly 0 and 1 and skips the
  clip for 0 < factor < 1; the formula gives the same bits there (`0·d` and `1·d` are exact, and an
  interpolation stays within 0..255), so one formula serves a Python or a tensor factor. Either
  image may also be float32 holding integers 0..255 (the same values cast), or broadcast.
  """
  image1 = tf.cast(image1, tf.float32)
  image2 = tf.cast(image2, tf.float32)
  blended = image1 + tf.cast(factor, tf.float32) * (image2 - image1)
  return tf.cast(tf.clip_by_value(blended, 0.0, 255.0), tf.uint8)


def _grey(image: tf.Tensor) -> tf.Tensor:
  """TF's grey level (`tf.image.rgb_to_grayscale`, uint8) in each channel, as float32 [H, W, 3].

  A [HW, 1] × [1, 3] matmul of ones copies it to the three channels exactly, and faster than
  `grayscale_to_rgb` or a broadcast.
  """
  grey = tf.cast(tf.reshape(tf.image.rgb_to_grayscale(image), [-1, 1]), tf.float32)
  return tf.reshape(tf.matmul(grey, tf.ones([1, 3], tf.float32)), tf.shape(image))


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
  """Stretches each channel from its [lo, hi] towards [0, 255] (a flat channel is kept).

  TF's arithmetic: `v·scale + offset` with `scale = 255 / (hi - lo)`, `offset = -lo·scale`, in
  float32, clipped and truncated. `(v - lo)·scale` is the same in exact arithmetic but not in
  float32: over all (lo, hi, v) the two truncate to different levels about once in 200, e.g.
  lo 99, hi 124 maps 104 to 50 (not 51) and even the brightest pixel, 124, to 254 (not 255).
  A flat channel gets scale 1 and offset 0, which keep it exactly (TF selects the input instead).
  """
  channels = tf.transpose(image, [2, 0, 1])
  low = tf.cast(tf.reduce_min(channels, axis=[1, 2]), tf.float32)
  high = tf.cast(tf.reduce_max(channels, axis=[1, 2]), tf.float32)
  flat = high <= low
  # Divide by a dummy 1 for a flat channel, whose scale is then replaced anyway.
  scale = tf.where(flat, 1.0, 255.0 / tf.where(flat, 1.0, high - low))
  offset = tf.where(flat, 0.0, -low * scale)
  stretched = tf.cast(channels, tf.float32) * scale[:, None, None] + offset[:, None, None]
  stretched = tf.cast(tf.clip_by_value(stretched, 0.0, 255.0), tf.uint8)
  return tf.transpose(stretched, [1, 2, 0])


def _equalize_luts(channels: tf.Tensor) -> tf.Tensor:
  """PIL's equalisation tables (TF's port of it computes the same) of int32 [3, N] channels.

  Returns:
    uint8 [3·256]: channel c's table at c·256.
  """
  histogram = tf.math.bincount(channels, minlength=256, maxlength=256, dtype=tf.int32, axis=-1)
  # PIL leaves the brightest populated bin out of the step so that it maps to 255.
  last_populated = tf.reduce_max(tf.where(histogram > 0, tf.range(256), -1), axis=1)
  last_count = tf.gather(histogram, last_populated, batch_dims=1)
  step = (tf.reduce_sum(histogram, axis=1) - last_count) // 255
  safe_step = tf.maximum(step, 1)[:, None]
  lut = (tf.cumsum(histogram, axis=1) + safe_step // 2) // safe_step
  lut = tf.clip_by_value(tf.concat([tf.zeros_like(lut[:, :1]), lut[:, :-1]], axis=1), 0, 255)
  # step == 0 means (almost) a single grey level: PIL returns the channel unchanged.
  lut = tf.where(step[:, None] == 0, tf.range(256)[None], lut)
  return tf.reshape(tf.cast(lut, tf.uint8), [-1])


def equalize(image: tf.Tensor) -> tf.Tensor:
  """Per-channel histogram equalisation, as PIL's `ImageOps.equalize`."""
  shape = tf.shape(image)
  luts = _equalize_luts(tf.cast(tf.reshape(tf.transpose(image, [2, 0, 1]), [3, -1]), tf.int32))
  # Index of each pixel in its channel's table; tiled, since adding a broadcast [3] is slower.
  offsets = tf.tile(tf.constant([[[0, 256, 512]]]), [shape[0], shape[1], 1])
  return tf.gather_nd(luts, (tf.cast(image, tf.int32) + offsets)[..., None])


def invert(image: tf.Tensor) -> tf.Tensor:
  """`255 - image` (a bitwise not on uint8)."""
  return tf.bitwise.invert(image)


def posterize(image: tf.Tensor, bits: Number) -> tf.Tensor:
  """Keeps the `bits` most significant bits of every pixel, as TF computes it for any `bits`.

  TF shifts right then left by `8 - bits`, given to the shift ops as a uint8: a negative shift
  (bits > 8) wraps to 248..255, and TF's CPU kernel clamps any shift above 7 to 7. So 1..8 bits
  behave as expected, while 0 bits and more than 8 bits both keep only the top bit (not black, not
  the unchanged image). The clamp is written out here rather than left to the kernel, whose
  handling of oversized shifts is documented as implementation-defined; the two shifts by 0..7 are
  then a mask of the top `8 - shift` bits.
  """
  shift = tf.minimum(tf.math.floormod(8 - tf.cast(bits, tf.int32), 256), 7)
  mask = tf.cast(tf.bitwise.left_shift(255, shift) % 256, tf.uint8)
  return tf.bitwise.bitwise_and(image, mask)


def _as_uint8_threshold(threshold: Number) -> tf.Tensor:
  # TF compares a uint8 image with a Python int, which it converts to uint8 modulo 256.
  return tf.cast(tf.math.floormod(tf.cast(threshold, tf.int32), 256), tf.uint8)


def solarize(image: tf.Tensor, threshold: Number = 128) -> tf.Tensor:
  """Inverts every pixel at or above `threshold`, taken modulo 256 as TF does.

  The wrap is TF's: its threshold `int(level/10 * 256)` is converted to uint8, so level 10 (256)
  becomes 0 and inverts the whole image, and M=17 (435) and M=28 (716) become 179 and 204.
  `255 - v` is `v XOR 255` on uint8, so the selection is an XOR with 255 or 0.
  """
  inverted = tf.cast(image >= _as_uint8_threshold(threshold), tf.uint8)
  return tf.bitwise.bitwise_xor(image, inverted * 255)


def solarize_add(image: tf.Tensor, addition: Number = 0, threshold: Number = 128) -> tf.Tensor:
  """Adds `addition` (the sum clipped to 0..255) to every pixel below `threshold`.

  Computed as `clip(v + [v < threshold]·addition)` in int32, as TF computes the sum: a pixel left
  alone is within 0..255, so the clip keeps it.
  """
  below = tf.cast(image < _as_uint8_threshold(threshold), tf.int32)
  added = tf.cast(image, tf.int32) + below * tf.cast(addition, tf.int32)
  return tf.cast(tf.clip_by_value(added, 0, 255), tf.uint8)


def color(image: tf.Tensor, factor: Number) -> tf.Tensor:
  """Saturation: 0 gives grey, 1 the original, >1 more saturated."""
  return blend(_grey(image), image, factor)


def contrast(image: tf.Tensor, factor: Number) -> tf.Tensor:
  """Contrast as TF computes it: a blend towards a flat grey of `min(pixels / 256, 255)`.

  TF means to blend towards the mean grey level, but it sums the grey image's 256-bin histogram and
  divides by 256, which is the pixel count / 256 (truncated to uint8), whatever the pixel values:
  3 for 32×24, 196 for 224×224, 255 from 65,280 pixels on. Factor 1 gives the original.
  """
  shape = tf.shape(image)
  # The pixel count is exact in float32 for any image below 2**24 pixels, like TF's histogram sum.
  level = tf.cast(shape[0] * shape[1], tf.float32) / 256.0
  level = tf.cast(tf.clip_by_value(level, 0.0, 255.0), tf.uint8)
  # A scalar stands for TF's flat image: the blend broadcasts it to the same values.
  return blend(level, image, factor)


def brightness(image: tf.Tensor, factor: Number) -> tf.Tensor:
  """Brightness: 0 gives black, 1 the original.

  TF's blend from a black image, `0 + factor·(v - 0)`, is exactly `factor·v`.
  """
  scaled = tf.cast(factor, tf.float32) * tf.cast(image, tf.float32)
  return tf.cast(tf.clip_by_value(scaled, 0.0, 255.0), tf.uint8)


# PIL's SMOOTH kernel, normalised as TF's code does (each weight divided by 13 in float32).
_SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13)


def _smooth(pixels: tf.Tensor) -> tf.Tensor:
  """The 'VALID' 3×3 smoothing of float32 [H, W, C] pixels, TF's depthwise convolution's sums.

  Written as nine shifted multiply-adds in a fixed order rather than `tf.nn.depthwise_conv2d`:
  the convolution's summation order (and so the last bit of a sum, and then a truncated level)
  depends on the CPU's kernels (oneDNN on AVX-512 machines, Eigen elsewhere); this order is
  Eigen's, the one TF's reference outputs were computed with, on every machine.
  """
  height, width = tf.shape(pixels)[0], tf.shape(pixels)[1]
  total = None
  for dy in range(3):
    for dx in range(3):
      term = pixels[dy:height - 2 + dy, dx:width - 2 + dx] * _SMOOTH_KERNEL[dy, dx]
      total = term if total is None else total + term
  return total


def sharpness(image: tf.Tensor, factor: Number) -> tf.Tensor:
  """Sharpness via PIL's SMOOTH kernel: 0 gives the smoothed image, 1 the original, >1 sharper.

  The smoothed image is truncated to uint8, as in TF (PIL rounds it).
  """
  smoothed = tf.cast(tf.clip_by_value(_smooth(tf.cast(image, tf.float32)), 0.0, 255.0), tf.uint8)
  # The 1-pixel border has no full neighbourhood; PIL and TF keep it unchanged.
  inside = tf.pad(tf.ones_like(smoothed, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(inside, tf.pad(smoothed, [[1, 1], [1, 1], [0, 0]]), image)
  return blend(degenerate, image, factor)


def _transform(image: tf.Tensor, transform: Sequence[Number], replace: int) -> tf.Tensor:
  """Projective transform: output pixel (x, y) samples the input at the mapped point (nearest).

  `transform` is [a0, a1, a2, b0, b1, b2, c0, c1]: input x = a0·x + a1·y + a2,
  input y = b0·x + b1·y + b2 (c0 = c1 = 0 here). Pixels mapped from outside the image get `replace`.
  TF appends an all-ones channel, transforms with zero fill and puts `replace` where that channel
  became 0; with nearest sampling that is exactly a constant fill with `replace`.
  """
  transform = tf.cast(tf.stack([tf.cast(t, tf.float32) for t in transform]), tf.float32)
  result = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
      fill_value=tf.cast(replace, tf.float32), interpolation='NEAREST', fill_mode='CONSTANT')
  return tf.reshape(result[0], tf.shape(image))


def rotate(image: tf.Tensor, degrees: Number, replace: int = REPLACE) -> tf.Tensor:
  """Rotates counter-clockwise (as displayed) by `degrees` about the image centre.

  The matrix is tf.contrib.image.rotate's, with its float32 operations in the same order (its
  offsets centre the rotation on ((width - 1)/2, (height - 1)/2)).
  """
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  shape = tf.cast(tf.shape(image), tf.float32)
  height, width = shape[0] - 1.0, shape[1] - 1.0
  cos, sin = tf.cos(radians), tf.sin(radians)
  x_offset = (width - (cos * width - sin * height)) / 2.0
  y_offset = (height - (sin * width + cos * height)) / 2.0
  return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0], replace)


def shear_x(image: tf.Tensor, level: Number, replace: int = REPLACE) -> tf.Tensor:
  """Horizontal shear: output (x, y) samples input (x + level·y, y)."""
  return _transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def shear_y(image: tf.Tensor, level: Number, replace: int = REPLACE) -> tf.Tensor:
  """Vertical shear: output (x, y) samples input (x, level·x + y)."""
  return _transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0], replace)


def translate_x(image: tf.Tensor, pixels: Number, replace: int = REPLACE) -> tf.Tensor:
  """Shifts the content left by `pixels` (right when negative)."""
  return _transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def translate_y(image: tf.Tensor, pixels: Number, replace: int = REPLACE) -> tf.Tensor:
  """Shifts the content up by `pixels` (down when negative)."""
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0], replace)


def cutout(image: tf.Tensor, pad_size: Number, center: Sequence[Number],
           replace: int = REPLACE) -> tf.Tensor:
  """Fills rows [cy - pad_size, cy + pad_size) × the same columns around `center`, with `replace`.

  Args:
    image: uint8 [H, W, 3].
    pad_size: half the side of the square; 0 changes nothing.
    center: (row, column) of the square's centre, inside the image; the square is clipped at the
      image borders. `apply_op` draws it uniformly over the pixels, as TF does.
    replace: fill value.

  Returns:
    uint8 [H, W, 3].
  """
  shape = tf.shape(image)
  center_y = tf.cast(center[0], tf.int32)
  center_x = tf.cast(center[1], tf.int32)
  pad_size = tf.cast(pad_size, tf.int32)
  # The square's rows [top, bottom) and columns [left, right), clipped (empty if pad_size <= 0).
  top = tf.clip_by_value(center_y - pad_size, 0, shape[0])
  bottom = tf.clip_by_value(center_y + pad_size, top, shape[0])
  left = tf.clip_by_value(center_x - pad_size, 0, shape[1])
  right = tf.clip_by_value(center_x + pad_size, left, shape[1])
  # Assembled from slices: much cheaper than a masked `tf.where` over the whole image.
  band = image[top:bottom]
  square = tf.fill([bottom - top, right - left, shape[2]], tf.cast(replace, image.dtype))
  band = tf.concat([band[:, :left], square, band[:, right:]], axis=1)
  return tf.concat([image[:top], band, image[bottom:]], axis=0)


# ------------------------------------------------------------------------------------------------
# Random signs and centres, and dispatch.


def _random_sign(value: Number, seed: tf.Tensor) -> tf.Tensor:
  """`value` or `-value` with probability 1/2 each (geometric ops go both ways)."""
  negate = tf.random.stateless_uniform([], seed) < 0.5
  value = tf.cast(value, tf.float32)
  return tf.where(negate, -value, value)


def _random_center(image: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """A pixel (row, column) drawn uniformly, as TF draws cutout centres."""
  shape = tf.shape(image)
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
  center_y = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=shape[0], dtype=tf.int32)
  center_x = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=shape[1], dtype=tf.int32)
  return center_y, center_x


_PIXEL_OPS = {'AutoContrast': auto_contrast, 'Equalize': equalize, 'Invert': invert,
              'Posterize': posterize, 'Solarize': solarize, 'SolarizeAdd': solarize_add,
              'Color': color, 'Contrast': contrast, 'Brightness': brightness,
              'Sharpness': sharpness}
_GEOMETRIC_OPS = {'Rotate': rotate, 'ShearX': shear_x, 'ShearY': shear_y,
                  'TranslateX': translate_x, 'TranslateY': translate_y}


def _apply_args(name: str, image: tf.Tensor, args: tuple[Number, ...], seed: tf.Tensor,
                replace: int) -> tf.Tensor:
  """Op `name` with TF's arguments `args`, drawing its sign / cutout centre from `seed`."""
  if name in _PIXEL_OPS:
    result = _PIXEL_OPS[name](image, *args)
  elif name in _GEOMETRIC_OPS:
    result = _GEOMETRIC_OPS[name](image, _random_sign(args[0], seed), replace)
  elif name == 'Cutout':
    result = cutout(image, args[0], _random_center(image, seed), replace)
  else:
    raise ValueError(f'Unknown augmentation op {name!r}; expected one of {RANDAUGMENT_OPS}.')
  # Keep the static shape through the graph-building branches of switch_case.
  return tf.ensure_shape(result, image.shape)


@tf.autograph.experimental.do_not_convert
def apply_op(name: str, image: tf.Tensor, level: Union[float, int], seed: tf.Tensor, *,
             replace: int = REPLACE, translate_const: float = RANDAUGMENT_TRANSLATE_CONST,
             cutout_const: float = RANDAUGMENT_CUTOUT_CONST) -> tf.Tensor:
  """Applies augmentation op `name` at `level` (TF's 0..10 scale, may exceed 10).

  Args:
    name: one of `RANDAUGMENT_OPS`.
    image: uint8 [H, W, 3].
    level: magnitude, a Python number; mapped to the op's argument by `level_to_arg`.
    seed: int [2] tensor for the op's own randomness (sign of geometric ops, cutout centre).
    replace: fill value for pixels uncovered by geometric ops and cutout.
    translate_const: translation in pixels at level 10 (TF: 100 RandAugment, 250 AutoAugment).
    cutout_const: cutout half-side in pixels at level 10 (TF: 40 RandAugment, 100 AutoAugment).

  Returns:
    uint8 [H, W, 3] with the static shape of `image`.
  """
  args = level_to_arg(name, level, translate_const=translate_const, cutout_const=cutout_const)
  return _apply_args(name, image, args, seed, replace)


@tf.autograph.experimental.do_not_convert
def randaugment(image: tf.Tensor, seed: tf.Tensor, *, num_layers: int = 2, magnitude: float = 10,
                replace: int = REPLACE, translate_const: float = RANDAUGMENT_TRANSLATE_CONST,
                cutout_const: float = RANDAUGMENT_CUTOUT_CONST) -> tf.Tensor:
  """RandAugment: `num_layers` times, an op drawn uniformly from `RANDAUGMENT_OPS`, at `magnitude`.

  As in TF, the chosen op is always applied and the magnitude is fixed (not sampled). (TF's code
  draws a probability U(0.2, 0.8) per op, but its op functions take no probability, so the draw is
  dropped unused; docs/reference.md §5.)

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
  args = [level_to_arg(name, magnitude, translate_const=translate_const, cutout_const=cutout_const)
          for name in RANDAUGMENT_OPS]

  def layer(index: tf.Tensor, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    choice = tf.random.stateless_uniform([], layer_seeds[2 * index], minval=0,
                                         maxval=len(RANDAUGMENT_OPS), dtype=tf.int32)
    op_seed = layer_seeds[2 * index + 1]
    branches = [functools.partial(_apply_args, name, image, op_args, op_seed, replace)
                for name, op_args in zip(RANDAUGMENT_OPS, args)]
    return index + 1, tf.switch_case(choice, branches)

  # A loop rather than unrolled layers: the 16 branches are built once, which halves tracing time.
  _, image = tf.while_loop(lambda index, _: index < num_layers, layer, (tf.constant(0), image))
  return image


@tf.autograph.experimental.do_not_convert
def autoaugment(image: tf.Tensor, seed: tf.Tensor, *, policy: str = 'v0', replace: int = REPLACE,
                translate_const: float = AUTOAUGMENT_TRANSLATE_CONST,
                cutout_const: float = AUTOAUGMENT_CUTOUT_CONST) -> tf.Tensor:
  """AutoAugment: a sub-policy of `policy` drawn uniformly, each op applied with its probability.

  Args:
    image: uint8 [H, W, 3].
    seed: int [2] tensor; all choices derive from it.
    policy: a key of `AUTOAUGMENT_POLICIES` ('v0', the policy of the TF EfficientNet runs).
    replace: fill value of geometric ops and cutout.
    translate_const: translation in pixels at level 10 (TF AutoAugment: 250).
    cutout_const: cutout half-side in pixels at level 10 (TF AutoAugment: 100).

  Returns:
    uint8 [H, W, 3].
  """
  table = policy_args(policy, translate_const=translate_const, cutout_const=cutout_const)
  image = tf.convert_to_tensor(image)
  # Tables indexed [sub-policy, position]: each position is one switch over the 16 ops, built once
  # in a loop, instead of a branch per sub-policy (a much smaller graph, so much faster tracing).
  # Every op takes at most one argument; TF's (from Python doubles) is rounded once to float32, the
  # precision TF's ops receive it in, and integer arguments are exact.
  op_ids = tf.constant([[RANDAUGMENT_OPS.index(name) for name, _, _ in s] for s in table])
  probabilities = tf.constant([[p for _, p, _ in s] for s in table], tf.float32)
  arguments = tf.constant([[args[0] if args else 0.0 for _, _, args in s] for s in table],
                          tf.float32)
  num_positions = len(table[0])
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=1 + 2 * num_positions)
  choice = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=len(table), dtype=tf.int32)

  def position(index: tf.Tensor, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    op_args = (arguments[choice, index],)
    op_seed = seeds[2 + 2 * index]
    branches = [
        functools.partial(_apply_args, name, image,
                          () if name in UNLEVELLED_OPS else op_args, op_seed, replace)
        for name in RANDAUGMENT_OPS
    ]
    # Applied with probability p (TF: floor(u + p) != 0, the same event as u >= 1 - p).
    applied = tf.random.stateless_uniform([], seeds[1 + 2 * index]) < probabilities[choice, index]
    image = tf.cond(applied, lambda: tf.switch_case(op_ids[choice, index], branches),
                    lambda: image)
    return index + 1, image

  _, image = tf.while_loop(lambda index, _: index < num_positions, position,
                           (tf.constant(0), image))
  return image
