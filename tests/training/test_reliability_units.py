"""Fault tolerance, in-process and fast: damaged checkpoints, mismatched models, NaN steps, exits.

The subprocess tests (test_reliability.py) show the guarantees end to end; these pin down each
mechanism on its own, including the variants that are too slow to launch one by one.
"""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fault_injection
import reliability_config
import reliability_helpers as rh
from efficientnet_jax import cli
from efficientnet_jax import errors
from efficientnet_jax.models import efficientnet
from efficientnet_jax.training import checkpointing
from efficientnet_jax.training import loop
from efficientnet_jax.training import setup
from efficientnet_jax.training import state as state_lib
from efficientnet_jax.training import steps as steps_lib


@pytest.fixture(scope='module')
def abstract_state():
  return setup.from_config(reliability_config.get_config()).abstract_state


def _damage_truncate(step_dir):
  files = [os.path.join(r, n) for r, _, names in os.walk(step_dir) for n in names]
  biggest = max(files, key=os.path.getsize)
  os.truncate(biggest, os.path.getsize(biggest) // 2)


def _damage_drop_state_metadata(step_dir):
  os.remove(os.path.join(step_dir, 'state', '_METADATA'))


def _damage_garble_meta(step_dir):
  with open(os.path.join(step_dir, 'meta', 'metadata'), 'w') as f:
    f.write('{"model": "b0", "batch_')  # A JSON file cut short.


def _damage_drop_state(step_dir):
  shutil.rmtree(os.path.join(step_dir, 'state'))


@pytest.mark.parametrize('damage', [_damage_truncate, _damage_drop_state_metadata,
                                    _damage_garble_meta, _damage_drop_state])
def test_damaged_latest_checkpoint_falls_back_and_is_set_aside(damage, abstract_state,
                                                                reliability_reference, tmp_path,
                                                                caplog):
  reference_dir, _ = reliability_reference
  directory = shutil.copytree(os.path.join(reference_dir, 'checkpoints'), tmp_path / 'ckpt')
  latest, previous = os.path.join(directory, '8'), os.path.join(directory, '6')
  damage(latest)

  checkpointer = checkpointing.Checkpointer(str(directory))
  try:
    state, meta, step = checkpointer.restore(abstract_state)
    assert step == 6 and int(state.step) == 6 and meta['batch_size'] == 16
    warning = next(r.getMessage() for r in caplog.records if 'is damaged' in r.getMessage())
    assert f'{latest} (' in warning and f'checkpoint {previous} instead' in warning

    assert checkpointer.set_aside_damaged() == [latest + checkpointing.DAMAGED_SUFFIX]
    assert checkpointer.all_steps() == [2, 4, 6]
    assert checkpointer.restore(abstract_state)[2] == 6  # No warning the second time.
  finally:
    checkpointer.close()


def test_no_readable_checkpoint_is_one_clear_error(abstract_state, reliability_reference,
                                                   tmp_path):
  reference_dir, _ = reliability_reference
  directory = shutil.copytree(os.path.join(reference_dir, 'checkpoints'), tmp_path / 'ckpt')
  for step in (2, 4, 6, 8):
    _damage_drop_state(os.path.join(directory, str(step)))
  checkpointer = checkpointing.Checkpointer(str(directory), create=False)
  try:
    with pytest.raises(FileNotFoundError, match='No readable checkpoint') as error:
      checkpointer.restore(abstract_state)
    assert '\n' not in str(error.value) and 'step 8:' in str(error.value)
  finally:
    checkpointer.close()


def test_checkpoint_of_other_num_classes_names_first_mismatching_parameter(
    reliability_reference):
  reference_dir, _ = reliability_reference
  config = reliability_config.get_config()
  config.num_classes = 3
  model = efficientnet.model_from_config(config)
  tx = optax.sgd(0.1)
  target = jax.eval_shape(lambda: state_lib.create_train_state(
      model, tx, jax.random.key(0), 32, use_ema=True))
  checkpointer = checkpointing.Checkpointer(os.path.join(reference_dir, 'checkpoints'),
                                            create=False)
  try:
    with pytest.raises(errors.IncompatibleCheckpointError) as error:
      checkpointer.restore(target)
  finally:
    checkpointer.close()
  message = str(error.value)
  assert "['params']['classifier']['bias'] has shape (10,) in the checkpoint but (3,)" in message
  assert '--workdir' in message and '\n' not in message


class _Toy(nn.Module):
  """Dense + BatchNorm: the interface of EfficientNet that the train step uses, tiny."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train)(x.reshape((x.shape[0], -1)))
    return nn.Dense(3)(_inf_gradient(x))


@jax.custom_vjp
def _inf_gradient(x):
  return x


_inf_gradient.defvjp(lambda x: (x, None), lambda _, g: (g * jnp.inf,))


def _toy_step_result(images, learning_rate=0.1):
  model, tx = _Toy(), optax.sgd(learning_rate)
  state = state_lib.create_train_state(model, tx, jax.random.key(0), 2, use_ema=True)
  step = jax.jit(steps_lib.make_train_step(model, tx, label_smoothing=0.0, ema_decay=0.9))
  batch = {'image': images, 'label': jnp.array([0, 1, 2, 0])}
  return state, *step(state, batch, jax.random.key(1))


@pytest.mark.parametrize('case', ['inf_gradient_finite_loss', 'nan_loss'])
def test_non_finite_step_is_not_applied_and_is_counted(case):
  images = jnp.ones((4, 2, 2, 3))
  if case == 'nan_loss':
    images = images.at[0, 0, 0, 0].set(jnp.nan)
  old, new, metrics = _toy_step_result(images)
  if case == 'inf_gradient_finite_loss':
    assert np.isfinite(metrics['train_loss']) and not np.isfinite(metrics['grad_norm'])
  assert int(metrics['nonfinite']) == 1
  assert int(new.step) == 1 and int(new.skipped_steps) == 1  # The data position moves on.
  for old_leaf, new_leaf in zip(jax.tree.leaves((old.params, old.batch_stats, old.opt_state,
                                                 old.ema)),
                                jax.tree.leaves((new.params, new.batch_stats, new.opt_state,
                                                 new.ema))):
    np.testing.assert_array_equal(old_leaf, new_leaf)


def test_divergence_error_is_one_line_with_its_own_exit_code(capsys):
  def diverging_main(argv):
    del argv
    raise errors.DivergenceError('Training diverged: the loss or gradients were NaN/Inf.')

  with pytest.raises(SystemExit) as exit_info:
    cli.run(diverging_main)(['main'])
  assert exit_info.value.code == 3
  assert capsys.readouterr().err == ('error: Training diverged: the loss or gradients were '
                                     'NaN/Inf.\n')


@pytest.mark.slow
def test_skip_nonfinite_steps_skips_and_counts_them_in_metrics(tmp_path):
  config = reliability_config.get_config()
  config.skip_nonfinite_steps = True
  config.total_steps = 4
  faults = fault_injection.Faults(nonfinite_step=3, nonfinite_value=float('inf'))
  loop.train_and_evaluate(config, str(tmp_path), hooks=[faults])

  lines = [e for e in rh.metrics(tmp_path) if 'train_loss' in e]
  assert [(e['step'], e['nonfinite'], e['skipped_steps']) for e in lines] == [
      (1, 0, 0), (2, 0, 0), (3, 1, 1), (4, 0, 1)]
  assert lines[2]['train_loss'] is None  # Non-finite values are JSON null.
  assert rh.checkpoint_steps(tmp_path)[-1] == 4
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    assert all(json.loads(line) for line in f)  # Strict JSON throughout.


def test_failed_checkpoint_write_is_one_error_naming_the_step_and_the_intact_one(
    tmp_path, monkeypatch):
  # The failure orbax reports on a full disk, raised where the real one is: in the background
  # write of the array data (orbax's private serialization module; guarded so a rename skips).
  serialization = pytest.importorskip('orbax.checkpoint._src.serialization.serialization')
  if not hasattr(serialization, 'async_serialize_from_host'):
    pytest.skip('orbax moved its array serialization; the subprocess test still covers this')
  state = {'w': jnp.arange(1024, dtype=jnp.float32)}
  checkpointer = checkpointing.Checkpointer(str(tmp_path / 'ckpt'))
  checkpointer.save(1, state, {'step': 1}, force=True)
  checkpointer.wait()

  async def no_space(*args, **kwargs):
    del args, kwargs
    raise ValueError("RESOURCE_EXHAUSTED: Error writing \"w/0\": Failed to write 4096 bytes: "
                     "No space left on device [os_error_code='28']")

  monkeypatch.setattr(serialization, 'async_serialize_from_host', no_space)
  with pytest.raises(errors.CheckpointWriteError) as error:
    checkpointer.save(2, state, {'step': 2}, force=True)
    checkpointer.wait()
  checkpointer.close()  # The failure was reported once; closing does not raise it again.
  message = str(error.value)
  assert f'Writing checkpoint {tmp_path / "ckpt" / "2"} failed' in message
  assert 'No space left on device' in message and '\n' not in message
  assert f'the last complete checkpoint, {tmp_path / "ckpt" / "1"}, is intact' in message
  assert error.value.exit_code == 4
  restored = checkpointing.Checkpointer(str(tmp_path / 'ckpt'), create=False)
  try:
    assert restored.restore({'w': jax.ShapeDtypeStruct((1024,), jnp.float32)})[2] == 1
  finally:
    restored.close()


def test_only_file_system_failures_count_as_write_failures():
  assert checkpointing.is_write_failure(OSError(28, 'No space left on device'))
  assert checkpointing.is_write_failure(
      ValueError("OUT_OF_RANGE: ... File too large [os_error_code='27']"))
  assert not checkpointing.is_write_failure(ValueError('shapes (3,) and (4,) differ'))
  assert not checkpointing.is_write_failure(OSError(2, 'No such file or directory'))
