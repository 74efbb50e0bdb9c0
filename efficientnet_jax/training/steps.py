"""The jitted train and eval steps (the exact functions `main` runs and `benchmark` times).

`setup.Setup.train_step` / `.eval_step` build them from a config; this module builds them from
explicit arguments.

Importable without TensorFlow. The batch is sharded over a ('data',) mesh and the state
replicated, so BN statistics are computed over the global batch unless the model groups them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from efficientnet_jax.errors import ConfigError
from efficientnet_jax.training import optimizer
from efficientnet_jax.training.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
TOP_K = 5  # The 'top5' metric; fewer classes make it top-k over all of them (`top5_k`).


def top5_k(num_classes: int) -> int:
  """The k of the 'top5' metric: 5, or every class when there are fewer."""
  return min(TOP_K, num_classes)


def check_global_batch(batch_size: int, grad_accum_steps: int, device_count: int) -> None:
  """Raises ConfigError unless the global batch (and each micro-batch) splits over the devices.

  Cheap and free of TensorFlow, so `setup.validate` calls it before loading any data.
  """
  if batch_size % device_count:
    raise ConfigError(f'config.batch_size={batch_size} is not divisible by the {device_count} '
                      f'devices; use a multiple of {device_count}.')
  if batch_size % (device_count * grad_accum_steps):
    raise ConfigError(f'config.batch_size={batch_size} must split into '
                      f'grad_accum_steps={grad_accum_steps} micro-batches of a multiple '
                      f'of the {device_count} devices.')


def check_bn_groups(group_size: int, batch_size: int, grad_accum_steps: int,
                    device_count: int) -> None:
  """Raises ConfigError unless BN groups tile the micro-batch along device boundaries.

  A group either lies within one device's examples (it divides the per-device batch) or covers
  whole devices (a multiple of the per-device batch that divides the global one); a group cut
  across a device boundary would need the examples moved between devices.
  """
  if not group_size:
    return
  micro = batch_size // grad_accum_steps
  per_device = micro // device_count
  what = 'micro-batch' if grad_accum_steps > 1 else 'batch'
  fits = (per_device % group_size == 0 if group_size <= per_device
          else group_size % per_device == 0 and micro % group_size == 0)
  if group_size < 0 or not fits:
    divisors = [g for g in range(1, per_device + 1) if per_device % g == 0]
    multiples = [per_device * k for k in range(2, device_count + 1)
                 if micro % (per_device * k) == 0]
    choices = ', '.join(str(g) for g in (divisors[-3:] + multiples[:3]))
    raise ConfigError(f'config.bn_group_size={group_size} does not tile the global {what} of '
                      f'{micro} ({per_device} per device on {device_count} devices); use one of '
                      f'{choices} or 0 (the whole {what}).')


def micro_batch_bn_momentum(bn_momentum: float, grad_accum_steps: int) -> float:
  """The BN momentum per micro-batch that keeps the configured memory per optimizer step.

  With k micro-batches per step the moving statistics are updated k times per step, so
  `bn_momentum^(1/k)` per update decays them by `bn_momentum` per step, as configured.
  """
  return bn_momentum ** (1.0 / grad_accum_steps)


def all_finite(tree: Any) -> jax.Array:
  """True when every element of every leaf is finite (a norm would overflow on large values)."""
  return jax.tree.reduce(jnp.logical_and,
                         jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree),
                         jnp.array(True))


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
                  ) -> jax.Array:
  """Per-example softmax cross-entropy with label smoothing, in float32."""
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def make_train_step(model, tx: optax.GradientTransformation, *, label_smoothing: float,
                    ema_decay: float, grad_accum_steps: int = 1,
                    preprocess: Callable[[jax.Array, jax.Array], jax.Array] | None = None
                    ) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
  """Builds `train_step(state, batch, rng) -> (state, metrics)`.

  A step whose loss, gradient norm or updated parameters are NaN/Inf is not applied (the state is
  kept, `step` still advances so the data position moves on, and `skipped_steps` counts it); the
  caller decides whether to stop or go on. Checking the new parameters too catches an update that
  overflows although its gradients were finite (a learning rate far too large), which would
  otherwise be checkpointed.

  Args:
    model: the EfficientNet module.
    tx: the optax optimizer.
    label_smoothing: label smoothing of the training loss.
    ema_decay: EMA decay (with warm-up); 0 or a state without EMA disables it.
    grad_accum_steps: micro-batches per step; gradients are averaged, BN statistics are
      normalised per micro-batch and their moving averages updated once per micro-batch (give
      the model `micro_batch_bn_momentum`, as `setup.model_for_training` does, so that their
      memory per optimizer step is the configured one).
    preprocess: `preprocess(images, step) -> images`, applied to the global batch's images
      before anything else: the augmentation and normalisation on the device
      (`input.device_preprocessing.train_images_fn`). None: the batch arrives ready.
  """

  def loss_fn(params, batch_stats, images, labels, rng):
    logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                  train=True, mutable=['batch_stats'], rngs={'dropout': rng})
    with jax.named_scope('loss'):
      loss = cross_entropy(logits, labels, label_smoothing).mean()
      accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, (updates['batch_stats'], accuracy)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def accumulate(params, batch_stats, images, labels, rng):
    """Averages gradients over micro-batches, threading BN statistics through them."""
    micro = images.shape[0] // grad_accum_steps
    # Micro-batch k takes examples k, k+A, k+2A, …: every device keeps its own examples.
    split = lambda x: jnp.swapaxes(x.reshape((micro, grad_accum_steps) + x.shape[1:]), 0, 1)

    def body(carry, xs):
      stats, grads_sum, loss_sum, acc_sum = carry
      k, imgs, lbls = xs
      (loss, (stats, acc)), grads = grad_fn(params, stats, imgs, lbls, jax.random.fold_in(rng, k))
      grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
      return (stats, grads_sum, loss_sum + loss, acc_sum + acc), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (batch_stats, zeros, jnp.zeros(()), jnp.zeros(()))
    (stats, grads, loss, acc), _ = jax.lax.scan(
        body, init, (jnp.arange(grad_accum_steps), split(images), split(labels)))
    scale = 1.0 / grad_accum_steps
    return loss * scale, stats, acc * scale, jax.tree.map(lambda g: g * scale, grads)

  def train_step(state: TrainState, batch: Batch, rng: jax.Array):
    rng = jax.random.fold_in(rng, state.step)
    images = batch['image'] if preprocess is None else preprocess(batch['image'], state.step)
    if grad_accum_steps > 1:
      loss, batch_stats, accuracy, grads = accumulate(
          state.params, state.batch_stats, images, batch['label'], rng)
    else:
      (loss, (batch_stats, accuracy)), grads = grad_fn(
          state.params, state.batch_stats, images, batch['label'], rng)
    # The named scopes only label the compiled program's ops (benchmarks/cpu_profile.py groups
    # a profile's time by them); they change no computation.
    with jax.named_scope('optimizer'):
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema is not None and ema_decay:
      with jax.named_scope('ema'):
        # TF's EMA warm-up counts the step after the increment (1 on the first update).
        ema = optimizer.update_ema(ema, {'params': params, 'batch_stats': batch_stats},
                                   state.step + 1, ema_decay)
    with jax.named_scope('finite_check'):
      grad_norm = optax.tree.norm(grads)
      finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params)
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
      new_state = state.replace(
          step=state.step + 1,
          params=keep(params, state.params),
          batch_stats=keep(batch_stats, state.batch_stats),
          opt_state=keep(opt_state, state.opt_state),
          ema=keep(ema, state.ema),
          skipped_steps=state.skipped_steps + (1 - finite.astype(jnp.int32)))
    metrics = {'train_loss': loss, 'train_accuracy': accuracy, 'grad_norm': grad_norm,
               'nonfinite': 1 - finite.astype(jnp.int32)}
    return new_state, metrics

  return train_step


def make_eval_step(model) -> Callable[[TrainState, Batch], Metrics]:
  """Builds `eval_step(state, batch) -> sums` of loss/top-1/top-5 over the real examples.

  Sums (not means) so that the caller can add batches and divide once by `count`; padded
  examples carry `mask` 0. EMA metrics are prefixed `ema_` when the state has EMA weights.
  'top5' is top-`top5_k(model.num_classes)`: a 2-class model's top-5 is its top-2.
  """
  k = top5_k(model.num_classes)

  def sums(variables, batch):
    logits = model.apply(variables, batch['image'], train=False).astype(jnp.float32)
    labels, mask = batch['label'], batch['mask']
    loss = cross_entropy(logits, labels)
    top5 = jnp.any(jax.lax.top_k(logits, k)[1] == labels[:, None], axis=-1)
    return {'loss': jnp.sum(loss * mask),
            'top1': jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
            'top5': jnp.sum(top5 * mask)}

  def eval_step(state: TrainState, batch: Batch) -> Metrics:
    out = sums(state.variables(), batch)
    if state.ema is not None:
      out.update({f'ema_{k}': v for k, v in sums(state.variables(ema=True), batch).items()})
    out['count'] = jnp.sum(batch['mask'])
    return out

  return eval_step


def data_mesh(devices=None) -> Mesh:
  """A 1-D ('data',) mesh over all (or the given) devices."""
  devices = devices if devices is not None else jax.devices()
  # Auto axes: XLA propagates shardings (jax >= 0.10 defaults make_mesh to Explicit axes, which
  # demands sharding-typed code everywhere, e.g. flax's Dropout select fails under it).
  return jax.make_mesh((len(devices),), ('data',), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
  """(replicated, batch-sharded) shardings on the mesh."""
  return NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))


def jit_train_step(train_step, mesh: Mesh):
  """jit with the state replicated and donated, the batch sharded over 'data'."""
  replicated, batch_sharded = shardings(mesh)
  return jax.jit(train_step, in_shardings=(replicated, batch_sharded, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def jit_eval_step(eval_step, mesh: Mesh):
  """jit with the state replicated (not donated: training goes on) and the batch sharded."""
  replicated, batch_sharded = shardings(mesh)
  return jax.jit(eval_step, in_shardings=(replicated, batch_sharded),
                 out_shardings=replicated)


def global_batch(local_batch: dict[str, Any], mesh: Mesh) -> Batch:
  """Assembles each process's slice of the batch into global arrays sharded over 'data'."""
  _, batch_sharded = shardings(mesh)
  return jax.tree.map(
      functools.partial(jax.make_array_from_process_local_data, batch_sharded), local_batch)
