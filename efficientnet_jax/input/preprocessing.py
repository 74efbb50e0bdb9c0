"""Single-image preprocessing in TF: decode, crop, resize, flip, augment, normalise.

Two layers of API:
  * `eval_image` / `train_image` work on an already-decoded uint8 HWC image (the digits and
    in-memory sources have no bytes);
  * `preprocess_for_eval` / `preprocess_for_train` take encoded bytes (JPEG/PNG/BMP/GIF). For JPEGs
    they decode only the crop window (`tf.io.decode_and_crop_jpeg`), much faster on big photos; for
    other formats they decode fully and slice. Both paths crop the same window.

Crops follow the TF EfficientNet reference (docs/reference.md §5): Inception-style random crop for
training with a centre-crop fallback, "crop_padding" centre crop for eval. All randomness is
stateless and derived from an explicit `seed` (shape [2] int), so results never depend on tf.data
parallelism or a global RNG.

Resizing uses TF2 `tf.image.resize` (half-pixel centres, no antialias), not TF1's `resize_bicubic`
(corner-aligned pixel grid); half-pixel centres are what PIL/timm use as well.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from efficientnet_jax.input import augment as augment_lib
from efficientnet_jax.input import augment_policies
from efficientnet_jax.input import normalization


def _hide_gpus_from_tf() -> None:
  """Keeps TF on the CPU: by default it grabs nearly all GPU memory, which JAX needs."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError as error:  # TF already initialised its devices (someone used it first).
    logging.warning('Could not hide GPUs from TensorFlow: %s', error)


_hide_gpus_from_tf()

_IMAGENET_MEAN, _IMAGENET_STD = normalization.NORMALIZATIONS['imagenet']

INTERPOLATIONS = ('bilinear', 'bicubic', 'nearest', 'area', 'lanczos3', 'lanczos5', 'gaussian',
                  'mitchellcubic')
TRAIN_CROPS = ('inception', 'pad_crop', 'resize')

# A (offset_height, offset_width, crop_height, crop_width) crop window, each a scalar int32 tensor.
Window = tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]


def normalize(image: tf.Tensor, mean: Sequence[float] = _IMAGENET_MEAN,
              std: Sequence[float] = _IMAGENET_STD) -> tf.Tensor:
  """Returns `(image - mean) / std` as float32; `image` is HWC (or NHWC) on the 0..255 scale."""
  image = tf.cast(image, tf.float32)
  mean = tf.constant(mean, tf.float32, shape=[3])
  std = tf.constant(std, tf.float32, shape=[3])
  return (image - mean) / std


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
  """Decodes JPEG/PNG/BMP/GIF bytes to a uint8 [H, W, 3] tensor (first frame of an animated GIF)."""
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8)
  image.set_shape([None, None, 3])
  return image


def to_rgb(image: tf.Tensor) -> tf.Tensor:
  """Repeats a single-channel (grey) image to 3 channels; 3-channel images pass through."""
  if image.shape.rank == 2:
    image = image[..., tf.newaxis]
  if image.shape[-1] == 1:
    image = tf.repeat(image, 3, axis=-1)
  return image


def resize(image: tf.Tensor, image_size: int, interpolation: str = 'bicubic') -> tf.Tensor:
  """Resizes HWC to [image_size, image_size]; float32, 0..255 scale (bicubic may overshoot)."""
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f'Unknown interpolation {interpolation!r}; expected one of {INTERPOLATIONS}.')
  image = tf.image.resize(image, [image_size, image_size], method=interpolation)
  return tf.cast(image, tf.float32)


def center_crop_window(height: tf.Tensor, width: tf.Tensor, image_size: int,
                       crop_padding: int = 32) -> Window:
  """The eval crop: a centred square of side `image_size / (image_size + crop_padding) * min(h, w)`.

  `crop_padding=0` keeps the full shorter side (use it for tiny images such as the 8×8 digits).
  """
  height = tf.cast(height, tf.int32)
  width = tf.cast(width, tf.int32)
  side = tf.cast(image_size / (image_size + crop_padding)
                 * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  side = tf.maximum(side, 1)
  # The +1 rounds the offset up as TF does, so odd margins put the extra pixel at the top/left.
  offset_height = (height - side + 1) // 2
  offset_width = (width - side + 1) // 2
  return offset_height, offset_width, side, side


def inception_crop_window(height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor, image_size: int,
                          crop_padding: int = 32) -> Window:
  """The TF train crop: `sample_distorted_bounding_box`, falling back to the eval centre crop.

  The sampler returns the whole image when none of its 10 attempts fits the constraints; TF treats
  "crop shape == image shape" as that failure and uses the centre crop instead, and so do we.
  """
  height = tf.cast(height, tf.int32)
  width = tf.cast(width, tf.int32)
  whole_image_box = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.stack([height, width, 3]), bounding_boxes=whole_image_box, seed=seed,
      min_object_covered=0.1, aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0), area_range=(0.08, 1.0),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  sampled = (begin[0], begin[1], size[0], size[1])
  failed = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
  fallback = center_crop_window(height, width, image_size, crop_padding)
  return tuple(tf.where(failed, f, s) for f, s in zip(fallback, sampled))


def _crop(image: tf.Tensor, window: Window) -> tf.Tensor:
  offset_height, offset_width, crop_height, crop_width = window
  return tf.slice(image, tf.stack([offset_height, offset_width, 0]),
                  tf.stack([crop_height, crop_width, -1]))


def _decode_and_crop(image_bytes: tf.Tensor,
                     window_fn: Callable[[tf.Tensor, tf.Tensor], Window]) -> tf.Tensor:
  """Decodes `image_bytes` restricted to the window `window_fn(height, width)` picks."""

  def jpeg() -> tf.Tensor:
    shape = tf.io.extract_jpeg_shape(image_bytes)
    window = tf.stack(window_fn(shape[0], shape[1]))
    return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)

  def other() -> tf.Tensor:
    image = decode_image(image_bytes)
    shape = tf.shape(image)
    return _crop(image, window_fn(shape[0], shape[1]))

  image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
  image.set_shape([None, None, 3])
  return image


# libjpeg decodes at 1/1, 1/2, 1/4 or 1/8 scale by running a smaller inverse DCT per 8×8 block:
# each scaled pixel is the block's low-frequency content, so a 1/r decode costs a fraction of a
# full one and is already low-pass filtered for a downscale by r.
DCT_RATIOS = (1, 2, 4, 8)
# tf.image.resize methods -> the kernel of `ScaleAndTranslate` with the same interpolation (Keys'
# cubic with a = -0.5 is what ResizeBicubic uses with half-pixel centres). Others decode at 1/1.
_SCALE_AND_TRANSLATE_KERNELS = {'bicubic': 'keyscubic', 'bilinear': 'triangle',
                                'lanczos3': 'lanczos3', 'lanczos5': 'lanczos5',
                                'gaussian': 'gaussian', 'mitchellcubic': 'mitchellcubic'}


def dct_ratio(crop_height: tf.Tensor, crop_width: tf.Tensor, image_size: int) -> tf.Tensor:
  """The largest r in `DCT_RATIOS` whose 1/r-scale crop still has `image_size` pixels per side.

  So a crop is decoded at reduced scale only when it is at least twice the output size, and the
  resize after it still only shrinks.
  """
  shorter = tf.minimum(crop_height, crop_width)
  ratio = tf.constant(1, tf.int32)
  for candidate in DCT_RATIOS[1:]:
    ratio = tf.where(shorter >= candidate * image_size, candidate, ratio)
  return ratio


def _decode_crop_resize_scaled(image_bytes: tf.Tensor, window: Window, ratio: int,
                               image_size: int, kernel: str) -> tf.Tensor:
  """Decodes the window at 1/`ratio` scale and resamples exactly that window to `image_size`.

  libjpeg's crop window is in scaled pixels, so the decoded region is the window rounded outwards
  to whole scaled pixels; the resample then maps the output onto the original window's sub-pixel
  position in it (scaled pixel i spans original pixels [r·i, r·(i+1))), so the geometry is the
  full-scale path's.
  """
  offset_height, offset_width, crop_height, crop_width = (tf.cast(v, tf.int32) for v in window)
  shape = tf.io.extract_jpeg_shape(image_bytes)
  scaled = -(-shape[:2] // ratio)  # libjpeg's scaled image size: ceil(size / r).
  top, left = offset_height // ratio, offset_width // ratio
  bottom = tf.minimum(-(-(offset_height + crop_height) // ratio), scaled[0])
  right = tf.minimum(-(-(offset_width + crop_width) // ratio), scaled[1])
  image = tf.io.decode_and_crop_jpeg(
      image_bytes, tf.stack([top, left, bottom - top, right - left]), channels=3, ratio=ratio)
  # Output pixel v of the window maps to scaled pixel (offset + v·crop/size)/r - corner, i.e.
  # v = u·scale + translation with scale = size·r/crop.
  crop = tf.cast(tf.stack([crop_height, crop_width]), tf.float32)
  corner = tf.cast(tf.stack([top, left]) * ratio - tf.stack([offset_height, offset_width]),
                   tf.float32)
  scale = image_size * float(ratio) / crop
  translation = corner * image_size / crop
  resized = tf.raw_ops.ScaleAndTranslate(
      images=image[tf.newaxis], size=tf.constant([image_size, image_size]), scale=scale,
      translation=translation, kernel_type=kernel, antialias=False)
  return resized[0]


def _decode_crop_resize(image_bytes: tf.Tensor,
                        window_fn: Callable[[tf.Tensor, tf.Tensor], Window], image_size: int,
                        interpolation: str, dct_scaling: bool) -> tf.Tensor:
  """The window of `image_bytes` that `window_fn` picks, resized to float32 [size, size, 3].

  With `dct_scaling`, a JPEG window at least twice `image_size` per side is decoded at reduced
  scale (`dct_ratio`) and resampled with the same interpolation: the same crop, about the same
  pixels (docs/benchmarks.md gives the measured difference), at a fraction of the decode cost.
  Otherwise, and for other formats, exactly the full-scale decode, crop and `resize`.
  """
  kernel = _SCALE_AND_TRANSLATE_KERNELS.get(interpolation)

  def full_scale() -> tf.Tensor:
    return resize(_decode_and_crop(image_bytes, window_fn), image_size, interpolation)

  if not dct_scaling or kernel is None:
    return tf.reshape(full_scale(), [image_size, image_size, 3])

  def reduced_scale() -> tf.Tensor:
    shape = tf.io.extract_jpeg_shape(image_bytes)
    window = window_fn(shape[0], shape[1])
    ratio = dct_ratio(window[2], window[3], image_size)
    # The ratio is an attribute of the decode op, so each one is its own branch.
    branches = [lambda r=r: _decode_crop_resize_scaled(image_bytes, window, r, image_size, kernel)
                for r in DCT_RATIOS[1:]]
    at_full_scale = lambda: resize(tf.io.decode_and_crop_jpeg(
        image_bytes, tf.stack(window), channels=3), image_size, interpolation)
    index = tf.argmax(tf.equal(tf.constant(DCT_RATIOS), ratio), output_type=tf.int32)
    return tf.switch_case(index, [at_full_scale] + branches)

  image = tf.cond(tf.io.is_jpeg(image_bytes), reduced_scale, full_scale)
  return tf.reshape(image, [image_size, image_size, 3])


@tf.autograph.experimental.do_not_convert  # Plain TF ops: converting only slows tracing.
def eval_image(image: tf.Tensor, image_size: int, *, crop_padding: int = 32,
               interpolation: str = 'bicubic', mean: Sequence[float] = _IMAGENET_MEAN,
               std: Sequence[float] = _IMAGENET_STD) -> tf.Tensor:
  """Eval preprocessing of a decoded uint8 HWC image (grey allowed): centre crop, resize, normalise.

  Returns:
    float32 [image_size, image_size, 3], normalised.
  """
  image = to_rgb(image)
  shape = tf.shape(image)
  image = _crop(image, center_crop_window(shape[0], shape[1], image_size, crop_padding))
  image = resize(image, image_size, interpolation)
  return normalize(tf.reshape(image, [image_size, image_size, 3]), mean, std)


@tf.autograph.experimental.do_not_convert
def preprocess_for_eval(image_bytes: tf.Tensor, image_size: int, *, crop_padding: int = 32,
                        interpolation: str = 'bicubic', mean: Sequence[float] = _IMAGENET_MEAN,
                        std: Sequence[float] = _IMAGENET_STD,
                        dct_scaling: bool = False) -> tf.Tensor:
  """Eval preprocessing of encoded image bytes (JPEG/PNG/BMP/GIF).

  Args:
    image_bytes: scalar string tensor.
    image_size: output side in pixels.
    crop_padding: the centre crop keeps `image_size / (image_size + crop_padding)` of the shorter
      side (0: all of it).
    interpolation: a `tf.image.resize` method name ('bicubic', 'bilinear', ...).
    mean: per-channel mean on the 0..255 scale (see `normalization.NORMALIZATIONS`).
    std: per-channel std on the 0..255 scale.
    dct_scaling: decode JPEG crops of at least twice `image_size` at reduced scale
      (`_decode_crop_resize`).

  Returns:
    float32 [image_size, image_size, 3], normalised.
  """
  image = _decode_crop_resize(
      image_bytes, lambda h, w: center_crop_window(h, w, image_size, crop_padding), image_size,
      interpolation, dct_scaling)
  return normalize(image, mean, std)


def eval_image_file(path: str, image_size: int, **kwargs) -> np.ndarray:
  """`preprocess_for_eval` of an image file, as numpy; a non-image is a ValueError naming it.

  The file is decoded whatever size it declares: a caller given untrusted files checks their
  headers first (`image_header.check`; `predict.check_images` does, for every file, before
  anything is decoded).

  Args:
    path: a JPEG/PNG/BMP/GIF file.
    image_size: output side in pixels.
    **kwargs: `crop_padding`, `interpolation`, `mean`, `std` of `preprocess_for_eval`.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No such image file: {path}')
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return preprocess_for_eval(tf.constant(data), image_size, **kwargs).numpy()
  except (tf.errors.OpError, ValueError) as e:
    # Drop TF's '{{function_node ...}}' prefix: the user needs only the reason.
    reason = re.sub(r'\{\{.*?\}\}', '', str(getattr(e, 'message', e)))
    reason = ' '.join(reason.split())[:120]
    raise ValueError(f'{path} is not a readable image (JPEG, PNG, BMP or GIF): {reason}') from None


def _train_seeds(seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Independent (crop, flip, augment) seeds; the same for the bytes and decoded paths."""
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
  return seeds[0], seeds[1], seeds[2]


def _pad_crop(image: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
  """CIFAR-style crop of an image already at `image_size`: reflect-pad 4 px per 32 px, crop back."""
  pad = max(1, round(4 * image_size / 32))
  # REFLECT needs pad < side, which holds for any image_size >= 2 with this ratio.
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  return tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=seed)


def _finish_train(image: tf.Tensor, image_size: int, crop: str, crop_seed: tf.Tensor,
                  flip_seed: tf.Tensor, augment_seed: tf.Tensor, *, interpolation: str | None,
                  flip: bool, augment: str, randaugment_layers: int, randaugment_magnitude: float,
                  mean: Sequence[float], std: Sequence[float], output_uint8: bool) -> tf.Tensor:
  """Resize (and pad-crop), flip, augment and normalise (or not) an already cropped image.

  `image` is the cropped uint8 image, or with `interpolation=None` the crop already resized to
  float32 [image_size, image_size, 3].
  """
  if interpolation is not None:
    image = resize(image, image_size, interpolation)
  if crop == 'pad_crop':
    image = _pad_crop(image, image_size, crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  image = tf.reshape(image, [image_size, image_size, 3])
  policy = augment_policies.augment_policy(augment)
  if not policy.is_identity or output_uint8:
    # The ops are defined on uint8 (as in TF); bicubic overshoot is clipped first, as TF does.
    image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
  if not policy.is_identity:
    settings = {'randaugment_layers': randaugment_layers,
                'randaugment_magnitude': randaugment_magnitude}
    image = getattr(augment_lib, policy.host_op)(image, augment_seed,
                                                 **policy.op_kwargs(settings))
  return image if output_uint8 else normalize(image, mean, std)


def _check_train_args(crop: str, augment: str) -> None:
  if crop not in TRAIN_CROPS:
    raise ValueError(f'Unknown train crop {crop!r}; expected one of {TRAIN_CROPS}.')
  augment_policies.augment_policy(augment)  # An unknown one fails before the graph is built.


@tf.autograph.experimental.do_not_convert
def train_image(image: tf.Tensor, image_size: int, seed: tf.Tensor, *, crop_padding: int = 32,
                interpolation: str = 'bicubic', mean: Sequence[float] = _IMAGENET_MEAN,
                std: Sequence[float] = _IMAGENET_STD, crop: str = 'inception', flip: bool = True,
                augment: str = 'none', randaugment_layers: int = 2,
                randaugment_magnitude: float = 10, output_uint8: bool = False) -> tf.Tensor:
  """Train preprocessing of a decoded uint8 HWC image (grey allowed). See `preprocess_for_train`."""
  _check_train_args(crop, augment)
  crop_seed, flip_seed, augment_seed = _train_seeds(seed)
  image = to_rgb(image)
  if crop == 'inception':
    shape = tf.shape(image)
    image = _crop(image, inception_crop_window(shape[0], shape[1], crop_seed, image_size,
                                               crop_padding))
  return _finish_train(
      image, image_size, crop, crop_seed, flip_seed, augment_seed, interpolation=interpolation,
      flip=flip, augment=augment, randaugment_layers=randaugment_layers,
      randaugment_magnitude=randaugment_magnitude, mean=mean, std=std, output_uint8=output_uint8)


@tf.autograph.experimental.do_not_convert
def preprocess_for_train(image_bytes: tf.Tensor, image_size: int, seed: tf.Tensor, *,
                         crop_padding: int = 32, interpolation: str = 'bicubic',
                         mean: Sequence[float] = _IMAGENET_MEAN,
                         std: Sequence[float] = _IMAGENET_STD, crop: str = 'inception',
                         flip: bool = True, augment: str = 'none', randaugment_layers: int = 2,
                         randaugment_magnitude: float = 10, output_uint8: bool = False,
                         dct_scaling: bool = False) -> tf.Tensor:
  """Train preprocessing of encoded image bytes; deterministic given `seed`.

  Args:
    image_bytes: scalar string tensor (JPEG/PNG/BMP/GIF).
    image_size: output side in pixels.
    seed: int tensor of shape [2]; every random choice (crop, flip, augmentation) derives from it.
    crop_padding: used by the Inception crop's centre-crop fallback.
    interpolation: a `tf.image.resize` method name.
    mean: per-channel mean on the 0..255 scale.
    std: per-channel std on the 0..255 scale.
    crop: 'inception' (TF's random-area crop), 'pad_crop' (resize, reflect-pad 4 px per 32 px,
      random crop; for tiny images) or 'resize' (whole image, no crop).
    flip: random left-right flip.
    augment: a policy of `augment_policies.AUGMENT_POLICIES`: 'autoaugment' (policy v0),
      'randaugment' or 'none'; its TF op is augment.py's.
    randaugment_layers: RandAugment N.
    randaugment_magnitude: RandAugment M (TF scale: 10 = AutoAugment's maximum; more extrapolates).
    output_uint8: return the uint8 image, not normalised: with `augment='none'`, the image the
      augmentation would have received, for the augmentation on the device
      (`device_preprocessing`).
    dct_scaling: decode JPEG crops of at least twice `image_size` at reduced scale
      (`_decode_crop_resize`).

  Returns:
    float32 [image_size, image_size, 3], normalised; uint8 and not normalised with
    `output_uint8`.
  """
  _check_train_args(crop, augment)
  crop_seed, flip_seed, augment_seed = _train_seeds(seed)
  if crop == 'inception':
    image = _decode_crop_resize(
        image_bytes,
        lambda h, w: inception_crop_window(h, w, crop_seed, image_size, crop_padding),
        image_size, interpolation, dct_scaling)
    interpolation = None  # Already resized.
  else:
    image = decode_image(image_bytes)
  return _finish_train(
      image, image_size, crop, crop_seed, flip_seed, augment_seed, interpolation=interpolation,
      flip=flip, augment=augment, randaugment_layers=randaugment_layers,
      randaugment_magnitude=randaugment_magnitude, mean=mean, std=std, output_uint8=output_uint8)
