"""EfficientNet and EfficientNet-Lite as pure-functional Flax Linen modules.

`model.init(rng, images)` gives the variables ('params' and 'batch_stats');
`model.apply(variables, images, train=False)` gives logits. Training needs
`mutable=['batch_stats']` and a 'dropout' RNG (used by head dropout and stochastic depth).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from efficientnet_jax.models import layers
from efficientnet_jax.models import scaling

Dtype = Any


class SqueezeExcite(nn.Module):
  """Channel gating: spatial mean → reduce (bias) → act → expand (bias) → sigmoid → scale.

  The two 1×1 convolutions act on a 1×1 map, so they are written as Dense layers on the pooled
  vector (same parameters as a 1×1 conv, without a spatial convolution on the hot path).
  """
  reduced_filters: int
  activation: Callable[[jax.Array], jax.Array]
  dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(self.dtype)
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=layers.conv_kernel_init())
    s = dense(self.reduced_filters, name='reduce')(pooled)
    s = dense(x.shape[-1], name='expand')(self.activation(s))
    return x * nn.sigmoid(s)[:, None, None, :].astype(x.dtype)


class MBConvBlock(nn.Module):
  """Inverted-residual block: [expand 1×1] → depthwise k×k → [SE] → project 1×1 → [skip]."""
  args: scaling.BlockArgs
  drop_path_rate: float
  activation: Callable[[jax.Array], jax.Array]
  dtype: Dtype
  padding: str
  bn: Callable[..., nn.Module]
  depthwise_impl: str = 'auto'

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool) -> jax.Array:
    a = self.args
    x = inputs
    filters = a.input_filters * a.expand_ratio
    if a.expand_ratio != 1:
      x = layers.PointwiseConv(filters, dtype=self.dtype, name='expand_conv')(x)
      x = self.activation(self.bn(name='expand_bn')(x, train))
    x = layers.DepthwiseConv(a.kernel_size, a.strides, self.padding, self.depthwise_impl,
                             self.dtype, name='depthwise_conv')(x)
    x = self.activation(self.bn(name='depthwise_bn')(x, train))
    if a.se_ratio:
      # SE width comes from the block *input*, not the expanded width.
      reduced = max(1, int(a.input_filters * a.se_ratio))
      x = SqueezeExcite(reduced, self.activation, self.dtype, name='se')(x)
    x = layers.PointwiseConv(a.output_filters, dtype=self.dtype, name='project_conv')(x)
    x = self.bn(name='project_bn')(x, train)
    if a.has_skip:
      if train and self.drop_path_rate > 0:
        x = layers.drop_path(x, self.drop_path_rate, self.make_rng('dropout'))
      x = x + inputs
    return x


class EfficientNet(nn.Module):
  """EfficientNet (B0–B8, L2, any compound scaling) and EfficientNet-Lite.

  Attributes:
    width: width coefficient (filters scale by it, rounded to multiples of 8).
    depth: depth coefficient (stage repeats scale by it, rounded up).
    resolution: native input resolution (metadata for pipelines and summaries; any size runs).
    dropout_rate: dropout before the classifier.
    drop_path_rate: stochastic-depth rate of the last block; block i of N uses rate · i / N.
    lite: EfficientNet-Lite (no SE, ReLU6, fixed stem and head, first/last stage unscaled).
    num_classes: classifier outputs.
    include_top: if False, return the pooled head features instead of logits.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters and BN statistics stay float32.
    padding: 'same' (TF-SAME, for TF-origin weights) or 'symmetric' (PyTorch-origin weights).
    remat: rematerialise each block in the backward pass (memory for compute).
    bn_group_size: examples per BN statistics group; None = the whole (global) batch.
    bn_momentum: BN moving-average decay (TF/Flax semantics).
    bn_epsilon: BN epsilon.
    depthwise_impl: 'auto' (default), 'conv' or 'shift'; see `layers.DepthwiseConv`.
    block_strings: the baseline stages as TF block strings.
  """
  width: float = 1.0
  depth: float = 1.0
  resolution: int = scaling.BASE_RESOLUTION
  dropout_rate: float = 0.2
  drop_path_rate: float = scaling.DEFAULT_DROP_PATH_RATE
  lite: bool = False
  num_classes: int = 1000
  include_top: bool = True
  dtype: Dtype = jnp.float32
  padding: str = 'same'
  remat: bool = False
  bn_group_size: int | None = None
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  depthwise_impl: str = 'auto'
  block_strings: tuple[str, ...] = scaling.B0_BLOCKS

  @property
  def spec(self) -> scaling.NetworkSpec:
    """The concrete network (stem, head and flat block list) these coefficients build."""
    return scaling.build_network(self.width, self.depth, lite=self.lite,
                                 block_strings=self.block_strings)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               return_endpoints: bool = False):
    """Runs the network.

    Args:
      images: NHWC float images, normalised the way the weights expect.
      train: batch statistics, dropout and stochastic depth on (needs a 'dropout' RNG and
        `mutable=['batch_stats']`).
      return_endpoints: also return a dict with reduction_1..5 (feature maps at strides
        2..32) and 'features' (the head's feature map).

    Returns:
      Logits (float32, shape [N, num_classes]), or pooled head features if not include_top;
      with return_endpoints, a tuple (output, endpoints).
    """
    spec = self.spec
    act = nn.relu6 if self.lite else nn.silu
    bn = functools.partial(layers.BatchNorm, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                           dtype=self.dtype, group_size=self.bn_group_size)
    block_cls = nn.remat(MBConvBlock, static_argnums=(2,)) if self.remat else MBConvBlock

    x = images.astype(self.dtype)
    x = layers.StemConv(spec.stem_filters, 3, (2, 2), self.padding, dtype=self.dtype,
                        name='stem_conv')(x)
    x = act(bn(name='stem_bn')(x, train))

    endpoints = {}
    endpoint_of = {i: name for name, i in scaling.endpoint_blocks(spec).items()}
    rates = scaling.drop_path_rates(len(spec.blocks), self.drop_path_rate)
    for i, block in enumerate(spec.blocks):
      x = block_cls(block, rates[i], act, self.dtype, self.padding, bn, self.depthwise_impl,
                    name=f'blocks_{i}')(x, train)
      if i in endpoint_of:
        endpoints[endpoint_of[i]] = x

    x = layers.PointwiseConv(spec.head_filters, dtype=self.dtype, name='head_conv')(x)
    x = act(bn(name='head_bn')(x, train))
    endpoints['features'] = x
    x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32)
    if self.include_top:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=layers.dense_kernel_init,
                   name='classifier')(x.astype(self.dtype))
      x = x.astype(jnp.float32)
    return (x, endpoints) if return_endpoints else x


_OVERRIDABLE = tuple(f.name for f in dataclasses.fields(EfficientNet)
                     if f.name not in ('parent', 'name'))


def create_model(name: str, **overrides) -> EfficientNet:
  """Builds a published variant, optionally with overridden fields.

  Args:
    name: one of `scaling.MODEL_NAMES` (b0 … b8, l2, lite0 … lite4).
    **overrides: any `EfficientNet` field, e.g. `num_classes=10, dtype=jnp.bfloat16`, or
      `width=…, depth=…, resolution=…` for a custom scaling of that variant's family
      (`create_model('b0', **scaling.compound(1.0).as_overrides())`).

  Returns:
    An `EfficientNet` module.

  Raises:
    ValueError: on an unknown name (the message lists the valid ones) or override.
  """
  variant = scaling.get_variant(name)
  unknown = sorted(set(overrides) - set(_OVERRIDABLE))
  if unknown:
    raise ValueError(f'Unknown create_model override(s) {unknown}; valid: '
                     f'{", ".join(_OVERRIDABLE)}.')
  fields = dict(width=variant.width, depth=variant.depth, resolution=variant.resolution,
                dropout_rate=variant.dropout, lite=variant.lite)
  fields.update(overrides)
  if isinstance(fields.get('dtype'), str):
    fields['dtype'] = jnp.dtype(fields['dtype'])
  return EfficientNet(**fields)


def model_from_config(config, **overrides) -> EfficientNet:
  """The `EfficientNet` a config describes (variant, compound φ or explicit width/depth).

  Args:
    config: the config; only the model's own keys are read.
    **overrides: `EfficientNet` fields that replace the config's (e.g. a BN momentum derived
      by the caller).
  """
  fields: dict[str, Any] = dict(
      dropout_rate=config.dropout_rate, drop_path_rate=config.drop_path_rate,
      num_classes=config.num_classes, dtype=jnp.dtype(config.dtype), remat=config.remat,
      padding=config.padding, bn_group_size=config.bn_group_size or None,
      bn_momentum=config.bn_momentum, depthwise_impl=config.depthwise_impl)
  if config.phi is not None:
    fields.update(scaling.compound(config.phi, config.alpha, config.beta,
                                   config.gamma).as_overrides())
  if config.width is not None:
    fields['width'] = config.width
  if config.depth is not None:
    fields['depth'] = config.depth
  if config.image_size:
    fields['resolution'] = config.image_size
  fields.update(overrides)
  return create_model(config.model, **fields)
