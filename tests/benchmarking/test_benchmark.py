"""The benchmark: it times the step `main` runs, runs without TF, fails in one line.

The CLI runs in subprocesses (one CPU device unless stated) with tensorflow, tensorflow_datasets
and ml_collections blocked, as on the GPU machine. The one real compile, of a train step, is of B0
shrunk to width and depth 0.25 (`TINY_B0`: one block per stage): XLA:CPU takes 5–8 minutes of a
loaded 2-core machine to compile B0's own train step, and the CLI's path (build, compile, time,
report, cache) is the same for any entry of the variant table.
"""

import inspect
import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

import reliability_helpers as rh
from efficientnet_jax import config as config_lib
from efficientnet_jax.benchmarking import harness
from efficientnet_jax.benchmarking import measures
from efficientnet_jax.input import device_preprocessing
from efficientnet_jax.models import scaling
from efficientnet_jax.training import compile_cache
from efficientnet_jax.training import loop
from efficientnet_jax.training import setup
from efficientnet_jax.training import state as state_lib
from efficientnet_jax.training import steps

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# As on an accelerator image with only the JAX stack: the benchmark needs none of these.
BLOCK_TF = rh.hide_modules('tensorflow', 'tensorflow_datasets', 'ml_collections', 'orbax')

RUN_CLI = BLOCK_TF + """
import runpy
sys.argv = ['benchmark'] + sys.argv[1:]
runpy.run_module('efficientnet_jax.benchmark', run_name='__main__')
"""

# B0's coefficients scaled down to 7 blocks with an 8-filter stem; same resolution and dropout.
TINY_B0 = scaling.Variant(width=0.25, depth=0.25, resolution=224, dropout=0.2)

# The CLI with `TINY_B0` as the table's 'b0' (set before the CLI module is imported).
RUN_CLI_TINY_B0 = BLOCK_TF + f"""
from efficientnet_jax.models import scaling
scaling.VARIANTS['b0'] = scaling.{TINY_B0!r}
""" + RUN_CLI[len(BLOCK_TF):]

REQUIRED_KEYS = {'model', 'mode', 'batch', 'resolution', 'dtype', 'devices', 'device_kind',
                 'jax_version', 'images_per_sec', 'step_ms_median', 'compile_s',
                 'peak_memory_bytes', 'mfu', 'flops_per_image'}


def run_cli(*args, devices=1, timeout=600, code=RUN_CLI):
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES=str(devices),
             TF_CPP_MIN_LOG_LEVEL='2')
  # XLA_FLAGS: the test suite's (conftest.TEST_XLA_FLAGS), for compile speed; what is tested here
  # is the plumbing, not CPU speed.
  return subprocess.run([sys.executable, '-c', code, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def fake_train_state(s: setup.Setup) -> state_lib.TrainState:
  """Zeros shaped like the real state: checks wiring without compiling the initialiser."""
  return jax.tree.map(lambda x: jax.device_put(np.zeros(x.shape, x.dtype), x.sharding),
                      s.abstract_state)


def test_the_timed_step_is_the_train_step_main_runs(monkeypatch):
  made, jitted = [], []
  real_make, real_jit = steps.make_train_step, steps.jit_train_step

  def make_train_step(*args, **kwargs):
    made.append((real_make(*args, **kwargs), kwargs))
    return made[-1][0]

  def jit_train_step(train_step, mesh):
    jitted.append((train_step, real_jit(train_step, mesh)))
    return jitted[-1][1]

  monkeypatch.setattr(steps, 'make_train_step', make_train_step)
  monkeypatch.setattr(steps, 'jit_train_step', jit_train_step)
  monkeypatch.setattr(setup.Setup, 'state', property(fake_train_state))
  bench = harness.build('b0', batch=8, resolution=32)

  (train_step, kwargs), = made
  assert jitted == [(train_step, bench.jitted)]
  assert bench.jitted.__wrapped__ is train_step
  # The TF recipe's loss and EMA, as the configs give main.
  assert kwargs == {'label_smoothing': 0.1, 'ema_decay': 0.9999, 'grad_accum_steps': 1}
  # `run` compiles exactly `bench.jitted` with these arguments.
  assert bench.jitted.lower(*bench.args).out_info[0].step.shape == ()
  # The recipe is the config builder's, not a copy of it (without augmentation on the device,
  # which the builder's default turns on where JAX runs on an accelerator).
  built = config_lib.get_config('b0', batch_size=8, image_size=32, dtype='bfloat16', remat=False,
                                depthwise_impl='auto')
  if device_preprocessing.augment_on_device(built):
    built.augment.on_device = False
  assert bench.config.to_dict() == built.to_dict()


def _names_used(module) -> set[str]:
  """Every global or attribute name the module's functions (and their closures) refer to."""
  names, codes = set(), [f.__code__ for f in vars(module).values()
                         if inspect.isfunction(f) and f.__module__ == module.__name__]
  while codes:
    code = codes.pop()
    names.update(code.co_names)
    codes.extend(c for c in code.co_consts if inspect.iscode(c))
  return names


def test_training_and_the_benchmark_take_their_step_from_the_same_setup():
  for module in (loop, harness):
    names = _names_used(module)
    assert 'train_step' in names, module.__name__
    assert not {'make_train_step', 'jit_train_step'} & names, module.__name__


@pytest.mark.slow
def test_cli_runs_a_tiny_train_step_without_tensorflow_and_caches_it(tmp_path):
  # One test, not a shared fixture: under pytest-xdist a module fixture would compile per worker.
  cache = tmp_path / 'xla_cache'
  # float32 and XLA's grouped depthwise convolution: the cheapest program to compile on CPU.
  proc = run_cli('--model=b0', '--batch=8', '--resolution=32', '--steps=2', '--warmup=1',
                 '--dtype=float32', '--depthwise_impl=conv', '--json', f'--cache_dir={cache}',
                 code=RUN_CLI_TINY_B0)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert REQUIRED_KEYS <= set(result)
  assert (result['model'], result['mode'], result['batch'], result['resolution']) == (
      'b0', 'train', 8, 32)
  assert result['images_per_sec'] > 0 and result['step_ms_median'] > 0
  assert result['compile_s'] > 0 and result['flops_per_image'] > 0
  assert result['device_kind'] == 'cpu' and result['mfu'] is None  # No peak for CPUs.
  assert result['cpu'] and 'cpu_simd' in result  # Which CPU: its figures depend on it.
  # The persistent compilation cache got the step (and the initialiser).
  assert result['compile_cache_misses'] > 0
  assert [name for name in os.listdir(cache) if not name.startswith('.')]


def test_imports_and_builds_its_recipe_without_tensorflow_or_ml_collections():
  code = BLOCK_TF + """
try:
  import ml_collections
  raise AssertionError('the blocker let ml_collections through')
except ModuleNotFoundError:
  pass
import efficientnet_jax.benchmark
from efficientnet_jax.benchmarking import harness
config = harness.recipe('b7', batch=64)
assert type(config).__name__ == 'PlainConfig' and config.rmsprop.decay == 0.9
assert not {'tensorflow', 'tensorflow_datasets'} & set(sys.modules), 'TF was imported'
print('ok')
"""
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-3000:]


@pytest.mark.parametrize('args, message', [
    (('--model=b99',), 'valid names: b0, b1'),
    (('--model=b0', '--batch=6'), 'multiple of the 4 devices'),
    (('--model=b0', '--dtype=float16'), 'bfloat16, float32'),
    (('--model=b0', '--mode=eval'), 'train, infer'),
    (('--model=b0', '--batch=a,b'), 'comma list of integers'),
    (('--model=b0', '--steps=many'), 'expected an integer'),
])
def test_bad_inputs_fail_in_one_line(args, message):
  proc = run_cli(*args, devices=4, timeout=300)
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error:') and message in lines[0], proc.stderr


def test_mfu_uses_the_card_peak():
  assert measures.peak_flops_per_device('NVIDIA H100 80GB HBM3', 'bfloat16') == 989e12
  assert measures.peak_flops_per_device('NVIDIA H200', 'bfloat16') == 989e12
  assert measures.peak_flops_per_device('TPU v5 lite', 'bfloat16') == 197e12
  assert measures.peak_flops_per_device('cpu', 'bfloat16') is None


def test_report_pairs_ours_with_timm_and_checks_targets(tmp_path):
  report = pytest.importorskip('benchmarks.report')
  records = {
      'ours_b0_train': {'images_per_sec': 16_000.0, 'batch': 256, 'resolution': 224,
                        'dtype': 'bfloat16', 'mfu': 0.3, 'step_ms_median': 16.0,
                        'peak_memory_bytes': 2**34, 'compile_s': 40.0, 'lower_s': 3.0,
                        'jax_version': '0.11.2'},
      'timm_b0_train': {'images_per_sec': 8_000.0, 'batch': 256, 'resolution': 224,
                        'model': 'efficientnet_b0', 'compiled': True, 'torch_version': '2.9'},
      'ours_b0_train_warm': {'time_to_first_step_s': 8.0, 'compile_s': 1.0,
                             'compile_cache_hits': 3},
      'ours_b0_train_autoaugment': {'images_per_sec': 15_520.0, 'step_ms_median': 16.5},
      'ours_b0_train_randaugment': {'images_per_sec': 14_400.0, 'step_ms_median': 17.8},
      'augment_parity': {'images': 10, 'image_size': 224, 'summary': {
          'ops_bit_exact': 15, 'ops': 16, 'policies_bit_exact': ['autoaugment_v0'],
          'not_exact': {'Rotate': {'max_abs_diff': 37, 'differing_fraction': 2e-5}}}},
  }
  suite = {'environment': {'gpu': 'NVIDIA H100 80GB HBM3', 'driver': '570.1'},
           'items': [{'item': name, 'status': 'ok', 'result': result}
                     for name, result in records.items()]}
  suite['items'].append({'item': 'gpu_tests', 'status': 'failed (rc 1)', 'result': {
      'rc': 1, 'stdout_tail': 'FAILED tests/x.py::test_y\n1 failed, 99 passed in 80.0s\n'}})
  (tmp_path / 'suite.json').write_text(json.dumps(suite))
  table = report.render(str(tmp_path))
  b0_row = next(line for line in table.splitlines() if line.startswith('| B0 train |'))
  assert '16,000' in b0_row and '2.00×' in b0_row and 'yes / yes' in b0_row
  assert 'NVIDIA H100 80GB HBM3' in table and '570.1' in table
  assert '| 40.0 (+ trace/lower 3.0) | ≤ 60 | yes |' in table
  # The augmentation's share of the step: 1 - 15,520 / 16,000 = 3.0% (met), 10.0% (not met).
  assert '| 3.0% | ≤ 5% | yes |' in table and '| 10.0% | ≤ 5% | **no** |' in table
  assert '15 of 16 bit-exact; not exact: Rotate (max 37, 0.002% of values)' in table
  assert 'failed (rc 1); 1 failed, 99 passed in 80.0s' in table


def test_fit_takes_the_largest_batch_that_fits(monkeypatch):
  gib = 2**30
  compiled_batches = []

  def fake_build(model, *, batch, **_):
    return harness.Benchmark(jitted=None, args=(batch,), advance=lambda args, out: args,
                             model=None, mesh=None, config=None, mode='train')

  def fake_compile(bench):
    batch, = bench.args
    compiled_batches.append(batch)

    def executable(*args):
      if batch == 16:  # The analysis said yes, the allocator says no.
        raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory')
      return args

    # 1 GiB of donated state plus 1 GiB per image; the device holds 20 GiB.
    executable.memory_analysis = lambda: types.SimpleNamespace(
        argument_size_in_bytes=gib, output_size_in_bytes=gib, alias_size_in_bytes=gib,
        temp_size_in_bytes=batch * gib, generated_code_size_in_bytes=0)
    return harness.Compiled(executable, 0.0, 0.0)

  monkeypatch.setattr(harness, 'build', fake_build)
  monkeypatch.setattr(harness, 'compile_step', fake_compile)
  monkeypatch.setattr(measures, 'bytes_limit', lambda devices: 20 * gib)
  bench, _, log = harness.fit('b7', [4, 32, 24, 16, 12], headroom=0.95)
  assert bench.args == (12,)
  assert [(e['batch'], e.get('reason')) for e in log] == [
      (32, 'memory_analysis'), (24, 'predicted'), (16, 'out_of_memory'), (12, None)]
  assert compiled_batches == [32, 16, 12]  # 24 was skipped without a compile.


def test_phi_scales_the_benchmarked_variant_like_the_quick_start():
  # The quick start network is b0 at φ = -4; --phi must build exactly that config's model.
  quick = config_lib.get_config('b0', phi=-4.0, batch_size=8, image_size=32)
  bench = harness.recipe('b0', batch=8, resolution=32, phi=-4.0)
  assert bench.phi == quick.phi == -4.0
  assert harness.recipe('b0', batch=8, resolution=32).phi != -4.0


def test_xla_options_tool_refuses_a_variant_without_a_name_in_one_line():
  tool = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'xla_cpu_options.py')
  done = subprocess.run([sys.executable, tool, '--variant=no-colon'], capture_output=True,
                        text=True, check=False)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      "error: --variant='no-colon' must be NAME:XLA_FLAGS (flags may be empty: "
      '--variant=default:).']
