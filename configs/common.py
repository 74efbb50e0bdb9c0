"""The one config builder every experiment config calls.

`configs/b4.py` is `get_config = functools.partial(common.get_config, 'b4')`-style: each file names
its variant and defaults, and everything else comes from here. Arguments after the colon in
`--config=configs/b4.py:ARG` are big_vision-style strings:

  smoke                       a few steps on tiny synthetic-sized inputs (checks the plumbing)
  batch=512,epochs=30         override keys by short or full name
  smoke,dataset=imagenette    both

`--config.key=value` flags override afterwards (the config is locked, so a mistyped key is an
error that names the closest valid key).
"""

from __future__ import annotations

import difflib

import ml_collections
from ml_collections import config_dict

from efficientnet_jax import scaling

# Short names accepted in the ':arg' string, mapped to config keys.
_ARG_ALIASES = {'batch': 'batch_size', 'epochs': 'num_epochs', 'steps': 'total_steps',
                'lr': 'learning_rate', 'res': 'image_size'}
# RandAugment magnitude the TF reference used per variant (REFERENCE §4).
_RANDAUGMENT_MAGNITUDE = {'b5': 17, 'b6': 17, 'b7': 28, 'b8': 28, 'l2': 28}
# What a dataset implies, applied when ':dataset=NAME' (or defaults) selects it.
DATASET_PRESETS = {
    'imagenet2012': dict(num_classes=1000, eval_split='validation'),
    'digits': {'num_classes': 10, 'eval_split': 'test', 'augment.flip': False,
               'augment.crop': 'pad_crop', 'augment.policy': 'none', 'normalization': 'inception',
               'crop_padding': 0},
    'imagenette': dict(num_classes=10, eval_split='validation'),
    'cifar10': {'num_classes': 10, 'eval_split': 'test', 'augment.crop': 'pad_crop',
                'crop_padding': 0},
    'oxford_flowers102': dict(num_classes=102, eval_split='test'),
}


def get_config(model: str, arg: str | None = None, **defaults) -> ml_collections.ConfigDict:
  """Builds the config for `model` (b0 … b8, l2, lite0 … lite4) with experiment defaults.

  Args:
    model: the variant name.
    arg: the ':arg' string of `--config=configs/NAME.py:arg`.
    **defaults: per-experiment defaults applied before `arg` (e.g. the quick start's dataset).

  Returns:
    An unlocked ConfigDict (config_flags locks it).
  """
  variant = scaling.get_variant(model)
  c = ml_collections.ConfigDict()

  # Model: the variant's published coefficients unless overridden; `phi` applies the compound
  # rule (depth α^φ, width β^φ, resolution γ^φ) to the B0 baseline instead.
  c.model = model
  c.width = config_dict.placeholder(float)
  c.depth = config_dict.placeholder(float)
  c.phi = config_dict.placeholder(float)
  c.alpha, c.beta, c.gamma = scaling.ALPHA, scaling.BETA, scaling.GAMMA
  c.dropout_rate = variant.dropout
  c.drop_path_rate = scaling.DEFAULT_DROP_PATH_RATE
  c.dtype = 'bfloat16'
  c.remat = False
  c.padding = 'same'
  c.bn_group_size = 0  # 0: BN statistics over the global batch (synchronised BN).
  c.bn_momentum = 0.99  # TF's decay of the BN moving statistics.
  c.depthwise_impl = 'auto'  # 'conv' (XLA grouped conv), 'shift' (k·k multiply-adds), 'auto'.
  c.num_classes = 1000

  # Data.
  c.dataset = 'imagenet2012'
  c.data_dir = config_dict.placeholder(str)
  c.manual_dir = config_dict.placeholder(str)
  c.train_split = 'train'
  c.eval_split = 'validation'
  c.image_size = config_dict.placeholder(int)  # None: the model's native resolution.
  c.normalization = 'lite' if variant.lite else 'imagenet'
  c.interpolation = 'bilinear' if variant.lite else 'bicubic'
  c.crop_padding = 32
  c.shuffle_buffer = 16_384
  c.bad_image_policy = 'fail'
  c.augment = ml_collections.ConfigDict(dict(
      crop='inception', flip=True, policy='none' if variant.lite else 'randaugment',
      randaugment_layers=2, randaugment_magnitude=_RANDAUGMENT_MAGNITUDE.get(model, 10)))

  # Optimisation: the TF reference recipe (REFERENCE §4).
  c.batch_size = 4096
  c.eval_batch_size = 1024
  c.num_epochs = 350.0
  c.total_steps = config_dict.placeholder(int)  # None: derived from num_epochs.
  c.grad_accum_steps = 1
  c.optimizer = 'rmsprop'
  c.learning_rate = 0.016
  c.lr_base_batch_size = 256
  c.lr_schedule = 'exponential'
  c.warmup_epochs = 5.0
  c.lr_decay_epochs = 2.4
  c.lr_decay_factor = 0.97
  c.weight_decay = 1e-5
  c.rmsprop_decay = 0.9
  c.rmsprop_momentum = 0.9
  c.rmsprop_epsilon = 1e-3
  c.sgd_momentum = 0.9
  c.sgd_nesterov = False
  c.adamw_b1 = 0.9
  c.adamw_b2 = 0.999
  c.adamw_eps = 1e-8
  c.grad_clip_norm = config_dict.placeholder(float)
  c.label_smoothing = 0.1
  c.ema_decay = 0.9999
  c.skip_nonfinite_steps = False  # True: skip NaN/Inf steps (counted) instead of stopping.

  # Loop, checkpoints, metrics.
  c.seed = 0
  c.log_every_steps = 100
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.init_from = config_dict.placeholder(str)
  c.compilation_cache_dir = config_dict.placeholder(str)
  # XLA's backend optimisation level (None: XLA's default). 0 compiles several times faster and
  # runs CPU steps ~1.6× slower: the better trade for runs of a few hundred steps on a CPU.
  c.xla_backend_optimization_level = config_dict.placeholder(int)

  for key, value in defaults.items():
    _set(c, key, value)
    if key == 'dataset':
      _apply_preset(c, value)
  if arg:
    _apply_arg(c, arg)
  return c


def _set(c: ml_collections.ConfigDict, key: str, value) -> None:
  """Sets a (possibly dotted) key that must already exist, naming the closest match if not."""
  node, *path = key.split('.')[::-1]
  target = c
  for part in reversed(path):
    target = target[part]
  if node not in target:
    close = difflib.get_close_matches(node, list(target.keys()), n=1)
    hint = f'; did you mean {close[0]!r}?' if close else ''
    raise KeyError(f'Unknown config key {key!r}{hint}')
  current = target[node]
  if isinstance(value, str) and not isinstance(current, str) and current is not None:
    value = _parse(value, type(current))
  target[node] = value


def _parse(text: str, kind: type):
  if kind is bool:
    if text.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'Expected true/false, got {text!r}.')
    return text.lower() in ('true', '1')
  return kind(text)


def _apply_arg(c: ml_collections.ConfigDict, arg: str) -> None:
  for item in filter(None, (s.strip() for s in arg.split(','))):
    if item == 'smoke':
      _smoke(c)
      continue
    if '=' not in item:
      raise ValueError(f"Config arg {item!r} is neither 'smoke' nor key=value.")
    key, value = item.split('=', 1)
    key = _ARG_ALIASES.get(key, key)
    field = c.get(key) if '.' not in key else None
    if field is None and '.' not in key and key in c:
      value = _parse_placeholder(c, key, value)
    _set(c, key, value)
    if key == 'dataset':
      _apply_preset(c, value)


def _apply_preset(c: ml_collections.ConfigDict, dataset: str) -> None:
  for key, value in DATASET_PRESETS.get(dataset, {}).items():
    _set(c, key, value)


def _parse_placeholder(c: ml_collections.ConfigDict, key: str, value: str):
  """Placeholders (None-valued typed fields) carry their type on the FieldReference."""
  kind = c.get_ref(key).get_type()
  return None if value.lower() == 'none' else _parse(value, kind)


def _smoke(c: ml_collections.ConfigDict) -> None:
  """A few steps at small size: checks that everything is wired, not that it learns."""
  c.batch_size = 8
  c.eval_batch_size = 8
  c.total_steps = 4
  c.image_size = 64
  c.log_every_steps = 1
  c.eval_every_steps = 4
  c.checkpoint_every_steps = 2
  c.warmup_epochs = 0.0
