"""The host's memory allocator: tcmalloc for the tools that run a train step on a CPU host.

Why. XLA:CPU allocates a train step's temporaries as large blocks (174 MB for the quick start's
network at batch 64 × 32 px) and frees them at the end of the step. glibc's malloc hands
blocks that large back to the kernel at once (they are above its `mmap` threshold, whose ceiling
is 32 MiB), so every step maps them again and page-faults them in: in the quick start a quarter
of the CPU time is the kernel's. tcmalloc keeps freed memory for the next step. Measured on a
2-core CPU: the quick start trains at 780–860 img/s instead of 460–500, with the same losses bit
for bit (docs/benchmarks.md, "Host memory").

A replacement malloc must be in place when the process starts, so the entry points re-execute
their own command line once, with `LD_PRELOAD` naming the library, before JAX is imported
(`reexec_if_entry_point`, called from the package's `__init__`). `EFFICIENTNET_JAX_MALLOC`
chooses:

  auto      (default) tcmalloc if it is installed and the host has no GPU or TPU device;
  tcmalloc  tcmalloc on any host (an error if it is not installed);
  system    the C library's malloc, no re-execution;
  PATH      that shared library (a path to an `.so`: jemalloc, another tcmalloc build).

An `LD_PRELOAD` the user set is left alone under `auto`. On an accelerator host `auto` keeps
the C library's malloc because no accelerator run has been measured with tcmalloc yet. Install:
`apt-get install libtcmalloc-minimal4` (Debian, Ubuntu) or `dnf install gperftools-libs`.

The entry points: `python -m efficientnet_jax.main`, `.benchmark` and `.evaluate`, and a script
that sets `USE_PREFERRED_HOST_MALLOC = True` before it imports this package (the experiments).
Importing the package from anything else (a notebook, pytest, a user's program) never
re-executes. Nothing here imports JAX, NumPy or TensorFlow.
"""

from __future__ import annotations

import ctypes.util
import dataclasses
import os
import sys
from typing import Callable, Mapping, Sequence

from efficientnet_jax.errors import UsageError

ENV = 'EFFICIENTNET_JAX_MALLOC'
# Set in the re-executed process: one re-execution at most, even if the preload failed.
REEXECUTED_ENV = 'EFFICIENTNET_JAX_MALLOC_REEXECUTED'
ENTRY_MODULES = ('efficientnet_jax.main', 'efficientnet_jax.benchmark', 'efficientnet_jax.evaluate')
SCRIPT_MARKER = 'USE_PREFERRED_HOST_MALLOC'
CHOICES = ('auto', 'tcmalloc', 'system')
# gperftools' library without the heap profiler first: the smaller one, and all a run needs.
TCMALLOC_NAMES = ('tcmalloc_minimal', 'tcmalloc')
# Device files of an accelerator the process could use (NVIDIA GPUs; TPU v4 and later, v2/v3).
ACCELERATOR_DEVICES = ('/dev/nvidiactl', '/dev/accel0', '/dev/vfio/0')
KNOWN_ALLOCATORS = ('tcmalloc', 'jemalloc', 'mimalloc', 'tbbmalloc')


@dataclasses.dataclass(frozen=True)
class Choice:
  """What to preload: `library` (None: keep the process as it is) and why (`reason`)."""
  library: str | None
  reason: str


def find_tcmalloc(find_library: Callable[[str], str | None] = ctypes.util.find_library
                  ) -> str | None:
  """The soname of an installed tcmalloc (e.g. 'libtcmalloc_minimal.so.4'), or None."""
  for name in TCMALLOC_NAMES:
    found = find_library(name)
    if found:
      return found
  return None


def has_accelerator(exists: Callable[[str], bool] = os.path.exists,
                    environ: Mapping[str, str] = os.environ) -> bool:
  """Whether this process may run on a GPU or TPU (`JAX_PLATFORMS=cpu` says it will not)."""
  platforms = environ.get('JAX_PLATFORMS', '').strip().lower()
  if platforms:
    return any(p.strip() not in ('', 'cpu') for p in platforms.split(','))
  return any(exists(path) for path in ACCELERATOR_DEVICES)


def choose(environ: Mapping[str, str], *, find: Callable[[], str | None] = find_tcmalloc,
           accelerator: Callable[[], bool] = has_accelerator,
           exists: Callable[[str], bool] = os.path.exists) -> Choice:
  """The allocator this process should run with, from `EFFICIENTNET_JAX_MALLOC` and the host.

  Args:
    environ: the process environment.
    find: returns an installed tcmalloc's soname or None.
    accelerator: whether the host has a GPU or TPU.
    exists: `os.path.exists` (for a PATH choice).

  Returns:
    A `Choice`; `library` None when nothing is to be preloaded.

  Raises:
    UsageError: an unknown value, `tcmalloc` when none is installed, a PATH that does not exist.
  """
  value = environ.get(ENV, 'auto').strip() or 'auto'
  preloaded = environ.get('LD_PRELOAD', '').strip()
  if value == 'system':
    return Choice(None, f'{ENV}=system')
  if '/' in value:
    if not exists(value):
      raise UsageError(f'{ENV}={value} does not exist; name an installed malloc library '
                       f"(e.g. {ENV}=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2) or use 'auto'.")
    return Choice(value, f'{ENV}={value}')
  if value not in CHOICES:
    raise UsageError(f'{ENV}={value!r} is not one of {", ".join(CHOICES)} or a library path; '
                     f'e.g. {ENV}=system for the C library\'s malloc.')
  if value == 'auto' and preloaded:
    return Choice(None, f'LD_PRELOAD is set ({preloaded}); left as it is')
  if value == 'auto' and accelerator():
    return Choice(None, 'an accelerator host (set EFFICIENTNET_JAX_MALLOC=tcmalloc to opt in)')
  library = find()
  if library is None:
    if value == 'tcmalloc':
      raise UsageError(f'{ENV}=tcmalloc but no tcmalloc is installed; install it '
                       '(apt-get install libtcmalloc-minimal4) or use auto.')
    return Choice(None, 'tcmalloc is not installed (apt-get install libtcmalloc-minimal4 makes '
                        'the CPU train step faster)')
  return Choice(library, f'{ENV}={value}')


def preload_list(library: str, preloaded: str) -> str:
  """`LD_PRELOAD` with `library` first (the first library that defines malloc wins)."""
  rest = [p for p in preloaded.replace(':', ' ').split() if p != library]
  return ' '.join([library] + rest)


def in_use(maps_path: str = '/proc/self/maps') -> str:
  """The allocator mapped into this process: 'tcmalloc', 'jemalloc', ... or 'system'."""
  try:
    with open(maps_path, encoding='utf-8', errors='replace') as f:
      maps = f.read()
  except OSError:
    return 'unknown'
  for name in KNOWN_ALLOCATORS:
    if f'lib{name}' in maps:
      return name
  return 'system'


def entry_point(argv: Sequence[str], orig_argv: Sequence[str], main_globals: Mapping) -> bool:
  """Whether this process is one of the entry points that choose their allocator.

  Args:
    argv: `sys.argv` while the package is imported ('-m' first for `python -m`).
    orig_argv: `sys.orig_argv`: the interpreter's own command line.
    main_globals: the `__main__` module's globals so far (a script's marker).
  """
  if argv[:1] == ['-m']:
    rest = list(orig_argv[1:])
    for i, arg in enumerate(rest):
      if arg == '-m':
        return i + 1 < len(rest) and rest[i + 1] in ENTRY_MODULES
      if arg.startswith('-m'):
        return arg[2:] in ENTRY_MODULES
    return False
  return bool(main_globals.get(SCRIPT_MARKER))


def reexec_if_entry_point() -> None:
  """Re-executes the process with the chosen allocator preloaded, when it is an entry point.

  Returns without doing anything outside an entry point, off Linux, after one re-execution, or
  when nothing is to be preloaded; a bad `EFFICIENTNET_JAX_MALLOC` exits 2 with one line.
  """
  if not sys.platform.startswith('linux') or os.environ.get(REEXECUTED_ENV):
    return
  main = sys.modules.get('__main__')
  if not entry_point(sys.argv, getattr(sys, 'orig_argv', []), vars(main) if main else {}):
    return
  try:
    choice = choose(os.environ)
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    raise SystemExit(2) from None
  if choice.library is None or choice.library in os.environ.get('LD_PRELOAD', '').split():
    return
  env = dict(os.environ)
  env['LD_PRELOAD'] = preload_list(choice.library, env.get('LD_PRELOAD', ''))
  env[REEXECUTED_ENV] = choice.library
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + list(sys.orig_argv[1:]), env)
