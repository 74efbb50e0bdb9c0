"""The training system, run small: a tiny EfficientNet on the digits at 32 px, 4 fake devices."""

import json
import os
import signal

import chex
import jax
import numpy as np
import pytest

import reliability_config
from efficientnet_jax import config as config_lib
from efficientnet_jax import errors
from efficientnet_jax.errors import ConfigError
from efficientnet_jax.input import pipeline
from efficientnet_jax.models import efficientnet
from efficientnet_jax.training import checkpointing
from efficientnet_jax.training import evaluation
from efficientnet_jax.training import hooks
from efficientnet_jax.training import loop
from efficientnet_jax.training import setup
from efficientnet_jax.training import steps as steps_lib


def tiny_config(**overrides):
  """A test-only tiny variant: width/depth 0.25 (8-filter stages, one block each).

  Depthwise convolutions use XLA's grouped convolution: the 'shift' form that 'auto' picks on CPU
  runs faster but unrolls each k×k kernel into k² multiply-adds, forward and backward, and
  compiles a third slower; these tests are compile-bound (layers' tests compare the two forms).
  The model, batch, optimizer and learning rate are tests/reliability_config.py's, so that the
  train and eval steps are the same programs as the session's reference run's and come from the
  persistent compilation cache (the number of steps is not part of the program).
  """
  values = dict(reliability_config.PROGRAM, total_steps=3, log_every_steps=1,
                eval_every_steps=3, checkpoint_every_steps=3)
  return config_lib.get_config('b0', **{**values, **overrides})


def _params(workdir, config):
  s = setup.from_config(config)
  checkpointer = checkpointing.for_run(config, workdir, create=False)
  state, _, step = checkpointer.restore(s.state)
  checkpointer.close()
  return step, jax.device_get(state)


def _jsonl(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_train_eval_checkpoint_then_resume_continues_exactly(tmp_path, monkeypatch):
  config = tiny_config()
  first = str(tmp_path / 'resumed')
  validations = []
  validate = setup.validate
  monkeypatch.setattr(setup, 'validate', lambda *args: validations.append(args) or validate(*args))
  result = loop.train_and_evaluate(config, first)
  assert validations == [(config, first)]  # Once per run.
  assert 0.0 <= result['eval_top1'] <= 1.0 and 'eval_ema_top1' in result
  step, _ = _params(first, config)
  assert step == 3
  lines = _jsonl(first)
  assert [l['step'] for l in lines if 'train_loss' in l] == [1, 2, 3]
  assert all('learning_rate' in l and 'images_per_sec' in l for l in lines if 'train_loss' in l)
  assert any('eval_top1' in l for l in lines)

  # Rerunning with a longer schedule resumes at step 3 and must match an uninterrupted run.
  longer = tiny_config(total_steps=5, eval_every_steps=5, checkpoint_every_steps=5)
  loop.train_and_evaluate(longer, first)
  straight = str(tmp_path / 'straight')
  loop.train_and_evaluate(longer, straight)
  (step_a, state_a), (step_b, state_b) = _params(first, longer), _params(straight, longer)
  assert step_a == step_b == 5
  chex.assert_trees_all_close(state_a.params, state_b.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(state_a.ema, state_b.ema, rtol=1e-5, atol=1e-6)
  assert [l['step'] for l in _jsonl(first) if 'train_loss' in l] == [1, 2, 3, 4, 5]

  # The evaluate CLI's function reports the same checkpoint.
  report = evaluation.evaluate_checkpoint(longer, first)
  assert report['step'] == 5
  assert set(report) >= {'top1', 'top5', 'loss', 'ema_top1', 'ema_top5', 'ema_loss'}


def test_train_step_compiles_once():
  config = tiny_config()
  s = setup.from_config(config)
  step_fn = chex.assert_max_traces(n=1)(steps_lib.make_train_step(
      s.model, s.tx, label_smoothing=0.1, ema_decay=0.99))
  jitted = steps_lib.jit_train_step(step_fn, s.mesh)
  batches = pipeline.train_iterator(config, global_batch_size=config.batch_size)
  state = s.state
  for _ in range(3):
    state, metrics = jitted(state, steps_lib.global_batch(next(batches), s.mesh), s.step_rng)
  assert int(state.step) == 3 and np.isfinite(float(metrics['train_loss']))


def test_gradient_accumulation_averages_micro_batch_gradients():
  # Plain SGD with LR 1 and no dropout: the update is exactly minus the mean gradient, and in
  # training BN normalises with each micro-batch's own statistics.
  config = tiny_config(grad_accum_steps=2, optimizer='sgd', weight_decay=0.0,
                       learning_rate=1.0, lr_base_batch_size=0, lr_schedule='constant',
                       **{'sgd.momentum': 0.0},
                       dropout_rate=0.0, drop_path_rate=0.0, ema_decay=0.0, label_smoothing=0.0)
  s = setup.from_config(config)
  host_batch = next(pipeline.train_iterator(config, global_batch_size=config.batch_size))
  accumulated = steps_lib.jit_train_step(steps_lib.make_train_step(
      s.model, s.tx, label_smoothing=0.0, ema_decay=0.0, grad_accum_steps=2), s.mesh)
  params0 = jax.device_get(s.state.params)
  batch_stats0 = jax.device_get(s.state.batch_stats)
  state, metrics = accumulated(s.state, steps_lib.global_batch(host_batch, s.mesh), s.step_rng)
  assert int(metrics['nonfinite']) == 0

  def loss(params, images, labels):
    logits, _ = s.model.apply({'params': params, 'batch_stats': batch_stats0}, images,
                              train=True, mutable=['batch_stats'])
    return steps_lib.cross_entropy(logits, labels).mean()

  # Jitted: op by op, this reference gradient alone took 88 s on a 2-core CPU (17 s jitted).
  grad = jax.jit(jax.grad(loss))
  grads = [grad(params0, host_batch['image'][k::2], host_batch['label'][k::2]) for k in range(2)]
  # Compare the updates themselves (not the parameters they are added to).
  update = jax.tree.map(lambda new, old: new - old, jax.device_get(state.params), params0)
  expected = jax.tree.map(lambda g0, g1: -(g0 + g1) / 2, *grads)
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(expected))
  chex.assert_trees_all_close(update, expected, rtol=1e-3, atol=1e-4 * scale)
  # Summing instead of averaging, or one micro-batch only, would be far outside that.
  assert not np.allclose(jax.tree.leaves(update)[0], -jax.tree.leaves(grads[0])[0],
                         atol=1e-3 * scale)


def test_batch_not_divisible_by_devices_is_a_config_error():
  with pytest.raises(ConfigError, match='not divisible by the 4 devices'):
    setup.from_config(tiny_config(batch_size=18))


def test_bn_group_that_cuts_across_devices_is_a_config_error():
  # 16 examples on 4 devices: groups of 3 would straddle devices, 32 exceeds the batch.
  for group in (3, 32):
    with pytest.raises(ConfigError, match=f'bn_group_size={group} does not tile .* 0 '):
      setup.validate(tiny_config(bn_group_size=group))
  setup.validate(tiny_config(bn_group_size=8))  # Two devices per group.
  setup.validate(tiny_config(bn_group_size=2))  # Two groups per device.


def test_gradient_accumulation_keeps_the_bn_memory_per_optimizer_step():
  one = setup.model_for_training(tiny_config(bn_momentum=0.99))
  four = setup.model_for_training(tiny_config(bn_momentum=0.99, grad_accum_steps=4))
  assert one.bn_momentum == 0.99
  np.testing.assert_allclose(four.bn_momentum ** 4, 0.99, rtol=1e-12)
  # The model knows nothing of training: from the config alone it has the configured momentum.
  config = tiny_config(bn_momentum=0.99, grad_accum_steps=4)
  assert efficientnet.model_from_config(config).bn_momentum == 0.99


def test_build_leaves_the_callers_config_as_it_was():
  config = tiny_config(image_size=None, grad_accum_steps=2)
  before = config.to_dict()
  model = setup.model_for_training(config)
  s = setup.build(config, setup.make_plan(config, 10, 1437, model))
  assert config.to_dict() == before and config.image_size is None
  # The run reads a resolved copy: the image size is the variant's resolution.
  assert s.config.image_size == s.plan.image_size == model.resolution == 224
  assert s.model == model
  assert setup.resolve(config).to_dict() == s.config.to_dict() and config.to_dict() == before


def test_num_classes_mismatch_is_a_config_error():
  with pytest.raises(ConfigError, match='--config.num_classes=10'):
    setup.from_config(tiny_config(num_classes=1000))


def _two_class_folder(root):
  """root/{train,test}/{cat,dog}/*.png: 4 tiny real images per class and split."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for split in ('train', 'test'):
    for k, label in enumerate(('cat', 'dog')):
      os.makedirs(root / split / label)
      for i in range(4):
        Image.new('RGB', (40, 36), (60 * k + 10 * i, 90, 120)).save(
            root / split / label / f'{i}.png')
  return root


def test_fewer_than_five_classes_report_top_k_over_all_of_them(tmp_path):
  # What the loop and evaluate_checkpoint run at every evaluation, on a fresh state (a train
  # step would add a compile and nothing to what is checked).
  config = tiny_config(dataset='folder', data_dir=str(_two_class_folder(tmp_path / 'images')),
                       num_classes=2, eval_split='test', batch_size=8, eval_batch_size=8)
  s = setup.from_config(config)
  metrics = evaluation.evaluate(config, s.state, s.eval_step, s.mesh)
  assert metrics['eval_top5_k'] == 2 and metrics['eval_top5'] == 1.0  # Top-2 of 2 classes.
  assert metrics['eval_ema_top5'] == 1.0 and 0.0 <= metrics['eval_top1'] <= 1.0


class _SigtermAfter(hooks.StepHook):
  """Sends this process SIGTERM after one step, as a scheduler's preemption notice would."""

  def __init__(self, step: int):
    self._step = step

  def after_step(self, step: int) -> None:
    if step == self._step:
      os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_preempted_mid_log_interval_resumes_logging_the_same_means(tmp_path):
  """Steps 1–2 of a 4-step log interval run before the stop: the resumed run's line is unchanged.

  The checkpoint's meta carries the unlogged steps' metrics, so the interval's mean is taken over
  the same four per-step values as in an uninterrupted run (a study's end train loss reads it).
  """
  config = tiny_config(total_steps=4, log_every_steps=4, eval_every_steps=4,
                       checkpoint_every_steps=4)
  stopped, straight = str(tmp_path / 'stopped'), str(tmp_path / 'straight')
  with pytest.raises(errors.Preempted, match='SIGTERM received: stopped at step 2 '):
    loop.train_and_evaluate(config, stopped, hooks=[_SigtermAfter(2)])
  assert [l['step'] for l in _jsonl(stopped) if 'train_loss' in l] == []
  loop.train_and_evaluate(config, stopped)
  loop.train_and_evaluate(config, straight)
  train_lines = lambda w: [{k: v for k, v in l.items() if k not in ('images_per_sec', 'time')}
                           for l in _jsonl(w) if 'train_loss' in l]
  assert train_lines(stopped) == train_lines(straight)  # JSON floats: the same bits.
  assert [l['step'] for l in train_lines(stopped)] == [4]
