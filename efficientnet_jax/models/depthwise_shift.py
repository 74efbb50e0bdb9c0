"""The depthwise convolution as k·k shifted multiply-adds: the CPU's form, gradient by hand.

XLA:CPU lowers grouped convolutions to a slow generic loop; `depthwise_shift` computes the same
convolution from strided windows of the padded input, leaves out the taps that meet only
padding, and writes its gradient by hand (`layers.DepthwiseConv` chooses it on CPU).
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp


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
