"""Input pipeline: a source (digits, image folder, TFDS dataset) → deterministic numpy batches.

Sources (`config.dataset`):
  * 'digits': scikit-learn's bundled `load_digits()` (1,797 8×8 grey digits, 0..16 → 0..255), in
    memory; a fixed stratified split: 360 test / 1,437 train examples (see `_digits_split`).
  * 'folder': `config.data_dir/<split>/<class_name>/<image file>`; class ids are the sorted class
    folder names of the train split. Eval split 'validation' also finds a `val/` folder and vice
    versa, so a root holds `train/` plus `val/` (or `validation/`, `test/`). Files that are not
    JPEG/PNG/BMP/GIF images are skipped and counted (`bad_image_policy='skip'`) or raise naming the
    file ('fail').
  * anything else: a TFDS name (features 'image' and 'label'), read from `config.data_dir`, never
    downloaded; datasets with manual download (imagenet2012) are prepared from `config.manual_dir`.

Train order (digits and folder): epoch e visits a permutation of all N examples drawn from
(seed, e); the last N mod B examples of each epoch's permutation are dropped, so every epoch has
N // B whole global batches and global batch `step` is a pure function of (seed, step). Each
process takes its contiguous slice [p·B/P, (p+1)·B/P) of that same global batch, so batches do not
depend on the process count. The augmentation seed of an example is (seed, its global position in
the stream), never TF's global RNG. `start_step=k` starts at batch k directly (nothing before it is
read or decoded).

TFDS datasets are file-backed: process p reads its own even shard of the split (so the global batch
depends on the process count), shuffles files and a `shuffle_buffer` with seeds from (seed, epoch),
and each epoch has (N // P) // (B / P) steps on every process. Resuming skips the encoded records of
the finished steps of the current epoch before any decoding.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os
from typing import Any, Iterator

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from efficientnet_jax import preprocessing

_IMAGE_FORMATS = ('JPEG', 'PNG', 'BMP', 'GIF')  # What tf.io.decode_image reads.
DIGITS_TEST_SIZE = 360
_DIGITS_SPLIT_SEED = 0
# Salts keep the streams of different random choices apart although they share config.seed.
_PERMUTATION_SALT = 1
_AUGMENT_SALT = 2
_FOLDER_SPLIT_ALIASES = {'validation': ('validation', 'val'), 'val': ('val', 'validation')}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Sizes of a dataset as the pipeline sees it (after skipping unreadable files)."""
  num_classes: int
  num_train_examples: int
  num_eval_examples: int


@dataclasses.dataclass(frozen=True)
class _IndexedSource:
  """Random-access examples: decoded uint8 images in memory, or encoded image files by path."""
  num_classes: int
  labels: np.ndarray  # int32 [N]
  images: np.ndarray | None = None  # uint8 [N, H, W, C], for in-memory sources
  paths: np.ndarray | None = None  # str [N], for file sources

  def __len__(self) -> int:
    return len(self.labels)

  def loader(self):
    """Returns `index -> (image or encoded bytes, label)` for use inside tf.data."""
    labels = tf.constant(self.labels, tf.int32)
    if self.images is not None:
      images = tf.constant(self.images)
      return lambda index: (tf.gather(images, index), tf.gather(labels, index))
    paths = tf.constant(self.paths)
    return lambda index: (tf.io.read_file(tf.gather(paths, index)), tf.gather(labels, index))


# ------------------------------------------------------------------------------------------------
# Sources.


def _digits_split(labels: np.ndarray) -> np.ndarray:
  """Boolean test mask: stratified 360 of 1,797, fixed forever.

  Each class gives floor(n_c·360/N) examples, the remaining slots going to the classes with the
  largest fractional parts (ties: lower class id); which examples comes from a legacy
  `np.random.RandomState(0)` permutation per class, whose stream numpy keeps frozen across versions.
  """
  classes, counts = np.unique(labels, return_counts=True)
  exact = counts * DIGITS_TEST_SIZE / len(labels)
  quota = np.floor(exact).astype(int)
  leftover = DIGITS_TEST_SIZE - quota.sum()
  quota[np.lexsort((classes, -(exact - quota)))[:leftover]] += 1
  rng = np.random.RandomState(_DIGITS_SPLIT_SEED)
  is_test = np.zeros(len(labels), bool)
  for cls, n_test in zip(classes, quota):
    members = np.flatnonzero(labels == cls)
    is_test[rng.permutation(members)[:n_test]] = True
  return is_test


@functools.lru_cache(maxsize=None)
def _digits(split: str) -> _IndexedSource:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (only this source needs it)
  if split not in ('train', 'test'):
    raise ValueError(f"The digits dataset has splits 'train' and 'test', not {split!r}.")
  digits = datasets.load_digits()
  labels = digits.target.astype(np.int32)
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # grey, 0..255
  keep = _digits_split(labels) == (split == 'test')
  return _IndexedSource(num_classes=10, labels=labels[keep], images=images[keep])


def _check_image_file(path: str) -> str | None:
  """Returns why `path` is not a readable JPEG/PNG/BMP/GIF image, or None when it is."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  (only the folder source needs it)
  try:
    with Image.open(path) as image:
      image_format = image.format
      image.verify()  # Parses the file structure (PNG checksums, JPEG markers) without decoding.
  except Exception as error:  # pylint: disable=broad-except  (PIL raises many types for bad files)
    return f'{type(error).__name__}: {error}'
  if image_format not in _IMAGE_FORMATS:
    return f'{image_format} images are not supported (only {"/".join(_IMAGE_FORMATS)})'
  return None


def _folder_split_dir(root: str, split: str) -> str:
  for name in _FOLDER_SPLIT_ALIASES.get(split, (split,)):
    if os.path.isdir(os.path.join(root, name)):
      return os.path.join(root, name)
  found = sorted(os.listdir(root)) if os.path.isdir(root) else 'nothing: the folder does not exist'
  raise FileNotFoundError(f'No {split!r} split folder in image folder {root!r} (found {found}).')


def _class_names(split_dir: str) -> list[str]:
  return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith('.'))


@functools.lru_cache(maxsize=None)
def _folder(root: str, split: str, train_split: str, bad_image_policy: str) -> _IndexedSource:
  if bad_image_policy not in ('skip', 'fail'):
    raise ValueError(f"bad_image_policy must be 'skip' or 'fail', not {bad_image_policy!r}.")
  split_dir = _folder_split_dir(root, split)
  # Class ids come from the train folder so that every split numbers the classes alike.
  try:
    classes = _class_names(_folder_split_dir(root, train_split))
  except FileNotFoundError:
    classes = _class_names(split_dir)
  paths, labels = [], []
  for name in _class_names(split_dir):
    if name not in classes:
      raise ValueError(f'Class folder {os.path.join(split_dir, name)!r} has no counterpart in the '
                       f'{train_split!r} split, so it has no class id.')
    files = sorted(e.path for e in os.scandir(os.path.join(split_dir, name))
                   if e.is_file() and not e.name.startswith('.'))
    paths += files
    labels += [classes.index(name)] * len(files)
  # Checking headers up front (threads: PIL releases the GIL on I/O) keeps the example list fixed,
  # which the deterministic, resumable order needs; a bad file found mid-epoch would shift it.
  workers = min(32, 4 * (os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    problems = list(pool.map(_check_image_file, paths))
  bad = [(path, problem) for path, problem in zip(paths, problems) if problem]
  if bad and bad_image_policy == 'fail':
    path, problem = bad[0]
    raise ValueError(f"Unreadable image file {path!r} ({problem}); remove it or set "
                     f"config.bad_image_policy='skip'.")
  if bad:
    logging.warning('Skipped %d unreadable file(s) in %s: %s', len(bad), split_dir,
                    ', '.join(os.path.relpath(path, split_dir) for path, _ in bad[:10]))
  good = [i for i, problem in enumerate(problems) if not problem]
  if not good:
    raise ValueError(f'No readable images in {split_dir!r}.')
  return _IndexedSource(num_classes=len(classes), labels=np.asarray(labels, np.int32)[good],
                        paths=np.asarray(paths, dtype=object)[good].astype(str))


def _tfds_builder(name: str, data_dir: str | None, manual_dir: str | None):
  """The TFDS builder of a prepared dataset; never downloads anything."""
  where = data_dir or 'the default TFDS data_dir'
  try:
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise ValueError(f'Unknown dataset {name!r} (not digits, folder, or a TFDS name).') from error
  if builder.is_prepared():
    return builder
  how = f'`tfds build {name} --data_dir={data_dir or "..."}'
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    how += f' --manual_dir={manual_dir or "..."}`'
  else:
    how += '` on a machine with network access'
  if not (manual_dir and os.path.isdir(manual_dir) and os.listdir(manual_dir)
          and builder.MANUAL_DOWNLOAD_INSTRUCTIONS):
    raise FileNotFoundError(f'Dataset {name!r} not found in {where}; prepare it with {how} or fix '
                            'config.data_dir.')
  # Manual datasets are built from local archives only. Several processes must not do this at
  # once: in a multi-process run, prepare the dataset beforehand.
  logging.info('Preparing %s in %s from %s (no download).', name, where, manual_dir)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
  try:
    builder.download_and_prepare(download_config=download_config)
  except Exception as error:  # pylint: disable=broad-except  (one clear line for any failure)
    reason = (str(error).splitlines() or [''])[0]
    raise FileNotFoundError(f'Dataset {name!r} not found in {where} and could not be prepared from '
                            f'{manual_dir} ({type(error).__name__}: {reason}); prepare it with '
                            f'{how} or fix config.data_dir / config.manual_dir.') from error
  return builder


def _source(config, split: str) -> _IndexedSource | Any:
  """An `_IndexedSource` for digits/folder, or a TFDS builder."""
  if config.dataset == 'digits':
    return _digits(split)
  if config.dataset == 'folder':
    if not config.data_dir:
      raise ValueError("config.data_dir must name the image folder root for dataset 'folder'.")
    return _folder(os.path.abspath(config.data_dir), split, config.train_split,
                   config.bad_image_policy)
  return _tfds_builder(config.dataset, config.data_dir or None, config.manual_dir or None)


def dataset_info(config) -> DatasetInfo:
  """Number of classes and of train/eval examples of the configured dataset (global counts).

  The caller compares `num_classes` with `config.num_classes` (train.make_plan does).
  """
  train, evaluation = _source(config, config.train_split), _source(config, config.eval_split)
  if isinstance(train, _IndexedSource):
    return DatasetInfo(train.num_classes, len(train), len(evaluation))
  return DatasetInfo(train.info.features['label'].num_classes,
                     train.info.splits[config.train_split].num_examples,
                     train.info.splits[config.eval_split].num_examples)


# ------------------------------------------------------------------------------------------------
# Preprocessing from the config.


def _normalization(config) -> tuple[tuple[float, ...], tuple[float, ...]]:
  if config.normalization not in preprocessing.NORMALIZATIONS:
    raise ValueError(f'Unknown normalization {config.normalization!r}; expected one of '
                     f'{sorted(preprocessing.NORMALIZATIONS)}.')
  return preprocessing.NORMALIZATIONS[config.normalization]


def _train_preprocess_fn(config, encoded: bool):
  """`(image or bytes, seed) -> float32 image` with the config's train crop and augmentation."""
  mean, std = _normalization(config)
  augment = config.augment
  # Optional pixel constants of translate/cutout (TF's are meant for 224+ px images).
  augment_kwargs = {key: augment[key] for key in ('translate_const', 'cutout_const')
                    if key in augment}
  kwargs = dict(crop_padding=config.crop_padding, interpolation=config.interpolation, mean=mean,
                std=std, crop=augment.crop, flip=augment.flip, augment=augment.policy,
                randaugment_layers=augment.randaugment_layers,
                randaugment_magnitude=augment.randaugment_magnitude, augment_kwargs=augment_kwargs)
  function = preprocessing.preprocess_for_train if encoded else preprocessing.train_image
  return lambda image, seed: function(image, config.image_size, seed, **kwargs)


def _eval_preprocess_fn(config, encoded: bool):
  mean, std = _normalization(config)
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


def _indexed_train(source: _IndexedSource, config, global_batch: int, start_step: int,
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
    numpy batches; epochs follow each other without a break in the step count.
  """
  # Not a generator itself, so that configuration errors surface at the call, not at next().
  local_batch = _check_request(config, global_batch_size, process_index, process_count)
  source = _source(config, config.train_split)
  if isinstance(source, _IndexedSource):
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
  source = _source(config, config.eval_split)
  if isinstance(source, _IndexedSource):
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
