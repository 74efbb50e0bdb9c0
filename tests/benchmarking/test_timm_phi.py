"""The timm side of the CPU comparison builds the same network as ours at a given φ."""

import json
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


COMPARE = os.path.join(os.path.dirname(SCRIPT), 'cpu_compare.py')


@pytest.mark.parametrize('args, message', [
    (['--shapes=b1@32x8'], "--shapes item 'b1@32x8' must be MODEL[φPHI]@RESOLUTIONxBATCH"),
    (['--modes=eval'], "--modes='eval' must be train, infer or train,infer."),
    (['--steps=0'], '--steps must be ≥ 1'),
    (['--allocators=glibc'], "--allocators='glibc' must list auto, system or tcmalloc."),
])
def test_cpu_compare_refuses_bad_arguments_in_one_line(args, message):
  done = subprocess.run([sys.executable, COMPARE] + args, capture_output=True, text=True,
                        check=False)
  assert done.returncode == 2
  assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def test_cpu_compare_runs_both_sides_and_reports_their_ratio():
  done = subprocess.run([sys.executable, COMPARE, '--shapes=b0φ-8@32x4', '--modes=infer',
                         '--steps=1', '--warmup=1', '--allocators=system', '--json'],
                        capture_output=True, text=True,
                        check=False, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  (result,) = json.loads(done.stdout.strip().splitlines()[-1])
  ours, theirs = result['ours'], result['timm']
  assert ours['phi'] == theirs['phi'] == -8.0 and ours['batch'] == theirs['batch'] == 4
  # Both children ran on the C library's malloc, whatever is installed.
  assert ours['host_malloc'] == theirs['host_malloc'] == 'system'
  row = next(l for l in done.stdout.splitlines() if l.startswith('| b0 φ=-8 '))
  assert row.split('|')[5].strip() == 'system: system / system'
  ratio = float(row.split('|')[8].strip().rstrip('×'))
  assert ratio == pytest.approx(theirs['step_ms_median'] / ours['step_ms_median'], abs=0.01)
