"""The EfficientNet modules: structure, init, shapes, dtypes, padding, remat, endpoints.

Only `test_init_matches_tf` runs a real init; the others use `model_helpers.fake_variables` and
`model_helpers.TINY_BLOCKS` (why: model_helpers.py). BatchNorm, stochastic depth and sharding are
in test_layers.py.
"""

import functools

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from efficientnet_jax.models import efficientnet as model
from efficientnet_jax.models import flops
from efficientnet_jax.models import scaling
import model_helpers

# Trainable parameters (docs/reference.md §1, timm's count), 1000 classes.
EXPECTED_PARAMS = {
    'b0': 5_288_548, 'b1': 7_794_184, 'b2': 9_109_994, 'b3': 12_233_232, 'b4': 19_341_616,
    'b5': 30_389_784, 'b6': 43_040_704, 'b7': 66_347_960, 'b8': 87_413_142,
    'l2': 480_309_308, 'lite0': 4_652_008, 'lite1': 5_416_680, 'lite2': 6_092_072,
    'lite3': 8_197_096, 'lite4': 13_006_568,
}
B0_ENDPOINTS = {'reduction_1': (2, 16), 'reduction_2': (4, 24), 'reduction_3': (8, 40),
                'reduction_4': (16, 112), 'reduction_5': (32, 320)}  # name: (stride, channels)


# --- Structure -------------------------------------------------------------------------------


@pytest.mark.parametrize('name', scaling.MODEL_NAMES)
def test_trainable_params_match_reference(name):
  # flops.count_params memoises its abstract trace, which the MACs tests reuse.
  assert flops.count_params(model.create_model(name)) == EXPECTED_PARAMS[name]


def test_lite_has_no_squeeze_excite_and_b0_has():
  flat = lambda name: traverse_util.flatten_dict(
      model_helpers.abstract_init(model.create_model(name))['params'])
  lite, b0 = flat('lite0'), flat('b0')
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
    model_helpers.abstract_init(model.create_model('b0', padding='valid'))


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
  variables = model_helpers.abstract_init(model.create_model('b0', include_top=False))
  assert 'classifier' not in variables['params']
  assert model_helpers.count(variables['params']) == EXPECTED_PARAMS['b0'] - (1280 * 1000 + 1000)


def test_bfloat16_compute_float32_params_and_logits():
  net32 = model.create_model('b0', num_classes=10, block_strings=model_helpers.TINY_BLOCKS)
  net16 = model.create_model('b0', num_classes=10, block_strings=model_helpers.TINY_BLOCKS,
                             dtype='bfloat16')
  abstract = model_helpers.abstract_init(net16)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(abstract))
  conv_dtypes = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, (nn.Conv, nn.Dense)):
      conv_dtypes.append(out.dtype)
    return out

  with nn.intercept_methods(interceptor):
    model_helpers.abstract_init(net16)
  assert conv_dtypes and all(d == jnp.bfloat16 for d in conv_dtypes)

  variables = model_helpers.fake_variables(net32)
  x = model_helpers.images((4, 32, 32, 3))
  logits16 = jax.jit(functools.partial(net16.apply, train=False))(variables, x)
  logits32 = jax.jit(functools.partial(net32.apply, train=False))(variables, x)
  assert logits16.dtype == jnp.float32 and logits16.shape == (4, 10)
  assert np.all(np.isfinite(logits16))
  error = np.linalg.norm(logits16 - logits32) / np.linalg.norm(logits32)
  assert error < 0.05


@pytest.mark.parametrize('resolution', [33, 64])
def test_padding_modes_same_shapes_different_values(resolution):
  net = model.create_model('b0', num_classes=10, block_strings=model_helpers.TINY_BLOCKS)
  symmetric = net.clone(padding='symmetric')
  shape = (2, resolution, resolution, 3)
  images = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = model_helpers.fake_variables(net, shape)
  run = lambda m, v, x: m.apply(v, x, train=False, return_endpoints=True)
  same_shapes = jax.eval_shape(functools.partial(run, net), variables, images)
  symmetric_shapes = jax.eval_shape(functools.partial(run, symmetric), variables, images)
  assert same_shapes == symmetric_shapes
  if resolution % 2 == 0:  # TF-SAME pads stride-2 convs (0, 1) on even inputs, symmetric (1, 1).
    x = model_helpers.images(shape)
    logits_same = jax.jit(functools.partial(run, net))(variables, x)[0]
    logits_symmetric = jax.jit(functools.partial(run, symmetric))(variables, x)[0]
    assert not np.allclose(logits_same, logits_symmetric, rtol=1e-3, atol=1e-3)


def test_remat_same_outputs_and_gradients():
  net = model.create_model('b0', num_classes=10, block_strings=model_helpers.TINY_BLOCKS)
  variables = model_helpers.fake_variables(net)
  x, labels = model_helpers.images((4, 32, 32, 3)), jnp.arange(4)

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
      model_helpers.abstract_init(net, images.shape), images)
  for name, (stride, channels) in B0_ENDPOINTS.items():
    assert endpoints[name].shape == (2, 64 // stride, 64 // stride, channels), name
  assert endpoints['features'].shape == (2, 2, 2, 1280)


def test_b4_endpoint_channels_follow_round_filters():
  net = model.create_model('b4')
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  _, endpoints = jax.eval_shape(
      functools.partial(net.apply, train=False, return_endpoints=True),
      model_helpers.abstract_init(net, images.shape), images)
  channels = [endpoints[f'reduction_{k}'].shape[-1] for k in range(1, 6)]
  expected = [scaling.round_filters(c, 1.4) for _, c in B0_ENDPOINTS.values()]
  assert channels == expected == [24, 32, 56, 160, 448]
  assert [endpoints[f'reduction_{k}'].shape[1] for k in range(1, 6)] == [32, 16, 8, 4, 2]
