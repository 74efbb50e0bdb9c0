"""The config builder and every config file: keys, arg strings, renamed keys, the model built."""

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

from efficientnet_jax import cli
from efficientnet_jax import config as config_lib
from efficientnet_jax import schema
from efficientnet_jax.models import efficientnet
from efficientnet_jax.models import scaling
from efficientnet_jax.training import optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))


def _load(path, arg=None):
  module_spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def test_one_config_per_variant_and_quickstart():
  names = {os.path.basename(f)[:-3] for f in CONFIG_FILES}
  assert set(scaling.MODEL_NAMES) | {'quickstart'} <= names


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: os.path.basename(p))
def test_config_builds_model_abstractly(path):
  config = _load(path)
  model = efficientnet.model_from_config(config)
  size = config.image_size or model.resolution
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  assert shapes['params']['classifier']['kernel'].shape[-1] == config.num_classes
  assert size >= 32
  for key in ('model', 'dataset', 'data_dir', 'image_size', 'num_classes', 'batch_size',
              'num_epochs', 'total_steps', 'seed', 'learning_rate', 'log_every_steps',
              'checkpoint_every_steps', 'eval_every_steps', 'init_from'):
    assert key in config, key


def test_variant_configs_follow_the_tf_recipe():
  config = _load(os.path.join(ROOT, 'configs', 'b4.py'))
  assert (config.optimizer, config.learning_rate, config.batch_size) == ('rmsprop', 0.016, 4096)
  assert (config.warmup_epochs, config.lr_decay_epochs, config.lr_decay_factor) == (5, 2.4, 0.97)
  assert (config.weight_decay, config.label_smoothing, config.ema_decay) == (1e-5, 0.1, 0.9999)
  assert config.dropout_rate == 0.4 and config.drop_path_rate == 0.2
  assert config.dtype == 'bfloat16'
  assert _load(os.path.join(ROOT, 'configs', 'b7.py')).augment.randaugment_magnitude == 28
  lite = _load(os.path.join(ROOT, 'configs', 'lite0.py'))
  assert lite.normalization == 'lite' and lite.interpolation == 'bilinear'


def test_arg_strings():
  config = _load(os.path.join(ROOT, 'configs', 'b4.py'), 'batch=512,epochs=30')
  assert config.batch_size == 512 and config.num_epochs == 30.0
  smoke = _load(os.path.join(ROOT, 'configs', 'b4.py'), 'smoke,dataset=digits')
  assert smoke.total_steps == 4 and smoke.num_classes == 10 and smoke.eval_split == 'test'
  assert not smoke.augment.flip
  tuned = _load(os.path.join(ROOT, 'configs', 'b0.py'), 'width=1.1,augment.flip=false')
  assert tuned.width == 1.1 and tuned.augment.flip is False


def test_arg_typo_names_closest_key():
  with pytest.raises(KeyError, match="did you mean 'batch_size'"):
    config_lib.get_config('b0', 'batch_sise=3')


def test_compound_phi_in_config_builds_the_scaled_model():
  config = config_lib.get_config('b0', 'phi=1.0')
  model = efficientnet.model_from_config(config)
  expected = scaling.compound(1.0)
  assert (model.width, model.depth, model.resolution) == (
      expected.width, expected.depth, expected.resolution)


def test_each_optimizer_has_one_group_of_its_own_keys():
  config = config_lib.get_config('b0')
  for name in optimizer.OPTIMIZERS:
    assert name in config and hasattr(config[name], 'keys'), name
  assert (config.rmsprop.decay, config.rmsprop.momentum, config.rmsprop.epsilon) == (
      0.9, 0.9, 1e-3)
  assert not [key for key in config if key.startswith(('rmsprop_', 'sgd_', 'adamw_'))]


def test_a_key_under_a_flat_name_names_its_group():
  # The optimizer hyperparameters live in one group per optimizer; `rmsprop_decay` is no key.
  with pytest.raises(KeyError, match="did you mean 'rmsprop.decay'"):
    config_lib.get_config('b0', 'rmsprop_decay=0.95')


def test_every_key_is_declared_once_in_the_schema():
  # The builder's keys are the schema's, with the schema's defaults and types.
  flat = schema.flatten(config_lib.get_config('b4').to_dict())
  assert set(flat) == set(schema.BY_NAME)
  for name, value in flat.items():
    key = schema.BY_NAME[name]
    assert value is None or isinstance(value, key.type), (name, value)
    assert key.doc and key.changes in (schema.RECIPE, schema.RUN, schema.NOTHING)
  assert flat['augment.policy'] == 'autoaugment' and flat['dropout_rate'] == 0.4


def test_override_values_are_checked_against_the_schema():
  with pytest.raises(ValueError, match='config.batch_size expects an integer'):
    config_lib.get_config('b0', 'batch=many')
  with pytest.raises(ValueError, match='config.learning_rate cannot be unset'):
    config_lib.get_config('b0', learning_rate=None)
  assert config_lib.get_config('b0', 'steps=none').total_steps is None
  # The command line: checked before ml_collections parses it, one line naming the flag.
  with pytest.raises(ValueError, match=r'--config.train.ema_decay=x: .* expects a number'):
    cli.check_config_overrides(['prog', '--config.train.ema_decay=x'])
  with pytest.raises(ValueError, match='expects true or false'):
    cli.check_config_overrides(['prog', '--config.augment.flip', 'maybe'])
  cli.check_config_overrides(['prog', '--config.seeds=3', '--config.augment.flip'])


def test_mistyped_group_key_names_the_closest():
  with pytest.raises(KeyError, match="did you mean 'rmsprop.decay'"):
    config_lib.get_config('b0', 'rmsprop.decy=0.5')
  with pytest.raises(KeyError, match="did you mean 'learning_rate'"):
    config_lib.get_config('b0', 'learning_rat=0.5')


def test_without_ml_collections_the_same_values_come_as_a_plain_config():
  values = config_lib.defaults('b7')
  values['bn_group_size'] = 512  # get_config derives it from the batch.
  ours = config_lib.PlainConfig(values)
  theirs = config_lib.get_config('b7')
  assert ours.to_dict() == theirs.to_dict()
  assert ours.rmsprop.decay == theirs.rmsprop.decay and ours.get('phi') is None
  with pytest.raises(AttributeError, match="did you mean 'learning_rate'"):
    ours.learning_rat  # pylint: disable=pointless-statement


def test_an_int_given_for_a_float_key_stays_a_float_for_later_overrides():
  config = config_lib.get_config('b0', learning_rate=1, width=2)
  assert isinstance(config.learning_rate, float) and isinstance(config.width, float)
  config.width = 1.5  # A float override of the same key (as --config.width=1.5) is accepted.
  assert config.width == 1.5
