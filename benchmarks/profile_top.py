"""The top costs of a profiled step: device time per kernel class, from the suite's trace.

  python benchmarks/profile_top.py profile_b0_train.trace.json.gz [--top=25] [--steps=3]

Reads the Chrome-trace JSON that `jax.profiler.trace` writes (`*.trace.json.gz`; the Perfetto
copy has the same events), keeps the device's kernel events (the GPU streams' threads) and sums
their durations by kernel name and by class (convolutions through cuDNN, cuBLAS matrix products,
XLA's fusions, copies and transposes, reductions, other), per step (`--steps`: the number of
steps the trace holds). The classes say where a step's time goes; the names say which kernels.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys

# First match wins: a kernel name's class.
CLASSES = (
    ('convolution (cuDNN)', re.compile(r'cudnn|conv|xmma|implicit_gemm|sm90_xmma|dgrad|wgrad|'
                                       r'fprop', re.I)),
    ('matmul (cuBLAS/cuBLASLt)', re.compile(r'gemm|cublas|nvjet|sm90_.*gmma', re.I)),
    ('copy / transpose', re.compile(r'copy|transpose|memcpy|memset', re.I)),
    ('reduction fusion', re.compile(r'reduce|reduction', re.I)),
    ('loop / input fusion', re.compile(r'fusion|loop_|input_', re.I)),
)


def kernel_class(name: str) -> str:
  for label, pattern in CLASSES:
    if pattern.search(name):
      return label
  return 'other'


def device_events(trace: dict, line: str = 'Stream') -> list[dict]:
  """The complete events ('X') on the device's threads whose name starts with `line`.

  On a GPU, xprof puts each device under a process named '/device:GPU:N' with threads 'Stream #K'
  (the kernels), 'XLA Ops' (the HLO ops that launched them) and 'XLA Modules' (whole programs):
  summing more than one kind of thread would count the same time twice.
  """
  events = trace.get('traceEvents', [])
  device_pids = {e['pid'] for e in events
                 if e.get('ph') == 'M' and e.get('name') == 'process_name'
                 and re.search(r'/device:(GPU|TPU)', str(e.get('args', {}).get('name', '')))}
  threads = {(e['pid'], e.get('tid')) for e in events
             if e.get('ph') == 'M' and e.get('name') == 'thread_name' and e.get('pid') in device_pids
             and str(e.get('args', {}).get('name', '')).startswith(line)}
  return [e for e in events if e.get('ph') == 'X' and (e.get('pid'), e.get('tid')) in threads
          and 'dur' in e]


def summarise(path: str, steps: int, line: str = 'Stream') -> dict:
  """{'total_ms_per_step', 'classes': [(class, ms/step, share)], 'kernels': [...]}"""
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt') as f:
    trace = json.load(f)
  events = device_events(trace, line)
  by_name: dict[str, float] = collections.Counter()
  counts: dict[str, int] = collections.Counter()
  for e in events:
    by_name[e['name']] += e['dur'] / 1e3
    counts[e['name']] += 1
  total = sum(by_name.values())
  # Kernels launched outside XLA's command buffers (cuDNN, cuBLAS) carry the op's source name
  # (e.g. '.../blocks_3/depthwise_conv/conv_general_dilated'); fusions inside them do not.
  by_op: dict[str, float] = collections.Counter()
  for e in events:
    op = e.get('args', {}).get('name')
    if op:
      by_op[op] += e['dur'] / 1e3
  by_class: dict[str, float] = collections.Counter()
  for name, ms in by_name.items():
    by_class[kernel_class(name)] += ms
  return {
      'events': len(events),
      'total_ms_per_step': total / steps,
      'classes': [(c, ms / steps, ms / total if total else 0.0)
                  for c, ms in by_class.most_common()],
      'kernels': [(n, ms / steps, counts[n] / steps, ms / total if total else 0.0)
                  for n, ms in by_name.most_common()],
      'named_ops': [(n, ms / steps, ms / total if total else 0.0)
                    for n, ms in by_op.most_common()],
  }


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('trace', help='A *.trace.json.gz (or .json) written by jax.profiler.trace.')
  p.add_argument('--top', type=int, default=25)
  p.add_argument('--steps', type=int, default=3, help='Steps the trace holds.')
  p.add_argument('--line', default='Stream',
                 help="Device threads to sum: 'Stream' (kernels) or 'XLA Ops' (HLO ops).")
  args = p.parse_args(argv)
  try:
    s = summarise(args.trace, args.steps, args.line)
  except (OSError, ValueError) as e:
    print(f'error: cannot read {args.trace!r} as a Chrome trace ({e}); give the '
          '*.trace.json.gz that jax.profiler.trace wrote.', file=sys.stderr)
    return 2
  if not s['events']:
    print(f'error: {args.trace!r} holds no device kernel events; profile on a GPU or TPU.',
          file=sys.stderr)
    return 2
  print(f'device kernel time: {s["total_ms_per_step"]:.2f} ms per step ({s["events"]} events)')
  print('| class | ms/step | share |\n|---|---|---|')
  for c, ms, share in s['classes']:
    print(f'| {c} | {ms:.2f} | {100 * share:.1f}% |')
  print(f'\n| top kernels | ms/step | calls/step | share |\n|---|---|---|---|')
  for n, ms, calls, share in s['kernels'][:args.top]:
    print(f'| `{n[:90]}` | {ms:.3f} | {calls:.0f} | {100 * share:.1f}% |')
  if s['named_ops']:
    named = sum(ms for _, ms, _ in s['named_ops'])
    depthwise = sum(ms for n, ms, _ in s['named_ops'] if 'depthwise_conv/' in n)
    print(f'\nKernels with a source op (cuDNN, cuBLAS): {named:.2f} ms per step, of which '
          f'depthwise convolutions {depthwise:.2f} ms (forward and both gradients).')
    print('| source op | ms/step | share |\n|---|---|---|')
    for n, ms, share in s['named_ops'][:args.top]:
      print(f'| `{n.split("/", 1)[-1][:100]}` | {ms:.3f} | {100 * share:.1f}% |')
  return 0


if __name__ == '__main__':
  sys.exit(main())
