"""The timm side of the CPU comparison builds the same network as ours at a given φ."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficientnet_jax.benchmarking import harness
from efficientnet_jax.models import efficientnet

pytest.importorskip('timm')
SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'timm_benchmark.py')
sys.path.insert(0, os.path.dirname(SCRIPT))
import timm_benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position


def our_parameter_count(phi):
  net = efficientnet.model_from_config(harness.recipe('b0', batch=8, resolution=32, phi=phi))
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                           train=False))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes['params'])))


@pytest.mark.parametrize('model', timm_benchmark.B0_MODELS)
def test_phi_builds_the_quick_start_network_with_our_parameter_count(model):
  args = timm_benchmark.parse_args([f'--model={model}', '--phi=-4'])
  timm_count = sum(p.numel() for p in timm_benchmark.create_model(args).parameters())
  assert timm_count == our_parameter_count(-4.0) == 2_056_282


def test_phi_on_another_model_is_refused_in_one_line():
  done = subprocess.run([sys.executable, SCRIPT, '--model=efficientnet_b2', '--phi=-4',
                         '--device=cpu'], capture_output=True, text=True, check=False)
  assert done.returncode == 2
  assert len(done.stderr.strip().splitlines()) == 1
  assert '--phi scales a B0 model' in done.stderr
