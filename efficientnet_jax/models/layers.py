"""Building blocks shared by the EfficientNet modules: TF initialisers, BatchNorm, drop-path."""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.models.depthwise_shift import depthwise_shift

Dtype = Any


def conv_kernel_init(depthwise: bool = False):
  """TF's conv initialiser: N(0, sqrt(2 / fan_out)), untruncated.

  fan_out = kh·kw·out_channels, except for depthwise kernels where TF's kernel shape is
  (kh, kw, C, 1) and so fan_out = kh·kw. Flax's variance_scaling would use kh·kw·C there, which
  makes depthwise kernels √C too small. A 2-D kernel (a 1×1 conv written as Dense) has
  fan_out = out.
  """
  def init(key, shape, dtype=jnp.float32):
    receptive = int(np.prod(shape[:-2]))
    fan_out = receptive if depthwise else receptive * shape[-1]
    return jax.random.normal(key, shape, dtype) * np.sqrt(2.0 / fan_out).astype(dtype)
  return init


def dense_kernel_init(key, shape, dtype=jnp.float32):
  """TF's classifier initialiser: U(±1 / sqrt(num_outputs))."""
  limit = 1.0 / np.sqrt(shape[-1])
  return jax.random.uniform(key, shape, dtype, -limit, limit)


def conv_padding(kernel_size: int, padding: str):
  """'same' is TF-SAME (asymmetric for stride 2 on even inputs); 'symmetric' pads k//2 per side."""
  if padding == 'same':
    return 'SAME'
  if padding == 'symmetric':
    return ((kernel_size // 2, kernel_size // 2),) * 2
  raise ValueError(f"padding must be 'same' (TF weights) or 'symmetric' (PyTorch-origin "
                   f'weights), got {padding!r}.')


# Each per-backend choice of this module, by name: (the CPU's form, the accelerators' form), the
# values it may take.
FORMS = {
    'depthwise': ('shift', 'conv'),
    'batch_norm_gradient': ('by_hand', 'autodiff'),
    'pointwise': ('dot', 'conv'),
    'stem_channel_multiple': (4, 1),
}
_forced_forms: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    'forced_forms', default={})


@contextlib.contextmanager
def forced_forms(**choices: Any) -> Iterator[None]:
  """Within the block, models traced take these forms where their attribute says 'auto'.

  For measuring one form against another in the same process (`benchmarks/paired_step.py`):
  the choice is made when the model is traced, so a step built and compiled inside the block
  keeps it. Names and values are those of `FORMS`; an explicit attribute (not 'auto') wins.

  Raises:
    ValueError: an unknown name or value.
  """
  for name, value in choices.items():
    if name not in FORMS:
      raise ValueError(f'Unknown form {name!r}; forms: {", ".join(FORMS)}.')
    if value not in FORMS[name]:
      raise ValueError(f'Form {name}={value!r} is not one of {FORMS[name]}.')
  token = _forced_forms.set({**_forced_forms.get(), **choices})
  try:
    yield
  finally:
    _forced_forms.reset(token)


def for_backend(choice: Any, form: str) -> Any:
  """`choice`, with 'auto' resolved to `form`'s CPU form on XLA:CPU, its other one elsewhere.

  The CPU forms below (and `depthwise_shift`) run faster on XLA:CPU; accelerators keep the
  program they had, so what a GPU or TPU compiles never depends on these choices. Inside
  `forced_forms`, the forced value of `form` replaces the backend's.
  """
  if choice != 'auto':
    return choice
  forced = _forced_forms.get()
  if form in forced:
    return forced[form]
  on_cpu, elsewhere = FORMS[form]
  return on_cpu if jax.default_backend() == 'cpu' else elsewhere


class BatchNorm(nn.Module):
  """BatchNorm with float32 statistics and optional grouped (per-replica-style) statistics.

  Variables match `flax.linen.BatchNorm` ('scale', 'bias'; batch_stats 'mean', 'var'), and the
  moving averages follow TF/Flax semantics: `ema = momentum·ema + (1 − momentum)·batch`.

  Attributes:
    momentum: moving-average decay of the running statistics.
    epsilon: added to the variance.
    dtype: output dtype (statistics and normalisation are computed in float32).
    group_size: examples per statistics group. None (default) uses the whole batch, which under
      `jax.jit` on a sharded batch is the global batch (synchronised BN). A smaller group reproduces
      TF-TPU per-replica BN; groups are consecutive runs of the batch, so they stay device-local
      when the group size is a multiple of the per-device batch or divides it.
    gradient: training's backward pass: 'by_hand' (`batch_norm_train`, faster on XLA:CPU),
      'autodiff' or 'auto' ('by_hand' on CPU, 'autodiff' elsewhere).
  """
  momentum: float = 0.99
  epsilon: float = 1e-3
  dtype: Dtype | None = None
  group_size: int | None = None
  gradient: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    out_dtype = self.dtype or x.dtype

    if not train:
      mul = scale * jax.lax.rsqrt(ra_var.value + self.epsilon)
      return (x.astype(jnp.float32) * mul + (bias - ra_mean.value * mul)).astype(out_dtype)

    batch = x.shape[0]
    group = self.group_size or batch
    if batch % group:
      raise ValueError(f'BatchNorm group_size {group} must divide the batch size {batch}; set '
                       'config.bn_group_size to a divisor of the (per-step) batch.')
    grouped = x.reshape((batch // group, group) + x.shape[1:])
    gradient = for_backend(self.gradient, 'batch_norm_gradient')
    if gradient == 'by_hand':
      y, mean, var = batch_norm_train(grouped, scale, bias, self.epsilon)
    elif gradient == 'autodiff':  # The same forward, differentiated by JAX.
      y, mean, var = _batch_norm_train_fwd(grouped, scale, bias, self.epsilon)[0]
    else:
      raise ValueError(f"BatchNorm gradient must be 'auto', 'by_hand' or 'autodiff', got "
                       f'{gradient!r}.')
    y = y.reshape(x.shape).astype(out_dtype)

    if not self.is_initializing():
      reduce_axes = tuple(range(mean.ndim - 1))
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1 - m) * jnp.mean(mean, reduce_axes)
      ra_var.value = m * ra_var.value + (1 - m) * jnp.mean(var, reduce_axes)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
  """Batch norm with the batch's statistics, gradient by hand: (y, mean, var), all float32.

  `x` is grouped (G, n, H, W, C): statistics per group and channel over n·H·W values, both
  moments from one read (var = E[x²] − E[x]², clamped at 0, keeps the reductions fused with the
  producer). The backward pass
  (`_batch_norm_train_bwd`) is the closed form: two per-channel sums, Σg and Σg·x, then one
  elementwise pass for dx. Autodiff of the same forward gave XLA:CPU a backward with more
  fusions, each reading the activation again: B0's CPU train step ran 5–12% slower with it
  (docs/benchmarks.md). Residuals: `x` in its own dtype and per-channel vectors.
  """
  return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  xf = x.astype(jnp.float32)
  count = xf.shape[1] * xf.shape[2] * xf.shape[3]
  mean = jnp.sum(xf, axis=(1, 2, 3), keepdims=True) / count
  raw_var = jnp.sum(xf * xf, axis=(1, 2, 3), keepdims=True) / count - mean * mean
  var = jnp.maximum(raw_var, 0.0)
  rstd = jax.lax.rsqrt(var + epsilon)
  mul = scale * rstd
  y = xf * mul + (bias - mean * mul)
  return (y, mean, var), (x, scale, mean, rstd, raw_var > 0)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
  """y = x·m + (b − μ·m), m = s·(v + ε)^−½, μ = Σx/N, v = Σx²/N − μ²; (dx, ds, db)."""
  del epsilon
  x, scale, mean, rstd, positive = residuals
  g, g_mean, g_var = cotangents  # The statistics' own cotangents: zero unless a loss uses them.
  xf = x.astype(jnp.float32)
  count = xf.shape[1] * xf.shape[2] * xf.shape[3]
  g_sum = jnp.sum(g, axis=(1, 2, 3), keepdims=True)
  g_centred = jnp.sum(g * xf, axis=(1, 2, 3), keepdims=True) - mean * g_sum  # Σg·(x − μ).
  mul = scale * rstd
  # Through m into v (zero where the clamp held v at 0), then v's and y's paths into μ.
  g_var = jnp.where(positive, g_var - 0.5 * g_centred * scale * rstd ** 3, 0.0)
  g_mean = g_mean - mul * g_sum - 2.0 * mean * g_var
  dx = g * mul + g_mean / count + (2.0 / count) * g_var * xf
  return (dx.astype(x.dtype), jnp.sum(g_centred * rstd, axis=(0, 1, 2, 3)),
          jnp.sum(g_sum, axis=(0, 1, 2, 3)))


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class DepthwiseConv(nn.Module):
  """k×k depthwise convolution (no bias) with the kernel layout of a grouped `nn.Conv`.

  Attributes:
    kernel_size: k.
    strides: (height, width) strides.
    padding: 'same' (TF-SAME) or 'symmetric'.
    implementation: 'conv' (XLA grouped convolution, cuDNN on GPU), 'shift' (k·k shifted
      multiply-adds, much faster on XLA:CPU) or 'auto' ('shift' on CPU, 'conv' elsewhere).
    dtype: compute dtype.
  """
  kernel_size: int
  strides: tuple[int, int] = (1, 1)
  padding: str = 'same'
  implementation: str = 'auto'
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    k = self.kernel_size
    kernel = self.param('kernel', conv_kernel_init(depthwise=True), (k, k, 1, features),
                        jnp.float32)
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    impl = for_backend(self.implementation, 'depthwise')
    if impl == 'shift':
      return depthwise_shift(x, kernel, tuple(self.strides), self.padding)
    if impl != 'conv':
      raise ValueError(f"depthwise implementation must be 'auto', 'conv' or 'shift', got {impl!r}.")
    return jax.lax.conv_general_dilated(
        x, kernel.astype(dtype), tuple(self.strides), conv_padding(k, self.padding),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=features)


class PointwiseConv(nn.Module):
  """A 1×1 convolution without bias, with `nn.Conv`'s variables ((1, 1, C_in, C_out) kernel).

  On XLA:CPU it is one matrix product over the channels: for XLA:CPU's convolution, B0's
  compiled train step wrote activations out in channel-major order first (transposes: 11% of the
  quick start's step), and the product ran the step 2–8% faster (docs/benchmarks.md). The
  product is taken on the activations flattened to (rows, channels): on the 4-D array, XLA:CPU
  wrote the output gradient out transposed for the kernel's gradient and summed it with a slow
  product (B0's step at 128 px 1.3× longer; the same values up to the order of the sums).
  Elsewhere it is XLA's convolution.

  Attributes:
    features: output channels.
    implementation: 'conv', 'dot' or 'auto' ('dot' on CPU, 'conv' elsewhere).
    dtype: compute dtype.
  """
  features: int
  implementation: str = 'auto'
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', conv_kernel_init(), (1, 1, x.shape[-1], self.features),
                        jnp.float32)
    dtype = self.dtype or x.dtype
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    impl = for_backend(self.implementation, 'pointwise')
    if impl == 'dot':
      rows = x.reshape(-1, x.shape[-1])
      return jnp.dot(rows, kernel[0, 0]).reshape(x.shape[:-1] + (self.features,))
    if impl != 'conv':
      raise ValueError(f"pointwise implementation must be 'auto', 'conv' or 'dot', got {impl!r}.")
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class StemConv(nn.Module):
  """The stem: a dense k×k convolution without bias, with `nn.Conv`'s variables.

  On XLA:CPU the input channels are padded with zeros to a multiple of 4 (RGB → 4), and the
  kernel with zero input rows to match: its convolution kernel for 3 input channels ran the
  stem forward and backward 1.1–2× slower than for 4 (docs/benchmarks.md). The zeros
  add exact zeros, so the result is the convolution's up to rounding; the variable keeps its
  (k, k, C_in, features) shape.

  Attributes:
    features: output channels.
    kernel_size: k.
    strides: (height, width) strides.
    padding: 'same' (TF-SAME) or 'symmetric'.
    channel_multiple: pad the input channels to a multiple of this; None: 4 on CPU, 1 (no
      padding) elsewhere.
    dtype: compute dtype.
  """
  features: int
  kernel_size: int = 3
  strides: tuple[int, int] = (2, 2)
  padding: str = 'same'
  channel_multiple: int | None = None
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, channels = self.kernel_size, x.shape[-1]
    kernel = self.param('kernel', conv_kernel_init(), (k, k, channels, self.features),
                        jnp.float32)
    dtype = self.dtype or x.dtype
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    multiple = self.channel_multiple or for_backend('auto', 'stem_channel_multiple')
    extra = -channels % multiple
    if extra:
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
      kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, extra), (0, 0)))
    return jax.lax.conv_general_dilated(
        x, kernel, tuple(self.strides), conv_padding(k, self.padding),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Stochastic depth: keeps each example's branch with probability 1 − rate, scaled by 1/keep."""
  keep = 1.0 - rate
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  mask = jnp.floor(keep + jax.random.uniform(rng, shape, jnp.float32))
  return x * (mask / keep).astype(x.dtype)
