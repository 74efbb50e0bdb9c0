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

With `config.data_service_address` (digits and folder only) the train batches are made by the
workers of a tf.data service: the dataset distributed is one of (step, this process's batch of
that step) over `range(start_step, ...)`, built by the same functions as the local one
(`_IndexedTrain`), and the trainer restores step order, so the batches are the local ones byte
for byte, resume included, on any number of processes (each process runs its own job for its own
slice). TFDS sources are refused with the service: their order is a shuffle buffer streaming over
files, not a function of the step (`data_service` says what that would cost). The eval pipeline is
always local.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from efficientnet_jax.input import augment_policies
from efficientnet_jax.input import data_service
from efficientnet_jax.input import device_preprocessing
from efficientnet_jax.input import normalization
from efficientnet_jax.input import preprocessing
from efficientnet_jax.input import sources
from efficientnet_jax.input.sources import IndexedSource

# Salts keep the streams of different random choices apart although they share config.seed.
_PERMUTATION_SALT = 1
_AUGMENT_SALT = 2


# ------------------------------------------------------------------------------------------------
# Preprocessing from the config.


def _train_preprocess_fn(config, encoded: bool):
  """The config's train preprocessing: `(image or bytes, seed) -> image`, and a per-batch finish.

  Returns:
    (`preprocess`, `finish_batch`). `preprocess` crops, flips and augments one example;
    `finish_batch` maps a batch of its outputs to what the train step takes. With augmentation on
    the host the example stays uint8 and the batch is normalised at once (the same values as per
    example, for a fraction of the per-image cost); with augmentation on the device both leave
    uint8 (the train step augments and normalises); without a policy the example is normalised
    from the resized float image, as the recipe defines it.
  """
  mean, std = normalization.mean_std(config.normalization)
  augment = config.augment
  on_device = device_preprocessing.augment_on_device(config)
  normalize_batch = (not augment_policies.augment_policy(augment.policy).is_identity
                     and not on_device)
  kwargs = dict(crop_padding=config.crop_padding, interpolation=config.interpolation, mean=mean,
                std=std, crop=augment.crop, flip=augment.flip,
                augment='none' if on_device else augment.policy,
                randaugment_layers=augment.randaugment_layers,
                randaugment_magnitude=augment.randaugment_magnitude,
                output_uint8=on_device or normalize_batch)
  if encoded:
    function = preprocessing.preprocess_for_train
    kwargs['dct_scaling'] = config.jpeg_dct_scaling
  else:
    function = preprocessing.train_image

  def finish_batch(batch):
    if normalize_batch:
      batch = dict(batch, image=preprocessing.normalize(batch['image'], mean, std))
    return batch

  return (lambda image, seed: function(image, config.image_size, seed, **kwargs)), finish_batch


def _eval_preprocess_fn(config, encoded: bool):
  mean, std = normalization.mean_std(config.normalization)
  kwargs = dict(crop_padding=config.crop_padding, interpolation=config.interpolation, mean=mean,
                std=std)
  if encoded:
    function = preprocessing.preprocess_for_eval
    kwargs['dct_scaling'] = config.jpeg_dct_scaling
  else:
    function = preprocessing.eval_image
  return lambda image: function(image, config.image_size, **kwargs)


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


class _IndexedTrain:
  """The train order of an indexed source, and "the batch of global step s on process p".

  Both train paths build their batches here: the local one walks the epochs (one permutation
  per epoch), the tf.data service one maps each step on its own (`keyed`: one permutation per
  step, ~20 ms for 1.28 M examples, on the service's workers), and the rows of a step and the
  examples made from them are the same functions, so the two produce the same bytes.
  """

  def __init__(self, source: IndexedSource, config, global_batch: int, process_index: int,
               local_batch: int):
    self.steps_per_epoch = len(source) // global_batch
    if not self.steps_per_epoch:
      raise ValueError(f'Global batch size {global_batch} exceeds the {len(source)} train '
                       'examples.')
    self._source, self._config = source, config
    self._global_batch, self._local_batch = global_batch, local_batch
    self._first = process_index * local_batch

  def epoch_order(self, epoch: tf.Tensor) -> tf.Tensor:
    """int64 [steps_per_epoch, global_batch]: row s, the example indices of the epoch's step s."""
    base = tf.constant([self._config.seed, _PERMUTATION_SALT], tf.int64)
    seed = tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))
    n = len(self._source)
    order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed)
    per_epoch = self.steps_per_epoch * self._global_batch
    return tf.reshape(order[:per_epoch], [self.steps_per_epoch, self._global_batch])

  def step_rows(self, order: tf.Tensor, step: tf.Tensor):
    """(step, global position, example index) of each example of this process's slice of `step`.

    Args:
      order: `epoch_order` of the epoch that holds `step`.
      step: the global step (int64 scalar).

    Returns:
      Three int64 [local_batch] tensors: the step repeated, the examples' positions in the global
      stream (their augmentation seeds), and their indices in the source.
    """
    step = tf.cast(step, tf.int64)
    columns = tf.range(self._first, self._first + self._local_batch, dtype=tf.int64)
    indices = tf.gather(order[step % self.steps_per_epoch], columns)
    return (tf.fill([self._local_batch], step), step * self._global_batch + columns, indices)

  def batches(self, rows: tf.data.Dataset) -> tf.data.Dataset:
    """(step, position, index) rows, whole steps in order → (step, {'image', 'label'}) batches."""
    load = self._source.loader()
    preprocess, finish_batch = _train_preprocess_fn(self._config,
                                                    encoded=self._source.images is None)

    def example(step, position, index):
      image, label = load(index)
      return step, {'image': preprocess(image, _augment_seed(self._config, position)),
                    'label': label}

    ds = rows.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Every step contributes exactly local_batch rows, so each batch is one step's.
    ds = ds.batch(self._local_batch, drop_remainder=True)
    return ds.map(lambda steps, batch: (steps[0], finish_batch(batch)))

  def local(self, start_step: int) -> tf.data.Dataset:
    """This process's batches from global step `start_step` on, one permutation per epoch."""
    start_epoch = start_step // self.steps_per_epoch

    def epoch_rows(epoch: tf.Tensor) -> tf.data.Dataset:
      order = self.epoch_order(epoch)
      first_step = tf.maximum(epoch * self.steps_per_epoch, start_step)
      steps = tf.data.Dataset.range(first_step, (epoch + 1) * self.steps_per_epoch)
      return steps.map(lambda step: self.step_rows(order, step)).unbatch()

    rows = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_rows)
    return self.batches(rows).map(lambda step, batch: batch)

  def keyed(self, start_step: int) -> tf.data.Dataset:
    """(step, batch) for global steps `start_step`, `start_step` + 1, … computed step by step.

    Each element of the source `range` is one step, so the tf.data service can hand the steps
    to its workers one at a time (`ShardingPolicy.DYNAMIC`) in any order.
    """
    steps = tf.data.Dataset.range(start_step, 2**62)
    rows = steps.map(lambda step: self.step_rows(
        self.epoch_order(step // self.steps_per_epoch), step)).unbatch()
    return self.batches(rows)


def _tfds_train_epochs(builder, config, global_batch: int, start_step: int, process_index: int,
                       process_count: int, local_batch: int) -> Iterator[dict[str, np.ndarray]]:
  num_examples = builder.info.splits[config.train_split].num_examples
  steps_per_epoch = (num_examples // process_count) // local_batch
  if not steps_per_epoch:
    raise ValueError(f'Global batch size {global_batch} exceeds the {num_examples} train examples.')
  split = tfds.split_for_jax_process(config.train_split, process_index=process_index,
                                     process_count=process_count, drop_remainder=True)
  preprocess, finish_batch = _train_preprocess_fn(config, encoded=True)
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
    ds = ds.batch(local_batch, drop_remainder=True).map(finish_batch)
    ds = ds.prefetch(tf.data.AUTOTUNE)
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

  With `config.data_service_address` set, the batches of a digits or folder dataset are made by
  the tf.data service's workers and come back in step order, the same bytes as locally
  (`data_service`); a TFDS dataset is then a ConfigError.

  Returns:
    An endless iterator of {'image': float32 [B/P, S, S, 3] normalised, 'label': int32 [B/P]}
    numpy batches; epochs follow each other without a break in the step count. With augmentation
    on the device (`device_preprocessing.augment_on_device`) the images are uint8, cropped,
    resized and flipped only: the train step augments and normalises them.
  """
  # Not a generator itself, so that configuration errors surface at the call, not at next().
  local_batch = _check_request(config, global_batch_size, process_index, process_count)
  source = sources.source(config, config.train_split)
  data_service.check_source(config, isinstance(source, IndexedSource))
  if isinstance(source, IndexedSource):
    train = _IndexedTrain(source, config, global_batch_size, process_index, local_batch)
    address = config.data_service_address
    if address:
      # Few steps ahead per worker: the trainer's reorder window holds what runs ahead.
      keyed = train.keyed(start_step).with_options(_options()).prefetch(2)
      name = data_service.job_name(config, process_index, process_count, start_step)
      return data_service.distributed(keyed, address, name, start_step)
    return train.local(start_step).with_options(_options()).prefetch(
        tf.data.AUTOTUNE).as_numpy_iterator()
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
