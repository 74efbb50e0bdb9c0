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

Every key, its type, default, doc and what it changes are declared once, in `schema.py`; this
module builds configs from that declaration, applies dataset presets and ':arg' strings, and
says whether a config is a published recipe (`describe_recipe`).
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from efficientnet_jax import recipes
from efficientnet_jax import schema
from efficientnet_jax.errors import ConfigError
from efficientnet_jax.models import scaling

# What a dataset implies, applied when ':dataset=NAME' (or a config's defaults) selects it.
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    'imagenet2012': {'num_classes': 1000, 'eval_split': 'validation'},
    'digits': {'num_classes': 10, 'eval_split': 'test', 'augment.flip': False,
               'augment.crop': 'pad_crop', 'normalization': 'inception', 'crop_padding': 0},
    # The whole canvas resized to the trial's resolution: no crop, flip or augmentation.
    'cluttered_digits': {'num_classes': 10, 'eval_split': 'test', 'augment.flip': False,
                         'augment.crop': 'resize', 'augment.policy': 'none',
                         'normalization': 'inception', 'crop_padding': 0},
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
  return schema.defaults(model)


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


def _set(values: dict[str, Any], key: str, value: Any) -> None:
  """Sets a (possibly dotted) declared key, parsing a string as the key's type.

  Raises:
    KeyError: an undeclared key (the message names the closest one).
    ValueError: a value that does not parse as the key's type, or None for a required key.
  """
  key = schema.canonical(key)
  declared = schema.BY_NAME.get(key)
  if declared is None:
    raise KeyError(f'Unknown config key {key!r}{_closest(key)}')
  value = parse_value(declared, value)
  *groups, name = key.split('.')
  target = values
  for group in groups:
    target = target[group]
  target[name] = value
  if key == 'dataset':
    for preset_key, preset_value in DATASET_PRESETS.get(value, {}).items():
      _set(values, preset_key, preset_value)


def parse_value(key: schema.Key, value: Any) -> Any:
  """`value` (a string from the command line, or a Python value) as `key`'s type.

  Raises:
    ValueError: one line naming the key, what it expects and what it got.
  """
  if isinstance(value, str) and key.type is not str:
    try:
      value = _parse(value, key.type)
    except ValueError:
      raise ValueError(f'config.{key.name} expects {_TYPE_NAMES[key.type]}, got {value!r}.'
                       ) from None
  if value is None:
    if not key.optional:
      raise ValueError(f'config.{key.name} cannot be unset (none); it expects '
                       f'{_TYPE_NAMES[key.type]}.')
    return None
  if key.type is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)  # As ConfigDict would: the key stays a float for later overrides.
  if not isinstance(value, key.type) or (key.type is int and isinstance(value, bool)):
    raise ValueError(f'config.{key.name} expects {_TYPE_NAMES[key.type]}, got {value!r}.')
  return value


_TYPE_NAMES = {int: 'an integer', float: 'a number', bool: 'true or false', str: 'a string'}


def closest_key(name: str) -> str | None:
  """The declared key (or alias) closest to a mistyped `name`, as a dotted key name; or None."""
  candidates = list(schema.BY_NAME) + list(schema.ALIASES)
  close = difflib.get_close_matches(name, candidates, n=1)
  if not close:  # 'config.polcy' for 'augment.policy': compare the last parts too.
    leaves = {k.split('.')[-1]: k for k in schema.BY_NAME}
    close = [leaves[c] for c in difflib.get_close_matches(name.split('.')[-1], leaves, n=1)]
  return schema.canonical(close[0]) if close else None


def _closest(name: str) -> str:
  close = closest_key(name)
  return f'; did you mean {close!r}?' if close else ''


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

  def convert(tree: dict[str, Any], prefix: str = '') -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    for name, value in tree.items():
      key = schema.BY_NAME.get(prefix + name)
      if isinstance(value, dict):
        c[name] = convert(value, f'{prefix}{name}.')
      elif value is None and key is not None:
        c[name] = ml_collections.config_dict.placeholder(key.type)
      else:
        c[name] = value
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
      raise AttributeError(f'Unknown config key {key!r}{_closest(key)}') from None

  def __setattr__(self, key: str, value: Any) -> None:
    if key not in self:
      raise AttributeError(f'Unknown config key {key!r}{_closest(key)}')
    self[key] = value

  def to_dict(self) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, PlainConfig) else v for k, v in self.items()}


# --- The `recipe:` line ---------------------------------------------------------------------------

_POLICY_NAMES = {'autoaugment': 'AutoAugment v0', 'randaugment': 'RandAugment', 'none': 'no'}


def _relevant(key: str, values: dict[str, Any]) -> bool:
  """Whether `key` is part of what a run with these values trains (`schema.RECIPE`, in use)."""
  if not schema.is_recipe(key):
    return False
  group = key.split('.')[0]
  if group in ('rmsprop', 'sgd', 'adamw') and group != values['optimizer']:
    return False
  if not schema.in_use(key, values):  # cluttered_digits.* with another dataset.
    return False
  if key.startswith('augment.randaugment') and values['augment.policy'] != 'randaugment':
    return False
  return True


def recipe_differences(config, reference) -> list[str]:
  """`key=value` for each recipe key of `config` that differs from `reference`'s."""
  ours, theirs = schema.flatten(config.to_dict()), schema.flatten(reference.to_dict())
  native = scaling.get_variant(theirs['model']).resolution
  for values in (ours, theirs):  # An explicit native resolution is the native resolution.
    if values.get('image_size') == native and values.get('phi') is None:
      values['image_size'] = None
  return [f'{key}={ours.get(key)}' for key in sorted(set(ours) | set(theirs))
          if _relevant(key, ours) and ours.get(key) != theirs.get(key)]


def describe_recipe(config) -> str:
  """One line: whether `config` is a published recipe, and which number it should reproduce."""
  model, policy = config.model, config.augment.policy
  groups = (f'BN statistics over groups of {config.bn_group_size}' if config.bn_group_size
            else 'BN statistics over the whole batch')
  published = recipes.PUBLISHED.get((model, policy))
  if published is None:
    known = [m for m in scaling.MODEL_NAMES if (m, policy) in recipes.PUBLISHED]
    usual = recipes.PUBLISHED.get((model, recipes.default_policy(model)))
    closest = (f"; {model}'s is {_POLICY_NAMES[usual.policy]} augmentation "
               f'({recipes.top1_text(usual)})'
               if usual else f'; {model} has no published recipe this codebase can train')
    return (f'recipe: not a published one: the published recipes with '
            f"{_POLICY_NAMES[policy]} augmentation are for {', '.join(known)}{closest}.")
  changed = recipe_differences(config, get_config(model, f'aug={policy}'))
  what = f'{model}, {_POLICY_NAMES[policy]} augmentation' + (
      f' (N=2, M={published.magnitude})' if published.magnitude else '')
  if not changed:
    return (f'recipe: {what}, as published ({published.source}): '
            f'{recipes.top1_text(published)}; {groups}.')
  shown = ', '.join(changed[:6]) + (f' and {len(changed) - 6} more' if len(changed) > 6 else '')
  return (f'recipe: not as published: {what} ({recipes.top1_text(published)}) differs in '
          f'{shown}.')
