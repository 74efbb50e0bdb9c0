"""The train batch's augmentation and normalisation on the accelerator (`augment.on_device`).

With augmentation on the device, the host pipeline only decodes, crops, resizes and flips, and
yields uint8 images: the exact uint8 images its own augmentation would have received
(preprocessing.py clips and truncates the resized float32 image, as TF does). The train step then
calls `train_images_fn(config)` on the batch: the config's policy (its JAX op in
`augment_policies.AUGMENT_POLICIES`, from device_augment.py: TF's ops, bit for bit on XLA:CPU,
and TF's distributions of the random choices, drawn from JAX keys) and the host's normalisation
(normalization.py), with the same float32 arithmetic. A quarter of the bytes cross from host to
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

from efficientnet_jax.input import augment_policies
from efficientnet_jax.input import device_augment
from efficientnet_jax.input import normalization

# Keeps the augmentation keys apart from the model's (initialisation and dropout come from
# key(seed)); pipeline.py's salts are for TF seeds, another stream altogether.
AUGMENT_KEY_SALT = 0xA06

TrainImagesFn = Callable[[jax.Array, jax.Array], jax.Array]


def augment_on_device(config) -> bool:
  """Whether the train batch is augmented and normalised on the device (`augment.on_device`).

  Unset (None, the default) means on when JAX runs on an accelerator and there is a policy to
  apply: the host CPU is what starves an accelerator. On a CPU backend the host path is kept.
  """
  on_device = config.augment.on_device
  if on_device is None:
    return (jax.default_backend() != 'cpu'
            and not augment_policies.augment_policy(config.augment.policy).is_identity)
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
  policy = augment_policies.augment_policy(config.augment.policy)
  if policy.is_identity:
    return lambda images, keys: images
  op = getattr(device_augment, policy.device_op)
  kwargs = policy.op_kwargs(config.augment)
  return lambda images, keys: op(images, keys, **kwargs)


def train_images_fn(config, dtype=jnp.float32) -> TrainImagesFn:
  """`(uint8 images [B, S, S, 3], step) -> model input`: augmented, normalised, in `dtype`.

  For the train step (`steps.make_train_step(preprocess=...)`) on the global batch of `step`,
  whose images come from the host pipeline with augmentation on the device.

  Args:
    config: the config: its seed, `augment` group and normalization.
    dtype: the model's compute dtype (the model casts its input to it first anyway).
  """
  augment = _augment_fn(config)
  mean, std = normalization.mean_std(config.normalization)
  seed = config.seed

  def train_images(images: jax.Array, step: jax.Array) -> jax.Array:
    images = augment(images, example_keys(seed, step, images.shape[0]))
    return normalize(images, mean, std).astype(dtype)

  return train_images
