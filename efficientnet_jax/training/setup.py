"""What a config builds before any step runs: the model, its plan, the mesh, optimizer and steps.

One home for it, shared by training (`loop`), evaluation (`evaluation`) and the benchmark, so
that the step the benchmark times is the step training runs:

  validate(config, workdir)   cheap checks, seconds, before anything is printed or written
  plan_for_dataset(config)    epochs → steps against the dataset (imports the input pipeline)
  build(config, plan)         model, mesh, optimizer, the train state's shapes, the jitted steps

Inputs are checked cheapest first (workdir, model name, optimizer, batch against devices, then
the data, then a checkpoint's shapes) so that a mistake fails in seconds, before the model is
compiled and before anything is written.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax

from efficientnet_jax.errors import ConfigError
from efficientnet_jax.models import efficientnet
from efficientnet_jax.training import checkpointing
from efficientnet_jax.training import optimizer as optimizer_lib
from efficientnet_jax.training import state as state_lib
from efficientnet_jax.training import steps as steps_lib


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a config means in steps, computed once."""
  steps_per_epoch: int
  total_steps: int
  image_size: int
  num_classes: int


def check_workdir(workdir: str) -> None:
  """Raises ConfigError unless `workdir` is, or can be created as, a writable directory.

  Creates nothing, so that a run failing on a later check leaves no trace. `os.access` is right
  for root too on what matters here (read-only file systems, a file in the path); a permission
  it cannot see (root-squashed NFS) fails at the first write, also as one line.
  """
  path = os.path.abspath(workdir)
  existing = path
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f'--workdir {workdir} cannot be a directory: {existing} is a file; choose '
                      'another --workdir.')
  if not os.access(existing, os.W_OK | os.X_OK):
    where = '' if existing == path else f' (it would be created in {existing})'
    raise ConfigError(f'--workdir {workdir} is not writable{where}; choose a directory you can '
                      'write.')


def validate(config, workdir: str | None = None) -> None:
  """The checks that need no data and no compilation (a few seconds, nothing written).

  Raises:
    ConfigError / ValueError: an unwritable workdir, an unknown model, optimizer or schedule, or
      a batch that does not split over the devices; the message says how to fix it.
  """
  if workdir is not None:
    check_workdir(workdir)
  efficientnet.model_from_config(config)  # An unknown model name or field fails here.
  optimizer_lib.check_names(config)
  steps_lib.check_global_batch(config.batch_size, config.grad_accum_steps, jax.device_count())


def make_plan(config, info, model: efficientnet.EfficientNet) -> Plan:
  """Validates the config against the dataset (`input.sources.DatasetInfo`); epochs → steps."""
  if config.num_classes != info.num_classes:
    raise ConfigError(f'config.num_classes={config.num_classes} but dataset {config.dataset!r} '
                      f'has {info.num_classes} classes; set --config.num_classes='
                      f'{info.num_classes}.')
  steps_per_epoch = max(1, info.num_train_examples // config.batch_size)
  total = config.total_steps or int(round(config.num_epochs * steps_per_epoch))
  return Plan(steps_per_epoch, total, config.image_size or model.resolution, info.num_classes)


def plan_for_dataset(config) -> Plan:
  """The plan of `config` on its dataset; imports the input pipeline (TensorFlow, ~10 s)."""
  from efficientnet_jax.input import sources  # pylint: disable=g-import-not-at-top
  model = efficientnet.model_from_config(config)
  return make_plan(config, sources.dataset_info(config), model)


@dataclasses.dataclass
class Setup:
  """The model, its plan, the mesh, the optimizer, the train state's shapes and the steps.

  `state` (a freshly initialised state) and the jitted steps are made on first use: a resumed
  run restores into `abstract_state` and never compiles the initialiser.
  """
  config: Any
  model: efficientnet.EfficientNet
  plan: Plan
  mesh: jax.sharding.Mesh
  tx: Any
  abstract_state: state_lib.TrainState
  step_rng: jax.Array
  init_state: Callable[[], state_lib.TrainState]

  @functools.cached_property
  def state(self) -> state_lib.TrainState:
    return self.init_state()

  @functools.cached_property
  def train_step(self):
    """`train_step(state, batch, rng) -> (state, metrics)`, jitted over the mesh."""
    c = self.config
    return steps_lib.jit_train_step(steps_lib.make_train_step(
        self.model, self.tx, label_smoothing=c.label_smoothing, ema_decay=c.ema_decay,
        grad_accum_steps=c.grad_accum_steps), self.mesh)

  @functools.cached_property
  def eval_step(self):
    """`eval_step(state, batch) -> sums`, jitted over the mesh."""
    return steps_lib.jit_eval_step(steps_lib.make_eval_step(self.model), self.mesh)


def build(config, plan: Plan) -> Setup:
  """Builds everything `plan` needs for `config` (no data and no workdir access).

  Sets `config.image_size` to the plan's (the input pipeline needs the concrete size).
  """
  model = efficientnet.model_from_config(config)
  steps_lib.check_global_batch(config.batch_size, config.grad_accum_steps, jax.device_count())
  if not config.image_size:
    config.image_size = plan.image_size
  mesh = steps_lib.data_mesh()
  replicated, _ = steps_lib.shardings(mesh)
  tx = optimizer_lib.create_optimizer(config, plan.steps_per_epoch)
  # Keys are made inside jit with replicated outputs: on several processes a host array cannot
  # be put on the global mesh (device_put needs addressable devices).
  rngs = lambda: jax.random.split(jax.random.key(config.seed))
  init = jax.jit(lambda: state_lib.create_train_state(model, tx, rngs()[0], plan.image_size,
                                                      use_ema=config.ema_decay > 0),
                 out_shardings=replicated)
  step_rng = jax.jit(lambda: rngs()[1], out_shardings=replicated)()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          jax.eval_shape(init))
  return Setup(config, model, plan, mesh, tx, abstract, step_rng, init)


def setup(config) -> Setup:
  """`build(config, plan_for_dataset(config))`: what training and evaluation start from."""
  efficientnet.model_from_config(config)  # An unknown model fails before TensorFlow loads.
  steps_lib.check_global_batch(config.batch_size, config.grad_accum_steps, jax.device_count())
  return build(config, plan_for_dataset(config))


def checkpointer_for(config, workdir: str, create: bool = True) -> checkpointing.Checkpointer:
  """The run's checkpoint manager: `workdir/checkpoints`, the config's interval and retention."""
  return checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                    save_every=config.checkpoint_every_steps,
                                    keep=config.keep_checkpoints, create=create)
