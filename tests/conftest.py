"""Test set-up: 4 fake CPU devices, so sharded steps run the real multi-device code path.

XLA's CPU backend spends most of a small test's time in LLVM optimisation of many tiny fusions
(jax.random initialisers especially: a jitted B0-tiny init compiles in ~45 s at the default level
on a loaded 2-core machine, ~8 s at level 0). Tests are compile-bound, so they use level 0;
the numerics are the same ops, only less optimised machine code. A persistent compilation
cache shared by the test processes makes the many identical small programs compile once.

The rest of a compile is per fusion, and a train step has ~1,300 of them (the optimizer, EMA and
non-finite guard run per parameter leaf). XLA:CPU's older LLVM IR fusion emitters
(`--xla_cpu_use_fusion_emitters=false`) compile them ~30% faster than its default MLIR emitters;
tests use them, and their subprocesses inherit the flag (reliability_helpers.environment).

Two runs that several tests read (tests/shared_runs.py) start in the background when the session
starts, if a selected test takes them: `reliability_reference` and `tiny_search`.

`EFFICIENTNET_JAX_TEST_PLATFORM=cuda` (or `tpu`) runs the tests on that accelerator instead, with
the CPU backend beside it and XLA's default flags: how the GPU session checks the models, steps
and benchmark there (docs/benchmarks.md). Tests marked `four_devices` are skipped there when the
accelerator has fewer than 4 devices.
"""

import os
import sys
import tempfile

# Importing triton after TensorFlow segfaults (their bundled LLVMs clash): torch imports triton
# when test collection reaches timm/torch._dynamo, after the TF-based tests were collected. The
# tests run torch on the CPU only, so triton is hidden (torch then reports it as absent).
sys.modules.setdefault('triton', None)

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
TEST_PLATFORM = os.environ.get('EFFICIENTNET_JAX_TEST_PLATFORM', 'cpu')
# The CPU preset is the runs' own default (`xla_options.DEFAULT_CPU_OPT_PRESET`): set here too so
# that in-process tests compile what their child processes and `main` compile.
TEST_XLA_FLAGS = ('--xla_backend_optimization_level=0', '--xla_cpu_use_fusion_emitters=false',
                  '--xla_cpu_opt_preset=FAST_COMPILE')
if TEST_PLATFORM == 'cpu':  # On an accelerator the tests measure XLA's defaults there.
  for _flag in TEST_XLA_FLAGS:
    if _flag.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
      os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_platforms', 'cpu' if TEST_PLATFORM == 'cpu' else f'{TEST_PLATFORM},cpu')
jax.config.update('jax_compilation_cache_dir',
                  os.path.join(tempfile.gettempdir(), 'efficientnet_jax_test_xla_cache'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


import pytest  # pylint: disable=g-import-not-at-top

import reliability_helpers as rh  # pylint: disable=g-import-not-at-top
import shared_runs  # pylint: disable=g-import-not-at-top

SHARED_RUNS = {'reliability_reference': shared_runs.reliability_reference,
               'tiny_search': shared_runs.tiny_search}


def _shared_runs_used(item) -> bool:
  return any(name in item.fixturenames for name in SHARED_RUNS)


def _skip_four_device_tests_on_a_smaller_accelerator(items) -> None:
  if TEST_PLATFORM == 'cpu' or jax.device_count() >= 4:
    return  # On the CPU the 4 fake devices are this file's promise: a shortfall must fail.
  skip = pytest.mark.skip(reason=f'needs 4 devices; {TEST_PLATFORM} has {jax.device_count()}')
  for item in items:
    if item.get_closest_marker('four_devices'):
      item.add_marker(skip)


def pytest_collection_modifyitems(items):
  """Orders the tests: `slow` first, and in each part those reading a shared run last.

  The order is the same in every xdist worker (a stable sort). With `-n 2 --maxschedchunk 1`
  (README) a free worker takes the next test, so the minutes-long ones start first and the many
  short ones fill in behind them; the shared runs, started at the beginning, are done by the
  time most of their readers start.
  """
  items.sort(key=lambda item: (item.get_closest_marker('slow') is None, _shared_runs_used(item)))
  _skip_four_device_tests_on_a_smaller_accelerator(items)


@pytest.fixture(scope='session', autouse=True)
def _start_shared_runs(request, tmp_path_factory):
  """Starts, in the background, each shared run that a selected test takes (once per session)."""
  root = rh.session_dir(tmp_path_factory)
  for name, make in SHARED_RUNS.items():
    if any(name in item.fixturenames for item in request.session.items):
      make(root).start()


@pytest.fixture(scope='session')
def reliability_reference(tmp_path_factory) -> tuple[str, dict]:
  """(workdir, evaluate JSON) of one uninterrupted run of tests/reliability_config.py.

  Shared by the whole session: do not modify the workdir (copy it: `rh.copy_of_reference`).
  """
  run = shared_runs.reliability_reference(rh.session_dir(tmp_path_factory))
  return run.workdir, rh.last_json_line(run.wait())


@pytest.fixture(scope='session')
def tiny_search(tmp_path_factory) -> tuple[str, str]:
  """(workdir, stdout) of the tiny compound search run end to end in one process.

  Shared by the whole session: do not modify the workdir.
  """
  run = shared_runs.tiny_search(rh.session_dir(tmp_path_factory))
  return run.workdir, run.wait()
