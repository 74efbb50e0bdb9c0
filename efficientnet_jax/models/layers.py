"""Building blocks shared by the EfficientNet modules: TF initialisers, BatchNorm, drop-path."""

from __future__ import annotations

import functools
import operator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
    gradient = self.gradient
    if gradient == 'auto':
      gradient = 'by_hand' if jax.default_backend() == 'cpu' else 'autodiff'
    if gradient == 'by_hand':
      y, mean, var = batch_norm_train(grouped, scale, bias, self.epsilon)
    elif gradient == 'autodiff':
      xf = grouped.astype(jnp.float32)
      axes = tuple(range(1, xf.ndim - 1))
      # One pass for both moments (E[x²] − E[x]²) keeps the reduction fused with the producer.
      mean = jnp.mean(xf, axes, keepdims=True)
      var = jnp.maximum(jnp.mean(jnp.square(xf), axes, keepdims=True) - jnp.square(mean), 0.0)
      mul = scale * jax.lax.rsqrt(var + self.epsilon)
      y = xf * mul + (bias - mean * mul)
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
  moments from one read (var = E[x²] − E[x]², clamped at 0). The backward pass
  (`_batch_norm_train_bwd`) is the closed form: two per-channel sums, Σg and Σg·x, then one
  elementwise pass for dx. Autodiff of the same forward gave XLA:CPU a backward with more
  fusions, each reading the activation again: B0's CPU train step ran 4–11% slower with it
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


def _explicit_padding(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
  """(before, after) padding of one spatial axis: TF-SAME or symmetric k//2."""
  if padding == 'symmetric':
    return kernel // 2, kernel // 2
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _live_taps(kernel: int, stride: int, out: int, start: int, real) -> tuple[int, ...]:
  """The taps i whose window (rows start + i + stride·o, o < out) meets a row in `real`.

  The other taps multiply padding only: on small maps (a 5×5 kernel on a 1×1 or 2×2 map, the
  last stages of a network at 32 px) most of them. Leaving them out skips exact zeros.
  """
  real = frozenset(real)
  return tuple(i for i in range(kernel)
               if any(start + i + stride * o in real for o in range(out)))


def _forward_taps(x: jax.Array, k: int, strides: tuple[int, int], pads, out_hw):
  """Per axis, the taps whose windows meet the input, not only its padding."""
  return tuple(_live_taps(k, s, out, 0, range(before, before + size))
               for s, (before, _), size, out in zip(strides, pads, x.shape[1:3], out_hw))


def _windows(xp: jax.Array, taps: tuple[tuple[int, ...], tuple[int, ...]],
             strides: tuple[int, int], out_h: int, out_w: int, start: tuple[int, int] = (0, 0)):
  """The strided windows of a padded input for the taps (i, j), each (i, j, window)."""
  sh, sw = strides
  for i in taps[0]:
    for j in taps[1]:
      top, left = start[0] + i, start[1] + j
      yield i, j, jax.lax.slice(xp, (0, top, left, 0), (xp.shape[0], top + sh * (out_h - 1) + 1,
                                                       left + sw * (out_w - 1) + 1, xp.shape[3]),
                                (1, sh, sw, 1))


def _shift_sum(xp: jax.Array, kernel: jax.Array, strides: tuple[int, int], out_h: int,
               out_w: int, taps: tuple[tuple[int, ...], tuple[int, ...]],
               start: tuple[int, int] = (0, 0)) -> jax.Array:
  """Σ over the taps of window × kernel tap: one elementwise loop once XLA fuses it."""
  out = None
  for i, j, window in _windows(xp, taps, strides, out_h, out_w, start):
    term = window * kernel[i, j, 0]
    out = term if out is None else out + term
  return out


def _shift_geometry(x: jax.Array, k: int, strides: tuple[int, int], padding: str):
  """The forward's per-axis (before, after) padding, padded size and output size."""
  pads = tuple(_explicit_padding(x.shape[axis], k, s, padding)
               for axis, s in ((1, strides[0]), (2, strides[1])))
  padded = (x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1]))
  out = ((padded[0] - k) // strides[0] + 1, (padded[1] - k) // strides[1] + 1)
  return pads, padded, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_shift(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                    padding: str) -> jax.Array:
  """Depthwise convolution as k·k shifted multiply-adds (one fused elementwise loop).

  XLA:CPU lowers grouped convolutions to a slow generic loop; this form runs several times faster
  there, forward and backward (figures: docs/benchmarks.md), and gives the same result. Taps
  whose windows meet only padding (small maps) are left out. The result is computed once
  (`_written_once`), not once per consumer. Its gradient is written by hand
  (`_depthwise_shift_bwd`): autodiff would keep every window for the backward pass and build the
  input gradient from k·k padded full-size arrays.

  Args:
    x: (N, H, W, C) input.
    kernel: (k, k, 1, C) kernel (cast to `x`'s dtype).
    strides: (height, width) strides, a tuple.
    padding: 'same' (TF-SAME) or 'symmetric'.
  """
  k = kernel.shape[0]
  pads, _, (out_h, out_w) = _shift_geometry(x, k, strides, padding)

  def forward(x, kernel):
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    return _shift_sum(xp, kernel.astype(x.dtype), strides, out_h, out_w,
                      _forward_taps(x, k, strides, pads, (out_h, out_w)))
  return _written_once(forward, x, kernel)


def _written_once(fn, *args):
  """`fn(*args)`, computed once into a buffer that its consumers read.

  XLA:CPU's loop fusion copies a cheap elementwise producer into each of its consumers, and a
  k·k-tap shift-sum counts as cheap: B0's compiled train step recomputed each depthwise output in
  five fusions (batch norm's statistics, its normalisation, its gradient, the input gradient's
  padding and sum). A conditional's result is a buffer, so a `lax.cond` with `fn` as both
  branches computes it once. The predicate (is the last argument's first element NaN) only has
  to be one that XLA cannot fold; both branches give the same result.
  """
  first = args[-1].reshape(-1)[0]
  return jax.lax.cond(first != first, fn, fn, *args)


def _row_chunks(rows: int, most: int = 8) -> int:
  """The largest divisor of `rows` that is at most `most`."""
  return max(d for d in range(1, most + 1) if rows % d == 0)


def _kernel_gradient(xp: jax.Array, g: jax.Array, live, strides: tuple[int, int]) -> dict:
  """{(i, j): Σ over examples and output positions of window(i, j) × g}, for the live taps.

  Summed in two stages, so that XLA:CPU reads the input and the gradient about once per kernel
  row rather than once per tap: the output rows are cut into b ≤ 8 equal chunks whose products
  are added elementwise, the k taps of one kernel row are stacked in one fused loop (each
  example's row of the gradient read once for all of them), and one reduction sums what is
  left, b times smaller than the products. One reduction per tap of the full product (the form
  before) had every window written out for it: 2–3.6× slower per layer at 128 px
  (docs/benchmarks.md).
  """
  out_h, out_w = g.shape[1:3]
  chunks = _row_chunks(out_h)
  rows = out_h // chunks
  g_chunks = [jax.lax.slice_in_dim(g, t * rows, (t + 1) * rows, axis=1) for t in range(chunks)]
  sums = {}
  for i in live[0]:
    partials = []
    for j in live[1]:
      terms = [window * g_chunks[t] for t in range(chunks)
               for _, _, window in _windows(xp, ((i,), (j,)), strides, rows, out_w,
                                            start=(strides[0] * t * rows, 0))]
      partials.append(functools.reduce(operator.add, terms))
    row_sums = jnp.sum(jnp.stack(partials, axis=2), axis=(0, 1, 3))
    sums.update({(i, j): row_sums[t] for t, j in enumerate(live[1])})
  return sums


def _depthwise_shift_fwd(x, kernel, strides, padding):
  # Only the input is kept: the backward pass cuts the windows again.
  return depthwise_shift(x, kernel, strides, padding), (x, kernel)


def _depthwise_shift_bwd(strides, padding, residuals, g):
  """Input gradient as one more shift-sum; kernel gradient by `_kernel_gradient`.

  The input gradient is the transposed convolution: the output gradient, dilated by the stride
  and padded by k − 1, correlated with the kernel flipped in both spatial axes, evaluated only
  at the unpadded input's positions. As one fused loop it costs what the forward pass costs,
  where XLA's own transpose of the k·k strided slices sums k·k padded copies of the gradient (the
  B0 train step at 128 px: 1.3× faster with this form; docs/benchmarks.md). Taps that meet only
  padding or the dilation's zeros are left out, in both gradients.
  """
  x, kernel = residuals
  k = kernel.shape[0]
  sh, sw = strides
  pads, (hp, wp), (out_h, out_w) = _shift_geometry(x, k, strides, padding)
  w = kernel.astype(x.dtype)
  zero = jnp.zeros((), g.dtype)
  g_dilated = jax.lax.pad(g, zero, ((0, 0, 0), (k - 1, hp - (out_h - 1) * sh - 1, sh - 1),
                                    (k - 1, wp - (out_w - 1) * sw - 1, sw - 1), (0, 0, 0)))
  # Row p of the padded input is output row p of this correlation; the input's rows start at
  # the forward's padding, and the gradient's real rows sit at k − 1 + s·o.
  taps = tuple(_live_taps(k, 1, size, before, [k - 1 + s * o for o in range(out)])
               for s, (before, _), size, out in zip(strides, pads, x.shape[1:3], (out_h, out_w)))
  dx = _shift_sum(g_dilated, w[::-1, ::-1], (1, 1), x.shape[1], x.shape[2], taps,
                  start=(pads[0][0], pads[1][0]))
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  live = _forward_taps(x, k, strides, pads, (out_h, out_w))
  sums = _kernel_gradient(xp, g, live, strides)
  # Taps that meet only padding have a zero gradient; the stack is in kernel order.
  none = jnp.zeros(kernel.shape[-1:], g.dtype)
  dw = jnp.stack([sums.get((i, j), none) for i in range(k) for j in range(k)])
  return dx, dw.reshape(kernel.shape).astype(kernel.dtype)


depthwise_shift.defvjp(_depthwise_shift_fwd, _depthwise_shift_bwd)


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
    impl = self.implementation
    if impl == 'auto':
      impl = 'shift' if jax.default_backend() == 'cpu' else 'conv'
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
  quick start's step), and the product ran the step 2–8% faster (docs/benchmarks.md). Elsewhere
  it is XLA's convolution.

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
    impl = self.implementation
    if impl == 'auto':
      impl = 'dot' if jax.default_backend() == 'cpu' else 'conv'
    if impl == 'dot':
      return jnp.dot(x, kernel[0, 0])
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
    multiple = self.channel_multiple
    if multiple is None:
      multiple = 4 if jax.default_backend() == 'cpu' else 1
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
