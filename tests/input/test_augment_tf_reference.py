"""augment.py against TF EfficientNet's own augmentation code, bit for bit.

data/tf_reference/autoaugment_reference.npz holds what tensorflow/tpu
models/official/efficientnet/autoaugment.py outputs (the module itself, run by
data/tf_reference/make_reference.py; its README says how) on three small uint8 images: each of the
16 ops at RandAugment magnitudes 0/5/10/17/28 (and small ones where those cover the whole image),
both signs of the geometric ops, RandAugment's and AutoAugment's constants; every (sub-policy,
position) of AutoAugment v0 at its level, alone and with its partner; and the reference's v0 table,
RandAugment op list and constants. Every output must be equal, not close.
"""

import functools
import inspect
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from efficientnet_jax.input import augment
from efficientnet_jax.input import augment_policies as policies

DATA = os.path.join(os.path.dirname(__file__), 'data', 'tf_reference', 'autoaugment_reference.npz')
OP_FUNCTIONS = {
    'AutoContrast': augment.auto_contrast, 'Equalize': augment.equalize, 'Invert': augment.invert,
    'Rotate': augment.rotate, 'Posterize': augment.posterize, 'Solarize': augment.solarize,
    'SolarizeAdd': augment.solarize_add, 'Color': augment.color, 'Contrast': augment.contrast,
    'Brightness': augment.brightness, 'Sharpness': augment.sharpness, 'ShearX': augment.shear_x,
    'ShearY': augment.shear_y, 'TranslateX': augment.translate_x,
    'TranslateY': augment.translate_y, 'Cutout': augment.cutout,
}
RANDAUGMENT_CONSTANTS = dict(translate_const=policies.RANDAUGMENT_TRANSLATE_CONST,
                             cutout_const=policies.RANDAUGMENT_CUTOUT_CONST)
AUTOAUGMENT_CONSTANTS = dict(translate_const=policies.AUTOAUGMENT_TRANSLATE_CONST,
                             cutout_const=policies.AUTOAUGMENT_CUTOUT_CONST)


@functools.cache
def _reference():
  with np.load(DATA) as data:
    arrays = {key: data[key] for key in data.files}
  info = json.loads(str(arrays.pop('info')))
  cases = json.loads(str(arrays.pop('cases')))
  images = {name: arrays[f'image_{name}'] for name in info['image_names']}
  return info, cases, images, arrays


def _expected(case, image_name):
  _, _, _, arrays = _reference()
  return arrays[f'outputs_{image_name}'][case['output_index'][image_name]]


def _run(name, image, args, sign, center):
  """The project's op `name` on `args` (from its level map), with the case's sign and centre."""
  if name in policies.SIGNED_OPS:
    return OP_FUNCTIONS[name](image, sign * args[0])
  if name == 'Cutout':
    return augment.cutout(image, args[0], center)
  return OP_FUNCTIONS[name](image, *args)


def _check(actual, expected, description):
  actual = np.asarray(actual)
  differing = actual != expected
  np.testing.assert_array_equal(
      actual, expected,
      err_msg=f'{description}: {differing.sum()} values differ, by up to '
      f'{np.abs(actual.astype(int) - expected).max()}')


def test_tables_and_constants_match_reference():
  info, _, _, _ = _reference()
  assert info['policy_v0'] == [[list(op) for op in sub_policy] for sub_policy in policies.POLICY_V0]
  assert info['randaugment_ops'] == list(policies.RANDAUGMENT_OPS)
  replace = [policies.REPLACE] * 3
  assert info['randaugment_constants'] == dict(RANDAUGMENT_CONSTANTS, replace=replace)
  assert info['autoaugment_constants'] == dict(AUTOAUGMENT_CONSTANTS, replace=replace)
  # RandAugment's per-op probability is drawn but dropped: the chosen op is always applied.
  assert info['randaugment_prob_used'] is False
  for function, constants in ((augment.randaugment, RANDAUGMENT_CONSTANTS),
                              (augment.apply_op, RANDAUGMENT_CONSTANTS),
                              (augment.autoaugment, AUTOAUGMENT_CONSTANTS)):
    defaults = {key: value.default for key, value in inspect.signature(function).parameters.items()}
    assert {key: defaults[key] for key in constants} == constants, function.__name__
    assert defaults['replace'] == policies.REPLACE


@pytest.mark.parametrize('name', policies.RANDAUGMENT_OPS)
def test_op_matches_reference(name):
  _, cases, images, _ = _reference()
  seeds = [tf.constant([seed, 1], tf.int64) for seed in range(2)]
  cases = [case for case in cases if case.get('op') == name and
           case['group'] in ('randaugment', 'randaugment_entry', 'autoaugment_constants')]
  assert cases
  for case in cases:
    constants = (AUTOAUGMENT_CONSTANTS if case['group'] == 'autoaugment_constants'
                 else RANDAUGMENT_CONSTANTS)
    args = policies.level_to_arg(name, case['magnitude'], **constants)
    for image_name, image in images.items():
      expected = _expected(case, image_name)
      _check(_run(name, tf.constant(image), args, case['sign'], case['center']), expected,
             f'{case} on {image_name}')
      if name not in policies.SIGNED_OPS and name != 'Cutout':
        # The public entry point, level and all.
        _check(augment.apply_op(name, tf.constant(image), case['magnitude'], seeds[0], **constants),
               expected, f'apply_op, {case} on {image_name}')
      elif (name in policies.SIGNED_OPS and case['sign'] == 1
            and case['group'] != 'randaugment_entry'):
        negative, = [c for c in cases if c['group'] == case['group'] and c['sign'] == -1 and
                     c['magnitude'] == case['magnitude']]
        outcomes = {expected.tobytes(), _expected(negative, image_name).tobytes()}
        for seed in seeds:  # Either sign, drawn from the seed.
          result = augment.apply_op(name, tf.constant(image), case['magnitude'], seed, **constants)
          assert result.numpy().tobytes() in outcomes, f'apply_op, {case} on {image_name}'


def test_policy_v0_ops_match_reference():
  # Each (sub-policy, position) alone, at its level, with AutoAugment's constants: the table's
  # levels and TF's double-precision level maps (in float32, Color's factor at levels 6 and 9 is
  # one float32 step off, which changes pixels).
  _, cases, images, _ = _reference()
  table = policies.policy_args('v0')
  cases = [case for case in cases if case['group'] == 'policy_single']
  assert len({(case['sub_policy'], case['position']) for case in cases}) == 50
  for case in cases:
    name, probability, args = table[case['sub_policy']][case['position']]
    assert (name, probability) == (case['op'], policies.POLICY_V0[case['sub_policy']][
        case['position']][1])
    assert args == policies.level_to_arg(name, case['level'], **AUTOAUGMENT_CONSTANTS)
    for image_name, image in images.items():
      _check(_run(name, tf.constant(image), args, case['sign'], None), _expected(case, image_name),
             f'{case} on {image_name}')


def test_policy_v0_sub_policies_match_reference():
  # Both ops of each sub-policy applied in order, for every combination of signs that matters.
  _, cases, images, _ = _reference()
  table = policies.policy_args('v0')
  cases = [case for case in cases if case['group'] == 'policy_both']
  assert len({case['sub_policy'] for case in cases}) == 25
  for case in cases:
    for image_name, image in images.items():
      result = tf.constant(image)
      for (name, _, args), sign in zip(table[case['sub_policy']], case['signs']):
        result = _run(name, result, args, sign, None)
      _check(result, _expected(case, image_name), f'{case} on {image_name}')


def _outcomes(image_name, groups, magnitude=None):
  _, cases, _, _ = _reference()
  return {_expected(case, image_name).tobytes() for case in cases
          if case['group'] in groups and magnitude in (None, case.get('magnitude'))}


def test_autoaugment_gives_reference_outcomes():
  # Whatever a seed picks (sub-policy, which ops apply, signs), the image is one that TF's policy
  # can produce: unchanged, one op of a sub-policy, or both.
  _, _, images, _ = _reference()
  for image_name, image in images.items():
    outcomes = _outcomes(image_name, ('policy_single', 'policy_both')) | {image.tobytes()}
    seen = set()
    for seed in range(40):
      result = augment.autoaugment(tf.constant(image), tf.constant([seed, 5], tf.int64)).numpy()
      assert result.tobytes() in outcomes, (image_name, seed)
      seen.add(result.tobytes())
    assert len(seen) > 10


def test_randaugment_gives_reference_outcomes():
  # One layer at M=10: the output is TF's output of one of the 16 ops (at M=10 a cutout or a
  # translation covers these small images entirely, so its centre/sign does not matter).
  _, _, images, _ = _reference()
  for image_name, image in images.items():
    outcomes = (_outcomes(image_name, ('randaugment',), magnitude=10) |
                _outcomes(image_name, ('randaugment_entry',)))
    seen = set()
    for seed in range(40):
      result = augment.randaugment(tf.constant(image), tf.constant([seed, 6], tf.int64),
                                   num_layers=1, magnitude=10).numpy()
      assert result.tobytes() in outcomes, (image_name, seed)
      seen.add(result.tobytes())
    assert len(seen) > 8
