"""The cluttered digits: made from a seed, split by digit, each canvas redrawn from its record."""

import numpy as np
import pytest
import tensorflow as tf

from efficientnet_jax import config as config_lib
from efficientnet_jax import errors
from efficientnet_jax.input import cluttered_digits
from efficientnet_jax.input import data_service
from efficientnet_jax.input import pipeline
from efficientnet_jax.input import preprocessing
from efficientnet_jax.input import sources
from efficientnet_jax.training import setup

# Small splits keep each test fast; the defaults (10,000 / 5,000) are checked once, for size.
SMALL = {'cluttered_digits.train_size': 600, 'cluttered_digits.test_size': 400}


def _config(**overrides):
  """The builder's cluttered-digits config at 32 px, small splits, then `overrides`."""
  values = dict(dataset='cluttered_digits', image_size=32, interpolation='bilinear', **SMALL)
  values.update(overrides)
  return config_lib.get_config('b0', **values)


def _digits():
  return sources._all_digits()  # pylint: disable=protected-access


def _canvases(split, **overrides):
  params = cluttered_digits.Params.from_config(_config(**overrides))
  return cluttered_digits.make(params, *_digits(), split), params


def test_default_sizes_dtype_and_generation_is_cached():
  config = config_lib.get_config('b0', dataset='cluttered_digits', image_size=32)
  assert sources.dataset_info(config) == sources.DatasetInfo(10, 10_000, 5_000)
  test = sources.source(config, 'test')
  assert test.images.shape == (5_000, 32, 32, 1) and test.images.dtype == np.uint8
  assert test.labels.dtype == np.int32 and set(np.unique(test.labels)) == set(range(10))
  assert sources.source(config, 'test') is test  # Made once per process and parameters.
  # The preset: the whole canvas, no crop, flip or augmentation, evaluated on 'test'.
  assert (config.num_classes, config.eval_split, config.augment.crop, config.augment.flip,
          config.augment.policy, config.crop_padding) == (10, 'test', 'resize', False, 'none', 0)


def test_the_same_seed_gives_the_same_bytes_another_seed_others():
  first, _ = _canvases('train')
  again, _ = _canvases('train')
  for field in ('images', 'labels', 'digits', 'digit_boxes', 'clutter_digits', 'clutter_boxes'):
    np.testing.assert_array_equal(getattr(first, field), getattr(again, field), err_msg=field)
  other, _ = _canvases('train', **{'cluttered_digits.seed': 1})
  assert not np.array_equal(first.images, other.images)
  # Pinned: the construction must not drift, or old results stop being comparable.
  np.testing.assert_array_equal(first.digits[:4], [1207, 1110, 1462, 1442])
  np.testing.assert_array_equal(first.digit_boxes[0], [14, 20, 11])
  assert int(first.images.astype(np.int64).sum()) == 8_593_449


def test_test_digits_never_appear_in_training_not_even_as_clutter():
  train, _ = _canvases('train')
  test, _ = _canvases('test')
  _, labels, is_test = _digits()
  train_digits = set(train.digits) | set(train.clutter_digits.ravel())
  test_digits = set(test.digits) | set(test.clutter_digits.ravel())
  assert not train_digits & test_digits
  assert is_test[list(test_digits)].all() and not is_test[list(train_digits)].any()
  # Each split uses its digits evenly: 400 test canvases over 360 digits, 600 over 1,437.
  assert set(np.bincount(test.digits)[list(set(test.digits))]) == {1, 2}
  assert len(set(test.digits)) == 360 and len(set(train.digits)) == 600
  np.testing.assert_array_equal(test.labels, labels[test.digits])


def test_each_canvas_is_its_digit_over_clutter_from_other_digits():
  canvases, params = _canvases('test')
  images, _, _ = _digits()
  assert (canvases.clutter_digits != canvases.digits[:, None]).all()
  enlarged = {s: cluttered_digits.enlarge(images, s)
              for s in range(params.digit_min, params.digit_max + 1)}
  for i in range(0, len(canvases.labels), 25):
    top, left, side = canvases.digit_boxes[i]
    assert params.digit_min <= side <= params.digit_max
    digit = enlarged[side][canvases.digits[i]]
    window = canvases.images[i, top:top + side, left:left + side, 0]
    # The digit is where its record says, under the clutter's `max` only.
    assert (window >= digit).all() and window.astype(int).sum() >= digit.astype(int).sum() > 0
    redrawn = cluttered_digits.draw(params, enlarged, canvases.digits[i], canvases.digit_boxes[i],
                                    canvases.clutter_digits[i], canvases.clutter_boxes[i])
    np.testing.assert_array_equal(redrawn, canvases.images[i, ..., 0])
  # Without clutter a canvas is the digit alone; with it, ink lies outside the digit's box.
  bare, _ = _canvases('test', **{'cluttered_digits.clutter': 0})
  top, left, side = bare.digit_boxes[0]
  outside = bare.images[0, ..., 0].copy()
  outside[top:top + side, left:left + side] = 0
  assert not outside.any()
  outside = canvases.images[..., 0].copy()
  for i, (top, left, side) in enumerate(canvases.digit_boxes):
    outside[i, top:top + side, left:left + side] = 0
  assert (outside.reshape(len(outside), -1).max(axis=1) > 0).mean() > 0.95


def test_enlarging_is_exact_bilinear():
  images, _, _ = _digits()
  np.testing.assert_array_equal(cluttered_digits.enlarge(images[:50], 8), images[:50])
  doubled = cluttered_digits.enlarge(images[:50], 16).astype(int)
  reference = tf.image.resize(images[:50, ..., None].astype(np.float32), (16, 16),
                              method='bilinear').numpy()[..., 0]
  assert np.abs(doubled - reference).max() <= 1  # TF's float32 rounding vs exact integers.


def _oracle_accuracy(canvases, templates, resolution):
  """Nearest class mean on the digit's own box, after the pipeline's resize of the whole canvas.

  The box is known (an oracle finds the digit), so this measures only what the resolution keeps.
  """
  canvas = canvases.images.shape[1]
  small = preprocessing.resize(tf.constant(canvases.images), resolution, 'bilinear').numpy()
  correct = 0
  for image, (top, left, side), label in zip(small, canvases.digit_boxes, canvases.labels):
    scale = resolution / canvas
    y0, x0 = int(np.floor(top * scale)), int(np.floor(left * scale))
    y1, x1 = int(np.ceil((top + side) * scale)), int(np.ceil((left + side) * scale))
    crop = tf.image.resize(image[y0:y1, x0:x1], (8, 8), method='area').numpy().ravel()
    distances = ((templates - crop) ** 2).sum(axis=1)
    correct += int(np.argmin(distances) == label)
  return correct / len(canvases.labels)


def test_a_lower_resolution_loses_the_digit():
  test, _ = _canvases('test')
  images, labels, is_test = _digits()
  train = images[~is_test].astype(np.float64).reshape(-1, 64)
  templates = np.stack([train[labels[~is_test] == c].mean(0) for c in range(10)])
  full, reduced = (_oracle_accuracy(test, templates, r) for r in (32, 8))
  # Seen at the canvas's own 32 px the digit's class is mostly there (clutter overlaps some);
  # at 8 px, 2.5–3.5 pixels a side, most of it is gone.
  assert full > 0.75 and reduced < full - 0.25, (full, reduced)


@pytest.mark.parametrize('key, value, message', [
    ('canvas', 10, 'canvas .* smaller than the largest digit'),
    ('digit_min', 20, 'digit_min .* exceeds digit_max'),
    ('digit_min', 0, 'at least 1 pixel'),
    ('clutter', -1, 'clutter must be 0 or more'),
    ('clutter_size', 13, 'clutter_size .* exceeds the smallest digit'),
    ('test_size', 0, 'test_size must be at least 1 canvas'),
    ('train_size', -5, 'train_size must be at least 1 canvas'),
])
def test_bad_parameters_are_one_line_config_errors(key, value, message):
  config = _config(**{f'cluttered_digits.{key}': value})
  with pytest.raises(errors.ConfigError, match=message) as error:
    sources.source(config, 'train')
  assert '\n' not in str(error.value) and 'cluttered_digits.' in str(error.value)
  # `main` checks them before printing the config or writing anything (setup.validate).
  with pytest.raises(errors.ConfigError, match=message):
    setup.validate(config)
  with pytest.raises(ValueError, match="splits 'train' and 'test'"):
    sources.source(_config(), 'validation')
  with pytest.raises(errors.ConfigError, match='digits only'):
    sources.source(_config(source_side=6), 'train')


def test_groups_name_each_test_canvas_digit():
  test = sources.source(_config(), 'test')
  canvases, _ = _canvases('test')
  assert test.groups.dtype == np.int32 and test.groups.shape == test.labels.shape
  np.testing.assert_array_equal(test.groups, canvases.digits)
  assert len(np.unique(test.groups)) == 360
  assert sources.source(config_lib.get_config('b0', dataset='digits'), 'test').groups is None


def test_the_pipeline_yields_batches_of_the_trials_size():
  config = _config(image_size=24)
  first = next(pipeline.train_iterator(config, global_batch_size=16, start_step=3))
  again = next(pipeline.train_iterator(config, global_batch_size=16, start_step=3))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert first['image'].shape == (16, 24, 24, 3) and first['image'].dtype == np.float32
  assert first['label'].shape == (16,) and -1.5 < first['image'].min() <= -1.0  # Inception norm.
  batches = list(pipeline.eval_iterator(config, global_batch_size=128))
  assert len(batches) == 4 and batches[0]['image'].shape == (128, 24, 24, 3)
  assert sum(b['mask'].sum() for b in batches) == 400
  np.testing.assert_array_equal(np.concatenate([b['label'] for b in batches])[:400],
                                sources.source(config, 'test').labels)


def test_its_keys_count_only_with_its_dataset():
  assert config_lib.describe_recipe(config_lib.get_config(
      'b0', **{'cluttered_digits.canvas': 48})).startswith('recipe: b0, AutoAugment v0 '
                                                            'augmentation, as published')
  changed = config_lib.recipe_differences(_config(**{'cluttered_digits.canvas': 48}),
                                          config_lib.get_config('b0'))
  assert 'cluttered_digits.canvas=48' in changed and 'dataset=cluttered_digits' in changed


def test_resume_and_the_data_service_give_the_local_batches():
  # 600 // 64 = 9 steps per epoch: step 10 is in the second epoch.
  config = _config(image_size=16)
  fresh = [b for _, b in zip(range(11), pipeline.train_iterator(config, global_batch_size=64))]
  resumed = next(pipeline.train_iterator(config, global_batch_size=64, start_step=10))
  for key in resumed:
    np.testing.assert_array_equal(resumed[key], fresh[10][key], err_msg=key)
  with pytest.MonkeyPatch.context() as patch:
    distributed = data_service.distributed

    def without_autotune(keyed, *args, **kwargs):  # Workers then stop at once (test_data_service).
      options = tf.data.Options()
      options.autotune.enabled = False
      return distributed(keyed.with_options(options), *args, **kwargs)

    patch.setattr(data_service, 'distributed', without_autotune)
    dispatcher = data_service.start_dispatcher()
    worker = data_service.start_worker(dispatcher.target.split('://')[1])
    try:
      config.data_service_address = dispatcher.target
      iterator = pipeline.train_iterator(config, global_batch_size=64, start_step=8)
      served = [next(iterator) for _ in range(3)]
      del iterator
    finally:
      worker.stop()
      dispatcher.stop()
  for batch, local in zip(served, fresh[8:]):
    for key in local:
      np.testing.assert_array_equal(batch[key], local[key], err_msg=key)
