"""The train batch's augmentation and normalisation on the accelerator (`augment.on_device`).

With augmentation on the device, the host pipeline only decodes, crops, resizes and flips, and
yields uint8 images: the exact uint8 images its own augmentation would have received
(preprocessing.py clips and truncates the resized float32 image, as TF does). The train step then
calls `train_images_fn(config)` on the batch: the config's policy (device_augment.py: TF's ops, bit
for bit on XLA:CPU, and TF's distributions of the random choices, drawn from JAX keys) and the
host's normalisation, with the same float32 arithmetic. A quarter of the bytes cross from host to
device, and the host CPU, which is what starves an accelerator of batches, skips the augmentation.

Each example's key is `fold_in(fold_in(key(seed + salt), step), index)`, its index within the
global batch: the augmentation of a batch position is a function of (seed, step), so a resumed run
draws what an uninterrupted one draws, on any number of processes.

No TensorFlow: the train step imports this on accelerator machines, which have none.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.input import device_augment

# name -> (mean, std) per RGB channel, on the 0..255 scale: the model sees (x - mean) / std.
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    'imagenet': ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    'lite': ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    'inception': ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    'none': ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}

# Keeps the augmentation keys apart from the model's (initialisation and dropout come from
# key(seed)); pipeline.py's salts are for TF seeds, another stream altogether.
AUGMENT_KEY_SALT = 0xA06

TrainImagesFn = Callable[[jax.Array, jax.Array], jax.Array]


def normalization(config) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """The (mean, std) of `config.normalization`; a ValueError names the valid ones."""
  if config.normalization not in NORMALIZATIONS:
    raise ValueError(f'Unknown normalization {config.normalization!r}; expected one of '
                     f'{sorted(NORMALIZATIONS)}.')
  return NORMALIZATIONS[config.normalization]


def augment_on_device(config) -> bool:
  """Whether the train batch is augmented and normalised on the device (`augment.on_device`).

  Unset (None, the default) means on when JAX runs on an accelerator and there is a policy to
  apply: the host CPU is what starves an accelerator. On a CPU backend the host path is kept.
  """
  on_device = config.augment.get('on_device')
  if on_device is None:
    return jax.default_backend() != 'cpu' and config.augment.policy != 'none'
  return bool(on_device)


def example_keys(seed: int, step: jax.Array, batch_size: int) -> jax.Array:
  """The augmentation key of each position of global batch `step`: [batch_size] typed keys."""
  step_key = jax.random.fold_in(jax.random.key(seed + AUGMENT_KEY_SALT), step)
  return jax.vmap(lambda index: jax.random.fold_in(step_key, index))(jnp.arange(batch_size))


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """`(images - mean) / std` of uint8 images, as preprocessing.normalize computes it, bit for bit.

  Looked up in a table of every level and channel computed with TF's float32 operations: XLA
  turns a division by a constant into a multiplication by its reciprocal, which lands one float32
  step off for some levels.
  """
  levels = np.arange(256, dtype=np.float32)[:, None]
  table = (levels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  return jnp.asarray(table)[images.astype(jnp.int32), np.arange(3)]


def _augment_fn(config) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`(uint8 images, keys) -> uint8 images` for the config's policy (the identity for 'none')."""
  augment = config.augment
  # Optional pixel constants of translate/cutout, as the host pipeline passes them.
  kwargs = {key: augment[key] for key in ('translate_const', 'cutout_const') if key in augment}
  if augment.policy == 'none':
    return lambda images, keys: images
  if augment.policy == 'randaugment':
    return lambda images, keys: device_augment.randaugment(
        images, keys, num_layers=augment.randaugment_layers,
        magnitude=augment.randaugment_magnitude, **kwargs)
  if augment.policy == 'autoaugment':
    return lambda images, keys: device_augment.autoaugment(images, keys, **kwargs)
  raise ValueError(f"Unknown augment.policy {augment.policy!r}; expected 'autoaugment', "
                   "'randaugment' or 'none'.")


def train_images_fn(config, dtype=jnp.float32) -> TrainImagesFn:
  """`(uint8 images [B, S, S, 3], step) -> model input`: augmented, normalised, in `dtype`.

  For the train step (`steps.make_train_step(preprocess=...)`) on the global batch of `step`,
  whose images come from the host pipeline with augmentation on the device.

  Args:
    config: the config: its seed, `augment` group and normalization.
    dtype: the model's compute dtype (the model casts its input to it first anyway).
  """
  augment = _augment_fn(config)
  mean, std = normalization(config)
  seed = config.seed

  def train_images(images: jax.Array, step: jax.Array) -> jax.Array:
    images = augment(images, example_keys(seed, step, images.shape[0]))
    return normalize(images, mean, std).astype(dtype)

  return train_images
