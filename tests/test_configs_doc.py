"""Each per-variant config file's docstring states what makes it that variant, equal to the code.

`configs/b4.py` is one call of the builder; its docstring's "What makes it B4" block repeats the
values a reader looks for (variant, resolution, dropout, augmentation, BN group, batch, epochs,
published top-1) so that nobody has to open the builder. The builder (`config.get_config`), the
variant table (`scaling.VARIANTS`) and `recipes.PUBLISHED` stay the one home of each value: this
test builds every such config and compares each line of the block with them.
"""

import ast
import importlib.util
import os
import re

import pytest

from efficientnet_jax import recipes
from efficientnet_jax.models import scaling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY_NAMES = {'AutoAugment v0': 'autoaugment', 'RandAugment': 'randaugment', 'none': 'none'}


def _config_file(model):
  path = os.path.join(ROOT, 'configs', f'{model}.py')
  spec = importlib.util.spec_from_file_location(f'configs_{model}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with open(path, encoding='utf-8') as f:
    docstring = ast.get_docstring(ast.parse(f.read()))
  return module.get_config(), docstring


def _block(docstring):
  """{label: [value line, ...]} of the 'What makes it' block (continuation lines indented)."""
  lines = docstring.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith('What makes it'))
  start = next(i for i in range(start, len(lines)) if lines[i].startswith('  '))
  rows = {}
  for line in lines[start:]:
    if not line.startswith('  '):
      break
    label, value = line[:18].strip(), line[18:].strip()
    if label:
      rows[label] = [value]
    else:
      rows[next(reversed(rows))].append(value)
  return rows


def _stated(rows):
  """The block's values, parsed into the builder's terms."""
  variant = re.match(r'(\w+): width ([\d.]+), depth ([\d.]+)', rows['variant'][0])
  augmentation = re.match(r'(AutoAugment v0|RandAugment|none)(?: \(N=(\d+), M=(\d+))?',
                          rows['augmentation'][0])
  top1 = re.match(r'([\d.]+)% \(|none published', rows['ImageNet top-1'][0])
  stated = {
      'model': variant[1], 'width': float(variant[2]), 'depth': float(variant[3]),
      'resolution': int(re.match(r'(\d+) px', rows['resolution'][0])[1]),
      'dropout': float(rows['dropout'][0].split()[0]),
      'policy': POLICY_NAMES[augmentation[1]],
      'randaugment': (int(augmentation[2]), int(augmentation[3])) if augmentation[2] else None,
      'bn_group': int(re.match(r'(\d+) examples', rows['BN group'][0])[1]),
      'batch': int(rows['batch'][0]), 'epochs': float(rows['epochs'][0]),
      'top1': float(top1[1]) if top1[1] else None,
      'also': set(),
  }
  for item in rows.get('also published', []):
    policy, number, magnitude = re.match(r'`:aug=(\w+)` ([\d.]+)%(?:, N=2, M=(\d+))?',
                                         item).groups()
    stated['also'].add((policy, float(number), int(magnitude) if magnitude else None))
  return stated


def _built(config):
  """The same values, from the builder, the variant table and the published recipes."""
  variant = scaling.get_variant(config.model)
  policy = config.augment.policy
  published = recipes.PUBLISHED.get((config.model, policy))
  return {
      'model': config.model, 'width': variant.width, 'depth': variant.depth,
      'resolution': config.image_size or variant.resolution,
      'dropout': config.dropout_rate,
      'policy': policy,
      'randaugment': ((config.augment.randaugment_layers, config.augment.randaugment_magnitude)
                      if policy == 'randaugment' else None),
      'bn_group': config.bn_group_size,
      'batch': config.batch_size, 'epochs': config.num_epochs,
      'top1': published.top1 if published else None,
      'also': {(p.policy, p.top1, p.magnitude) for (model, other), p in recipes.PUBLISHED.items()
               if model == config.model and other != policy},
  }


@pytest.mark.parametrize('model', scaling.MODEL_NAMES)
def test_config_docstring_states_what_the_builder_builds(model):
  config, docstring = _config_file(model)
  assert config.model == model
  assert _stated(_block(docstring)) == _built(config)


def test_a_drifted_line_is_caught():
  config, docstring = _config_file('b5')
  assert _stated(_block(docstring)) == _built(config)
  for right, wrong in (('456 px', '448 px'), ('83.6%', '83.7%'), ('M=17', 'M=28'),
                       ('depth 2.2', 'depth 2.1')):
    assert right in docstring
    assert _stated(_block(docstring.replace(right, wrong))) != _built(config), wrong
