"""What a benchmark figure is measured against: device peaks, memory, HLO op counts, versions."""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import jax

from efficientnet_jax import host_malloc
from efficientnet_jax.training import host_cpu

# Dense (no sparsity) peak FLOP/s per device: (device_kind substring, bfloat16, float32).
# First match wins, so specific names precede general ones. float32 on NVIDIA is the TF32
# tensor-core peak: XLA's default precision runs float32 convolutions and matmuls as TF32 there.
# TPUs run float32 as several bfloat16 passes, so no float32 peak is claimed for them.
PEAK_FLOPS: tuple[tuple[str, float, float | None], ...] = (
    ('H100 PCIe', 756e12, 378e12),
    ('H100', 989e12, 494e12),     # SXM (device_kind 'NVIDIA H100 80GB HBM3').
    ('H200', 989e12, 494e12),
    ('A100', 312e12, 156e12),
    ('TPU v4', 275e12, None),
    ('TPU v5 lite', 197e12, None),  # v5e.
    ('TPU v5e', 197e12, None),
    ('TPU v5p', 459e12, None),
    ('TPU v5', 459e12, None),       # v5p reports itself as 'TPU v5'.
)


def process_age_s() -> float | None:
  """Seconds since this process started (interpreter start-up and imports included); Linux."""
  try:
    with open('/proc/self/stat') as f:
      # Field 22 (starttime, clock ticks after boot); the command name (field 2) may hold spaces.
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return None


def peak_flops_per_device(device_kind: str, dtype: str) -> float | None:
  """The dense peak FLOP/s of one device for the dtype, or None where unknown (CPU)."""
  for name, bf16, f32 in PEAK_FLOPS:
    if name.lower() in device_kind.lower():
      return bf16 if dtype == 'bfloat16' else f32
  return None


def peak_memory_bytes(devices) -> int | None:
  """The largest `peak_bytes_in_use` over the devices, or None where the backend has no stats."""
  peaks = []
  for device in devices:
    try:
      stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except  # Some backends raise instead of None.
      stats = None
    if stats and 'peak_bytes_in_use' in stats:
      peaks.append(int(stats['peak_bytes_in_use']))
  return max(peaks) if peaks else None


def memory_analysis(compiled) -> dict[str, int] | None:
  """XLA's compile-time buffer sizes per device (arguments, outputs, temporaries, code)."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # Not every backend implements it.
    return None
  if analysis is None:
    return None
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes',
            'alias_size_in_bytes', 'generated_code_size_in_bytes')
  return {f.replace('_size_in_bytes', '_bytes'): int(getattr(analysis, f))
          for f in fields if hasattr(analysis, f)}


def is_out_of_memory(error: BaseException) -> bool:
  """Whether a runtime error is the device running out of memory."""
  return 'RESOURCE_EXHAUSTED' in str(error) or 'out of memory' in str(error).lower()


def bytes_needed(analysis: dict[str, int] | None) -> int | None:
  """Device bytes a step needs at its peak: live arguments, new outputs, temporaries."""
  if not analysis or 'temp_bytes' not in analysis:
    return None
  return (analysis['argument_bytes'] + analysis['output_bytes'] - analysis.get('alias_bytes', 0)
          + analysis['temp_bytes'])


def bytes_limit(devices) -> int | None:
  """The device allocator's limit (None where the backend has no memory stats, e.g. CPU)."""
  try:
    stats = devices[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return int(stats['bytes_limit']) if stats and 'bytes_limit' in stats else None


# An instruction of optimised HLO text: `%name = SHAPE op(operands)`.
_HLO_OP = re.compile(r'=\s*(?P<shape>\(?[a-z0-9]+\[[^=]*?)\s'
                     r'(?P<op>convolution|custom-call|transpose|copy|fusion)\(')


def hlo_op_counts(hlo_text: str) -> dict[str, int]:
  """What the optimised HLO spends passes on: convolutions by result dtype, transposes, copies.

  A bfloat16 step should show only `convolution_bf16` (cuDNN custom calls count as
  convolutions); `convolution_f32` means a convolution runs in float32 (XLA:CPU does that for
  every bf16 convolution). `transpose` and `copy` count both standalone and fused instructions,
  so they bound the layout changes from above; `fusion` is about the number of kernels.
  """
  counts: dict[str, int] = {}
  for line in hlo_text.splitlines():
    match = _HLO_OP.search(line)
    if not match:
      continue
    op = match.group('op')
    if op == 'custom-call':
      if 'conv' not in line.partition('custom_call_target=')[2][:40]:
        continue
      op = 'convolution'
    if op == 'convolution':
      dtype = re.search(r'([a-z0-9]+)\[', match.group('shape'))
      op = f'convolution_{dtype.group(1) if dtype else "unknown"}'
    counts[op] = counts.get(op, 0) + 1
  return dict(sorted(counts.items()))


def hlo_op_counts_of(executable) -> dict[str, int] | None:
  """`hlo_op_counts` of a compiled executable, or None where the backend cannot print it."""
  try:
    return hlo_op_counts(executable.as_text())
  except Exception:  # pylint: disable=broad-except  # as_text is unavailable on some backends.
    return None


def environment() -> dict[str, Any]:
  """Library and host versions that a figure depends on, and the host CPU it ran on."""
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return {'jax_version': jax.__version__, 'jaxlib_version': jaxlib.__version__,
          'flax_version': flax.__version__, 'optax_version': optax.__version__,
          'python_version': platform.python_version(), 'host': platform.machine(),
          'host_cpus': os.cpu_count(), **host_cpu.identity(),
          'host_malloc': host_malloc.in_use()}
