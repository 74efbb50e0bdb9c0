"""Optimiser, learning-rate schedule, weight-decay mask and EMA of the TF reference recipe.

Everything follows tensorflow/tpu `models/official/efficientnet` (docs/reference.md §5):

* Learning rate: `peak = learning_rate · batch_size / lr_base_batch_size`, decayed ×0.97 every 2.4
  epochs (staircase) counted from step 0; a linear warmup `peak · step / warmup_steps` replaces the
  decayed value while `step < warmup_steps` (TF `utils.build_learning_rate`).
* RMSProp is TF1's: the second moment starts at 1, eps sits inside the sqrt and the learning rate is
  applied *inside* the momentum accumulator.
* Weight decay is TF's L2 loss `wd · Σ ½v²` over every non-BatchNorm variable, i.e. `wd · v` added
  to the gradient before the optimiser preconditions it.
* EMA of params and BN statistics with TF's warm-up `min(decay, (1 + t) / (10 + t))`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax

if TYPE_CHECKING:  # Annotations only: the GPU image has no ml_collections.
  import ml_collections

PyTree = Any
# The optimizers `config.optimizer` may name; each has a config group of the same name.
OPTIMIZERS = ('rmsprop', 'sgd', 'adamw')
SCHEDULES = ('exponential', 'cosine', 'constant')


def check_names(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError (naming the choices) on an unknown optimizer or learning-rate schedule."""
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; use one of: "
                     f"{', '.join(OPTIMIZERS)}.")
  _check_schedule_name(config.lr_schedule)


def _check_schedule_name(name: str) -> None:
  if name not in SCHEDULES:
    raise ValueError(f"Unknown lr_schedule {name!r}; use one of: {', '.join(SCHEDULES)}.")


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """The peak learning rate: `learning_rate` scaled linearly with the global batch size.

  Args:
    config: needs `learning_rate`, `batch_size`, `lr_base_batch_size` (0: no scaling).

  Returns:
    `learning_rate · batch_size / lr_base_batch_size` (0.016 · 4096 / 256 = 0.256).
  """
  base = config.lr_base_batch_size
  if not base:
    return float(config.learning_rate)
  return float(config.learning_rate) * config.batch_size / base


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: float) -> optax.Schedule:
  """The learning rate per optimizer step: TF's warmup + exponential / cosine / constant schedule.

  TF evaluates the decayed schedule from step 0 and only *overrides* it with the warmup while
  `step < warmup_steps`, so when warmup ends the LR is already decayed: for 5 warmup epochs and a
  2.4-epoch decay period it is 0.97² · peak at the end of warmup, not peak. The warmup starts at 0
  (the very first update uses LR 0, as in TF).

  Cosine (unlike TF, whose cosine runs over all `total_steps` from step 0 under the warmup, so
  that it starts below peak): after warmup, cosine from peak to 0 over the remaining
  `total_steps - warmup_steps` steps, so that the first post-warmup update uses the peak.

  Args:
    config: needs the keys of `peak_learning_rate`, plus `lr_schedule` ('exponential' | 'cosine' |
      'constant'), `warmup_epochs`, `lr_decay_epochs`, `lr_decay_factor` and, for cosine,
      `total_steps` (if None, `round(num_epochs · steps_per_epoch)`).
    steps_per_epoch: optimizer steps per epoch. TF uses the unrounded `num_images / batch_size`;
      an int (rounded down) moves the decay boundaries by a fraction of a step per epoch.

  Returns:
    A schedule `step -> float32 learning rate`.
  """
  _check_schedule_name(config.lr_schedule)
  peak = peak_learning_rate(config)
  # TF: warmup_steps = int(warmup_epochs * steps_per_epoch); decay_steps stays fractional.
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  kind = config.lr_schedule

  if kind == 'exponential':
    decay_steps = config.lr_decay_epochs * steps_per_epoch
    main = optax.exponential_decay(peak, transition_steps=decay_steps,
                                   decay_rate=config.lr_decay_factor, staircase=True)
  elif kind == 'cosine':
    # Same derivation as the training plan's, so the cosine reaches 0 exactly on the last step.
    total_steps = config.total_steps or int(round(config.num_epochs * steps_per_epoch))
    if total_steps <= warmup_steps:
      raise ValueError(f'total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}).')
    cosine = optax.cosine_decay_schedule(peak, decay_steps=total_steps - warmup_steps)
    main = lambda step: cosine(step - warmup_steps)  # The cosine starts where warmup ends.
  else:  # constant
    main = optax.constant_schedule(peak)

  if warmup_steps <= 0:
    return lambda step: jnp.asarray(main(step), jnp.float32)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warmup = peak * step / warmup_steps
    return jnp.where(step < warmup_steps, warmup, main(step)).astype(jnp.float32)

  return schedule


def is_batchnorm_path(path: tuple[str, ...]) -> bool:
  """Whether a variable path lies inside a BatchNorm module.

  The rule: some path component (a module name) is `bn`, ends in `_bn` (this model's `stem_bn`,
  `head_bn`, `expand_bn`, `depthwise_bn`, `project_bn`) or starts with `BatchNorm` (Flax's
  auto-name `BatchNorm_0`, for modules added without an explicit name). Matching whole module-name
  patterns rather than the substring 'bn' keeps unrelated names from being caught by accident.

  Args:
    path: the keys from the tree root to a leaf, e.g. ('blocks_3', 'expand_bn', 'scale').

  Returns:
    True for the variables of a BatchNorm module.
  """
  for name in path[:-1]:  # The leaf name ('scale', 'bias', 'kernel') never identifies the module.
    if name == 'bn' or name.endswith('_bn') or name.startswith('BatchNorm'):
      return True
  return False


def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def weight_decay_mask(params: PyTree) -> PyTree:
  """A bool tree like `params`: False exactly for BatchNorm variables (see `is_batchnorm_path`).

  TF decays every trainable variable whose name lacks 'batch_normalization', so conv kernels,
  SE biases and the classifier's kernel and bias are all decayed; only BN scale and bias are not.
  Works on the params collection alone or on the whole `{'params': ..., 'batch_stats': ...}`.

  Args:
    params: a pytree of arrays (or ShapeDtypeStructs) keyed by module names.

  Returns:
    A pytree of Python bools with the structure of `params`.
  """
  def decay(path, _):
    return not is_batchnorm_path(tuple(_key_name(k) for k in path))
  return jax.tree_util.tree_map_with_path(decay, params)


def create_optimizer(config: ml_collections.ConfigDict,
                     steps_per_epoch: float) -> optax.GradientTransformation:
  """The optimizer chain of the config: weight decay, optional clipping, RMSProp / SGD / AdamW.

  For rmsprop and sgd, `add_decayed_weights(weight_decay, mask)` comes first, which equals adding
  `weight_decay · Σ ½v²` (non-BN variables) to the loss as TF does. Clipping (`grad_clip_norm`)
  then applies to that full-loss gradient. AdamW instead clips the loss gradient and uses its own
  decoupled decay (`lr · weight_decay · v`) with the same mask; `weight_decay` then means the
  AdamW coefficient, which is usually far larger than TF's 1e-5.

  RMSProp is TF1's `RMSPropOptimizer`:
    ms  = decay·ms + (1−decay)·g²          (ms starts at 1.0)
    mom = momentum·mom + lr·g/sqrt(ms+eps)
    v  -= mom
  `optax.rmsprop` is exactly that chain (scale_by_rms → scale_by_learning_rate → trace), so the LR
  sits inside the momentum, which matters while the LR changes; the flags below pin TF's variant.
  SGD is TF1's MomentumOptimizer (LR outside the momentum, as in `optax.sgd`).

  Args:
    config: the keys of `learning_rate_schedule` plus `optimizer`, `weight_decay`,
      `grad_clip_norm` and the group named by `optimizer`: `rmsprop` (decay, momentum, epsilon),
      `sgd` (momentum, nesterov) or `adamw` (b1, b2, eps).
    steps_per_epoch: optimizer steps per epoch (see `learning_rate_schedule`).

  Returns:
    An optax GradientTransformation over the params collection.
  """
  check_names(config)
  schedule = learning_rate_schedule(config, steps_per_epoch)
  weight_decay = config.weight_decay
  clip_norm = config.grad_clip_norm
  clip = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
  name = config.optimizer
  args = config[name]  # The optimizer's own group of hyperparameters.

  if name == 'adamw':
    return optax.chain(*clip, optax.adamw(
        schedule, b1=args.b1, b2=args.b2, eps=args.eps, weight_decay=weight_decay,
        mask=weight_decay_mask))
  if name == 'rmsprop':
    optimizer = optax.rmsprop(
        schedule, decay=args.decay, eps=args.epsilon, initial_scale=1.0, eps_in_sqrt=True,
        centered=False, bias_correction=False, momentum=args.momentum or None)
  elif name == 'sgd':
    optimizer = optax.sgd(schedule, momentum=args.momentum or None, nesterov=bool(args.nesterov))
  else:  # In OPTIMIZERS (checked above) but without a branch here: a bug, not a user error.
    raise NotImplementedError(f'create_optimizer has no branch for optimizer {name!r}.')
  decay = [optax.add_decayed_weights(weight_decay, mask=weight_decay_mask)] if weight_decay else []
  return optax.chain(*decay, *clip, optimizer)


def ema_decay_at(step, decay) -> jax.Array:
  """TF's EMA decay with warm-up: `min(decay, (1 + step) / (10 + step))`.

  Early on the average follows the weights closely (0.1 at step 0, ~0.5 at step 8) and reaches
  `decay` only after ~10/(1−decay) steps, so an EMA started from random init is usable early.

  Args:
    step: TF passes its global step *after* the update's increment (1 on the first update).
    decay: the final decay, e.g. 0.9999.

  Returns:
    A float32 scalar.
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.asarray(decay, jnp.float32), (1.0 + step) / (10.0 + step))


def update_ema(ema_tree: PyTree, new_tree: PyTree, step, decay) -> PyTree:
  """One EMA update `ema ← d·ema + (1−d)·new` with `d = ema_decay_at(step, decay)`.

  Works on any pytree, e.g. `{'params': ..., 'batch_stats': ...}`: TF averages the BN moving
  statistics too, and evaluating EMA weights with live BN statistics would mismatch them.

  Args:
    ema_tree: the current averages (initialise them as a copy of the variables).
    new_tree: the variables after this step's update, same structure.
    step: see `ema_decay_at`.
    decay: the final decay; 0 makes the EMA equal `new_tree`.

  Returns:
    The new averages, each leaf in its previous dtype.
  """
  # 1 − d computed directly: float32 `1 − 0.9999` would be off by 2e-4 relative.
  step = jnp.asarray(step, jnp.float32)
  step_size = jnp.maximum(jnp.asarray(1.0 - decay, jnp.float32), 9.0 / (10.0 + step))
  updated = optax.incremental_update(new_tree, ema_tree, step_size=step_size)
  return jax.tree.map(lambda u, e: u.astype(jnp.result_type(e)), updated, ema_tree)
