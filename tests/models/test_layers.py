"""The layers in the network: BatchNorm (global and grouped), the stem and 1×1 convolutions,
stochastic depth, sharding (the depthwise convolution: test_depthwise_shift.py).

Uses `model_helpers.fake_variables` and `TINY_BLOCKS` (see model_helpers.py).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

import model_helpers
from efficientnet_jax.models import efficientnet as model
from efficientnet_jax.models import layers
from efficientnet_jax.models import scaling
from efficientnet_jax.training import steps


# --- BatchNorm -------------------------------------------------------------------------------


def test_batchnorm_train_uses_batch_stats_eval_uses_running():
  x = np.asarray(model_helpers.images((16, 4, 4, 3), mean=5.0))
  bn = layers.BatchNorm()
  variables = bn.init(jax.random.key(0), x, train=False)
  y, updates = bn.apply(variables, x, train=True, mutable=['batch_stats'])
  batch_mean, batch_var = x.mean((0, 1, 2)), x.var((0, 1, 2))
  np.testing.assert_allclose(y.mean((0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(y, (x - batch_mean) / np.sqrt(batch_var + 1e-3), rtol=1e-4,
                             atol=1e-4)
  # TF/Flax momentum semantics: from (0, 1), one step moves by exactly 1% of the batch moments.
  stats = updates['batch_stats']
  np.testing.assert_allclose(stats['mean'], 0.01 * batch_mean, rtol=1e-5)
  np.testing.assert_allclose(stats['var'], 0.99 + 0.01 * batch_var, rtol=1e-5)

  # Eval with fresh statistics does not normalise: the mean of 5 survives.
  y_fresh = bn.apply(variables, x, train=False)
  np.testing.assert_allclose(y_fresh, x / np.sqrt(1 + 1e-3), rtol=1e-5)
  assert np.all(np.abs(y_fresh.mean((0, 1, 2)) - 5) < 0.5)
  # Eval uses the running statistics, whatever the batch, and leaves them alone.
  y_eval, unchanged = bn.apply({**variables, **updates}, x[:2], train=False,
                               mutable=['batch_stats'])
  np.testing.assert_allclose(
      y_eval, (x[:2] - stats['mean']) / np.sqrt(stats['var'] + 1e-3), rtol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, unchanged, updates)


def test_grouped_batchnorm_matches_per_group_numpy():
  group, groups = 4, 3
  rng = np.random.default_rng(0)
  offsets = np.repeat([0.0, 3.0, -2.0], group)[:, None, None, None]
  scales = np.repeat([1.0, 0.5, 2.0], group)[:, None, None, None]
  x = (offsets + scales * rng.standard_normal((group * groups, 3, 3, 2))).astype(np.float32)
  bn = layers.BatchNorm(group_size=group)
  variables = bn.init(jax.random.key(0), x, train=False)
  y, updates = bn.apply(variables, x, train=True, mutable=['batch_stats'])

  xg = x.reshape(groups, group, 3, 3, 2).astype(np.float64)
  means, variances = xg.mean((1, 2, 3)), xg.var((1, 2, 3))  # [groups, C]
  expected = (xg - means[:, None, None, None]) / np.sqrt(variances[:, None, None, None] + 1e-3)
  np.testing.assert_allclose(y, expected.reshape(x.shape), rtol=1e-4, atol=1e-4)
  # Per-group statistics really differ from the global ones.
  y_global = layers.BatchNorm().apply(variables, x, train=True, mutable=['batch_stats'])[0]
  assert np.abs(np.asarray(y) - np.asarray(y_global)).max() > 0.5
  # The running statistics move towards the mean over groups of the group moments.
  stats = updates['batch_stats']
  np.testing.assert_allclose(stats['mean'], 0.01 * means.mean(0), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(stats['var'], 0.99 + 0.01 * variances.mean(0), rtol=1e-5)
  assert not np.allclose(variances.mean(0), x.var((0, 1, 2)), rtol=0.1)

  with pytest.raises(ValueError, match='group_size'):
    layers.BatchNorm(group_size=5).apply(variables, x, train=True, mutable=['batch_stats'])


@pytest.mark.parametrize('group_size', [None, 4])
def test_batchnorm_gradient_by_hand_equals_autodiff(group_size):
  # The loss reads the output and, through the running statistics, the batch's mean and
  # variance, so every cotangent of `batch_norm_train` is non-zero.
  x = model_helpers.images((8, 5, 3, 6)) * 3.0 + 1.0
  variables = {'params': {'scale': jnp.linspace(0.5, 2.0, 6), 'bias': jnp.linspace(-1, 1, 6)},
               'batch_stats': {'mean': jnp.zeros(6), 'var': jnp.ones(6)}}

  def loss(gradient, params, x):
    bn = layers.BatchNorm(momentum=0.5, group_size=group_size, gradient=gradient)
    y, updates = bn.apply({**variables, 'params': params}, x, train=True,
                          mutable=['batch_stats'])
    stats = updates['batch_stats']
    return jnp.sum(jnp.sin(y)) + jnp.sum(stats['mean'] ** 2) + jnp.sum(jnp.sqrt(stats['var']))

  results = {g: jax.value_and_grad(functools.partial(loss, g), argnums=(0, 1))(
      variables['params'], x) for g in ('by_hand', 'autodiff')}
  hand, auto = results['by_hand'], results['autodiff']
  np.testing.assert_allclose(hand[0], auto[0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(hand[1]), jax.tree.leaves(auto[1])):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
  with pytest.raises(ValueError, match="'by_hand' or 'autodiff'"):
    loss('numeric', variables['params'], x)


def test_model_batchnorm_train_vs_eval():
  net = model.create_model('b0', num_classes=10, block_strings=model_helpers.TINY_BLOCKS)
  variables = model_helpers.fake_variables(net)
  variables['batch_stats'] = jax.tree_util.tree_map_with_path(  # Fresh: mean 0, var 1.
      lambda p, v: jnp.full_like(v, p[-1].key == 'var'), variables['batch_stats'])
  x = model_helpers.images((8, 32, 32, 3), mean=5.0)
  capture = ('stem_conv', 'stem_bn')

  @functools.partial(jax.jit, static_argnums=0)
  def run(train):
    return net.apply(variables, x, train=train, mutable=['batch_stats', 'intermediates'],
                     rngs={'dropout': jax.random.key(0)},
                     capture_intermediates=lambda mdl, _: mdl.name in capture)[1]

  train_state, eval_state = run(True), run(False)
  conv = np.asarray(train_state['intermediates']['stem_conv']['__call__'][0], np.float64)
  mean, var = conv.mean((0, 1, 2)), conv.var((0, 1, 2))
  scale = variables['params']['stem_bn']['scale']
  bias = variables['params']['stem_bn']['bias']
  train_bn = train_state['intermediates']['stem_bn']['__call__'][0]
  np.testing.assert_allclose(train_bn, (conv - mean) / np.sqrt(var + 1e-3) * scale + bias,
                             rtol=1e-4, atol=1e-4)
  eval_bn = eval_state['intermediates']['stem_bn']['__call__'][0]
  np.testing.assert_allclose(eval_bn, conv / np.sqrt(1 + 1e-3) * scale + bias, rtol=1e-4,
                             atol=1e-4)
  assert np.abs(np.asarray(eval_bn).mean((0, 1, 2)) - bias).max() > 0.5  # Not normalised.
  np.testing.assert_allclose(train_state['batch_stats']['stem_bn']['mean'], 0.01 * mean,
                             rtol=1e-4, atol=1e-6)
  # Every BN's statistics move in training and none at eval.
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), variables['batch_stats'],
                       train_state['batch_stats'])
  assert all(jax.tree_util.tree_leaves(moved))
  jax.tree.map(np.testing.assert_array_equal, eval_state['batch_stats'],
               variables['batch_stats'])


# --- Stem and 1×1 convolutions ------------------------------------------------------------


@pytest.mark.parametrize('padding', ['same', 'symmetric'])
@pytest.mark.parametrize('size', [31, 32])
def test_stem_conv_channel_padding_equals_nn_conv(padding, size):
  # The CPU's zero channel (RGB → 4) changes neither the variable nor, beyond rounding, the
  # output and the kernel's gradient; the forward is nn.Conv's with the same kernel.
  x = model_helpers.images((2, size, size, 3))
  stems = {m: layers.StemConv(8, 3, (2, 2), padding, channel_multiple=m) for m in (1, 4)}
  variables = stems[4].init(jax.random.key(0), x)
  assert variables['params']['kernel'].shape == (3, 3, 3, 8)
  reference = nn.Conv(8, (3, 3), (2, 2), padding=layers.conv_padding(3, padding),
                      use_bias=False).apply(variables, x)
  out = {}
  for m, stem in stems.items():
    out[m], vjp = jax.vjp(lambda v: stem.apply(v, x), variables)
    out[m, 'grad'] = vjp(jnp.cos(out[m]))[0]['params']['kernel']
  np.testing.assert_array_equal(out[1], reference)
  np.testing.assert_allclose(out[4], reference, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[4, 'grad'], out[1, 'grad'], rtol=1e-4, atol=1e-4)


def test_pointwise_conv_as_a_product_equals_the_convolution():
  x = model_helpers.images((2, 5, 4, 6))
  convs = {impl: layers.PointwiseConv(8, implementation=impl) for impl in ('dot', 'conv')}
  variables = convs['dot'].init(jax.random.key(0), x)
  assert variables['params']['kernel'].shape == (1, 1, 6, 8)
  out, grads = {}, {}
  for impl, conv in convs.items():
    out[impl], vjp = jax.vjp(lambda v, x: conv.apply(v, x), variables, x)
    grads[impl] = vjp(jnp.cos(out[impl]))
  np.testing.assert_allclose(out['dot'], out['conv'], rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(grads['dot']), jax.tree.leaves(grads['conv'])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="'conv' or 'dot'"):
    layers.PointwiseConv(8, implementation='fft').init(jax.random.key(0), x)


def test_pointwise_product_is_over_rows_of_channels():
  # A product of 4-D activations made XLA:CPU write the gradient transposed for the kernel's
  # gradient (B0's step at 128 px ran 1.3× longer): the product is taken on (rows, channels).
  conv = layers.PointwiseConv(8, implementation='dot')
  x = model_helpers.images((2, 5, 4, 6))
  variables = conv.init(jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(jax.grad(lambda v: jnp.sum(conv.apply(v, x) ** 2)))(variables)
  dots = [e for e in jaxpr.eqns if e.primitive.name == 'dot_general']
  assert len(dots) == 2 and all(e.invars[0].aval.ndim == 2 for e in dots)
  assert dots[1].outvars[0].aval.shape in ((6, 8), (8, 6))  # The kernel gradient: rows summed.


def test_stem_and_pointwise_convs_change_form_only_on_cpu(monkeypatch):
  seen = []
  real = jax.lax.conv_general_dilated
  monkeypatch.setattr(jax.lax, 'conv_general_dilated',
                      lambda x, *a, **k: seen.append(x.shape[-1]) or real(x, *a, **k))
  x = jnp.zeros((1, 8, 8, 3))
  layers.StemConv(4).init(jax.random.key(0), x)
  layers.PointwiseConv(4).init(jax.random.key(0), x)  # A product on CPU: no convolution.
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  layers.StemConv(4).init(jax.random.key(0), x)
  layers.PointwiseConv(4).init(jax.random.key(0), x)
  assert seen == [4, 3, 3]


# --- Stochastic depth ------------------------------------------------------------------------


def _capture_rates(net):
  rates = {}

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, model.MBConvBlock) and context.method_name == '__call__':
      rates[context.module.name] = context.module.drop_path_rate
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    model_helpers.abstract_init(net)
  return [rates[f'blocks_{i}'] for i in range(len(rates))]


def test_drop_path_schedule_uses_scaled_block_count():
  rates = _capture_rates(model.create_model('b4'))
  assert len(rates) == 32
  assert rates[0] == 0.0
  np.testing.assert_allclose(rates, [0.2 * i / 32 for i in range(32)])
  assert _capture_rates(model.create_model('b0', drop_path_rate=0.5))[-1] == 0.5 * 15 / 16


def test_stochastic_depth_is_identity_at_eval():
  net = model.create_model('b0', num_classes=10, block_strings=model_helpers.TINY_BLOCKS)
  variables = model_helpers.fake_variables(net)
  x = model_helpers.images((4, 32, 32, 3))
  apply = jax.jit(lambda v, x, rng: net.apply(v, x, train=False, rngs={'dropout': rng}))
  out_a = apply(variables, x, jax.random.key(1))
  out_b = apply(variables, x, jax.random.key(2))
  without_rng = jax.jit(net.apply)(variables, x)  # Eval needs no 'dropout' RNG at all.
  deterministic = jax.jit(net.clone(drop_path_rate=0.0, dropout_rate=0.0).apply)(variables, x)
  np.testing.assert_array_equal(out_a, out_b)
  np.testing.assert_array_equal(out_a, without_rng)
  np.testing.assert_allclose(out_a, deterministic, rtol=1e-5, atol=1e-5)
  # ... while training really is random (the same net, the same batch, two keys).
  train = jax.jit(lambda v, x, rng: net.apply(v, x, train=True, mutable=['batch_stats'],
                                                rngs={'dropout': rng})[0])
  assert not np.allclose(train(variables, x, jax.random.key(1)),
                         train(variables, x, jax.random.key(2)))


def _binomial_tolerance(rate, n, sigmas=4.5):
  return sigmas * np.sqrt(rate * (1 - rate) / n) + 1 / n


def test_drop_path_block_rate_and_scale():
  # A narrow skip block on 1×1 maps: the mechanism is B0's, the compile and run are cheap.
  block = scaling.decode_block_string('r1_k3_s11_e2_i8_o8_se0.25')
  rate = scaling.drop_path_rates(16, 0.2)[14]  # B0's last skip block: 0.2 · 14 / 16 = 0.175.
  assert block.has_skip and rate == pytest.approx(0.175)
  make = functools.partial(model.MBConvBlock, block, activation=nn.silu, dtype=jnp.float32,
                           padding='same', bn=layers.BatchNorm)
  x = model_helpers.images((4096, 1, 1, 8))
  variables = model_helpers.fake_variables(make(drop_path_rate=rate), x.shape, train=False)

  @functools.partial(jax.jit, static_argnums=0)
  def apply(drop_path_rate, rng):
    return make(drop_path_rate=drop_path_rate).apply(
        variables, x, train=True, mutable=['batch_stats'], rngs={'dropout': rng})[0]

  branch = np.asarray(apply(0.0, jax.random.key(0)) - x)  # Rate 0: nothing dropped.
  delta = np.asarray(apply(rate, jax.random.key(7)) - x)
  dropped = np.all(delta == 0, axis=(1, 2, 3))
  assert abs(dropped.mean() - rate) < _binomial_tolerance(rate, len(x))
  # Kept branches are scaled by 1 / keep, so the expectation matches eval.
  np.testing.assert_allclose(delta[~dropped], branch[~dropped] / (1 - rate), rtol=1e-4,
                             atol=1e-5)
  assert not np.any(np.all(branch == 0, axis=(1, 2, 3)))
  # A different key drops different examples.
  other = np.all(np.asarray(apply(rate, jax.random.key(8)) - x) == 0, axis=(1, 2, 3))
  assert np.any(other != dropped)


def test_drop_path_rates_in_the_whole_network():
  net = model.create_model('b0', num_classes=10)
  variables = model_helpers.fake_variables(net, (1, 16, 16, 3))
  # 16 px still reaches stride 32 (1×1); a big batch is cheap.
  x = model_helpers.images((1024, 16, 16, 3))

  @jax.jit
  def block_io(variables, x, rng):
    records = []

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, model.MBConvBlock) and context.method_name == '__call__':
        records.append((args[0], out))
      return out

    with nn.intercept_methods(interceptor):
      net.apply(variables, x, train=True, mutable=['batch_stats'], rngs={'dropout': rng})
    return records

  records = block_io(variables, x, jax.random.key(3))
  spec = net.spec
  assert len(records) == len(spec.blocks) == 16
  observed, expected = [], []
  for i, (block_in, block_out) in enumerate(records):
    if not spec.blocks[i].has_skip:
      continue
    # A dropped branch leaves the block's input bit for bit (x + 0).
    dropped = np.all(np.asarray(block_in) == np.asarray(block_out), axis=(1, 2, 3))
    rate = 0.2 * i / 16
    assert abs(dropped.mean() - rate) < _binomial_tolerance(rate, len(x)), (i, dropped.mean())
    observed.append(dropped.sum())
    expected.append(rate * len(x))
  assert len(observed) == 9  # B0's skip blocks: 2, 4, 6, 7, 9, 10, 12, 13, 14.
  # All skip blocks together: a tighter check of the schedule's scale.
  variance = sum(e * (1 - e / len(x)) for e in expected)
  assert abs(sum(observed) - sum(expected)) < 4.5 * np.sqrt(variance)


# --- Multi-device ----------------------------------------------------------------------------


def _mesh_shardings():
  assert jax.device_count() == 4, 'tests/conftest.py sets 4 fake CPU devices'
  mesh = jax.make_mesh((4,), ('data',))
  return NamedSharding(mesh, P('data')), NamedSharding(mesh, P())


@pytest.mark.four_devices
def test_sharded_grad_step_on_four_devices():
  data, replicated = _mesh_shardings()
  net = model.create_model('b0', num_classes=10, block_strings=model_helpers.TINY_BLOCKS)
  variables = jax.device_put(model_helpers.fake_variables(net), replicated)
  images = jax.device_put(model_helpers.images((8, 32, 32, 3)), data)
  labels = jax.device_put(jnp.arange(8) % 10, data)

  def grad_step(params, batch_stats, images, labels, rng):
    def loss_fn(params):
      logits, updates = net.apply({'params': params, 'batch_stats': batch_stats}, images,
                                  train=True, mutable=['batch_stats'], rngs={'dropout': rng})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates['batch_stats']
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    new_params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    return new_params, new_stats, loss, grads

  assert len(images.sharding.device_set) == 4
  new_params, new_stats, loss, grads = jax.jit(grad_step)(
      variables['params'], variables['batch_stats'], images, labels, jax.random.key(0))
  assert np.isfinite(loss)
  # Every parameter with a gradient moves. A BN bias whose output feeds another training-mode BN
  # through a linear conv (no skip in between) has an exactly-zero gradient, which float32
  # leaves at ~1e-8: too small to move the parameter, so it is left out.
  changed = jax.tree.map(lambda a, b, g: bool(np.any(np.asarray(a) != np.asarray(b)))
                         or float(np.max(np.abs(g))) < 1e-6,
                         variables['params'], new_params, grads)
  assert all(jax.tree_util.tree_leaves(changed))
  assert sum(float(np.max(np.abs(g))) >= 1e-6 for g in jax.tree_util.tree_leaves(grads)) > 40
  assert all(jax.tree_util.tree_leaves(jax.tree.map(
      lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
      variables['batch_stats'], new_stats)))
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(new_params))


@pytest.mark.four_devices
def test_sharded_batchnorm_is_synchronised():
  data, replicated = _mesh_shardings()
  net = model.create_model('b0', num_classes=10, block_strings=model_helpers.TINY_BLOCKS,
                           dropout_rate=0.0, drop_path_rate=0.0)
  variables = model_helpers.fake_variables(net)
  # Each device's two examples get their own offset, so per-device BN would differ visibly.
  x = model_helpers.images((8, 32, 32, 3)) + jnp.repeat(jnp.arange(4.0), 2)[:, None, None, None]
  step = lambda net, v, x: net.apply(v, x, train=True, mutable=['batch_stats'])
  single_device = jax.devices()[0]
  logits, updates = jax.jit(functools.partial(step, net))(
      jax.device_put(variables, single_device), jax.device_put(x, single_device))
  sharded = functools.partial(step, net)
  logits_s, updates_s = jax.jit(sharded)(jax.device_put(variables, replicated),
                                         jax.device_put(x, data))
  np.testing.assert_allclose(logits_s, logits, rtol=1e-4, atol=1e-4)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
               updates_s, updates)
  # Per-device statistics (group = the two examples a device holds) give something else.
  per_device = functools.partial(step, net.clone(bn_group_size=2))
  logits_g, _ = jax.jit(per_device)(jax.device_put(variables, replicated),
                                    jax.device_put(x, data))
  assert np.abs(np.asarray(logits_g) - np.asarray(logits)).max() > 1e-2


@pytest.mark.four_devices
@pytest.mark.parametrize('group', [2, 4, 8, 16], ids=lambda g: f'group{g}')
def test_grouped_batchnorm_sharded_over_devices_equals_per_group_statistics(group):
  # 16 examples on 4 devices (4 each): groups of 2 put two groups on a device, 4 is one device,
  # 8 spans two devices and 16 all four. Every example gets its own offset and scale, so any
  # statistics computed over the wrong examples show. The mesh is training's (Auto axes).
  replicated, data = steps.shardings(steps.data_mesh())
  rng = np.random.default_rng(1)
  x = (np.arange(16.0)[:, None, None, None] * 0.7
       + (1 + np.arange(16.0)[:, None, None, None] % 3)
       * rng.standard_normal((16, 3, 3, 2))).astype(np.float32)
  bn = layers.BatchNorm(group_size=group)
  variables = bn.init(jax.random.key(0), x, train=False)
  step = jax.jit(lambda v, x: bn.apply(v, x, train=True, mutable=['batch_stats']))
  y, updates = step(jax.device_put(variables, replicated), jax.device_put(x, data))
  assert len(y.sharding.device_set) == 4

  xg = x.reshape(16 // group, group, 3, 3, 2).astype(np.float64)
  means, variances = xg.mean((1, 2, 3)), xg.var((1, 2, 3))
  expected = (xg - means[:, None, None, None]) / np.sqrt(variances[:, None, None, None] + 1e-3)
  np.testing.assert_allclose(y, expected.reshape(x.shape), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(updates['batch_stats']['mean'], 0.01 * means.mean(0), rtol=1e-4)
  np.testing.assert_allclose(updates['batch_stats']['var'], 0.99 + 0.01 * variances.mean(0),
                             rtol=1e-4)


def test_forced_forms_choose_auto_forms_and_leave_explicit_ones():
  assert layers.for_backend('auto', 'pointwise') == 'dot'  # Tests run on CPU.
  with layers.forced_forms(pointwise='conv', stem_channel_multiple=1):
    assert layers.for_backend('auto', 'pointwise') == 'conv'
    assert layers.for_backend('dot', 'pointwise') == 'dot'
    assert layers.for_backend('auto', 'stem_channel_multiple') == 1
    assert layers.for_backend('auto', 'depthwise') == 'shift'
  assert layers.for_backend('auto', 'pointwise') == 'dot'
  with pytest.raises(ValueError, match='Unknown form'):
    with layers.forced_forms(colour='red'):
      pass
  with pytest.raises(ValueError, match='not one of'):
    with layers.forced_forms(depthwise='fft'):
      pass


def test_forced_forms_change_the_traced_program():
  stem = layers.StemConv(8)
  x = jnp.ones((1, 8, 8, 3))
  variables = stem.init(jax.random.key(0), x)
  padded = jax.make_jaxpr(lambda v: stem.apply(v, x))(variables)
  with layers.forced_forms(stem_channel_multiple=1):
    plain = jax.make_jaxpr(lambda v: stem.apply(v, x))(variables)
  assert 'f32[1,8,8,4]' in str(padded) and 'f32[1,8,8,4]' not in str(plain)
