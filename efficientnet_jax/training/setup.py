"""What a config builds before any step runs: the model, its plan, the mesh, optimizer and steps.

One home for it, shared by training (`loop`), evaluation (`evaluation`) and the benchmark, so
that the step the benchmark times is the step training runs:

  validate(config, workdir)   cheap checks, seconds, before anything is printed or written
  plan_for_dataset(config)    epochs → steps against the dataset (imports the input pipeline)
  build(config, plan)         model, mesh, optimizer, the train state's shapes, the jitted steps
  from_config(config)         all three, for training and evaluation

Inputs are checked cheapest first (workdir, model name, optimizer, augmentation policy, batch
against devices, then the data, then a checkpoint's shapes) so that a mistake fails in seconds,
before the model is compiled and before anything is written. The caller's config is never
changed: `Setup.config` is a copy with the derived values resolved (`resolve`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from typing import Any, Callable

import jax

from efficientnet_jax.errors import ConfigError
from efficientnet_jax.models import efficientnet
from efficientnet_jax.training import optimizer as optimizer_lib
from efficientnet_jax.training import run_paths
from efficientnet_jax.training import state as state_lib
from efficientnet_jax.training import steps as steps_lib
from efficientnet_jax.training import xla_options


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a config means in steps, computed once."""
  steps_per_epoch: int
  total_steps: int
  image_size: int
  num_classes: int


def validate(config, workdir: str | None = None) -> None:
  """The checks that need no data and no compilation (a few seconds, nothing written).

  Raises:
    ConfigError / ValueError: an unwritable workdir or an unsupported kind of path (workdir or
      `init_from`), an unknown model, optimizer or schedule, or a batch that does not split over
      the devices; the message says how to fix it.
  """
  if workdir is not None:
    run_paths.check_workdir(workdir)
  if config.init_from:
    run_paths.check_path_kind(config.init_from, '--config.init_from')
  efficientnet.model_from_config(config)  # An unknown model name or field fails here.
  optimizer_lib.check_names(config)
  xla_options.check_cpu_opt_preset(config.xla_cpu_opt_preset)
  # Inside the function: outside input/, the input part is never imported at module level.
  # pylint: disable=g-import-not-at-top  (both TF-free)
  from efficientnet_jax.input import augment_policies
  from efficientnet_jax.input import cluttered_digits
  if config.augment.policy not in augment_policies.AUGMENT_POLICIES:
    raise ConfigError(f'Unknown augment.policy {config.augment.policy!r}; use one of: '
                      f"{', '.join(augment_policies.AUGMENT_POLICIES)} (e.g. :aug=randaugment).")
  if config.dataset == 'cluttered_digits':  # Its parameters, before the config is printed.
    cluttered_digits.Params.from_config(config).checked()
  steps_lib.check_global_batch(config.batch_size, config.grad_accum_steps, jax.device_count())
  steps_lib.check_bn_groups(config.bn_group_size, config.batch_size, config.grad_accum_steps,
                            jax.device_count())


# A run shorter than this many BN memory spans (1/(1 − momentum) steps) evaluates with moving
# statistics that still remember the start (momentum^steps of them: e^-5 < 1% at 5 spans).
BN_MEMORY_SPANS = 5
_SUGGESTED_MOMENTA = (0.99, 0.98, 0.97, 0.95, 0.9, 0.8, 0.5)


def bn_memory_warning(bn_momentum: float, total_steps: int) -> str | None:
  """One line when `total_steps` is too short for the BN moving statistics to forget the start.

  The moving mean and variance decay by `bn_momentum` per step, so after a run of n steps the
  statistics the run started with (ImageNet's, for converted weights) still weigh
  `bn_momentum^n`, and evaluation normalises with them.
  """
  span = 1.0 / (1.0 - bn_momentum) if bn_momentum < 1 else float('inf')
  if total_steps >= BN_MEMORY_SPANS * span:
    return None
  remembered = bn_momentum ** total_steps
  fits = [m for m in _SUGGESTED_MOMENTA if BN_MEMORY_SPANS / (1.0 - m) <= total_steps]
  fix = (f'set --config.bn_momentum={fits[0]}' if fits else 'train for more steps') + (
      ' or train longer' if fits else '')
  return (f'warning: {total_steps} steps are fewer than {BN_MEMORY_SPANS} BN memory spans '
          f'(1/(1 - bn_momentum={bn_momentum}) = {span:.0f} steps each): the moving statistics '
          f'evaluation uses will still be {remembered:.0%} those of the start; {fix}.')


def make_plan(config, num_classes: int, num_train_examples: int,
              model: efficientnet.EfficientNet) -> Plan:
  """Validates the config against a dataset of this size; converts epochs to steps."""
  if config.num_classes != num_classes:
    raise ConfigError(f'config.num_classes={config.num_classes} but dataset {config.dataset!r} '
                      f'has {num_classes} classes; set --config.num_classes={num_classes}.')
  steps_per_epoch = max(1, num_train_examples // config.batch_size)
  total = config.total_steps or int(round(config.num_epochs * steps_per_epoch))
  # The model's resolution is config.image_size where set, else the variant's (or φ's).
  return Plan(steps_per_epoch, total, model.resolution, num_classes)


def plan_for_dataset(config) -> Plan:
  """The plan of `config` on its dataset; imports the input pipeline (TensorFlow, ~10 s)."""
  from efficientnet_jax.input import sources  # pylint: disable=g-import-not-at-top
  model = model_for_training(config)
  info = sources.dataset_info(config)
  return make_plan(config, info.num_classes, info.num_train_examples, model)


@dataclasses.dataclass
class Setup:
  """The model, its plan, the mesh, the optimizer, the train state's shapes and the steps.

  `state` (a freshly initialised state) and the jitted steps are made on first use: a resumed
  run restores into `abstract_state` and never compiles the initialiser.

  Attributes:
    config: `resolve(config)` of the config built from: what the run reads from here on.
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
    """`train_step(state, batch, rng) -> (state, metrics)`, jitted over the mesh.

    With augmentation on the device (`augment.on_device`), the step takes the uint8 images of
    the host pipeline and augments and normalises them first.
    """
    c = self.config
    return steps_lib.jit_train_step(steps_lib.make_train_step(
        self.model, self.tx, label_smoothing=c.label_smoothing, ema_decay=c.ema_decay,
        grad_accum_steps=c.grad_accum_steps, **_device_preprocessing(c, self.model)), self.mesh)

  @functools.cached_property
  def eval_step(self):
    """`eval_step(state, batch) -> sums`, jitted over the mesh."""
    return steps_lib.jit_eval_step(steps_lib.make_eval_step(self.model), self.mesh)


def _device_preprocessing(config, model) -> dict[str, Any]:
  """`make_train_step`'s `preprocess` argument when the train batch is augmented on the device.

  Empty otherwise, so that the host-augmented step is built from the very same arguments.
  """
  # Inside the function: outside input/, the input part is never imported at module level.
  from efficientnet_jax.input import device_preprocessing  # pylint: disable=g-import-not-at-top
  if not device_preprocessing.augment_on_device(config):
    return {}
  return {'preprocess': device_preprocessing.train_images_fn(config, model.dtype)}


def model_for_training(config) -> efficientnet.EfficientNet:
  """The model `config` trains: `model_from_config`, its BN momentum per micro-batch.

  With gradient accumulation the model runs once per micro-batch, so it is given the momentum
  that keeps the moving statistics' memory per optimizer step (`steps.micro_batch_bn_momentum`).
  Evaluation builds the same module (its momentum is unused without training).
  """
  return efficientnet.model_from_config(config, bn_momentum=steps_lib.micro_batch_bn_momentum(
      config.bn_momentum, config.grad_accum_steps))


def resolve(config):
  """A copy of `config` with its derived values filled in; the caller's config is left alone.

  The image size, unset for "the model's resolution", becomes that resolution: the input
  pipeline needs it concrete. `build` and `from_config` resolve the config they are given
  (`Setup.config`).
  """
  resolved = copy.deepcopy(config)
  resolved.image_size = efficientnet.model_from_config(config).resolution
  return resolved


def build(config, plan: Plan) -> Setup:
  """Builds everything `plan` needs for `config` (no data and no workdir access).

  Checks nothing `validate` checks: the callers validate first. `config` is not changed;
  `Setup.config` is the copy the run reads from here on.
  """
  config = resolve(config)
  model = model_for_training(config)
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


def from_config(config) -> Setup:
  """`build(config, plan_for_dataset(config))`: what training and evaluation start from.

  Works on `resolve(config)`; the caller's config is left alone.
  """
  config = resolve(config)
  validate(config)  # A mistake fails in seconds, before TensorFlow loads.
  return build(config, plan_for_dataset(config))

