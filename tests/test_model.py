"""Tests for the EfficientNet modules: structure, init, BatchNorm, stochastic depth, sharding.

Compiling jax.random initialisers is slow on CPU (about half a second per parameter shape), so
only `test_init_matches_tf` runs a real init; the numerical tests use `_fake_variables`, which has
init's structure and well-scaled numpy values. For the same reason the tests that compile a net
use `TINY_BLOCKS`, B0's first two stages (3 blocks: no expansion, then expansion + stride, then a
droppable skip), unless they need B0's full schedule.
"""

import functools

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

from efficientnet_jax import layers
from efficientnet_jax import model
from efficientnet_jax import scaling

# Trainable parameters (REFERENCE §1, timm's count), 1000 classes.
EXPECTED_PARAMS = {
    'b0': 5_288_548, 'b1': 7_794_184, 'b2': 9_109_994, 'b3': 12_233_232, 'b4': 19_341_616,
    'b5': 30_389_784, 'b6': 43_040_704, 'b7': 66_347_960, 'b8': 87_413_142,
    'l2': 480_309_308, 'lite0': 4_652_008, 'lite1': 5_416_680, 'lite2': 6_092_072,
    'lite3': 8_197_096, 'lite4': 13_006_568,
}
TINY_BLOCKS = scaling.B0_BLOCKS[:2]
B0_ENDPOINTS = {'reduction_1': (2, 16), 'reduction_2': (4, 24), 'reduction_3': (8, 40),
                'reduction_4': (16, 112), 'reduction_5': (32, 320)}  # name: (stride, channels)


def _abstract_init(net, shape=(1, 32, 32, 3)):
  images = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda x: net.init(jax.random.key(0), x), images)


def _fake_variables(net, shape=(1, 32, 32, 3), seed=0, **init_kwargs):
  """init's variable tree filled with numpy values: fan-in-scaled kernels, perturbed BN."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, **init_kwargs),
                            jax.ShapeDtypeStruct(shape, jnp.float32))

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':  # Depthwise (k, k, 1, C) has fan-in k·k, as it should.
      value = rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
    elif name == 'scale':
      value = 1 + 0.1 * rng.standard_normal(leaf.shape)
    elif name == 'var':
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:  # Biases and running means.
      value = 0.1 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _images(shape, seed=1, mean=0.0):
  return jnp.asarray(mean + np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


# --- Structure -------------------------------------------------------------------------------


@pytest.mark.parametrize('name', scaling.MODEL_NAMES)
def test_trainable_params_match_reference(name):
  variables = _abstract_init(model.create_model(name))
  assert _count(variables['params']) == EXPECTED_PARAMS[name]


def test_lite_has_no_squeeze_excite_and_b0_has():
  lite = traverse_util.flatten_dict(_abstract_init(model.create_model('lite0'))['params'])
  b0 = traverse_util.flatten_dict(_abstract_init(model.create_model('b0'))['params'])
  assert not any('se' in path for path in lite)
  assert any('se' in path for path in b0)


def test_bad_name_lists_valid_names():
  with pytest.raises(ValueError) as err:
    model.create_model('b9')
  assert all(name in str(err.value) for name in scaling.MODEL_NAMES)
  assert len(scaling.MODEL_NAMES) == 15


def test_unknown_override_raises():
  with pytest.raises(ValueError, match='widht'):
    model.create_model('b0', widht=1.1)


def test_bad_padding_raises():
  with pytest.raises(ValueError, match='padding'):
    _abstract_init(model.create_model('b0', padding='valid'))


# --- Init ------------------------------------------------------------------------------------


def test_init_matches_tf():
  # One k5 MBConv block with expand, SE and skip, plus stem, head and a 1000-way classifier.
  net = model.create_model('b0', block_strings=('r1_k5_s11_e6_i32_o32_se0.25',))
  variables = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  params = traverse_util.flatten_dict(variables['params'], sep='/')

  def assert_normal(path, std, rtol=0.1):
    kernel = np.asarray(params[path])
    assert abs(kernel.mean()) < 4 * std / np.sqrt(kernel.size)
    np.testing.assert_allclose(kernel.std(), std, rtol=rtol)

  # Depthwise: fan_out = k·k (5·5), not k·k·C (C = 192 here, a factor √192 ≈ 14 in std).
  assert params['blocks_0/depthwise_conv/kernel'].shape == (5, 5, 1, 192)
  assert_normal('blocks_0/depthwise_conv/kernel', np.sqrt(2 / 25))
  assert_normal('stem_conv/kernel', np.sqrt(2 / (3 * 3 * 32)), rtol=0.15)  # 864 samples.
  assert_normal('blocks_0/expand_conv/kernel', np.sqrt(2 / 192))
  assert_normal('blocks_0/project_conv/kernel', np.sqrt(2 / 32))
  assert_normal('blocks_0/se/reduce/kernel', np.sqrt(2 / 8))   # max(1, int(32 · 0.25)) = 8.
  assert_normal('blocks_0/se/expand/kernel', np.sqrt(2 / 192))
  head = np.asarray(params['head_conv/kernel'])
  assert_normal('head_conv/kernel', np.sqrt(2 / 1280), rtol=0.03)
  # Untruncated: a normal puts 4.55% of its mass beyond 2σ (a 2σ-truncated one puts none).
  tail = np.mean(np.abs(head) > 2 * np.sqrt(2 / 1280))
  assert 0.040 < tail < 0.051

  dense = np.asarray(params['classifier/kernel'])
  limit = 1 / np.sqrt(1000)
  assert dense.shape == (1280, 1000)
  assert np.abs(dense).max() <= limit
  assert np.abs(dense).max() > 0.99 * limit  # Uniform over the whole range.
  np.testing.assert_allclose(dense.std(), limit / np.sqrt(3), rtol=0.02)

  for path, value in params.items():
    if path.endswith('/bias') and '_bn/' not in path:  # classifier and SE biases.
      np.testing.assert_array_equal(value, 0, err_msg=path)
  bn_params = {p: v for p, v in params.items() if '_bn/' in p}
  assert len(bn_params) == 2 * 5  # stem, expand, depthwise, project, head: scale and bias each.
  for path, value in bn_params.items():
    np.testing.assert_array_equal(value, 1 if path.endswith('scale') else 0, err_msg=path)
  stats = traverse_util.flatten_dict(variables['batch_stats'], sep='/')
  for path, value in stats.items():
    np.testing.assert_array_equal(value, 1 if path.endswith('var') else 0, err_msg=path)


# --- BatchNorm -------------------------------------------------------------------------------


def test_batchnorm_train_uses_batch_stats_eval_uses_running():
  x = np.asarray(_images((16, 4, 4, 3), mean=5.0))
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


def test_model_batchnorm_train_vs_eval():
  net = model.create_model('b0', num_classes=10, block_strings=TINY_BLOCKS)
  variables = _fake_variables(net)
  variables['batch_stats'] = jax.tree_util.tree_map_with_path(  # Fresh: mean 0, var 1.
      lambda p, v: jnp.full_like(v, p[-1].key == 'var'), variables['batch_stats'])
  x = _images((8, 32, 32, 3), mean=5.0)
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


# --- Stochastic depth ------------------------------------------------------------------------


def _capture_rates(net):
  rates = {}

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, model.MBConvBlock) and context.method_name == '__call__':
      rates[context.module.name] = context.module.drop_path_rate
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    _abstract_init(net)
  return [rates[f'blocks_{i}'] for i in range(len(rates))]


def test_drop_path_schedule_uses_scaled_block_count():
  rates = _capture_rates(model.create_model('b4'))
  assert len(rates) == 32
  assert rates[0] == 0.0
  np.testing.assert_allclose(rates, [0.2 * i / 32 for i in range(32)])
  assert _capture_rates(model.create_model('b0', drop_path_rate=0.5))[-1] == 0.5 * 15 / 16


def test_stochastic_depth_is_identity_at_eval():
  net = model.create_model('b0', num_classes=10, block_strings=TINY_BLOCKS)
  variables = _fake_variables(net)
  x = _images((4, 32, 32, 3))
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
  x = _images((4096, 1, 1, 8))
  variables = _fake_variables(make(drop_path_rate=rate), x.shape, train=False)

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
  variables = _fake_variables(net, (1, 16, 16, 3))
  x = _images((1024, 16, 16, 3))  # 16 px still reaches stride 32 (1×1); a big batch is cheap.

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


# --- Shapes, dtypes, padding, remat ----------------------------------------------------------


@pytest.mark.parametrize('name, resolution', [('b0', 32), ('lite0', 48), ('b3', 64),
                                              ('l2', 32), ('lite4', 40)])
def test_output_shapes(name, resolution):
  net = model.create_model(name)
  images = jax.ShapeDtypeStruct((2, resolution, resolution, 3), jnp.float32)
  logits, _ = jax.eval_shape(lambda x: net.init_with_output(jax.random.key(0), x), images)
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32


@pytest.mark.parametrize('name, features', [('b0', 1280), ('lite2', 1280), ('b4', 1792)])
def test_include_top_false_gives_pooled_features(name, features):
  net = model.create_model(name, include_top=False)
  images = jax.ShapeDtypeStruct((2, 48, 48, 3), jnp.float32)
  pooled, _ = jax.eval_shape(lambda x: net.init_with_output(jax.random.key(0), x), images)
  assert pooled.shape == (2, features) and pooled.dtype == jnp.float32


def test_include_top_false_has_no_classifier():
  variables = _abstract_init(model.create_model('b0', include_top=False))
  assert 'classifier' not in variables['params']
  assert _count(variables['params']) == EXPECTED_PARAMS['b0'] - (1280 * 1000 + 1000)


def test_bfloat16_compute_float32_params_and_logits():
  net32 = model.create_model('b0', num_classes=10, block_strings=TINY_BLOCKS)
  net16 = model.create_model('b0', num_classes=10, block_strings=TINY_BLOCKS,
                             dtype='bfloat16')
  abstract = _abstract_init(net16)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(abstract))
  conv_dtypes = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, (nn.Conv, nn.Dense)):
      conv_dtypes.append(out.dtype)
    return out

  with nn.intercept_methods(interceptor):
    _abstract_init(net16)
  assert conv_dtypes and all(d == jnp.bfloat16 for d in conv_dtypes)

  variables = _fake_variables(net32)
  x = _images((4, 32, 32, 3))
  logits16 = jax.jit(functools.partial(net16.apply, train=False))(variables, x)
  logits32 = jax.jit(functools.partial(net32.apply, train=False))(variables, x)
  assert logits16.dtype == jnp.float32 and logits16.shape == (4, 10)
  assert np.all(np.isfinite(logits16))
  error = np.linalg.norm(logits16 - logits32) / np.linalg.norm(logits32)
  assert error < 0.05


@pytest.mark.parametrize('resolution', [33, 64])
def test_padding_modes_same_shapes_different_values(resolution):
  net = model.create_model('b0', num_classes=10, block_strings=TINY_BLOCKS)
  symmetric = net.clone(padding='symmetric')
  shape = (2, resolution, resolution, 3)
  images = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = _fake_variables(net, shape)
  run = lambda m, v, x: m.apply(v, x, train=False, return_endpoints=True)
  same_shapes = jax.eval_shape(functools.partial(run, net), variables, images)
  symmetric_shapes = jax.eval_shape(functools.partial(run, symmetric), variables, images)
  assert same_shapes == symmetric_shapes
  if resolution % 2 == 0:  # TF-SAME pads stride-2 convs (0, 1) on even inputs, symmetric (1, 1).
    x = _images(shape)
    logits_same = jax.jit(functools.partial(run, net))(variables, x)[0]
    logits_symmetric = jax.jit(functools.partial(run, symmetric))(variables, x)[0]
    assert not np.allclose(logits_same, logits_symmetric, rtol=1e-3, atol=1e-3)


def test_remat_same_outputs_and_gradients():
  net = model.create_model('b0', num_classes=10, block_strings=TINY_BLOCKS)
  variables = _fake_variables(net)
  x, labels = _images((4, 32, 32, 3)), jnp.arange(4)

  def loss_fn(module, params):
    logits, updates = module.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                   x, train=True, mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.key(5)})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, updates)

  results = [jax.jit(jax.value_and_grad(functools.partial(loss_fn, net.clone(remat=remat)),
                                        has_aux=True))(variables['params'])
             for remat in (False, True)]
  (loss, (logits, updates)), grads = results[0]
  (loss_r, (logits_r, updates_r)), grads_r = results[1]
  np.testing.assert_allclose(loss, loss_r, rtol=1e-5)
  np.testing.assert_allclose(logits, logits_r, rtol=1e-5, atol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
               updates, updates_r)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
               grads, grads_r)
  assert jax.tree.structure(grads) == jax.tree.structure(variables['params'])


# --- Endpoints -------------------------------------------------------------------------------


def test_b0_endpoints_strides_and_channels():
  net = model.create_model('b0')
  images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  _, endpoints = jax.eval_shape(
      functools.partial(net.apply, train=False, return_endpoints=True),
      _abstract_init(net, images.shape), images)
  for name, (stride, channels) in B0_ENDPOINTS.items():
    assert endpoints[name].shape == (2, 64 // stride, 64 // stride, channels), name
  assert endpoints['features'].shape == (2, 2, 2, 1280)


def test_b4_endpoint_channels_follow_round_filters():
  net = model.create_model('b4')
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  _, endpoints = jax.eval_shape(
      functools.partial(net.apply, train=False, return_endpoints=True),
      _abstract_init(net, images.shape), images)
  channels = [endpoints[f'reduction_{k}'].shape[-1] for k in range(1, 6)]
  expected = [scaling.round_filters(c, 1.4) for _, c in B0_ENDPOINTS.values()]
  assert channels == expected == [24, 32, 56, 160, 448]
  assert [endpoints[f'reduction_{k}'].shape[1] for k in range(1, 6)] == [32, 16, 8, 4, 2]


# --- Multi-device ----------------------------------------------------------------------------


def _mesh_shardings():
  assert jax.device_count() == 4, 'tests/conftest.py sets 4 fake CPU devices'
  mesh = jax.make_mesh((4,), ('data',))
  return NamedSharding(mesh, P('data')), NamedSharding(mesh, P())


def test_sharded_grad_step_on_four_devices():
  data, replicated = _mesh_shardings()
  net = model.create_model('b0', num_classes=10, block_strings=TINY_BLOCKS)
  variables = jax.device_put(_fake_variables(net), replicated)
  images = jax.device_put(_images((8, 32, 32, 3)), data)
  labels = jax.device_put(jnp.arange(8) % 10, data)

  def grad_step(params, batch_stats, images, labels, rng):
    def loss_fn(params):
      logits, updates = net.apply({'params': params, 'batch_stats': batch_stats}, images,
                                  train=True, mutable=['batch_stats'], rngs={'dropout': rng})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates['batch_stats']
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    new_params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    return new_params, new_stats, loss

  assert len(images.sharding.device_set) == 4
  new_params, new_stats, loss = jax.jit(grad_step)(
      variables['params'], variables['batch_stats'], images, labels, jax.random.key(0))
  assert np.isfinite(loss)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         variables['params'], new_params)
  assert all(jax.tree_util.tree_leaves(changed))
  assert all(jax.tree_util.tree_leaves(jax.tree.map(
      lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
      variables['batch_stats'], new_stats)))
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(new_params))


def test_sharded_batchnorm_is_synchronised():
  data, replicated = _mesh_shardings()
  net = model.create_model('b0', num_classes=10, block_strings=TINY_BLOCKS, dropout_rate=0.0,
                           drop_path_rate=0.0)
  variables = _fake_variables(net)
  # Each device's two examples get their own offset, so per-device BN would differ visibly.
  x = _images((8, 32, 32, 3)) + jnp.repeat(jnp.arange(4.0), 2)[:, None, None, None]
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
