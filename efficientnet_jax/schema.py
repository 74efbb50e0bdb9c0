"""Every config key, declared once: its type, default, one-line doc, alias and what it changes.

The config builder (`config.py`), the ':arg' strings and `--config.KEY=VALUE` overrides, the
`recipe:` line (`config.describe_recipe`), a study trial's identity (`studies/sweep.py`) and the
README's key table all read `KEYS`; none keeps its own list of keys, types or roles.

What a key changes (`Key.changes`) decides where it counts:
* `RECIPE`: what is trained (the model, the data and its augmentation, the optimisation): a key
  that differs from a published recipe makes the `recipe:` line say "not as published".
* `RUN`: the same recipe, computed otherwise: other random draws (`seed`, augmentation on the
  device) or other floating-point bits (rematerialisation, the depthwise implementation, XLA's
  optimisation level, the evaluation batch). A study trial's identity counts these too: two runs
  that differ in one do not give the same numbers.
* `NOTHING`: where files are and how often the loop logs, evaluates or checkpoints; results do
  not depend on these (a trial may resume elsewhere with other values).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from efficientnet_jax import recipes
from efficientnet_jax.models import scaling

RECIPE, RUN, NOTHING = 'recipe', 'run', 'nothing'


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key.

  Attributes:
    name: dotted for a key in a group ('augment.policy').
    type: the type of its value (an unset optional key is None).
    default: the value, or a function of the variant name (`model`) giving it.
    doc: one line for the README's table and `--help`.
    changes: RECIPE, RUN or NOTHING (module docstring).
    optional: None is a valid value ("unset": derived or off).
    alias: a short name for ':arg' strings ('batch' for 'batch_size').
  """
  name: str
  type: type
  default: Any
  doc: str
  changes: str = RECIPE
  optional: bool = False
  alias: str | None = None

  def default_for(self, model: str) -> Any:
    return self.default(model) if callable(self.default) else self.default


def _variant(attribute: str) -> Callable[[str], Any]:
  return lambda model: getattr(scaling.get_variant(model), attribute)


def _lite(lite: Any, other: Any) -> Callable[[str], Any]:
  return lambda model: lite if scaling.get_variant(model).lite else other


_K = Key
KEYS: tuple[Key, ...] = (
    # Model.
    _K('model', str, lambda model: model, 'Variant name: b0 … b8, l2, lite0 … lite4.'),
    _K('width', float, None, "Width coefficient; unset: the variant's (or φ's).", optional=True),
    _K('depth', float, None, "Depth coefficient; unset: the variant's (or φ's).", optional=True),
    _K('phi', float, None, 'Compound coefficient φ: width β^φ, depth α^φ, resolution γ^φ of B0 '
       '(or Lite0); unset: the variant as published.', optional=True),
    _K('alpha', float, scaling.ALPHA, 'Depth base α of the compound rule.'),
    _K('beta', float, scaling.BETA, 'Width base β of the compound rule.'),
    _K('gamma', float, scaling.GAMMA, 'Resolution base γ of the compound rule.'),
    _K('dropout_rate', float, _variant('dropout'), "Dropout before the classifier (the variant's)."),
    _K('drop_path_rate', float, scaling.DEFAULT_DROP_PATH_RATE,
       'Stochastic depth rate of the last block (linear in block index).'),
    _K('dtype', str, 'bfloat16', 'Compute dtype: bfloat16 or float32 (parameters stay float32).'),
    _K('remat', bool, False, 'Rematerialise each block in the backward pass (less memory).',
       changes=RUN),
    _K('padding', str, 'same', "Convolution padding: 'same' (TF's) or 'symmetric' (PyTorch's)."),
    _K('bn_group_size', int, None, 'Examples per BN statistics group; 0: the whole batch; unset: '
       "TF's batch/8 (recipes.tf_bn_group_size).", optional=True),
    _K('bn_momentum', float, 0.99, "Decay of BN's moving statistics (per optimizer step)."),
    _K('depthwise_impl', str, 'auto', "Depthwise convolution: 'conv' (XLA grouped), 'shift' (k·k "
       "multiply-adds) or 'auto' (shift on CPU).", changes=RUN),
    _K('num_classes', int, 1000, 'Classifier outputs (a dataset preset sets it).'),
    # Data.
    _K('dataset', str, 'imagenet2012', 'TFDS name, or digits (embedded), cluttered_digits (made '
       'from them) or folder (data_dir).'),
    _K('data_dir', str, None, 'TFDS data directory, or the image folder root.', changes=NOTHING,
       optional=True),
    _K('manual_dir', str, None, 'Where TFDS finds manually downloaded archives (ImageNet).',
       changes=NOTHING, optional=True),
    _K('train_split', str, 'train', 'TFDS split to train on.', changes=RUN),
    _K('eval_split', str, 'validation', 'TFDS split to evaluate on.', changes=RUN),
    _K('image_size', int, None, "Input side in pixels; unset: the variant's (or φ's).",
       optional=True, alias='res'),
    _K('normalization', str, _lite('lite', 'imagenet'),
       'Input normalisation: imagenet, lite or inception.'),
    _K('interpolation', str, _lite('bilinear', 'bicubic'), 'Resize kernel: bicubic or bilinear.'),
    _K('crop_padding', int, 32, "Eval centre crop: image_size / (image_size + crop_padding)."),
    _K('jpeg_dct_scaling', bool, False, 'Decode large JPEG crops at a reduced DCT scale (a few '
       'levels from the recipe\'s pixels; faster on large photos).'),
    _K('source_side', int, None, 'Digits only: area-reduce each image to this many pixels a side '
       'before preprocessing (never enlarged); unset: as stored.', optional=True),
    # dataset=cluttered_digits (input/cluttered_digits.py); they change nothing for the others.
    # The defaults are the calibrated construction (experiments/README.md, "A proxy with headroom").
    _K('cluttered_digits.canvas', int, 32, 'Cluttered digits: canvas side in pixels.'),
    _K('cluttered_digits.digit_min', int, 10, 'Cluttered digits: smallest side a digit (placed or '
       'cut for clutter) is enlarged to, from 8 px.'),
    _K('cluttered_digits.digit_max', int, 14, 'Cluttered digits: largest such side.'),
    _K('cluttered_digits.clutter', int, 2, 'Cluttered digits: pieces of other digits per canvas.'),
    _K('cluttered_digits.clutter_size', int, 4, 'Cluttered digits: side of each piece in pixels.'),
    _K('cluttered_digits.train_size', int, 10_000, 'Cluttered digits: train canvases (of the '
       '1,437 train digits).'),
    _K('cluttered_digits.test_size', int, 5_000, 'Cluttered digits: test canvases (of the 360 '
       'test digits).'),
    _K('cluttered_digits.seed', int, 0, 'Cluttered digits: seed of the canvases (not of '
       'training).'),
    _K('shuffle_buffer', int, 16_384, 'Examples in the train shuffle buffer.', changes=RUN),
    _K('bad_image_policy', str, 'fail', 'An undecodable image: fail, or skip it.', changes=RUN),
    _K('data_service_address', str, None, 'tf.data service dispatcher (grpc://HOST:PORT) running '
       'the train preprocessing; the same batches as locally.', changes=NOTHING, optional=True),
    _K('augment.crop', str, 'inception', 'Train crop: inception, pad_crop or resize.'),
    _K('augment.flip', bool, True, 'Random horizontal flip.'),
    _K('augment.policy', str, recipes.default_policy,
       "autoaugment (v0), randaugment or none; default: the published recipe's.", alias='aug'),
    _K('augment.randaugment_layers', int, 2, "RandAugment's N."),
    _K('augment.randaugment_magnitude', int, recipes.randaugment_magnitude,
       "RandAugment's M (TF's for the variant)."),
    _K('augment.on_device', bool, None, 'Augment and normalise on the accelerator; unset: on '
       "where JAX runs on one and the policy is not none.", changes=RUN, optional=True),
    # Optimisation.
    _K('batch_size', int, 4096, 'Global batch size.', alias='batch'),
    _K('eval_batch_size', int, 1024, 'Global evaluation batch size.', changes=RUN),
    _K('num_epochs', float, 350.0, 'Training length in epochs.', alias='epochs'),
    _K('total_steps', int, None, 'Training length in steps; unset: from num_epochs.',
       optional=True, alias='steps'),
    _K('grad_accum_steps', int, 1, 'Micro-batches per optimizer step (BN statistics per '
       'micro-batch).', changes=RUN),
    _K('optimizer', str, 'rmsprop', 'rmsprop, sgd or adamw (hyperparameters: its group).'),
    _K('rmsprop.decay', float, 0.9, "RMSProp's second-moment decay."),
    _K('rmsprop.momentum', float, 0.9, "RMSProp's momentum."),
    _K('rmsprop.epsilon', float, 1e-3, "RMSProp's epsilon (TF's, inside the square root)."),
    _K('sgd.momentum', float, 0.9, "SGD's momentum."),
    _K('sgd.nesterov', bool, False, 'Nesterov momentum.'),
    _K('adamw.b1', float, 0.9, "AdamW's β1."),
    _K('adamw.b2', float, 0.999, "AdamW's β2."),
    _K('adamw.eps', float, 1e-8, "AdamW's epsilon."),
    _K('learning_rate', float, 0.016, 'Peak learning rate per lr_base_batch_size examples.',
       alias='lr'),
    _K('lr_base_batch_size', int, 256, 'The batch learning_rate is given for (linear scaling).'),
    _K('lr_schedule', str, 'exponential', 'exponential (TF\'s), cosine or constant.'),
    _K('warmup_epochs', float, 5.0, 'Linear warm-up, in epochs.'),
    _K('lr_decay_epochs', float, 2.4, 'Exponential schedule: epochs per decay.'),
    _K('lr_decay_factor', float, 0.97, 'Exponential schedule: factor per decay.'),
    _K('weight_decay', float, 1e-5, 'L2 weight decay (TF: on the loss, not BN or biases).'),
    _K('grad_clip_norm', float, None, 'Clip the global gradient norm; unset: no clipping.',
       optional=True),
    _K('label_smoothing', float, 0.1, 'Label smoothing of the cross-entropy.'),
    _K('ema_decay', float, 0.9999, 'Decay of the weights EMA evaluated beside the weights.'),
    _K('skip_nonfinite_steps', bool, False, 'Skip (and count) NaN/Inf steps instead of stopping.',
       changes=RUN),
    # Loop, checkpoints, metrics.
    _K('seed', int, 0, 'Seed of initialisation, data order, dropout and augmentation.',
       changes=RUN),
    _K('log_every_steps', int, 100, 'Steps between progress lines and logged metrics.',
       changes=NOTHING),
    _K('eval_every_steps', int, 5000, 'Steps between evaluations (and after the last).',
       changes=NOTHING),
    _K('checkpoint_every_steps', int, 1000, 'Steps between checkpoints.', changes=NOTHING),
    _K('keep_checkpoints', int, 3, 'Checkpoints kept.', changes=NOTHING),
    _K('init_from', str, None, 'Converted weights or a run directory to start from.',
       optional=True),
    _K('compilation_cache_dir', str, None, 'Persistent XLA compilation cache.', changes=NOTHING,
       optional=True),
    _K('xla_backend_optimization_level', int, None, "XLA's backend optimisation level; unset: "
       "XLA's default (0 compiles faster, runs CPU steps slower).", changes=RUN, optional=True),
    _K('xla_cpu_opt_preset', str, 'FAST_COMPILE', "XLA:CPU's preset: FAST_COMPILE (compiles and "
       'runs our CPU steps faster), DEFAULT or FAST_RUNTIME; GPU/TPU programs are unchanged.',
       changes=RUN),
)

BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}
ALIASES: dict[str, str] = {k.alias: k.name for k in KEYS if k.alias}


def canonical(name: str) -> str:
  """The key's dotted name, given it or its ':arg' alias (unknown names are returned as given)."""
  return ALIASES.get(name, name)


def defaults(model: str) -> dict[str, Any]:
  """Every key's default for `model`, as nested dicts (a group is a dict).

  Raises:
    ValueError: an unknown model name (the message lists the valid ones).
  """
  scaling.get_variant(model)  # The one-line error for an unknown name, before any default.
  tree: dict[str, Any] = {}
  for key in KEYS:
    *groups, name = key.name.split('.')
    target = tree
    for group in groups:
      target = target.setdefault(group, {})
    target[name] = key.default_for(model)
  return tree


def flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'augment': {'policy': x}} → {'augment.policy': x}."""
  flat = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{name}.'))
    else:
      flat[prefix + name] = value
  return flat


def counts_for_identity(name: str) -> bool:
  """Whether a run's numbers depend on this key (RECIPE or RUN); unknown keys count."""
  key = BY_NAME.get(name)
  return key is None or key.changes != NOTHING


# Key groups that only one dataset reads (group → dataset): with another they change nothing.
DATASET_GROUPS = {'cluttered_digits': 'cluttered_digits'}


def in_use(name: str, values: dict[str, Any]) -> bool:
  """Whether key `name` can change a run with these flat values (a dataset's keys need it)."""
  dataset = DATASET_GROUPS.get(name.split('.')[0])
  return dataset is None or values.get('dataset') == dataset


def is_recipe(name: str) -> bool:
  """Whether the key is part of what is trained (RECIPE); unknown keys count."""
  key = BY_NAME.get(name)
  return key is None or key.changes == RECIPE
