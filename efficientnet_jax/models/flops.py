"""Multiply-adds and parameter counts measured on the built network (no typed tables).

Both work abstractly (`jax.eval_shape`), so even L2 at 800 px costs no memory: the model is
traced once with every convolution and dense call intercepted, and the MACs of each layer are
computed from the shapes it really saw.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.models import layers

_COUNTED = (nn.Conv, nn.Dense, layers.DepthwiseConv)


def _layer_macs(module: nn.Module, inputs, outputs) -> int:
  """Multiply-adds of one convolution or dense call, for the whole batch."""
  in_features = inputs.shape[-1]
  out = outputs.shape
  if isinstance(module, nn.Conv):
    kernel = int(np.prod(module.kernel_size))
    return int(np.prod(out)) * kernel * (in_features // module.feature_group_count)
  if isinstance(module, layers.DepthwiseConv):
    return int(np.prod(out)) * module.kernel_size ** 2
  return int(np.prod(out)) * in_features  # Dense


def count_macs(model: nn.Module, resolution: int | None = None) -> int:
  """Multiply-adds per image of the convolutions and dense layers, as the paper counts FLOPs.

  Args:
    model: an EfficientNet (or any Linen module taking NHWC images).
    resolution: input side; defaults to `model.resolution`.

  Returns:
    Multiply-adds for one image at that resolution.
  """
  resolution = resolution or model.resolution
  total = 0

  def interceptor(next_fun, args, kwargs, context):
    nonlocal total
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and isinstance(context.module, _COUNTED):
      total += _layer_macs(context.module, args[0], out)
    return out

  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  return total


def count_params(model: nn.Module, resolution: int = 32) -> int:
  """Trainable parameters (the 'params' collection), from `jax.eval_shape(init)`."""
  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables['params']))


def flops_ratio(model: nn.Module, baseline: nn.Module) -> float:
  """FLOPs of a scaled model (at its resolution) over its baseline's (at the baseline's).

  With the compound rule, α·β²·γ² ≈ 2 should give a ratio ≈ 2^φ; this measures what the
  rounding of filters, repeats and resolution actually builds.
  """
  return count_macs(model) / count_macs(baseline)
