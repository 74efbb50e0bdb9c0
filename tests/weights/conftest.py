"""The converter tests run torch single-threaded.

Their torch work is small (reference models at 64 px, batch 2), where intra-op threads buy
nothing; on a busy 2-core machine (CI runs two pytest workers) torch's OpenMP threads wait on
each other instead: a B0 forward took 5 s with 2 threads, 0.07 s with one.
"""

import sys

import pytest


@pytest.fixture(autouse=True)
def torch_single_threaded():
  torch = sys.modules.get('torch')
  if torch is None:
    yield
    return
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
