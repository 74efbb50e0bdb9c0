"""Multiply-adds and parameter counts measured on the built network (no typed tables).

Both work abstractly (`jax.eval_shape`), so even L2 at 800 px costs no memory: the model is
traced once with every convolution and dense call intercepted, and the MACs of each layer are
computed from the shapes it really saw.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.models import layers

_COUNTED = (nn.Conv, nn.Dense, layers.DepthwiseConv, layers.StemConv, layers.PointwiseConv)


def _layer_macs(module: nn.Module, inputs, outputs) -> int:
  """Multiply-adds of one convolution or dense call, for the whole batch."""
  in_features = inputs.shape[-1]
  out = outputs.shape
  if isinstance(module, nn.Conv):
    kernel = int(np.prod(module.kernel_size))
    return int(np.prod(out)) * kernel * (in_features // module.feature_group_count)
  if isinstance(module, layers.DepthwiseConv):
    return int(np.prod(out)) * module.kernel_size ** 2
  if isinstance(module, layers.StemConv):  # The real input channels, not the CPU's padding.
    return int(np.prod(out)) * module.kernel_size ** 2 * in_features
  return int(np.prod(out)) * in_features  # Dense, PointwiseConv


@dataclasses.dataclass(frozen=True)
class LayerCount:
  """One convolution or dense call as the trace saw it.

  Attributes:
    path: module names from the network's root, e.g. ('blocks_3', 'expand_conv').
    kernel_size: (height, width) of a convolution's kernel; () for a dense layer.
    input_shape: the shape of the input it was called on (batch of one).
    macs: its multiply-adds for one image.
  """
  path: tuple[str, ...]
  kernel_size: tuple[int, ...]
  input_shape: tuple[int, ...]
  macs: int


@dataclasses.dataclass(frozen=True)
class Trace:
  """What one abstract `init` of a network shows: its counted layers and its parameters."""
  layers: tuple[LayerCount, ...]
  params: Any  # The 'params' collection, as jax.ShapeDtypeStruct leaves.


def _kernel_size(module: nn.Module) -> tuple[int, ...]:
  if isinstance(module, nn.Conv):
    return tuple(module.kernel_size)
  if isinstance(module, (layers.DepthwiseConv, layers.StemConv)):
    return (module.kernel_size, module.kernel_size)
  if isinstance(module, layers.PointwiseConv):
    return (1, 1)
  return ()  # Dense


def trace(model: nn.Module, resolution: int | None = None) -> Trace:
  """Traces `model.init` abstractly once, recording every convolution and dense call.

  Tracing a large network takes seconds of Python, and the same networks are asked for again
  (parameters and MACs of one variant, a solver's candidates, the summary's tables), so traces
  of hashable modules (Linen modules compare by their fields) are memoised per process.

  Args:
    model: an EfficientNet (or any Linen module taking NHWC images).
    resolution: input side; defaults to `model.resolution`.

  Returns:
    The `Trace`: the counted layers in call order and the abstract parameters (shared between
    callers: do not modify).
  """
  resolution = resolution or model.resolution
  try:
    return _memoised_trace(model, resolution)
  except TypeError:  # An unhashable module (a field holding a list or dict): trace it each time.
    return _trace(model, resolution)


@functools.lru_cache(maxsize=64)
def _memoised_trace(model: nn.Module, resolution: int) -> Trace:
  return _trace(model, resolution)


def _trace(model: nn.Module, resolution: int) -> Trace:
  counted = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and isinstance(context.module, _COUNTED):
      counted.append(LayerCount(
          path=tuple(context.module.path), kernel_size=_kernel_size(context.module),
          input_shape=tuple(args[0].shape), macs=_layer_macs(context.module, args[0], out)))
    return out

  images = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  with nn.intercept_methods(interceptor):
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  return Trace(layers=tuple(counted), params=variables['params'])


def count_macs(model: nn.Module, resolution: int | None = None) -> int:
  """Multiply-adds per image of the convolutions and dense layers, as the paper counts FLOPs.

  Args:
    model: an EfficientNet (or any Linen module taking NHWC images).
    resolution: input side; defaults to `model.resolution`.

  Returns:
    Multiply-adds for one image at that resolution: the sum over `trace(...).layers`.
  """
  return sum(layer.macs for layer in trace(model, resolution).layers)


def tree_size(params: Any) -> int:
  """Number of values in a (possibly abstract) parameter tree."""
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


def count_params(model: nn.Module, resolution: int | None = None) -> int:
  """Trainable parameters (the 'params' collection), from the abstract `init` of `trace`.

  `resolution` only sets the input the network is traced at (`model.resolution`, else 32).
  """
  return tree_size(trace(model, resolution or getattr(model, 'resolution', None) or 32).params)


def flops_ratio(model: nn.Module, baseline: nn.Module) -> float:
  """FLOPs of a scaled model (at its resolution) over its baseline's (at the baseline's).

  With the compound rule, α·β²·γ² ≈ 2 should give a ratio ≈ 2^φ; this measures what the
  rounding of filters, repeats and resolution actually builds.
  """
  return count_macs(model) / count_macs(baseline)
