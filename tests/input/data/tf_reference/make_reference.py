"""Regenerates `autoaugment_reference.npz`: what TF EfficientNet's own augmentation code outputs.

Runs the ops of tensorflow/tpu models/official/efficientnet/autoaugment.py -- the module itself,
imported from the file given on the command line, not a copy -- on three small fixed uint8 images
and stores the inputs, the outputs and the reference's policy table and RandAugment op list. See
README.md in this folder for the exact command and what the stand-ins below do.

    python tests/input/data/tf_reference/make_reference.py \
        --autoaugment_py=PATH/models/official/efficientnet/autoaugment.py --reference_commit=SHA

The reference is TF1 code: it imports `tensorflow.contrib` (gone in TF2) and is run here in
`tf.compat.v1` graph mode, as its tf.data input pipeline ran it. Its random draws
(`tf.random_uniform`) are replaced, in that module only, by values this script chooses per case, so
each output is the reference's op at a known sign / cutout centre / op choice.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import sys
import types

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT = os.path.join(HERE, 'autoaugment_reference.npz')

# RandAugment magnitudes the TF EfficientNet runs used (10 default, 17 for B5, 28 for B7/B8), plus 0
# and 5. Translations and cutouts at those magnitudes cover these small images entirely, so those two
# ops also get small magnitudes (including a fractional one: half-pixel translations).
MAGNITUDES = (0, 5, 10, 17, 28)
SMALL_MAGNITUDES = (0.5, 1, 2)
UNLEVELLED_OPS = ('AutoContrast', 'Equalize', 'Invert')  # Ops that take no magnitude.
SIGNED_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


# ------------------------------------------------------------------------------------------------
# Stand-ins for the two tf.contrib modules the reference imports.


def _as_batch(images: tf.Tensor) -> tuple[tf.Tensor, bool]:
  images = tf.convert_to_tensor(images)
  if images.shape.rank == 3:
    return images[None], True
  if images.shape.rank == 4:
    return images, False
  raise TypeError(f'images must have rank 3 or 4, got {images.shape}')


def contrib_transform(images, transforms, interpolation='NEAREST', output_shape=None, name=None):
  """tf.contrib.image.transform: the ImageProjectiveTransformV2 kernel, zeros outside the input.

  contrib (TF 1.14/1.15) called `image_projective_transform_v2(images, output_shape, transforms,
  interpolation)`; that op, still in TF, fills with zeros (fill_mode CONSTANT is its default).
  """
  del name
  batch, was_single = _as_batch(images)
  transforms = tf.convert_to_tensor(transforms, dtype=tf.float32)
  if transforms.shape.rank == 1:
    transforms = transforms[None]
  if output_shape is None:
    output_shape = tf.shape(batch)[1:3]
  output = tf.raw_ops.ImageProjectiveTransformV2(
      images=batch, transforms=transforms, output_shape=tf.cast(output_shape, tf.int32),
      interpolation=interpolation.upper(), fill_mode='CONSTANT')
  return output[0] if was_single else output


def contrib_rotate(images, angles, interpolation='NEAREST', name=None):
  """tf.contrib.image.rotate: counter-clockwise by `angles` radians about the image centre.

  contrib built the matrix with `angles_to_projective_transforms(angles, height, width)`, in float32:
  [cos, -sin, x_offset, sin, cos, y_offset, 0, 0] with
  x_offset = ((width - 1) - (cos·(width - 1) - sin·(height - 1))) / 2 and
  y_offset = ((height - 1) - (sin·(width - 1) + cos·(height - 1))) / 2,
  height and width being the float32 image size. The same order of float32 operations is kept here.
  """
  del name
  batch, was_single = _as_batch(images)
  height = tf.cast(tf.shape(batch)[1], tf.float32)[None]
  width = tf.cast(tf.shape(batch)[2], tf.float32)[None]
  angles = tf.convert_to_tensor(angles, dtype=tf.float32)
  if angles.shape.rank == 0:
    angles = angles[None]
  cos, sin = tf.cos(angles), tf.sin(angles)
  x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
  y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
  count = tf.shape(angles)[0]
  matrix = tf.concat([cos[:, None], -sin[:, None], x_offset[:, None], sin[:, None], cos[:, None],
                      y_offset[:, None], tf.zeros([count, 2], tf.float32)], axis=1)
  output = contrib_transform(batch, matrix, interpolation)
  return output[0] if was_single else output


def contrib_translate(images, translations, interpolation='NEAREST', name=None):
  """tf.contrib.image.translate: output (x, y) samples input (x - dx, y - dy)."""
  del name
  translations = tf.convert_to_tensor(translations, dtype=tf.float32)
  if translations.shape.rank == 1:
    translations = translations[None]
  count = tf.shape(translations)[0]
  ones = tf.ones([count, 1], tf.float32)
  zeros = tf.zeros([count, 1], tf.float32)
  matrix = tf.concat([ones, zeros, -translations[:, 0, None], zeros, ones, -translations[:, 1, None],
                      tf.zeros([count, 2], tf.float32)], axis=1)
  return contrib_transform(images, matrix, interpolation)


class HParams:
  """tf.contrib.training.HParams, as far as the reference uses it: keyword arguments as attributes."""

  def __init__(self, **values):
    self.__dict__.update(values)


def install_contrib_stand_ins() -> None:
  contrib = types.ModuleType('tensorflow.contrib')
  contrib.image = types.ModuleType('tensorflow.contrib.image')
  contrib.image.transform = contrib_transform
  contrib.image.rotate = contrib_rotate
  contrib.image.translate = contrib_translate
  contrib.training = types.ModuleType('tensorflow.contrib.training')
  contrib.training.HParams = HParams
  sys.modules.update({'tensorflow.contrib': contrib, 'tensorflow.contrib.image': contrib.image,
                      'tensorflow.contrib.training': contrib.training})


# ------------------------------------------------------------------------------------------------
# Chosen randomness, and a recorder of how the reference parses its ops.


class ChosenDraws:
  """`tf.random_uniform` for the reference module: returns the value this script chose per draw.

  The reference's draws are told apart by their arguments:
    * int32 with a Python-int maxval: which RandAugment op / AutoAugment sub-policy;
    * int32 with a tensor maxval: a cutout centre (row first, then column);
    * float32 in [0.2, 0.8): RandAugment's per-op `prob` (the script checks it is never used);
    * float32 in [0, 1): the sign of a geometric op (`_randomly_negate_tensor`: >= 0.5 keeps the
      sign) or, in `_apply_func_with_prob`, whether an op is applied (`floor(u + prob)`).
  """

  def __init__(self):
    self.select = 0
    self.center = (0, 0)
    self.unit = 0.75
    self.prob = 0.5
    self._center_calls = 0

  def random_uniform(self, shape, minval=0, maxval=None, dtype=tf.float32, seed=None, name=None):
    del seed, name
    assert list(shape) == [], shape
    if dtype == tf.int32 and isinstance(maxval, int):
      assert 0 <= self.select < maxval
      return tf.constant(self.select, tf.int32)
    if dtype == tf.int32:
      value = self.center[self._center_calls % 2]
      self._center_calls += 1
      return tf.constant(value, tf.int32)
    if minval == 0.2 and maxval == 0.8:
      return tf.constant(self.prob, tf.float32)
    assert minval == 0 and maxval is None, (minval, maxval)
    value = self.unit() if callable(self.unit) else self.unit
    return tf.constant(value, tf.float32)


class _ModuleWithChosenDraws:
  """The reference's `tf` (tensorflow.compat.v1) with `random_uniform` replaced."""

  def __init__(self, tf_v1, draws: ChosenDraws):
    self._tf_v1 = tf_v1
    self.random_uniform = draws.random_uniform

  def __getattr__(self, name):
    return getattr(self._tf_v1, name)


def load_reference(path: str, draws: ChosenDraws):
  install_contrib_stand_ins()
  spec = importlib.util.spec_from_file_location('tpu_efficientnet_autoaugment', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  module.tf = _ModuleWithChosenDraws(module.tf, draws)
  return module


class ParseRecorder:
  """Wraps the reference's `_parse_policy_info` to record each op it parses (and its arguments)."""

  def __init__(self, reference):
    self._parse = reference._parse_policy_info  # pylint: disable=protected-access
    self.calls = []
    reference._parse_policy_info = self  # pylint: disable=protected-access

  def __call__(self, name, prob, level, replace_value, hparams):
    self.calls.append(dict(name=name, prob=prob, level=level, replace=list(replace_value),
                           translate_const=hparams.translate_const,
                           cutout_const=hparams.cutout_const))
    return self._parse(name, prob, level, replace_value, hparams)


# ------------------------------------------------------------------------------------------------
# Inputs.


def make_images() -> dict[str, np.ndarray]:
  """Three small uint8 images: structured, noise, and low-contrast with flat channels."""
  rng = np.random.default_rng(20240521)
  # Structured: colour gradients, a rectangle, a disc and a thin line, plus a little noise.
  height, width = 24, 32
  y, x = np.mgrid[0:height, 0:width]
  structured = np.stack([x * 255.0 / (width - 1), y * 200.0 / (height - 1) + 20,
                         np.full_like(x, 90.0, dtype=float)], axis=-1)
  structured[4:11, 5:14] = (230, 40, 30)
  structured[(y - 15) ** 2 + (x - 22) ** 2 < 30] = (20, 60, 210)
  structured[18, 2:28] = (250, 250, 250)
  structured += rng.normal(0, 3, structured.shape)
  structured = np.clip(np.round(structured), 0, 255).astype(np.uint8)
  # Noise, odd sizes: the rotation centre falls on a pixel (between pixels for even sizes).
  noise = rng.integers(0, 256, (21, 27, 3), dtype=np.uint8)
  # Low contrast. Red spans 99..124, a range where TF's AutoContrast arithmetic `v·scale + offset`
  # and `(v - lo)·scale` truncate to different levels for 5 values (104: 50 vs 51); green is flat
  # (AutoContrast's hi == lo branch); blue is one grey level but for 40 pixels (Equalize's
  # step == 0 branch).
  low = np.empty((30, 20, 3), np.uint8)
  low[..., 0] = 99 + rng.integers(0, 26, (30, 20))
  low[0, 0, 0], low[-1, -1, 0] = 99, 124
  low[..., 1] = 77
  low[..., 2] = 140
  low.reshape(-1, 3)[rng.choice(600, 40, replace=False), 2] = rng.integers(0, 256, 40)
  return {'structured': structured, 'noise': noise, 'low_contrast': low}


# ------------------------------------------------------------------------------------------------
# Cases.


def _signs(name):
  return (1, -1) if name in SIGNED_OPS else (0,)


# Cutout centres (row, column): one inside, one on the second row (the square is clipped by the top
# border, and by the right one in the narrower images).
CUTOUT_CENTERS = ((9, 13), (1, 18))


def _choose(draws: ChosenDraws, sign: int, center) -> None:
  draws.unit = 0.25 if sign < 0 else 0.75  # `_randomly_negate_tensor` keeps the sign for >= 0.5.
  draws.center = center or (0, 0)


def build_cases(reference, draws: ChosenDraws, image: tf.Tensor):
  """Yields (case description, output tensor) for every case, building the graph; then metadata."""
  recorder = ParseRecorder(reference)

  # 1. RandAugment. Its entry point parses the 16 ops in order (recording its op list, constants
  # and replace value) and applies the chosen one as `func(image, *args)`; building it costs 16
  # ops' graphs, so it is run once per op (1a) and the other cases call what it calls (1b). The
  # script checks that both give the same outputs.
  _choose(draws, 1, None)
  reference.distort_image_with_randaugment(image, 1, 10)
  randaugment_calls = list(recorder.calls)
  hparams = HParams(translate_const=randaugment_calls[0]['translate_const'],
                    cutout_const=randaugment_calls[0]['cutout_const'])
  replace = randaugment_calls[0]['replace']
  parse = recorder._parse  # pylint: disable=protected-access
  for index, call in enumerate(randaugment_calls):
    draws.select = index
    _choose(draws, 1, CUTOUT_CENTERS[0])
    yield (dict(group='randaugment_entry', op=call['name'], magnitude=10,
                sign=1 if call['name'] in SIGNED_OPS else 0,
                center=CUTOUT_CENTERS[0] if call['name'] == 'Cutout' else None),
           reference.distort_image_with_randaugment(image, 1, 10))
  for call in randaugment_calls:
    name = call['name']
    if name in UNLEVELLED_OPS:
      magnitudes = (0,)
    elif name in ('TranslateX', 'TranslateY', 'Cutout'):
      magnitudes = MAGNITUDES + SMALL_MAGNITUDES
    else:
      magnitudes = MAGNITUDES
    for magnitude in magnitudes:
      for sign in _signs(name):
        for center in CUTOUT_CENTERS if name == 'Cutout' else (None,):
          _choose(draws, sign, center)
          # As the entry point calls it: the magnitude as a Python float, prob unused.
          func, _, args = parse(name, 0.5, float(magnitude), replace, hparams)
          yield (dict(group='randaugment', op=name, magnitude=magnitude, sign=sign, center=center),
                 func(image, *args))

  # 2. AutoAugment: its own entry point gives the table, constants and replace value it uses, and
  # builds one function per sub-policy (`select_and_apply_random_policy` is replaced by a capture
  # so that each sub-policy can be run on its own).
  captured = {}

  def capture(policies, image_):
    captured['policies'] = policies
    return image_

  select = reference.select_and_apply_random_policy
  reference.select_and_apply_random_policy = capture
  recorder.calls.clear()
  _choose(draws, 1, None)
  reference.distort_image_with_autoaugment(image, 'v0')
  autoaugment_calls = list(recorder.calls)
  hparams = HParams(translate_const=autoaugment_calls[0]['translate_const'],
                    cutout_const=autoaugment_calls[0]['cutout_const'])
  replace = autoaugment_calls[0]['replace']

  # 2a. The ops whose arguments depend on AutoAugment's constants, at RandAugment magnitudes.
  for name in ('TranslateX', 'TranslateY', 'Cutout'):
    for magnitude in MAGNITUDES + SMALL_MAGNITUDES:
      for sign in _signs(name):
        for center in CUTOUT_CENTERS if name == 'Cutout' else (None,):
          _choose(draws, sign, center)
          func, _, args = parse(name, 0.5, float(magnitude), replace, hparams)
          yield (dict(group='autoaugment_constants', op=name, magnitude=magnitude, sign=sign,
                      center=center),
                 func(image, *args))

  # 2b. Every (sub-policy, position) of the table alone at its level, called as
  # `_apply_func_with_prob` calls it when the op is applied.
  policy = reference.policy_v0()
  for index, sub_policy in enumerate(policy):
    for position, (name, prob, level) in enumerate(sub_policy):
      for sign in _signs(name):
        _choose(draws, sign, None)
        func, _, args = parse(name, prob, level, replace, hparams)
        yield (dict(group='policy_single', sub_policy=index, position=position, op=name,
                    level=level, sign=sign),
               func(image, *args))

  # 2c. Every sub-policy with both ops applied, through the functions `build_and_apply_nas_policy`
  # built, for each combination of the signs that matter. The apply draw is forced to 1.0 so that
  # even the two probability-0 entries run (floor(1.0 + prob) is nonzero).
  seen = set()
  for signs_wanted in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
    # Sign draws happen while the table is parsed: in table order, one per geometric op.
    sign_values = [0.25 if signs_wanted[position] < 0 else 0.75
                   for sub_policy in policy for position, (name, _, _) in enumerate(sub_policy)
                   if name in SIGNED_OPS]
    sign_values.reverse()
    draws.unit = sign_values.pop
    reference.distort_image_with_autoaugment(image, 'v0')
    assert not sign_values
    draws.unit = 1.0
    for index, sub_policy in enumerate(policy):
      signs = tuple(signs_wanted[p] if name in SIGNED_OPS else 0
                    for p, (name, _, _) in enumerate(sub_policy))
      if (index, signs) in seen:
        continue
      seen.add((index, signs))
      yield (dict(group='policy_both', sub_policy=index, signs=list(signs)),
             captured['policies'][index](image))
  reference.select_and_apply_random_policy = select

  yield dict(group='metadata', randaugment_calls=randaugment_calls,
             autoaugment_calls=autoaugment_calls, policy_v0=policy), None


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--autoaugment_py', required=True,
                      help='models/official/efficientnet/autoaugment.py of a tensorflow/tpu checkout')
  parser.add_argument('--reference_commit', default='unknown',
                      help='the tensorflow/tpu commit the file is from (recorded in the metadata)')
  parser.add_argument('--output', default=OUTPUT)
  args = parser.parse_args()

  draws = ChosenDraws()
  reference = load_reference(args.autoaugment_py, draws)
  images = make_images()

  # TF1's graph-mode control flow, as the reference ran under (also much faster to build here).
  tf.compat.v1.disable_control_flow_v2()
  graph = tf.Graph()
  with graph.as_default():
    placeholder = tf.compat.v1.placeholder(tf.uint8, [None, None, 3])
    built = list(build_cases(reference, draws, placeholder))
  metadata = built[-1][0]
  cases = [case for case, _ in built[:-1]]
  tensors = [tensor for _, tensor in built[:-1]]

  # RandAugment's per-op `prob` is drawn but the op functions take no `prob` argument, so
  # `_parse_policy_info` drops it and the chosen op is always applied.
  op_functions = [reference.NAME_TO_FUNC[call['name']] for call in metadata['randaugment_calls']]
  prob_used = any('prob' in inspect.getfullargspec(f).args for f in op_functions)

  arrays = {}
  with tf.compat.v1.Session(graph=graph) as session:
    for image_name, image in images.items():
      outputs = session.run(tensors, {placeholder: image})
      pool, index_of = [], {}
      for case, output in zip(cases, outputs):
        assert output.dtype == np.uint8 and output.shape == image.shape, (case, output.shape)
        key = output.tobytes()
        if key not in index_of:
          index_of[key] = len(pool)
          pool.append(output)
        case.setdefault('output_index', {})[image_name] = index_of[key]
      # RandAugment's entry point gives what the direct calls give.
      for case in cases:
        if case['group'] == 'randaugment_entry':
          keys = ('op', 'sign', 'center') + (() if case['op'] in UNLEVELLED_OPS else ('magnitude',))
          direct, = [c for c in cases
                     if c['group'] == 'randaugment' and all(c[k] == case[k] for k in keys)]
          assert direct['output_index'][image_name] == case['output_index'][image_name], case
      arrays[f'image_{image_name}'] = image
      arrays[f'outputs_{image_name}'] = np.stack(pool)

  randaugment_calls = metadata['randaugment_calls']
  autoaugment_calls = metadata['autoaugment_calls']
  info = {
      'tensorflow_version': tf.__version__,
      'reference': 'github.com/tensorflow/tpu models/official/efficientnet/autoaugment.py',
      'reference_commit': args.reference_commit,
      'image_names': list(images),
      'policy_v0': [[list(op) for op in sub_policy] for sub_policy in metadata['policy_v0']],
      'randaugment_ops': [call['name'] for call in randaugment_calls],
      'randaugment_prob_used': prob_used,
      'randaugment_constants': {key: randaugment_calls[0][key]
                                for key in ('translate_const', 'cutout_const', 'replace')},
      'autoaugment_constants': {key: autoaugment_calls[0][key]
                                for key in ('translate_const', 'cutout_const', 'replace')},
  }
  arrays['info'] = np.array(json.dumps(info))
  arrays['cases'] = np.array(json.dumps(cases))
  np.savez_compressed(args.output, **arrays)
  print(f'{len(cases)} cases, {sum(len(arrays[f"outputs_{n}"]) for n in images)} distinct outputs, '
        f'{os.path.getsize(args.output)} bytes -> {args.output}')


if __name__ == '__main__':
  main()
