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
"""

import os
import sys
import tempfile

# Importing triton after TensorFlow segfaults (their bundled LLVMs clash): torch imports triton
# when test collection reaches timm/torch._dynamo, after the TF-based tests were collected. The
# tests run torch on the CPU only, so triton is hidden (torch then reports it as absent).
sys.modules.setdefault('triton', None)

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
TEST_XLA_FLAGS = ('--xla_backend_optimization_level=0', '--xla_cpu_use_fusion_emitters=false')
for _flag in TEST_XLA_FLAGS:
  if _flag.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_platforms', 'cpu')
jax.config.update('jax_compilation_cache_dir',
                  os.path.join(tempfile.gettempdir(), 'efficientnet_jax_test_xla_cache'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def pytest_collection_modifyitems(items):
  """Runs the `slow` tests first (a stable sort: the order is the same in every xdist worker).

  Under `pytest -n 2` a minutes-long test that starts last leaves one worker idle meanwhile; first,
  the many short tests fill in behind it.
  """
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)
