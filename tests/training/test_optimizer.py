"""The optimizer module: TF schedules, TF1 RMSProp, the weight-decay mask and rule, EMA."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from efficientnet_jax import config as config_lib
from efficientnet_jax import create_model
from efficientnet_jax.training import optimizer

IMAGENET_TRAIN_IMAGES = 1_281_167


def make_config(**overrides):
  """The builder's B0 recipe (RMSProp, 0.016 per 256 at batch 4096, …) with overrides."""
  return config_lib.get_config('b0', **overrides)


def tf_learning_rate(step, peak, steps_per_epoch, warmup_epochs=5, decay_epochs=2.4,
                     factor=0.97):
  """tensorflow/tpu efficientnet utils.build_learning_rate, 'exponential', in plain Python."""
  lr = peak * factor ** math.floor(step / (steps_per_epoch * decay_epochs))
  warmup_steps = int(warmup_epochs * steps_per_epoch)
  return peak * step / warmup_steps if step < warmup_steps else lr


@pytest.mark.parametrize('steps_per_epoch', [IMAGENET_TRAIN_IMAGES / 4096,
                                             IMAGENET_TRAIN_IMAGES // 4096])
def test_exponential_schedule_matches_tf(steps_per_epoch):
  config = make_config()
  assert optimizer.peak_learning_rate(config) == pytest.approx(0.256)
  schedule = optimizer.learning_rate_schedule(config, steps_per_epoch)
  warmup_steps = int(5 * steps_per_epoch)
  steps = [0, 1, 100, warmup_steps // 2, warmup_steps - 1, warmup_steps,
           int(10 * steps_per_epoch), int(100 * steps_per_epoch) + 7, int(350 * steps_per_epoch)]
  for step in steps:
    expected = tf_learning_rate(step, 0.256, steps_per_epoch)
    # float32 pow: 1e-5 relative.
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-5, err_msg=f'step {step}')
    np.testing.assert_allclose(jax.jit(schedule)(step), expected, rtol=1e-5)
  # Decay counts from step 0, so warmup ends on an already decayed LR; epoch 10 is 4 decays in.
  np.testing.assert_allclose(schedule(warmup_steps), 0.256 * 0.97**2, rtol=1e-6)
  np.testing.assert_allclose(schedule(int(10 * steps_per_epoch)), 0.256 * 0.97**4, rtol=1e-6)
  np.testing.assert_allclose(schedule(warmup_steps // 2),
                             0.256 * (warmup_steps // 2) / warmup_steps, rtol=1e-6)


def test_lr_scaling_disabled():
  config = make_config(lr_base_batch_size=0, learning_rate=0.1)
  assert optimizer.peak_learning_rate(config) == 0.1


def test_cosine_schedule():
  config = make_config(lr_schedule='cosine', total_steps=10_000, warmup_epochs=2.0)
  schedule = optimizer.learning_rate_schedule(config, steps_per_epoch=500)  # warmup: 1000 steps
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(250), 0.256 / 4, rtol=1e-6)
  np.testing.assert_allclose(schedule(1000), 0.256, rtol=1e-6)
  np.testing.assert_allclose(schedule(5500), 0.128, rtol=1e-5)  # Halfway through the cosine.
  np.testing.assert_allclose(schedule(1000 + 9000 // 3), 0.256 * 0.75, rtol=1e-5)
  np.testing.assert_allclose(schedule(10_000), 0.0, atol=1e-7)
  # total_steps unset: derived from num_epochs.
  config = make_config(lr_schedule='cosine', warmup_epochs=0.0, num_epochs=4.0)
  schedule = optimizer.learning_rate_schedule(config, steps_per_epoch=100)
  np.testing.assert_allclose(schedule(200), 0.128, rtol=1e-5)


def test_constant_schedule_with_warmup():
  schedule = optimizer.learning_rate_schedule(make_config(lr_schedule='constant'), 100)
  np.testing.assert_allclose([schedule(0), schedule(250), schedule(500), schedule(10**6)],
                             [0.0, 0.128, 0.256, 0.256], rtol=1e-6)


def test_weight_decay_mask_on_real_b0():
  model = create_model('b0')
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  params = variables['params']
  mask = optimizer.weight_decay_mask(params)
  flat_mask = {tuple(k.key for k in path): m
               for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]}
  excluded = {path for path, decay in flat_mask.items() if not decay}
  # Every module that keeps BN statistics is a BN module; its scale and bias, nothing else.
  bn_modules = {tuple(k.key for k in path[:-1])
                for path, _ in jax.tree_util.tree_flatten_with_path(variables['batch_stats'])[0]}
  assert len(bn_modules) == 2 + 2 + 15 * 3  # stem, head; block 0 has no expand conv.
  assert excluded == {m + (leaf,) for m in bn_modules for leaf in ('scale', 'bias')}
  assert len(excluded) == 98
  for path in [('stem_conv', 'kernel'), ('blocks_3', 'depthwise_conv', 'kernel'),
               ('blocks_3', 'expand_conv', 'kernel'), ('blocks_3', 'se', 'reduce', 'bias'),
               ('blocks_3', 'se', 'expand', 'bias'), ('head_conv', 'kernel'),
               ('classifier', 'kernel'), ('classifier', 'bias')]:
    assert flat_mask[path], path
  bn_size = sum(x.size for x in jax.tree.leaves(variables['batch_stats']))
  masked_size = sum(x.size for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
                    if not m)
  assert masked_size == bn_size  # C scale + C bias per BN, like its C mean + C var.


def test_is_batchnorm_path_rule():
  assert optimizer.is_batchnorm_path(('stem_bn', 'scale'))
  assert optimizer.is_batchnorm_path(('blocks_3', 'project_bn', 'bias'))
  assert optimizer.is_batchnorm_path(('BatchNorm_0', 'bias'))
  assert optimizer.is_batchnorm_path(('encoder', 'bn', 'scale'))
  assert not optimizer.is_batchnorm_path(('classifier', 'bias'))
  assert not optimizer.is_batchnorm_path(('se', 'reduce', 'bias'))
  assert not optimizer.is_batchnorm_path(('unbnlike', 'kernel'))


def tf1_rmsprop(params, grads_per_step, lrs, decay=0.9, momentum=0.9, eps=1e-3):
  """TF1 RMSPropOptimizer's dense update in numpy (ms starts at 1, LR inside the momentum)."""
  var, ms, mom = np.array(params, np.float64), np.ones_like(params), np.zeros_like(params)
  for g, lr in zip(grads_per_step, lrs):
    ms = decay * ms + (1 - decay) * g**2
    mom = momentum * mom + lr * g / np.sqrt(ms + eps)
    var = var - mom
  return var


def test_rmsprop_matches_tf1_with_changing_lr():
  # 2 steps per epoch, warmup 1 epoch, LR halves every step: the LR changes on every update.
  config = make_config(weight_decay=0.0, lr_base_batch_size=0, learning_rate=0.5,
                       warmup_epochs=1.0, lr_decay_epochs=0.5, lr_decay_factor=0.5)
  schedule = optimizer.learning_rate_schedule(config, steps_per_epoch=2)
  num_steps = 7
  lrs = [float(schedule(t)) for t in range(num_steps)]
  assert len(set(lrs)) == num_steps
  rng = np.random.default_rng(0)
  params = rng.normal(size=(5,)).astype(np.float32)
  grads = rng.normal(size=(num_steps, 5)).astype(np.float32)

  tx = optimizer.create_optimizer(config, steps_per_epoch=2)
  p, state = jnp.asarray(params), tx.init(jnp.asarray(params))
  for g in grads:
    updates, state = tx.update(jnp.asarray(g), state, p)
    p = optax.apply_updates(p, updates)
  expected = tf1_rmsprop(params, grads, lrs)
  np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)

  # The test can tell: the LR outside the momentum (Keras-style RMSProp) gives other weights.
  lr_outside = params.astype(np.float64)
  ms, mom = np.ones(5), np.zeros(5)
  for g, lr in zip(grads, lrs):
    ms = 0.9 * ms + 0.1 * g**2
    mom = 0.9 * mom + g / np.sqrt(ms + 1e-3)
    lr_outside = lr_outside - lr * mom
  assert np.abs(lr_outside - expected).max() > 1e-3


def _toy_params():
  rng = np.random.default_rng(1)
  shapes = {'stem_conv': {'kernel': (3, 3, 2, 4)}, 'stem_bn': {'scale': (4,), 'bias': (4,)},
            'blocks_0': {'se': {'reduce': {'kernel': (4, 2), 'bias': (2,)}},
                         'project_bn': {'scale': (4,), 'bias': (4,)}},
            'classifier': {'kernel': (4, 3), 'bias': (3,)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s) * 10, jnp.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def _toy_loss(params):
  return sum(jnp.sum(jnp.sin(x) * jnp.arange(x.size).reshape(x.shape)) for x in
             jax.tree.leaves(params))


def _l2_loss(params, weight_decay):
  """TF: weight_decay · Σ ½v² over every variable outside BatchNorm."""
  total = 0.0
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not any(k.key.endswith('_bn') for k in path):
      total += 0.5 * jnp.sum(x**2)
  return weight_decay * total


@pytest.mark.parametrize('name', ['sgd', 'rmsprop'])
def test_weight_decay_equals_l2_loss(name):
  params, wd = _toy_params(), 1e-5
  common = dict(optimizer=name, warmup_epochs=0.0, lr_schedule='constant', learning_rate=0.1,
                lr_base_batch_size=0)
  with_decay = optimizer.create_optimizer(make_config(weight_decay=wd, **common), 10)
  no_decay = optimizer.create_optimizer(make_config(weight_decay=0.0, **common), 10)
  grads = jax.grad(_toy_loss)(params)
  full_grads = jax.grad(lambda p: _toy_loss(p) + _l2_loss(p, wd))(params)
  # Sanity: the L2 term is visible in the gradients (params ~10, so wd·v ~1e-4).
  assert max(jax.tree.leaves(jax.tree.map(lambda a, b: jnp.abs(a - b).max(), grads,
                                          full_grads))) > 1e-5
  state_a, state_b = with_decay.init(params), no_decay.init(params)
  for _ in range(3):
    ua, state_a = with_decay.update(grads, state_a, params)
    ub, state_b = no_decay.update(full_grads, state_b, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), ua, ub)


def test_adamw_decay_skips_bn():
  params = _toy_params()
  config = make_config(optimizer='adamw', weight_decay=0.1, warmup_epochs=0.0,
                       lr_schedule='constant', learning_rate=0.01, lr_base_batch_size=0)
  tx = optimizer.create_optimizer(config, 10)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['stem_bn']['scale'], 0.0)
  np.testing.assert_allclose(updates['classifier']['bias'],
                             -0.01 * 0.1 * params['classifier']['bias'], rtol=1e-6)


def test_grad_clip_norm():
  params = _toy_params()
  config = make_config(optimizer='sgd', weight_decay=0.0, grad_clip_norm=1.0, warmup_epochs=0.0,
                       lr_schedule='constant', learning_rate=1.0, lr_base_batch_size=0,
                       **{'sgd.momentum': 0.0})
  tx = optimizer.create_optimizer(config, 10)
  grads = jax.tree.map(lambda x: 100 * jnp.ones_like(x), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-5)


def test_unknown_names_raise():
  with pytest.raises(ValueError, match='optimizer'):
    optimizer.create_optimizer(make_config(optimizer='lamb'), 10)
  with pytest.raises(ValueError, match='lr_schedule'):
    optimizer.learning_rate_schedule(make_config(lr_schedule='step'), 10)


def test_ema_decay_warmup():
  np.testing.assert_allclose(optimizer.ema_decay_at(0, 0.9999), 0.1, rtol=1e-6)
  np.testing.assert_allclose(optimizer.ema_decay_at(1, 0.9999), 2 / 11, rtol=1e-6)
  np.testing.assert_allclose(optimizer.ema_decay_at(10, 0.9999), 11 / 20, rtol=1e-6)
  np.testing.assert_allclose(optimizer.ema_decay_at(10**6, 0.9999), 0.9999, rtol=1e-7)
  np.testing.assert_allclose(jax.jit(optimizer.ema_decay_at)(jnp.int32(8), 0.9999), 0.5)


def test_update_ema_covers_params_and_batch_stats():
  ema = {'params': {'w': jnp.zeros(3)}, 'batch_stats': {'stem_bn': {'mean': jnp.zeros(3),
                                                                   'var': jnp.ones(3)}}}
  new = {'params': {'w': jnp.full(3, 2.0)}, 'batch_stats': {'stem_bn': {'mean': jnp.full(3, 4.0),
                                                                       'var': jnp.full(3, 3.0)}}}
  out = jax.jit(optimizer.update_ema)(ema, new, 10, 0.9999)  # d = 11/20
  np.testing.assert_allclose(out['params']['w'], 2.0 * 9 / 20, rtol=1e-6)
  np.testing.assert_allclose(out['batch_stats']['stem_bn']['mean'], 4.0 * 9 / 20, rtol=1e-6)
  np.testing.assert_allclose(out['batch_stats']['stem_bn']['var'], 11 / 20 + 3.0 * 9 / 20,
                             rtol=1e-6)
  late = optimizer.update_ema(ema, new, 10**7, 0.9999)
  np.testing.assert_allclose(late['params']['w'], 2.0 * 1e-4, rtol=1e-4)
  bf16 = optimizer.update_ema({'w': jnp.zeros(2, jnp.bfloat16)}, {'w': jnp.ones(2, jnp.bfloat16)},
                          0, 0.9999)
  assert bf16['w'].dtype == jnp.bfloat16
