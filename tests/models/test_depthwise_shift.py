"""The depthwise convolution's CPU form (k·k shifted multiply-adds, gradient by hand)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_helpers
from efficientnet_jax.models import depthwise_shift as shift
from efficientnet_jax.models import layers


@pytest.mark.parametrize('kernel_size,stride,padding,size', [
    (3, 1, 'same', 9), (5, 2, 'same', 9), (5, 2, 'same', 10), (3, 2, 'symmetric', 9),
    (5, 1, 'symmetric', 8)])
def test_depthwise_shift_equals_grouped_convolution(kernel_size, stride, padding, size):
  # 'auto' picks the shift form on CPU, the tests' tiny configs the grouped convolution: both
  # forms must be the same function, forward and backward, for every kernel, stride and padding
  # the variants use (odd and even input sizes give TF-SAME's asymmetric padding both ways).
  x = model_helpers.images((2, size, size, 6))
  convs = {impl: layers.DepthwiseConv(kernel_size, (stride, stride), padding, impl)
           for impl in ('shift', 'conv')}
  variables = convs['conv'].init(jax.random.key(0), x)

  def loss(impl, variables, x):
    return jnp.sum(jnp.sin(convs[impl].apply(variables, x)))

  outputs = {impl: conv.apply(variables, x) for impl, conv in convs.items()}
  assert outputs['shift'].shape == outputs['conv'].shape == (2, -(-size // stride),
                                                             -(-size // stride), 6)
  np.testing.assert_allclose(outputs['shift'], outputs['conv'], rtol=1e-5, atol=1e-5)
  grads = {impl: jax.grad(functools.partial(loss, impl), argnums=(0, 1))(variables, x)
           for impl in convs}
  for shift_grad, conv_grad in zip(jax.tree.leaves(grads['shift']), jax.tree.leaves(grads['conv'])):
    np.testing.assert_allclose(shift_grad, conv_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kernel_size,strides,padding,shape', [
    (3, (2, 2), 'same', (2, 9, 11, 4)), (5, (2, 2), 'same', (1, 10, 7, 3)),
    (5, (1, 1), 'symmetric', (2, 6, 9, 3)), (3, (1, 2), 'same', (1, 8, 8, 2)),
    # The kernel gradient's row chunks: 6 chunks of 2 rows; 11 rows, one chunk.
    (3, (1, 1), 'same', (2, 12, 5, 3)), (3, (2, 2), 'same', (1, 22, 6, 2)),
    # Small maps, where some taps meet only padding and are left out.
    (5, (1, 1), 'same', (2, 1, 2, 3)), (5, (2, 2), 'same', (1, 2, 3, 2)),
    (3, (1, 1), 'symmetric', (2, 1, 1, 2))])
def test_depthwise_shift_gradient_by_hand_equals_autodiff(kernel_size, strides, padding, shape):
  # The hand-written backward pass against JAX's autodiff of the same forward sum, on
  # non-square inputs and unequal strides; bfloat16 inputs keep their dtypes.
  x = model_helpers.images(shape)
  kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 1, shape[-1]))
  g = jax.random.normal(jax.random.key(2), shift.depthwise_shift(x, kernel, strides,
                                                                  padding).shape)
  by_hand = jax.vjp(lambda a, b: shift.depthwise_shift(a, b, strides, padding), x, kernel)[1](g)
  autodiff = jax.vjp(lambda a, b: shift.depthwise_shift.fun(a, b, strides, padding),
                     x, kernel)[1](g)
  for ours, reference in zip(by_hand, autodiff):
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
  dx, dw = jax.vjp(lambda a, b: shift.depthwise_shift(a, b, strides, padding),
                   x.astype(jnp.bfloat16), kernel)[1](g.astype(jnp.bfloat16))
  assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32


def test_depthwise_shift_kernel_gradient_row_chunks():
  # Up to 8 equal chunks of the output rows are summed elementwise before the reduction.
  assert [shift._row_chunks(rows) for rows in (1, 2, 7, 11, 12, 16, 32, 112)] == [
      1, 2, 7, 1, 6, 8, 8, 8]


def test_depthwise_shift_forward_is_one_conditional():
  # The forward sum sits in a `lax.cond`, so that XLA writes it once instead of recomputing it
  # in each consumer's fusion (`shift._written_once`); both branches are the same sum.
  x, kernel = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 1, 2))
  jaxpr = jax.make_jaxpr(lambda a, b: shift.depthwise_shift(a, b, (1, 1), 'same'))(x, kernel)
  assert str(jaxpr).count('cond[') == 1
  # A NaN in the kernel takes the other branch: the same sum (channel 1 holds no NaN).
  nan_kernel = kernel.at[0, 0, 0, 0].set(jnp.nan)
  conv = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', feature_group_count=2,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  shifted = shift.depthwise_shift(x, nan_kernel, (1, 1), 'same')
  np.testing.assert_array_equal(shifted[..., 1], conv[..., 1])
  assert np.isnan(shifted[0, 1, 1, 0])


def test_depthwise_shift_leaves_out_the_taps_that_meet_only_padding():
  # A 5×5 kernel on a 1×1 map: only the centre tap meets the input, in the forward pass and in
  # both gradients; on a 2×2 map (padding 2 per side), the middle three of each axis.
  assert shift._forward_taps(jnp.zeros((1, 1, 1, 1)), 5, (1, 1), ((2, 2), (2, 2)),
                             (1, 1)) == ((2,), (2,))
  assert shift._forward_taps(jnp.zeros((1, 2, 2, 1)), 5, (1, 1), ((2, 2), (2, 2)),
                             (2, 2)) == ((1, 2, 3), (1, 2, 3))
  assert shift._forward_taps(jnp.zeros((1, 8, 8, 1)), 3, (2, 2), ((0, 1), (0, 1)),
                             (4, 4)) == ((0, 1, 2), (0, 1, 2))
  x = model_helpers.images((2, 1, 1, 4))
  kernel = jax.random.normal(jax.random.key(1), (5, 5, 1, 4))
  y, vjp = jax.vjp(lambda a, b: shift.depthwise_shift(a, b, (1, 1), 'same'), x, kernel)
  np.testing.assert_array_equal(y, x * kernel[2, 2, 0])
  dx, dw = vjp(jnp.ones_like(y))
  np.testing.assert_array_equal(dx, jnp.broadcast_to(kernel[2, 2, 0], dx.shape))
  assert not np.any(np.delete(np.asarray(dw).reshape(25, 4), 12, axis=0))  # Only the centre.
  np.testing.assert_allclose(dw[2, 2, 0], jnp.sum(x, axis=(0, 1, 2)), rtol=1e-6)
