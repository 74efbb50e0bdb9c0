"""The augmentation policies and their tables (op names, policy v0, levels → op arguments).

`AUGMENT_POLICIES` is the one registry of `config.augment.policy`'s values: each policy's TF op
(augment.py, one image in the tf.data pipeline), its JAX op (device_augment.py, a batch on the
accelerator) and the config keys they read. The host pipeline (preprocessing.py), the device path
(device_preprocessing.py) and the config check (`training.setup.validate`) dispatch through it.
Both sides share this module, and the accelerator machines have no TensorFlow, so it imports
neither TensorFlow nor JAX. Every table and formula is TF EfficientNet's (tensorflow/tpu
models/official/efficientnet/autoaugment.py).

Magnitude convention (TF EfficientNet's, behind its M=10/17/28; docs/reference.md §5): a level
is on AutoAugment's 0..10 scale (`MAX_LEVEL = 10` is the strongest setting AutoAugment searched),
and levels above 10 extrapolate the same linear maps, e.g. rotation `level/10 * 30` degrees, so
M=28 rotates up to 84°. timm instead clips M at 10 unless told otherwise; we do not, so b7's M=28
means what it meant in TF. `level_to_arg` computes each op's argument from the level as TF does, in
Python double precision with `int()` truncation, and TF's ops then round it once to float32.
Computing it in float32 instead lands one float32 step off for many levels (v0's Color at level 6:
1.1800001 for 1.18, enough to move some pixels by one), and on another integer at levels 21 and 23
(SolarizeAdd 230 for 231). Nothing is clamped: where extrapolation leaves an op's domain, the op
does what TF's does.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping, Union

MAX_LEVEL = 10.0

# Fill value of pixels uncovered by geometric ops and of cutout (TF: 128 in each channel).
REPLACE = 128
# Translation in pixels and cutout half-side at level 10. TF's constants, meant for 224+ px images.
RANDAUGMENT_TRANSLATE_CONST = 100.0
RANDAUGMENT_CUTOUT_CONST = 40.0
AUTOAUGMENT_TRANSLATE_CONST = 250.0
AUTOAUGMENT_CUTOUT_CONST = 100.0

# The 16 ops RandAugment samples from (TF EfficientNet's list, same order).
RANDAUGMENT_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'Color',
                   'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX',
                   'TranslateY', 'Cutout', 'SolarizeAdd')
# Ops without an argument, and ops whose argument gets a random sign.
UNLEVELLED_OPS = ('AutoContrast', 'Equalize', 'Invert')
SIGNED_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')

# AutoAugment ImageNet policy v0: 25 sub-policies of (op, probability, level); one sub-policy is
# picked uniformly per image and its two ops applied in order, each with its probability.
POLICY_V0 = (
    (('Equalize', 0.8, 1), ('ShearY', 0.8, 4)),
    (('Color', 0.4, 9), ('Equalize', 0.6, 3)),
    (('Color', 0.4, 1), ('Rotate', 0.6, 8)),
    (('Solarize', 0.8, 3), ('Equalize', 0.4, 7)),
    (('Solarize', 0.4, 2), ('Solarize', 0.6, 2)),
    (('Color', 0.2, 0), ('Equalize', 0.8, 8)),
    (('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)),
    (('ShearX', 0.2, 9), ('Rotate', 0.6, 8)),
    (('Color', 0.6, 1), ('Equalize', 1.0, 2)),
    (('Invert', 0.4, 9), ('Rotate', 0.6, 0)),
    (('Equalize', 1.0, 9), ('ShearY', 0.6, 3)),
    (('Color', 0.4, 7), ('Equalize', 0.6, 0)),
    (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)),
    (('Solarize', 0.6, 8), ('Color', 0.6, 9)),
    (('Solarize', 0.2, 4), ('Rotate', 0.8, 9)),
    (('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)),
    (('ShearX', 0.0, 0), ('Solarize', 0.8, 4)),
    (('ShearY', 0.8, 0), ('Color', 0.6, 4)),
    (('Color', 1.0, 0), ('Rotate', 0.6, 2)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 8)),
    (('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)),
    (('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)),
    (('Posterize', 0.8, 2), ('Solarize', 0.6, 10)),
    (('Solarize', 0.6, 8), ('Equalize', 0.6, 1)),
    (('Color', 0.8, 6), ('Rotate', 0.4, 5)),
)
AUTOAUGMENT_POLICIES = {'v0': POLICY_V0}

Argument = Union[float, int]


def level_to_arg(name: str, level: Union[float, int], *,
                 translate_const: float = RANDAUGMENT_TRANSLATE_CONST,
                 cutout_const: float = RANDAUGMENT_CUTOUT_CONST) -> tuple[Argument, ...]:
  """The arguments TF passes to op `name` at `level`, before the random sign of geometric ops.

  TF's formulas, evaluated as TF evaluates them: on a Python number in double precision, `int()`
  truncating where TF truncates. The same formulas in float32 give other arguments for some levels
  (the module docstring has examples), hence Python numbers, not tensors or traced arrays.

  Args:
    name: one of `RANDAUGMENT_OPS`.
    level: magnitude on TF's 0..10 scale (may exceed 10), a Python (or NumPy) real number.
    translate_const: translation in pixels at level 10.
    cutout_const: cutout half-side in pixels at level 10.

  Returns:
    () for AutoContrast, Equalize and Invert; otherwise a 1-tuple: degrees (Rotate), bits
    (Posterize), threshold (Solarize), addition (SolarizeAdd), blend factor (Color, Contrast,
    Brightness, Sharpness), shear (ShearX/Y), pixels (TranslateX/Y), half-side (Cutout).
  """
  # Tensors and traced arrays are not `numbers.Real`; NumPy scalars are, and convert exactly.
  if not isinstance(level, numbers.Real):
    raise TypeError(f'level must be a Python number, got {level!r}.')
  fraction = float(level) / MAX_LEVEL
  if name in UNLEVELLED_OPS:
    return ()
  if name == 'Rotate':
    return (fraction * 30.0,)
  if name == 'Posterize':
    return (int(fraction * 4),)
  if name == 'Solarize':
    return (int(fraction * 256),)
  if name == 'SolarizeAdd':
    return (int(fraction * 110),)
  if name in ('Color', 'Contrast', 'Brightness', 'Sharpness'):
    return (fraction * 1.8 + 0.1,)
  if name in ('ShearX', 'ShearY'):
    return (fraction * 0.3,)
  if name in ('TranslateX', 'TranslateY'):
    return (fraction * float(translate_const),)
  if name == 'Cutout':
    return (int(fraction * cutout_const),)
  raise ValueError(f'Unknown augmentation op {name!r}; expected one of {RANDAUGMENT_OPS}.')


def policy_args(policy: str = 'v0', *, translate_const: float = AUTOAUGMENT_TRANSLATE_CONST,
                cutout_const: float = AUTOAUGMENT_CUTOUT_CONST
                ) -> tuple[tuple[tuple[str, float, tuple[Argument, ...]], ...], ...]:
  """An AutoAugment policy with each level replaced by TF's arguments (`level_to_arg`).

  Returns:
    Per sub-policy, per position: (op name, probability, arguments before the random sign).
  """
  if policy not in AUTOAUGMENT_POLICIES:
    raise ValueError(f'Unknown AutoAugment policy {policy!r}; expected one of '
                     f'{sorted(AUTOAUGMENT_POLICIES)}.')
  return tuple(
      tuple((name, probability, level_to_arg(name, level, translate_const=translate_const,
                                              cutout_const=cutout_const))
            for name, probability, level in sub_policy)
      for sub_policy in AUTOAUGMENT_POLICIES[policy])


@dataclasses.dataclass(frozen=True)
class AugmentPolicy:
  """One value of `config.augment.policy`: the op that applies it on each side, the keys it reads.

  The ops are named, not imported (this module imports neither TensorFlow nor JAX): each side
  looks its own up, augment.py's on the host and device_augment.py's on the accelerator. Both
  take the same keyword arguments, and translate/cutout default to TF's constants of the policy
  (`RANDAUGMENT_*` and `AUTOAUGMENT_*` above).

  Attributes:
    name: the value of `config.augment.policy`.
    host_op: the function of augment.py (TF, one uint8 image and a seed); None: the identity.
    device_op: the function of device_augment.py (JAX, a uint8 batch and a key per example);
      None: the identity.
    config_keys: (key of `config.augment`, the ops' keyword argument it sets), for each key the
      policy reads.
  """
  name: str
  host_op: str | None
  device_op: str | None
  config_keys: tuple[tuple[str, str], ...] = ()

  @property
  def is_identity(self) -> bool:
    """Whether the policy leaves the images as they are ('none')."""
    return self.host_op is None and self.device_op is None

  def op_kwargs(self, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ops' keyword arguments from `settings`: `config.augment`, or a mapping of its keys."""
    return {argument: settings[key] for key, argument in self.config_keys}


AUGMENT_POLICIES: dict[str, AugmentPolicy] = {policy.name: policy for policy in (
    # AutoAugment's policy v0, the one the TF EfficientNet runs used (`AUTOAUGMENT_POLICIES`).
    AugmentPolicy('autoaugment', host_op='autoaugment', device_op='autoaugment'),
    AugmentPolicy('randaugment', host_op='randaugment', device_op='randaugment',
                  config_keys=(('randaugment_layers', 'num_layers'),
                               ('randaugment_magnitude', 'magnitude'))),
    AugmentPolicy('none', host_op=None, device_op=None),
)}


def augment_policy(name: str) -> AugmentPolicy:
  """The policy `config.augment.policy` names; a ValueError names the valid ones."""
  if name not in AUGMENT_POLICIES:
    raise ValueError(f'Unknown augment policy {name!r}; expected one of '
                     f"{', '.join(AUGMENT_POLICIES)}.")
  return AUGMENT_POLICIES[name]
