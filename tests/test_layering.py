"""The package's layering: only the input part imports TensorFlow; the rest imports without it.

Statically: no module outside `efficientnet_jax/input/` imports tensorflow or TFDS, and none
imports the input part at module level (only inside the functions that need data). Dynamically:
with TensorFlow hidden, the model, the steps, the training loop, the config builder and the
benchmark import, and a model and a config are built.
"""

import ast
import os
import subprocess
import sys

import reliability_helpers as rh

PACKAGE = os.path.join(rh.REPO, 'efficientnet_jax')
INPUT = os.path.join(PACKAGE, 'input')
TENSORFLOW = ('tensorflow', 'tensorflow_datasets')


def _modules():
  for root, _, names in os.walk(PACKAGE):
    for name in sorted(names):
      if name.endswith('.py'):
        yield os.path.join(root, name)


def _imports(path):
  """(imported module, line, whether at module level) for every import statement in `path`."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  top_level = {id(node) for node in tree.body}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
    else:
      continue
    for name in names:
      yield name, node.lineno, id(node) in top_level


def test_only_the_input_part_imports_tensorflow():
  offenders = []
  for path in _modules():
    if path.startswith(INPUT + os.sep):
      continue
    for name, line, top_level in _imports(path):
      relative = f'{os.path.relpath(path, rh.REPO)}:{line}'
      if name.split('.')[0] in TENSORFLOW:
        offenders.append(f'{relative} imports {name}')
      elif name.startswith('efficientnet_jax.input') and top_level:
        offenders.append(f'{relative} imports {name} at module level')
  assert not offenders, '\n'.join(offenders)


def test_the_input_part_does_import_tensorflow():
  # The rule above is about something real: the input part is where TensorFlow lives.
  names = {name.split('.')[0] for path in _modules() if path.startswith(INPUT + os.sep)
           for name, _, _ in _imports(path)}
  assert set(TENSORFLOW) <= names


HIDE_TENSORFLOW = rh.hide_modules(*TENSORFLOW) + """
import efficientnet_jax as ej
from efficientnet_jax import benchmark, config, cli, errors
from efficientnet_jax.benchmarking import harness, measures
from efficientnet_jax.input import device_augment
from efficientnet_jax.models import efficientnet, flops, layers, scaling
from efficientnet_jax.training import (checkpointing, compile_cache, evaluation, hooks, loop,
                                       metric_writers, optimizer, setup, state, steps, warm_start)
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
