"""The input sources and pipeline: digits, image folder and (mocked) TFDS imagenet2012."""

import logging
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from efficientnet_jax import config as config_lib
from efficientnet_jax import errors
from efficientnet_jax.input import pipeline
from efficientnet_jax.input import sources

TEST_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')


def _config(**overrides):
  """The builder's digits config at 32 px, without augmentation, with `overrides` set after."""
  config = config_lib.get_config('b0', dataset='digits', image_size=32, normalization='imagenet',
                                 interpolation='bilinear', shuffle_buffer=64,
                                 bad_image_policy='skip', **{'augment.policy': 'none'})
  config.update(overrides)
  return config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_tensorflow_sees_no_gpu():
  assert not tf.config.get_visible_devices('GPU')


# ------------------------------------------------------------------------------------------------
# Digits.


def test_digits_info_and_fixed_split():
  assert sources.dataset_info(_config()) == sources.DatasetInfo(10, 1437, 360)
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  labels = datasets.load_digits().target
  is_test = sources._digits_split(labels)  # pylint: disable=protected-access
  # Pinned: the split must never change, or old eval numbers stop being comparable.
  np.testing.assert_array_equal(np.flatnonzero(is_test)[:8], [3, 7, 13, 19, 36, 38, 43, 48])
  counts = np.bincount(labels[is_test])
  assert counts.sum() == 360 and counts.min() >= 35 and counts.max() <= 37


def test_digits_train_batches_are_deterministic():
  config = _config()
  first = _take(pipeline.train_iterator(config, global_batch_size=32), 2)
  again = _take(pipeline.train_iterator(config, global_batch_size=32), 2)
  for a, b in zip(first, again):
    _assert_batches_equal(a, b)
  batch = first[0]
  assert batch['image'].shape == (32, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['label'].shape == (32,) and batch['label'].dtype == np.int32
  assert batch['label'].min() >= 0 and batch['label'].max() < 10
  assert -2.2 < batch['image'].min() < -1.5 and 2.0 < batch['image'].max() < 2.7  # Normalised.
  other = next(pipeline.train_iterator(_config(seed=1), global_batch_size=32))
  assert not np.array_equal(other['label'], batch['label'])


def test_digits_resume_equals_skipping_batches():
  # 1437 // 256 = 5 batches per epoch, so step 6 is in the second epoch.
  config = _config()
  fresh = _take(pipeline.train_iterator(config, global_batch_size=256), 7)
  for step in (2, 6):
    resumed = next(pipeline.train_iterator(config, global_batch_size=256, start_step=step))
    _assert_batches_equal(resumed, fresh[step])
  assert not np.array_equal(fresh[0]['label'], fresh[5]['label'])  # A new order each epoch.


def test_process_slices_concatenate_to_the_global_batch():
  config = _config()
  whole = next(pipeline.train_iterator(config, global_batch_size=32, start_step=3))
  for count in (2, 4):
    parts = [next(pipeline.train_iterator(config, global_batch_size=32, start_step=3,
                                                process_index=index, process_count=count))
             for index in range(count)]
    _assert_batches_equal({k: np.concatenate([p[k] for p in parts]) for k in whole}, whole)
  with pytest.raises(ValueError, match='divisible'):
    next(pipeline.train_iterator(config, global_batch_size=30, process_count=4))


def test_digits_eval_covers_every_example_once():
  config = _config()
  batches = list(pipeline.eval_iterator(config, global_batch_size=64))
  assert len(batches) == 6  # ceil(360 / 64)
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.dtype == np.float32 and masks.sum() == 360 and (masks[:360] == 1).all()
  assert batches[-1]['image'].shape == (64, 32, 32, 3)
  per_process = [list(pipeline.eval_iterator(config, global_batch_size=64, process_index=i,
                                                   process_count=2)) for i in range(2)]
  assert [len(p) for p in per_process] == [6, 6]
  for step, whole in enumerate(batches):
    _assert_batches_equal({k: np.concatenate([p[step][k] for p in per_process]) for k in whole},
                          whole)


def test_source_side_area_reduces_the_digits():
  stored = sources.source(_config(image_size=24), 'test').images
  for side, expected in ((6, 6), (7, 7), (8, 8), (12, 8)):  # Never enlarged past 8×8.
    images = sources.source(_config(image_size=24, source_side=side), 'test').images
    assert images.shape == (360, expected, expected, 1) and images.dtype == np.uint8
  reduced = sources.source(_config(image_size=16, source_side=4), 'test').images
  # 8×8 → 4×4 is exact 2×2 means: the area reduction keeps each block's average.
  blocks = stored.reshape(360, 4, 2, 4, 2, 1).astype(np.float64).mean(axis=(2, 4))
  np.testing.assert_allclose(reduced, blocks, atol=0.5)
  assert sources.dataset_info(_config(image_size=None, source_side=6)).num_train_examples == 1437
  # The batches carry the reduced detail: at 24 px they differ from the stored digits' and,
  # resized up, keep the input size.
  detail, plain = (next(pipeline.eval_iterator(_config(image_size=24, source_side=side),
                                               global_batch_size=64)) for side in (6, None))
  assert detail['image'].shape == plain['image'].shape == (64, 24, 24, 3)
  assert np.abs(detail['image'] - plain['image']).mean() > 0.05


@pytest.mark.parametrize('overrides, message', [
    (dict(source_side=0), 'at least 1 pixel'),
    (dict(source_side=6, dataset='folder', data_dir='x'), 'digits only'),
])
def test_source_side_refuses_what_it_cannot_do(overrides, message):
  with pytest.raises(errors.ConfigError, match=message):
    sources.source(_config(**overrides), 'train')


# ------------------------------------------------------------------------------------------------
# Image folder.


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
  """train/, val/: 3 classes of solid-colour PNG/JPEG images (colour = example id), 1 junk file."""
  root = tmp_path_factory.mktemp('folder')
  example_id = 0
  for split, per_class in (('train', 4), ('val', 2)):
    for name in ('cat', 'dog', 'fox'):
      os.makedirs(root / split / name)
      for i in range(per_class):
        extension = 'png' if i % 2 else 'jpg'
        pixels = np.full((20 + i, 24, 3), 14 * example_id, np.uint8)
        Image.fromarray(pixels).save(root / split / name / f'{i}.{extension}')
        example_id += 1
  (root / 'train' / 'dog' / 'broken.jpg').write_bytes(b'this is not an image')
  return str(root)


def _folder_config(root, **overrides):
  config = _config(dataset='folder', data_dir=root, eval_split='validation', num_classes=3,
                   normalization='none', **overrides)
  config.augment.crop = 'resize'
  return config


def test_folder_skips_and_counts_bad_files(image_folder, caplog):
  with caplog.at_level(logging.WARNING):
    info = sources.dataset_info(_folder_config(image_folder))
  assert info == sources.DatasetInfo(num_classes=3, num_train_examples=12,
                                            num_eval_examples=6)
  assert 'Skipped 1 unreadable file' in caplog.text and 'broken.jpg' in caplog.text


def test_folder_fail_policy_names_the_file(image_folder):
  with pytest.raises(ValueError, match=r'broken\.jpg'):
    sources.dataset_info(_folder_config(image_folder, bad_image_policy='fail'))


def test_folder_epochs_are_permutations(image_folder):
  # Colour encodes the example id; 12 train images / batch 4 = 3 batches per epoch.
  config = _folder_config(image_folder)
  batches = _take(pipeline.train_iterator(config, global_batch_size=4), 6)
  ids = [np.round(b['image'][:, 0, 0, 0] / 14).astype(int) for b in batches]
  first_epoch, second_epoch = np.concatenate(ids[:3]), np.concatenate(ids[3:])
  assert sorted(first_epoch) == sorted(second_epoch) == list(range(12))  # Train ids come first.
  assert list(first_epoch) != list(second_epoch)
  labels = np.concatenate([b['label'] for b in batches[:3]])
  np.testing.assert_array_equal(labels, first_epoch // 4)  # Sorted class folders give the ids.


def test_folder_resume_with_randaugment(image_folder):
  # Augmentation seeds follow the example's stream position, not the iterator's history.
  config = _folder_config(image_folder)
  config.augment.policy = 'randaugment'
  fresh = _take(pipeline.train_iterator(config, global_batch_size=4), 5)
  resumed = next(pipeline.train_iterator(config, global_batch_size=4, start_step=4))
  _assert_batches_equal(resumed, fresh[4])


def test_folder_eval(image_folder):
  batches = list(pipeline.eval_iterator(_folder_config(image_folder), global_batch_size=4))
  masks = np.concatenate([b['mask'] for b in batches])
  np.testing.assert_array_equal(masks, [1, 1, 1, 1, 1, 1, 0, 0])
  labels = np.concatenate([b['label'] for b in batches])[:6]
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])


# ------------------------------------------------------------------------------------------------
# TFDS (imagenet2012 metadata in tests/data, random examples from tfds.testing.mock_data).


def _imagenet_config():
  config = _config(dataset='imagenet2012', data_dir=TEST_DATA, eval_split='validation',
                   num_classes=1000, crop_padding=32, interpolation='bicubic')
  config.augment.update(crop='inception', flip=True)
  return config


@pytest.fixture
def mock_imagenet():
  # The metadata declares 48 train and 20 validation examples, matching num_examples.
  with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=TEST_DATA):
    yield


def test_imagenet_pipeline(mock_imagenet):  # pylint: disable=unused-argument,redefined-outer-name
  config = _imagenet_config()
  info = sources.dataset_info(config)
  assert info == sources.DatasetInfo(1000, 48, 20)
  fresh = _take(pipeline.train_iterator(config, global_batch_size=16), 5)
  batch = fresh[0]
  assert batch['image'].shape == (16, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['label'].dtype == np.int32
  assert 0 <= batch['label'].min() <= batch['label'].max() < 1000
  assert abs(batch['image'].mean()) < 1.5 and 0.3 < batch['image'].std() < 2.0  # Normalised.
  # 48 / 16 = 3 steps per epoch: step 4 is the second step of the second epoch.
  resumed = next(pipeline.train_iterator(config, global_batch_size=16, start_step=4))
  _assert_batches_equal(resumed, fresh[4])
  evaluation = list(pipeline.eval_iterator(config, global_batch_size=8))
  assert [b['mask'].sum() for b in evaluation] == [8, 8, 4]
  assert evaluation[-1]['image'].shape == (8, 32, 32, 3)


def test_missing_tfds_dataset_has_a_clear_error(tmp_path):
  config = _config(dataset='imagenet2012', data_dir=str(tmp_path), num_classes=1000)
  with pytest.raises(FileNotFoundError, match=r"'imagenet2012' not found in .*tfds build"):
    sources.dataset_info(config)


@pytest.mark.parametrize('policy', ['randaugment', 'autoaugment'])
def test_host_augmented_batch_is_normalised_once_with_the_per_example_recipes_values(policy):
  # With a host policy each example leaves the map as uint8 and the batch is normalised after
  # batching; that must give the recipe's per-example float output bit for bit.
  config = _config(image_size=48, interpolation='bicubic', crop_padding=32)
  config.augment.update(crop='inception', flip=True, policy=policy)
  preprocess, finish_batch = pipeline._train_preprocess_fn(config, encoded=True)
  from sklearn.datasets import load_sample_image  # pylint: disable=g-import-not-at-top
  jpeg = tf.io.encode_jpeg(load_sample_image('china.jpg')[::4, ::4], quality=90)
  seeds = [tf.constant([seed, 7], tf.int64) for seed in range(6)]
  per_example = [preprocess(jpeg, seed) for seed in seeds]
  assert all(image.dtype == tf.uint8 for image in per_example)
  batch = finish_batch({'image': tf.stack(per_example), 'label': tf.zeros([6], tf.int32)})
  mean, std = pipeline.normalization.mean_std(config.normalization)
  expected = [pipeline.preprocessing.preprocess_for_train(
      jpeg, 48, seed, crop_padding=32, interpolation='bicubic', mean=mean, std=std,
      crop='inception', flip=True, augment=policy, randaugment_layers=2,
      randaugment_magnitude=10) for seed in seeds]
  assert batch['image'].dtype == tf.float32
  np.testing.assert_array_equal(batch['image'].numpy(), np.stack(expected))


def test_policy_none_and_on_device_batches_are_left_as_the_examples_are():
  config = _config()
  _, finish_batch = pipeline._train_preprocess_fn(config, encoded=False)
  batch = {'image': tf.zeros([2, 4, 4, 3]), 'label': tf.zeros([2], tf.int32)}
  assert finish_batch(batch) is batch
  config.augment.policy = 'randaugment'
  config.augment.on_device = True
  _, finish_batch = pipeline._train_preprocess_fn(config, encoded=False)
  assert finish_batch(batch) is batch


def test_jpeg_dct_scaling_reaches_the_decode(monkeypatch):
  seen = []
  monkeypatch.setattr(pipeline.preprocessing, 'preprocess_for_train',
                      lambda *args, **kwargs: seen.append(kwargs['dct_scaling']))
  monkeypatch.setattr(pipeline.preprocessing, 'preprocess_for_eval',
                      lambda *args, **kwargs: seen.append(kwargs['dct_scaling']))
  for value in (False, True):
    config = _config(jpeg_dct_scaling=value)
    pipeline._train_preprocess_fn(config, encoded=True)[0](b'', None)
    pipeline._eval_preprocess_fn(config, encoded=True)(b'')
  assert seen == [False, False, True, True]
