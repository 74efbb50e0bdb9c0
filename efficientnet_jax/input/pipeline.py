"""The input pipeline: a source (`sources`) → deterministic, resumable numpy batches.

Train order (digits and folder): epoch e visits a permutation of all N examples drawn from
(seed, e); the last N mod B examples of each epoch's permutation are dropped, so every epoch has
N // B whole global batches and global batch `step` is a pure function of (seed, step). Each
process takes its contiguous slice [p·B/P, (p+1)·B/P) of that same global batch, so batches do not
depend on the process count. The augmentation seed of an example is (seed, its global position in
the stream), never TF's global RNG. With augmentation on the device (`augment.on_device`) the train
batches are uint8, neither augmented nor normalised: the train step does both
(`device_preprocessing`). `start_step=k` starts at batch k directly (nothing before it is
read or decoded).

TFDS datasets are file-backed: process p reads its own even shard of the split (so the global batch
depends on the process count), shuffles files and a `shuffle_buffer` with seeds from (seed, epoch),
and each epoch has (N // P) // (B / P) steps on every process. Resuming skips the encoded records of
the finished steps of the current epoch before any decoding.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from efficientnet_jax.input import device_preprocessing
from efficientnet_jax.input import preprocessing
from efficientnet_jax.input import sources
from efficientnet_jax.input.sources import IndexedSource

# Salts keep the streams of different random choices apart although they share config.seed.
_PERMUTATION_SALT = 1
_AUGMENT_SALT = 2


# ------------------------------------------------------------------------------------------------
# Preprocessing from the config.


def _train_preprocess_fn(config, encoded: bool):
  """`(image or bytes, seed) -> image` with the config's train crop and augmentation.

  The image is float32 and normalised, or, with augmentation on the device, uint8 and neither
  augmented nor normalised (the train step does both).
  """
  mean, std = device_preprocessing.normalization(config)
  augment = config.augment
  on_device = device_preprocessing.augment_on_device(config)
  # Optional pixel constants of translate/cutout (TF's are meant for 224+ px images).
  augment_kwargs = {key: augment[key] for key in ('translate_const', 'cutout_const')
                    if key in augment}
  kwargs = dict(crop_padding=config.crop_padding, interpolation=config.interpolation, mean=mean,
                std=std, crop=augment.crop, flip=augment.flip,
                augment='none' if on_device else augment.policy,
                randaugment_layers=augment.randaugment_layers,
                randaugment_magnitude=augment.randaugment_magnitude, augment_kwargs=augment_kwargs,
                output_uint8=on_device)
  function = preprocessing.preprocess_for_train if encoded else preprocessing.train_image
  return lambda image, seed: function(image, config.image_size, seed, **kwargs)


def _eval_preprocess_fn(config, encoded: bool):
  mean, std = device_preprocessing.normalization(config)
  function = preprocessing.preprocess_for_eval if encoded else preprocessing.eval_image
  return lambda image: function(image, config.image_size, crop_padding=config.crop_padding,
                                interpolation=config.interpolation, mean=mean, std=std)


def _augment_seed(config, position: tf.Tensor) -> tf.Tensor:
  """The seed of the example at global stream `position`."""
  base = tf.constant([config.seed, _AUGMENT_SALT], tf.int64)
  return tf.random.experimental.stateless_fold_in(base, tf.cast(position, tf.int64))


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def _check_request(config, global_batch_size: int, process_index: int,
                   process_count: int) -> int:
  """Validates what every iterator needs; returns the per-process batch size."""
  if not isinstance(config.image_size, int) or config.image_size <= 0:
    # Configs may leave it None ("the model's native resolution"); only the caller knows the model.
    raise ValueError(f'config.image_size must be a positive int, not {config.image_size!r}; set it '
                     "to the model's resolution before building the input pipeline.")
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, {process_count}).')
  if global_batch_size % process_count:
    raise ValueError(f'Global batch size {global_batch_size} is not divisible by the process '
                     f'count {process_count}.')
  return global_batch_size // process_count


# ------------------------------------------------------------------------------------------------
# Iterators.


def _indexed_train(source: IndexedSource, config, global_batch: int, start_step: int,
                   process_index: int, local_batch: int) -> tf.data.Dataset:
  steps_per_epoch = len(source) // global_batch
  if not steps_per_epoch:
    raise ValueError(f'Global batch size {global_batch} exceeds the {len(source)} train examples.')
  per_epoch = steps_per_epoch * global_batch
  first = process_index * local_batch
  permutation_base = tf.constant([config.seed, _PERMUTATION_SALT], tf.int64)

  def epoch_slices(epoch: tf.Tensor, first_step: int) -> tf.data.Dataset:
    seed = tf.random.experimental.stateless_fold_in(permutation_base, tf.cast(epoch, tf.int64))
    order = tf.random.experimental.stateless_shuffle(tf.range(len(source), dtype=tf.int64), seed)
    # Rows are global batches; this process keeps its columns and the rows not yet consumed.
    order = tf.reshape(order[:per_epoch], [steps_per_epoch, global_batch])
    positions = tf.reshape(tf.range(per_epoch, dtype=tf.int64), [steps_per_epoch, global_batch])
    positions += tf.cast(epoch, tf.int64) * per_epoch
    keep = (slice(first_step, None), slice(first, first + local_batch))
    return tf.data.Dataset.from_tensor_slices(
        (tf.reshape(positions[keep], [-1]), tf.reshape(order[keep], [-1])))

  start_epoch, start_step_in_epoch = divmod(start_step, steps_per_epoch)
  ds = epoch_slices(tf.constant(start_epoch, tf.int64), start_step_in_epoch)
  later_epochs = tf.data.Dataset.range(start_epoch + 1, 2**62)
  ds = ds.concatenate(later_epochs.flat_map(lambda epoch: epoch_slices(epoch, 0)))
  load = source.loader()
  preprocess = _train_preprocess_fn(config, encoded=source.images is None)

  def example(position, index):
    image, label = load(index)
    return {'image': preprocess(image, _augment_seed(config, position)), 'label': label}

  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local_batch, drop_remainder=True)


def _tfds_train_epochs(builder, config, global_batch: int, start_step: int, process_index: int,
                       process_count: int, local_batch: int) -> Iterator[dict[str, np.ndarray]]:
  num_examples = builder.info.splits[config.train_split].num_examples
  steps_per_epoch = (num_examples // process_count) // local_batch
  if not steps_per_epoch:
    raise ValueError(f'Global batch size {global_batch} exceeds the {num_examples} train examples.')
  split = tfds.split_for_jax_process(config.train_split, process_index=process_index,
                                     process_count=process_count, drop_remainder=True)
  preprocess = _train_preprocess_fn(config, encoded=True)
  epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
  while True:
    # TFDS takes only Python ints as shuffle seeds; SeedSequence mixes (seed, epoch) into one.
    epoch_seed = int(np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0])
    read_config = tfds.ReadConfig(shuffle_seed=epoch_seed, options=_options())
    ds = builder.as_dataset(split=split, shuffle_files=True, read_config=read_config,
                            decoders={'image': tfds.decode.SkipDecoding()})
    if config.shuffle_buffer:
      ds = ds.shuffle(config.shuffle_buffer, seed=epoch_seed)
    ds = ds.take(steps_per_epoch * local_batch).enumerate()
    ds = ds.skip(step_in_epoch * local_batch)  # Still encoded: resuming decodes nothing it skips.
    epoch_start = epoch * steps_per_epoch

    def example(local_position, record, epoch_start=epoch_start):
      step, offset = local_position // local_batch, local_position % local_batch
      position = (epoch_start + step) * global_batch + process_index * local_batch + offset
      return {'image': preprocess(record['image'], _augment_seed(config, position)),
              'label': tf.cast(record['label'], tf.int32)}

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    produced = 0
    for batch in ds.as_numpy_iterator():
      produced += 1
      yield batch
    if not produced and not step_in_epoch:
      raise ValueError(f'{config.dataset!r} split {split} yielded no full batch of {local_batch}.')
    epoch, step_in_epoch = epoch + 1, 0


def train_iterator(config, *, global_batch_size: int, start_step: int = 0, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Endless train batches of this process, starting at global batch `start_step`.

  Args:
    config: ConfigDict with the dataset, preprocessing and augmentation keys (module docstring).
    global_batch_size: examples per step over all processes.
    start_step: the first global batch to yield; equals skipping that many batches of a fresh
      iterator, without reading or decoding them.
    process_index: this process's index.
    process_count: number of processes; must divide `global_batch_size`.

  Returns:
    An endless iterator of {'image': float32 [B/P, S, S, 3] normalised, 'label': int32 [B/P]}
    numpy batches; epochs follow each other without a break in the step count. With augmentation
    on the device (`device_preprocessing.augment_on_device`) the images are uint8, cropped,
    resized and flipped only: the train step augments and normalises them.
  """
  # Not a generator itself, so that configuration errors surface at the call, not at next().
  local_batch = _check_request(config, global_batch_size, process_index, process_count)
  source = sources.source(config, config.train_split)
  if isinstance(source, IndexedSource):
    ds = _indexed_train(source, config, global_batch_size, start_step, process_index, local_batch)
    return ds.with_options(_options()).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  return _tfds_train_epochs(source, config, global_batch_size, start_step, process_index,
                            process_count, local_batch)


def _padding(config) -> tf.data.Dataset:
  """Endless padding examples (mask 0) that fill the last eval batch."""
  size = config.image_size
  return tf.data.Dataset.from_tensors({'image': tf.zeros([size, size, 3], tf.float32),
                                       'label': tf.constant(0, tf.int32),
                                       'mask': tf.constant(0.0, tf.float32)}).repeat()


def eval_iterator(config, *, global_batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One pass over the eval split, in order, every example exactly once over all processes.

  All processes yield the same number of batches; the last ones are filled with padding examples
  whose 'mask' is 0 (real examples have 1).

  Args:
    config: ConfigDict with the dataset and preprocessing keys (module docstring).
    global_batch_size: examples per batch over all processes.
    process_index: this process's index.
    process_count: number of processes; must divide `global_batch_size`.

  Returns:
    An iterator of {'image': float32 [B/P, S, S, 3], 'label': int32 [B/P], 'mask': float32 [B/P]}
    numpy batches.
  """
  local_batch = _check_request(config, global_batch_size, process_index, process_count)
  source = sources.source(config, config.eval_split)
  if isinstance(source, IndexedSource):
    # Global batch b holds positions [b·B, (b+1)·B); positions past the end are padding.
    num_batches = math.ceil(len(source) / global_batch_size)
    positions = np.arange(num_batches * global_batch_size).reshape(num_batches, global_batch_size)
    first = process_index * local_batch
    positions = positions[:, first:first + local_batch].reshape(-1)
    load = source.loader()
    preprocess = _eval_preprocess_fn(config, encoded=source.images is None)

    def example(position):
      image, label = load(tf.minimum(position, len(source) - 1))
      return {'image': preprocess(image), 'label': label,
              'mask': tf.cast(position < len(source), tf.float32)}

    ds = tf.data.Dataset.from_tensor_slices(positions)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    num_examples = source.info.splits[config.eval_split].num_examples
    shard_size = math.ceil(num_examples / process_count)  # The largest of the even shards.
    num_batches = math.ceil(shard_size / local_batch)
    split = tfds.split_for_jax_process(config.eval_split, process_index=process_index,
                                       process_count=process_count)
    ds = source.as_dataset(split=split, shuffle_files=False,
                           read_config=tfds.ReadConfig(options=_options()),
                           decoders={'image': tfds.decode.SkipDecoding()})
    preprocess = _eval_preprocess_fn(config, encoded=True)
    ds = ds.take(shard_size).map(
        lambda record: {'image': preprocess(record['image']),
                        'label': tf.cast(record['label'], tf.int32),
                        'mask': tf.constant(1.0, tf.float32)},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.concatenate(_padding(config)).take(num_batches * local_batch)
  ds = ds.batch(local_batch, drop_remainder=True).with_options(_options())
  return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
