"""The package's layering, as docs/architecture.md states it, checked on the code.

* The doc's tree ("The parts") lists every module under `efficientnet_jax/`, `__init__.py` files
  included, and no module that does not exist.
* Every import statement of a part names only the parts its row of the doc's dependency table
  allows ("Dependency rules"); the table is read from the doc, so the doc and the test agree.
* `models/` reads only the model's own config keys.
* Only `input/` imports TensorFlow or TFDS: no module outside it does, directly or through its
  module-level imports of the package. Dynamically, with TensorFlow hidden, the model, the
  steps, the training loop, the config builder and the benchmark import, and a model and a
  config are built.
"""

import ast
import os
import re
import subprocess
import sys

import reliability_helpers as rh

PACKAGE = os.path.join(rh.REPO, 'efficientnet_jax')
INPUT = os.path.join(PACKAGE, 'input')
DOC = os.path.join(rh.REPO, 'docs', 'architecture.md')
TENSORFLOW = ('tensorflow', 'tensorflow_datasets')
# The keys `models/` may read: the doc's "Dependency rules" lists the same.
MODEL_KEYS = frozenset({
    'model', 'width', 'depth', 'phi', 'alpha', 'beta', 'gamma', 'dropout_rate', 'drop_path_rate',
    'dtype', 'remat', 'padding', 'bn_group_size', 'bn_momentum', 'depthwise_impl', 'num_classes',
    'image_size'})


def _modules():
  for root, _, names in os.walk(PACKAGE):
    for name in sorted(names):
      if name.endswith('.py'):
        yield os.path.join(root, name)


def _imports(path):
  """(imported module, line, whether at module level) for every import statement in `path`.

  `from A import B` imports `A.B` where that is a module of the package, else `A`.
  """
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  top_level = {id(node) for node in tree.body}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = {f'{node.module}.{alias.name}' if f'{node.module}.{alias.name}' in MODULES
               else node.module for alias in node.names}
    else:
      continue
    for name in names:
      yield name, node.lineno, id(node) in top_level


def _dotted(path):
  """`efficientnet_jax.training.loop` for .../efficientnet_jax/training/loop.py."""
  name = os.path.relpath(path, rh.REPO)[:-len('.py')].replace(os.sep, '.')
  return name[:-len('.__init__')] if name.endswith('.__init__') else name


MODULES = {_dotted(path): path for path in _modules()}


def _executed(name):
  """The package's modules that importing `name` runs: it and the packages above it."""
  parts = name.split('.')
  prefixes = ('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
  return [prefix for prefix in prefixes if prefix in MODULES]


def _part(module):
  """The part a module of the package belongs to: `models`, `config`, `__init__`, …"""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else '__init__'


def _doc_section(title):
  with open(DOC, encoding='utf-8') as f:
    doc = f.read()
  return doc.split(f'## {title}\n', 1)[1].split('\n## ', 1)[0]


def test_the_doc_lists_every_module():
  tree = _doc_section('The parts').split('```')[1]
  listed, folders = set(), []
  for line in tree.splitlines():
    depth = (len(line) - len(line.lstrip(' '))) // 2
    entry = line.strip().split(' ')[0]
    if entry.endswith('/'):
      folders[depth:] = [entry]
    elif entry.endswith('.py'):
      listed.add(''.join(folders[:depth]) + entry)
  actual = {os.path.relpath(path, rh.REPO).replace(os.sep, '/') for path in MODULES.values()}
  assert not actual - listed, f'not in docs/architecture.md: {sorted(actual - listed)}'
  assert not listed - actual, f'in docs/architecture.md but gone: {sorted(listed - actual)}'


def _rules():
  """{part: the parts it may import}, from the doc's dependency table."""
  rules = {}
  for line in _doc_section('Dependency rules').splitlines():
    cells = line.split('|')
    if len(cells) < 4 or not cells[1].strip().startswith('`'):
      continue
    allowed = {name.strip('/') for name in re.findall(r'`([^`]+)`', cells[2])}
    if 'every part above' in cells[2]:
      allowed |= set(rules)
    for part in re.findall(r'`([^`]+)`', cells[1]):
      rules[part.strip('/')] = allowed
  return rules


def test_each_part_imports_only_what_the_doc_allows():
  rules = _rules()
  assert {'models', 'input', 'training', 'main'} <= set(rules)  # The table was read.
  offenders = []
  for module, path in MODULES.items():
    part = _part(module)
    if part not in rules:
      offenders.append(f'{part} ({os.path.relpath(path, rh.REPO)}) has no row in the table')
      continue
    for name, line, _ in _imports(path):
      imported = _executed(name)[-1:]  # The module the statement names, if of the package.
      if imported and _part(imported[0]) not in (part, *rules[part]):
        offenders.append(f'{os.path.relpath(path, rh.REPO)}:{line} imports {imported[0]}')
  assert not offenders, 'against docs/architecture.md, "Dependency rules":\n' + '\n'.join(
      sorted(set(offenders)))


def test_a_forbidden_import_is_caught():
  # The check above can fail: `models` may import nothing, `training` is above it.
  rules = _rules()
  assert rules['models'] == set() and 'models' in rules['training']
  assert 'training' not in rules['input'] and 'studies' not in rules['training']


def _names(path):
  """Every attribute name and string constant in `path`: what a module can read a key by."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute):
      yield node.attr
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
      yield node.value


def test_models_read_only_the_model_keys():
  from efficientnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top

  def keys(tree, prefix=''):
    for key, value in tree.items():
      yield prefix + key
      if isinstance(value, dict):
        yield from keys(value, f'{prefix}{key}.')

  other_keys = set(keys(config_lib.get_config('b0').to_dict())) - MODEL_KEYS
  offenders = [f'{os.path.relpath(path, rh.REPO)} reads {name!r}'
               for module, path in MODULES.items() if _part(module) == 'models'
               for name in sorted(set(_names(path)) & other_keys)]
  assert not offenders, '\n'.join(offenders)


def _imports_tensorflow(module):
  """Whether importing `module` imports TensorFlow, through its module-level imports."""
  seen, todo = set(), [module]
  while todo:
    current = todo.pop()
    if current in seen:
      continue
    seen.add(current)
    for name, _, top_level in _imports(MODULES[current]):
      if top_level and name.split('.')[0] in TENSORFLOW:
        return True
      if top_level:
        todo += _executed(name)
  return False


def test_only_the_input_part_imports_tensorflow():
  offenders = []
  for module, path in MODULES.items():
    if path.startswith(INPUT + os.sep):
      continue
    relative = os.path.relpath(path, rh.REPO)
    offenders += [f'{relative}:{line} imports {name}' for name, line, _ in _imports(path)
                  if name.split('.')[0] in TENSORFLOW]
    if _imports_tensorflow(module):
      offenders.append(f'{relative} imports TensorFlow through its module-level imports')
  assert not offenders, '\n'.join(offenders)


def test_the_input_part_does_import_tensorflow():
  # The rule above is about something real: the input part is where TensorFlow lives.
  assert _imports_tensorflow('efficientnet_jax.input.pipeline')
  assert not _imports_tensorflow('efficientnet_jax.input.device_augment')


HIDE_TENSORFLOW = rh.hide_modules(*TENSORFLOW) + """
import efficientnet_jax as ej
from efficientnet_jax import benchmark, config, cli, errors
from efficientnet_jax.benchmarking import harness, measures
from efficientnet_jax.input import device_augment
from efficientnet_jax.models import efficientnet, flops, layers, scaling
from efficientnet_jax.training import (checkpointing, compile_cache, evaluation, hooks, loop,
                                       metric_writers, optimizer, preemption, setup, state, steps,
                                       warm_start)
from efficientnet_jax.weights import pretrained
c = config.get_config('b0', 'smoke')
model = efficientnet.model_from_config(c)
assert optimizer.create_optimizer(c, 100) is not None
assert flops.count_macs(ej.create_model('b0')) > 0
assert not {'tensorflow', 'tensorflow_datasets'} & set(sys.modules), 'TensorFlow was imported'
print('ok')
"""


def test_model_steps_loop_and_benchmark_import_with_tensorflow_hidden():
  result = subprocess.run([sys.executable, '-c', HIDE_TENSORFLOW], cwd=rh.REPO,
                          env=rh.environment(devices=1), capture_output=True, text=True,
                          timeout=rh.TIMEOUT_S, check=False)
  assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-3000:]
