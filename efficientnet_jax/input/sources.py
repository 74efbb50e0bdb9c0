"""The datasets: embedded digits, cluttered digits, an image folder, or any prepared TFDS dataset.

`config.dataset` picks one:
  * 'digits': scikit-learn's bundled `load_digits()` (1,797 8×8 grey digits, 0..16 → 0..255), in
    memory; a fixed stratified split: 360 test / 1,437 train examples (see `_digits_split`).
  * 'cluttered_digits': the same digits as "cluttered MNIST" (Jaderberg et al. 2015): each example
    a `cluttered_digits.canvas`-px grey canvas (32) holding one digit enlarged to 10–14 px at a
    random place among pieces cut from other digits; the label is that digit's class. The digits
    are split first (the digits' split), so test canvases (5,000 by default) show only test
    digits, clutter included; train canvases (10,000) only train digits. Made in memory in under
    a second from `cluttered_digits.seed`, the same bytes for the same keys
    (`input/cluttered_digits.py`). The source's `groups` give each canvas's digit index, the unit
    an interval over test top-1 should resample (several canvases share one digit). Unlike on
    the 8×8 digits, a trial's resolution decides how much of the digit survives the resize.
  * 'folder': `config.data_dir/<split>/<class_name>/<image file>`; class ids are the sorted class
    folder names of the train split. Eval split 'validation' also finds a `val/` folder and vice
    versa, so a root holds `train/` plus `val/` (or `validation/`, `test/`). Files that are not
    JPEG/PNG/BMP/GIF images, and images whose header declares more than
    `image_header.MAX_IMAGE_PIXELS` pixels (decompression bombs), are skipped and counted
    (`bad_image_policy='skip'`) or raise naming the file ('fail'), before anything is decoded.
    Symbolic links are followed, also out of the folder (a folder of links into a master copy is
    a usual way to make a subset); what they name passes the same checks (docs/security.md).
  * anything else: a TFDS name (features 'image' and 'label'), read from `config.data_dir`, never
    downloaded; datasets with manual download (imagenet2012) are prepared from `config.manual_dir`.

`source(config, split)` gives an `IndexedSource` (random access, for the in-memory datasets and
folders) or a TFDS builder; `dataset_info(config)` their sizes. The order in which `pipeline`
reads them is defined there.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from efficientnet_jax import errors
from efficientnet_jax.input import cluttered_digits
from efficientnet_jax.input import image_header

_IMAGE_FORMATS = image_header.FORMATS
DIGITS_TEST_SIZE = 360
_DIGITS_SPLIT_SEED = 0
_FOLDER_SPLIT_ALIASES = {'validation': ('validation', 'val'), 'val': ('val', 'validation')}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Sizes of a dataset as the pipeline sees it (after skipping unreadable files)."""
  num_classes: int
  num_train_examples: int
  num_eval_examples: int


@dataclasses.dataclass(frozen=True)
class IndexedSource:
  """Random-access examples: decoded uint8 images in memory, or encoded image files by path."""
  num_classes: int
  labels: np.ndarray  # int32 [N]
  images: np.ndarray | None = None  # uint8 [N, H, W, C], for in-memory sources
  paths: np.ndarray | None = None  # str [N], for file sources
  # int32 [N] or None: examples with one value share their origin (cluttered digits: the index of
  # the digit a canvas shows), the unit to resample for an interval; None: every example its own.
  groups: np.ndarray | None = None

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
def _all_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """All 1,797 digits: uint8 [N, 8, 8] grey 0..255, int32 labels [N], the test mask [N]."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (only the digits need it)
  digits = datasets.load_digits()
  labels = digits.target.astype(np.int32)
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  return images, labels, _digits_split(labels)


@functools.lru_cache(maxsize=None)
def _digits(split: str) -> IndexedSource:
  if split not in ('train', 'test'):
    raise ValueError(f"The digits dataset has splits 'train' and 'test', not {split!r}.")
  images, labels, is_test = _all_digits()
  keep = is_test == (split == 'test')
  return IndexedSource(num_classes=10, labels=labels[keep], images=images[keep][..., None])


@functools.lru_cache(maxsize=None)
def _cluttered_digits(split: str, params: cluttered_digits.Params) -> IndexedSource:
  """A split's canvases (`cluttered_digits.make`), made once per process and parameters."""
  canvases = cluttered_digits.make(params, *_all_digits(), split)
  return IndexedSource(num_classes=10, labels=canvases.labels, images=canvases.images,
                       groups=canvases.digits)


@functools.lru_cache(maxsize=None)
def _reduced_digits(split: str, side: int) -> IndexedSource:
  """The digits area-reduced to `side`×`side` (each pixel the mean of the area it covers)."""
  digits = _digits(split)
  images = tf.image.resize(tf.constant(digits.images, tf.float32), (side, side), method='area')
  images = np.round(images.numpy()).clip(0, 255).astype(np.uint8)
  return dataclasses.replace(digits, images=images)


def source_side(config) -> int | None:
  """The side the digits are area-reduced to (`config.source_side`), or None: as stored.

  Raises:
    ConfigError: a side below 1, or another dataset than the digits.
  """
  side = config.source_side
  if side is None:
    return None
  if side < 1:
    raise errors.ConfigError(f'config.source_side must be at least 1 pixel, or none (the images '
                             f'as stored), not {side!r}.')
  if config.dataset != 'digits':
    raise errors.ConfigError(f'config.source_side works on the in-memory digits only, not '
                             f'dataset {config.dataset!r}; set --config.source_side=none.')
  return side


def _check_image_file(path: str) -> str | None:
  """Returns why `path` is not a readable JPEG/PNG/BMP/GIF image, or None when it is."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  (only the folder source needs it)
  try:
    # The declared size first: a decompression bomb is refused before PIL or TF allocates it.
    image_header.check(path)
  except ValueError as error:
    return str(error)
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
def _folder(root: str, split: str, train_split: str, bad_image_policy: str) -> IndexedSource:
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
  return IndexedSource(num_classes=len(classes), labels=np.asarray(labels, np.int32)[good],
                        paths=np.asarray(paths, dtype=object)[good].astype(str))


def _tfds_builder(name: str, data_dir: str | None, manual_dir: str | None):
  """The TFDS builder of a prepared dataset; never downloads anything."""
  where = data_dir or 'the default TFDS data_dir'
  try:
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise ValueError(f'Unknown dataset {name!r} (not digits, cluttered_digits, folder, or a TFDS '
                     'name).') from error
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


def source(config, split: str) -> IndexedSource | Any:
  """An `IndexedSource` for digits, cluttered_digits and folder, or a TFDS builder.

  With `config.source_side` set, the digits are area-reduced to that many pixels a side (the
  resize to `image_size` then interpolates what is left).
  """
  side = source_side(config)
  if config.dataset == 'digits':
    digits = _digits(split)
    if side is not None and side < digits.images.shape[1]:
      return _reduced_digits(split, side)
    return digits
  if config.dataset == 'cluttered_digits':
    return _cluttered_digits(split, cluttered_digits.Params.from_config(config))
  if config.dataset == 'folder':
    if not config.data_dir:
      raise ValueError("config.data_dir must name the image folder root for dataset 'folder'.")
    return _folder(os.path.abspath(config.data_dir), split, config.train_split,
                   config.bad_image_policy)
  return _tfds_builder(config.dataset, config.data_dir or None, config.manual_dir or None)


def dataset_info(config) -> DatasetInfo:
  """Number of classes and of train/eval examples of the configured dataset (global counts).

  The caller compares `num_classes` with `config.num_classes` (`training.setup.make_plan` does).
  """
  train, evaluation = source(config, config.train_split), source(config, config.eval_split)
  if isinstance(train, IndexedSource):
    return DatasetInfo(train.num_classes, len(train), len(evaluation))
  return DatasetInfo(train.info.features['label'].num_classes,
                     train.info.splits[config.train_split].num_examples,
                     train.info.splits[config.eval_split].num_examples)
