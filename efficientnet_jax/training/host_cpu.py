"""The host CPU that XLA:CPU compiles for, as results and benchmarks record it.

XLA:CPU emits kernels for the CPU it runs on, so the same program rounds differently on CPUs with
other SIMD extensions, and a long run ends at other figures (experiments/README.md,
"Reproducibility"). Cloud VMs of different generations often share one model name ("AMD EPYC"),
so what is recorded is the family/model numbers and the SIMD extensions beside the name.
"""

from __future__ import annotations

import platform

# The instruction-set extensions that decide which kernels XLA:CPU emits (and so the rounding).
SIMD_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'amx_tile', 'asimd', 'sve')


def _name() -> str:
  return platform.processor() or platform.machine()


def parse(cpuinfo: str) -> dict[str, str]:
  """The CPU of /proc/cpuinfo's first processor.

  Returns:
    `cpu` (the model name), `cpu_id` ("family F model M", on x86) and `cpu_simd` (those of
    `SIMD_FLAGS` it has, e.g. "avx2 fma" on an AMD EPYC of family 25 model 1, "avx2 fma avx512f
    ..." on one of model 17).
  """
  first = cpuinfo.split('\n\n', 1)[0]
  fields = {}
  for line in first.splitlines():
    key, sep, value = line.partition(':')
    if sep:
      fields.setdefault(key.strip(), value.strip())
  flags = set((fields.get('flags') or fields.get('Features') or '').split())
  result = {'cpu': fields.get('model name') or _name()}
  if 'cpu family' in fields or 'model' in fields:
    result['cpu_id'] = f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
  result['cpu_simd'] = ' '.join(f for f in SIMD_FLAGS if f in flags)
  return result


def identity() -> dict[str, str]:
  """`parse` of this machine (on a system without /proc/cpuinfo, only its name)."""
  try:
    with open('/proc/cpuinfo') as f:
      return parse(f.read())
  except OSError:
    return {'cpu': _name()}
