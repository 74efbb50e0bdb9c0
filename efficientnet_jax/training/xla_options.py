"""XLA options a run chooses, set through `XLA_FLAGS` before JAX's backend starts.

XLA reads `XLA_FLAGS` when the backend starts (the first computation or device query), not at
`import jax`, so `apply` works after the import as long as nothing has run yet. A flag already in
`XLA_FLAGS` (the user's) wins over the config. Importable without TensorFlow.

The CPU preset only changes what XLA:CPU compiles: a GPU or TPU program is the same under every
preset, so the choice is per backend by construction.
"""

from __future__ import annotations

import os

from efficientnet_jax.errors import ConfigError

# XLA:CPU's optimisation presets (`DebugOptions.xla_cpu_opt_preset`), without their
# `CPU_OPT_PRESET_` prefix. FAST_COMPILE is the default: on the project's 2-core CPU it compiles
# the quick-start train step 2.3× faster and runs it 1.8× faster than XLA's DEFAULT (FAST_RUNTIME
# runs within DEFAULT's spread); docs/benchmarks.md, "The CPU train step: XLA:CPU's own options".
CPU_OPT_PRESETS = ('FAST_COMPILE', 'DEFAULT', 'FAST_RUNTIME')
DEFAULT_CPU_OPT_PRESET = 'FAST_COMPILE'
_LEVEL_FLAG = '--xla_backend_optimization_level'
_PRESET_FLAG = '--xla_cpu_opt_preset'


def check_cpu_opt_preset(preset: str | None) -> None:
  """A one-line `ConfigError` for a preset XLA would reject (it aborts the process instead)."""
  if preset is not None and preset not in CPU_OPT_PRESETS:
    raise ConfigError(f'Unknown xla_cpu_opt_preset {preset!r}; use one of: '
                      f"{', '.join(CPU_OPT_PRESETS)} (e.g. --config.xla_cpu_opt_preset=DEFAULT).")


def _add_flag(flag: str, value) -> None:
  current = os.environ.get('XLA_FLAGS', '')
  if value is None or flag in current:
    return
  os.environ['XLA_FLAGS'] = f'{current} {flag}={value}'.strip()


def apply(*, backend_optimization_level: int | None = None,
          cpu_opt_preset: str | None = DEFAULT_CPU_OPT_PRESET) -> None:
  """Adds the options to `XLA_FLAGS` for this process (None leaves XLA's own default).

  Args:
    backend_optimization_level: `--xla_backend_optimization_level` (0 compiles faster and runs
      CPU steps slower).
    cpu_opt_preset: one of `CPU_OPT_PRESETS`: XLA:CPU's preset.

  Raises:
    ConfigError: an unknown preset (checked before anything is set).
  """
  check_cpu_opt_preset(cpu_opt_preset)
  _add_flag(_LEVEL_FLAG, None if backend_optimization_level is None
            else int(backend_optimization_level))
  _add_flag(_PRESET_FLAG, cpu_opt_preset)

