"""The one config builder: every key, its default, and the ':arg' strings of a config file.

A config file names its variant and its experiment's defaults, and everything else comes from
here (`configs/b4.py` is `config.get_config('b4', arg)`). Arguments after the colon in
`--config=configs/b4.py:ARG` are big_vision-style strings:

  smoke                       a few steps on tiny synthetic-sized inputs (checks the plumbing)
  batch=512,epochs=30         override keys by short or full name
  smoke,dataset=imagenette    both

`--config.key=value` flags override afterwards (the config is locked, so a mistyped key is an
error that names the closest valid key).

The defaults are the TF reference recipe (docs/reference.md §5): for each variant, the recipe
behind its published number (`recipes.py`; `:aug=randaugment` selects TF's RandAugment one).
They are built as plain data and wrapped in an `ml_collections.ConfigDict` at the end, or,
where ml_collections is not installed (an accelerator image with only the JAX stack), in a
`PlainConfig` with the same reading interface: so the benchmark times the recipe this builder defines, not a copy of it.

Optimizer hyperparameters live in one group per optimizer (`rmsprop.decay`, `sgd.momentum`,
`adamw.b1`, ...): adding an optimizer adds a group. The former flat names (`rmsprop_decay`, ...)
are still accepted everywhere a key is (`RENAMED_KEYS`).
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from efficientnet_jax import recipes
from efficientnet_jax.errors import ConfigError
from efficientnet_jax.models import scaling

# Short names accepted in the ':arg' string, mapped to config keys.
ARG_ALIASES = {'batch': 'batch_size', 'epochs': 'num_epochs', 'steps': 'total_steps',
               'lr': 'learning_rate', 'res': 'image_size', 'aug': 'augment.policy'}
# Keys that moved into a group; the old names keep working in ':arg', defaults and flags.
RENAMED_KEYS = {
    'rmsprop_decay': 'rmsprop.decay', 'rmsprop_momentum': 'rmsprop.momentum',
    'rmsprop_epsilon': 'rmsprop.epsilon', 'sgd_momentum': 'sgd.momentum',
    'sgd_nesterov': 'sgd.nesterov', 'adamw_b1': 'adamw.b1', 'adamw_b2': 'adamw.b2',
    'adamw_eps': 'adamw.eps',
}
# The type of each key whose default is None ("unset"), so that an override can be parsed.
OPTIONAL_TYPES: dict[str, type] = {
    'width': float, 'depth': float, 'phi': float, 'data_dir': str, 'manual_dir': str,
    'image_size': int, 'total_steps': int, 'grad_clip_norm': float, 'init_from': str,
    'compilation_cache_dir': str, 'xla_backend_optimization_level': int, 'bn_group_size': int,
    'on_device': bool, 'data_service_address': str,
}
# What a dataset implies, applied when ':dataset=NAME' (or a config's defaults) selects it.
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    'imagenet2012': {'num_classes': 1000, 'eval_split': 'validation'},
    'digits': {'num_classes': 10, 'eval_split': 'test', 'augment.flip': False,
               'augment.crop': 'pad_crop', 'normalization': 'inception', 'crop_padding': 0},
    'imagenette': {'num_classes': 10, 'eval_split': 'validation'},
    'cifar10': {'num_classes': 10, 'eval_split': 'test', 'augment.crop': 'pad_crop',
                'crop_padding': 0},
    'oxford_flowers102': {'num_classes': 102, 'eval_split': 'test'},
}


def defaults(model: str) -> dict[str, Any]:
  """Every config key with its default for `model`: nested dicts are groups, None is unset.

  Raises:
    ValueError: an unknown model name (the message lists the valid ones).
  """
  variant = scaling.get_variant(model)
  return {
      # Model: the variant's published coefficients unless overridden; `phi` applies the
      # compound rule (depth α^φ, width β^φ, resolution γ^φ) to the B0 baseline instead.
      'model': model,
      'width': None,
      'depth': None,
      'phi': None,
      'alpha': scaling.ALPHA,
      'beta': scaling.BETA,
      'gamma': scaling.GAMMA,
      'dropout_rate': variant.dropout,
      'drop_path_rate': scaling.DEFAULT_DROP_PATH_RATE,
      'dtype': 'bfloat16',
      'remat': False,
      'padding': 'same',
      # Examples per BN statistics group; 0: the whole global batch (synchronised BN). Unset, it
      # is TF's normalisation batch for the global batch (`recipes.tf_bn_group_size`): 512 at 4096.
      'bn_group_size': None,
      # TF's decay of the BN moving statistics. With gradient accumulation the model decays them
      # by bn_momentum^(1/grad_accum_steps) per micro-batch: the same memory per optimizer step.
      'bn_momentum': 0.99,
      'depthwise_impl': 'auto',  # 'conv' (XLA grouped conv), 'shift' (k·k multiply-adds), 'auto'.
      'num_classes': 1000,

      # Data.
      'dataset': 'imagenet2012',
      'data_dir': None,
      'manual_dir': None,
      'train_split': 'train',
      'eval_split': 'validation',
      'image_size': None,  # None: the model's native resolution.
      'normalization': 'lite' if variant.lite else 'imagenet',
      'interpolation': 'bilinear' if variant.lite else 'bicubic',
      'crop_padding': 32,
      # Decode a JPEG crop of at least twice image_size per side at a reduced DCT scale (1/2,
      # 1/4, 1/8), then resize: faster on large photos, a few levels from the full-scale crop
      # (docs/benchmarks.md measures both). Off: the recipe's pixels exactly.
      'jpeg_dct_scaling': False,
      # Area-reduce every source image to round(source_detail · image_size) pixels a side before
      # preprocessing (never enlarged); 0: the images as stored. A larger input then carries more
      # information, as a larger photo does: the scaling studies' resolution proxy on the 8×8
      # digits (0.25: 6×6 at 24 px, all 8×8 from 32 px; experiments/README.md). Digits only.
      'source_detail': 0.0,
      'shuffle_buffer': 16_384,
      'bad_image_policy': 'fail',
      # A tf.data service dispatcher (grpc://HOST:PORT or HOST:PORT) whose workers run the train
      # preprocessing (input/data_service.py; digits and image folders only); None: locally.
      'data_service_address': None,
      'augment': {
          'crop': 'inception', 'flip': True,
          # The policy behind the variant's published number, and TF's RandAugment magnitude
          # for it (`:aug=randaugment`): efficientnet_jax/recipes.py, README "Recipes".
          'policy': recipes.default_policy(model),
          'randaugment_layers': 2,
          'randaugment_magnitude': recipes.randaugment_magnitude(model),
          # Augment and normalise the train batch on the accelerator (input/device_preprocessing.py;
          # the host then only decodes, crops, resizes and flips). None: on when JAX runs on an
          # accelerator and the policy is not 'none', since the host CPU is what starves an
          # accelerator of batches. TF's ops and distributions, but other random draws.
          'on_device': None,
      },

      # Optimisation: the TF reference recipe.
      'batch_size': 4096,
      'eval_batch_size': 1024,
      'num_epochs': 350.0,
      'total_steps': None,  # None: derived from num_epochs.
      'grad_accum_steps': 1,
      'optimizer': 'rmsprop',  # Its hyperparameters: the group of the same name below.
      'rmsprop': {'decay': 0.9, 'momentum': 0.9, 'epsilon': 1e-3},
      'sgd': {'momentum': 0.9, 'nesterov': False},
      'adamw': {'b1': 0.9, 'b2': 0.999, 'eps': 1e-8},
      'learning_rate': 0.016,
      'lr_base_batch_size': 256,
      'lr_schedule': 'exponential',
      'warmup_epochs': 5.0,
      'lr_decay_epochs': 2.4,
      'lr_decay_factor': 0.97,
      'weight_decay': 1e-5,
      'grad_clip_norm': None,
      'label_smoothing': 0.1,
      'ema_decay': 0.9999,
      'skip_nonfinite_steps': False,  # True: skip NaN/Inf steps (counted) instead of stopping.

      # Loop, checkpoints, metrics.
      'seed': 0,
      'log_every_steps': 100,
      'eval_every_steps': 5000,
      'checkpoint_every_steps': 1000,
      'keep_checkpoints': 3,
      'init_from': None,
      'compilation_cache_dir': None,
      # XLA's backend optimisation level (None: XLA's default). 0 compiles several times faster
      # and runs CPU steps ~1.6× slower: the better trade for runs of a few hundred CPU steps.
      'xla_backend_optimization_level': None,
  }


def get_config(model: str, arg: str | None = None, **overrides):
  """Builds the config for `model` (b0 … b8, l2, lite0 … lite4) with experiment defaults.

  Args:
    model: the variant name.
    arg: the ':arg' string of `--config=configs/NAME.py:arg`.
    **overrides: per-experiment defaults applied before `arg` (e.g. the quick start's dataset);
      dotted names reach into groups (`**{'augment.flip': False}`).

  Returns:
    An unlocked `ml_collections.ConfigDict` (config_flags locks it), or a `PlainConfig` where
    ml_collections is not installed.

  Raises:
    ValueError: an unknown model, or a value that does not parse as its key's type.
    KeyError: an unknown key (the message names the closest valid one).
  """
  values = defaults(model)
  for key, value in overrides.items():
    _set(values, key, value)
  if arg:
    _apply_arg(values, arg)
  if values['bn_group_size'] is None:  # Derived last, from the final batch.
    values['bn_group_size'] = recipes.tf_bn_group_size(values['batch_size'],
                                                       values['grad_accum_steps'])
  check_data_service_address(values['data_service_address'])
  return _wrap(values)


def split_data_service_address(address: str) -> tuple[str, int]:
  """(host, port) of a tf.data service address `grpc://HOST:PORT` or `HOST:PORT`.

  Raises:
    ConfigError: anything else (another protocol, no port, a port out of range).
  """
  fix = ('use grpc://HOST:PORT or HOST:PORT of the dispatcher (e.g. grpc://10.0.0.2:5050), or '
         'none for the local pipeline')
  rest = address.removeprefix('grpc://') if isinstance(address, str) else ''
  host, _, port = rest.rpartition(':')
  host = host.removeprefix('[').removesuffix(']')  # [IPv6]:PORT
  if not host or '://' in rest or '/' in rest or not port.isdigit() or not 0 < int(port) < 65536:
    raise ConfigError(f'config.data_service_address={address!r} is not a tf.data service '
                      f'dispatcher address; {fix}.')
  return host, int(port)


def check_data_service_address(address: str | None) -> None:
  """Raises ConfigError unless `address` is None or a dispatcher address TF accepts."""
  if address is not None:
    split_data_service_address(address)


def canonical_key(key: str) -> str:
  """The current name of a config key given by an old name or an ':arg' short name."""
  key = ARG_ALIASES.get(key, key)
  return RENAMED_KEYS.get(key, key)


def _set(values: dict[str, Any], key: str, value: Any) -> None:
  """Sets a (possibly dotted) key that must already exist, naming the closest match if not."""
  key = canonical_key(key)
  *groups, name = key.split('.')
  target, prefix = values, ''
  for group in groups:
    if not isinstance(target.get(group), dict):
      raise KeyError(f'Unknown config key {key!r}{_closest(group, target, prefix)}')
    target, prefix = target[group], f'{prefix}{group}.'
  if name not in target:
    raise KeyError(f'Unknown config key {key!r}{_closest(name, target, prefix)}')
  current = target[name]
  kind = type(current) if current is not None else OPTIONAL_TYPES.get(name)
  if isinstance(value, str) and kind not in (None, str):
    value = _parse(value, kind)
  elif kind is float and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)  # As ConfigDict would: the key stays a float for later overrides.
  target[name] = value
  if key == 'dataset':
    for preset_key, preset_value in DATASET_PRESETS.get(value, {}).items():
      _set(values, preset_key, preset_value)


def closest_key(name: str) -> str | None:
  """The top-level key (current name) closest to a mistyped `name`, or None."""
  candidates = list(defaults('b0')) + list(RENAMED_KEYS)
  close = difflib.get_close_matches(name.split('.')[-1], candidates, n=1)
  return canonical_key(close[0]) if close else None


def _closest(name: str, group: dict[str, Any], prefix: str = '') -> str:
  """'; did you mean X?' for the key of `group` (at dotted `prefix`) closest to `name`."""
  candidates = list(group) + (list(RENAMED_KEYS) if not prefix else [])
  close = difflib.get_close_matches(name, candidates, n=1)
  return f'; did you mean {canonical_key(prefix + close[0])!r}?' if close else ''


def _parse(text: str, kind: type):
  """An override string as the key's type; 'none' unsets an optional key."""
  if text.lower() == 'none':
    return None
  if kind is bool:
    if text.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'Expected true/false, got {text!r}.')
    return text.lower() in ('true', '1')
  return kind(text)


def _apply_arg(values: dict[str, Any], arg: str) -> None:
  for item in filter(None, (s.strip() for s in arg.split(','))):
    if item == 'smoke':
      _smoke(values)
      continue
    if '=' not in item:
      raise ValueError(f"Config arg {item!r} is neither 'smoke' nor key=value.")
    key, value = item.split('=', 1)
    _set(values, key, value)


def _smoke(values: dict[str, Any]) -> None:
  """A few steps at small size: checks that everything is wired, not that it learns."""
  values.update(batch_size=8, eval_batch_size=8, total_steps=4, image_size=64,
                log_every_steps=1, eval_every_steps=4, checkpoint_every_steps=2,
                warmup_epochs=0.0)
  if values['bn_group_size'] is None:  # Two groups of 4: the grouped path, at smoke size.
    values['bn_group_size'] = 4


def _wrap(values: dict[str, Any]):
  """A ConfigDict (typed placeholders for unset keys), or a PlainConfig without ml_collections."""
  try:
    import ml_collections  # pylint: disable=g-import-not-at-top
  except ImportError:
    return PlainConfig(values)

  def convert(tree: dict[str, Any]) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    for key, value in tree.items():
      if isinstance(value, dict):
        c[key] = convert(value)
      elif value is None and key in OPTIONAL_TYPES:
        c[key] = ml_collections.config_dict.placeholder(OPTIONAL_TYPES[key])
      else:
        c[key] = value
    return c

  return convert(values)


class PlainConfig(dict):
  """A config as nested dicts with attribute access: ConfigDict's reading interface.

  Used only where ml_collections is not installed; `config.key`, `config.get(key)`,
  `key in config` and `config.group.key` behave as on a ConfigDict.
  """

  def __init__(self, values: dict[str, Any]):
    super().__init__({k: PlainConfig(v) if isinstance(v, dict) else copy.copy(v)
                      for k, v in values.items()})

  def __getattr__(self, key: str) -> Any:
    try:
      return self[key]
    except KeyError:
      raise AttributeError(f'Unknown config key {key!r}{_closest(key, self)}') from None

  def __setattr__(self, key: str, value: Any) -> None:
    if key not in self:
      raise AttributeError(f'Unknown config key {key!r}{_closest(key, self)}')
    self[key] = value

  def to_dict(self) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, PlainConfig) else v for k, v in self.items()}
