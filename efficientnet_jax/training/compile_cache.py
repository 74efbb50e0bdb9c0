"""A persistent XLA compilation cache, so that a restarted run skips recompiling its steps.

JAX reads the cache directory once, at the first compilation of the process, so `enable` must run
before anything is jitted (first thing in a CLI's main). Importable without TensorFlow.
"""

from __future__ import annotations

import os

import jax

ENV_VAR = 'EFFICIENTNET_JAX_CACHE'


def default_dir() -> str:
  """`$EFFICIENTNET_JAX_CACHE`, else `~/.cache/efficientnet_jax/xla`."""
  return os.environ.get(ENV_VAR) or os.path.join(
      os.path.expanduser('~'), '.cache', 'efficientnet_jax', 'xla')


def enable(cache_dir: str | None = None) -> str:
  """Turns the persistent compilation cache on for this process.

  Args:
    cache_dir: where compiled executables are stored; None means `default_dir()`. Several
      processes (and hosts, on a shared file system) may share one directory.

  Returns:
    The directory in use (created if missing).
  """
  cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_dir()))
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  # JAX's defaults skip executables that compiled in under a second, and let the file-system
  # backend raise the size floor. A train step is worth caching however fast it compiled on
  # this machine (CPU tests compile small models quickly), and one step's executable is a few
  # MB, so cache everything: -1 disables the size floor and its overrides.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  return cache_dir


_HIT_EVENT = '/jax/compilation_cache/cache_hits'
_MISS_EVENT = '/jax/compilation_cache/cache_misses'


def count_hits_and_misses() -> dict[str, int]:
  """Starts counting this process's persistent-cache hits and misses.

  Returns:
    A dict {'hits', 'misses'} that JAX's monitoring events keep up to date. The event names are
    JAX internals: if a release renames them, the counts stay 0 rather than failing.
  """
  counts = {'hits': 0, 'misses': 0}

  def listener(event: str, **_) -> None:
    if event == _HIT_EVENT:
      counts['hits'] += 1
    elif event == _MISS_EVENT:
      counts['misses'] += 1

  jax.monitoring.register_event_listener(listener)
  return counts
