"""The training state: everything a resumed run restores (importable without TensorFlow)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from efficientnet_jax.models import efficientnet as model_lib


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data position (which is `step`).

  Attributes:
    step: number of optimizer steps taken (also the data position: batches consumed).
    params: model parameters (float32).
    batch_stats: BN running statistics.
    opt_state: optax state.
    ema: {'params', 'batch_stats'} exponential moving averages, or None when EMA is off.
    skipped_steps: steps whose loss or gradients were NaN/Inf and so were not applied.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema: Any
  skipped_steps: jax.Array

  def variables(self, ema: bool = False) -> dict[str, Any]:
    """The variables `model.apply` takes, from the raw or the EMA weights."""
    if ema:
      return dict(self.ema)
    return {'params': self.params, 'batch_stats': self.batch_stats}


def create_train_state(model: model_lib.EfficientNet, tx: optax.GradientTransformation,
                       rng: jax.Array, image_size: int, use_ema: bool) -> TrainState:
  """Initialises the model and optimizer (jit this with replicated out_shardings)."""
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  variables = model.init({'params': rng, 'dropout': rng}, images, train=False)
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  ema = {'params': params, 'batch_stats': batch_stats} if use_ema else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), ema=ema,
                    skipped_steps=jnp.zeros((), jnp.int32))
