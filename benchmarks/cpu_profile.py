"""Where our CPU train step goes: XLA:CPU's per-op time, grouped by the part of the network.

  python benchmarks/cpu_profile.py --model=b0 --phi=-4 --resolution=32 --batch=64 [--top=15]

Builds and compiles the train step exactly as training does (`benchmarking.harness`), times it,
then traces a few more steps with `jax.profiler`. On CPU each executed thunk of the compiled
program is one trace event named after its HLO instruction (a fusion, a copy, a dot, …), and
the compiled HLO gives each instruction the `op_name` JAX recorded: the Flax module path
(`blocks_3/depthwise_conv`, `…/se/…`), whether it is the forward pass (`jvp(…)`) or the
backward (`transpose(jvp(…))`), and the train step's own named scopes (`optimizer`, `ema`,
`finite_check`, `loss`). This tool joins the two and prints the thunk time per step by group
and direction, its share, and the costliest instructions.

What the figures are: thunk time summed over XLA's threads (CPU time inside the program's
kernels), per traced step. A fusion is labelled by its root instruction, so a fused batch norm
+ SiLU counts as whichever op XLA made the root; the groups are a map of where the time goes,
not an exact split. The wall time per step is measured before tracing, as the benchmark does.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

# First match wins: the group of an instruction, from its op_name.
GROUPS = tuple((label, re.compile(pattern)) for label, pattern in (
    ('optimizer update', r'/optimizer(/|$)'),
    ('EMA update', r'/ema(/|$)'),
    ('finite check + keep', r'/finite_check(/|$)'),
    ('loss', r'/loss(/|$)'),
    ('squeeze-excite', r'/se/'),
    ('batch norm', r'_bn/'),
    ('depthwise conv', r'/depthwise_conv/'),
    ('1×1 convs (expand, project, head)', r'/(expand|project|head)_conv/'),
    ('stem conv', r'/stem_conv/'),
    ('classifier', r'/classifier/'),
    ('SiLU', r'silu'),
    ('dropout / drop-path', r'[Dd]rop'),
))
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{[^}]*?op_name="([^"]*)"')


def group_of(op_name: str) -> str:
  """The group of an op_name (`GROUPS`), else 'other (model)' or 'other (step)'."""
  for label, pattern in GROUPS:
    if pattern.search(op_name):
      return label
  return 'other (model)' if 'EfficientNet' in op_name else 'other (step)'


def direction_of(op_name: str) -> str:
  """'backward' (a transposed JVP), 'forward' (inside the JVP) or 'update' (the rest)."""
  if 'transpose(' in op_name:
    return 'backward'
  return 'forward' if 'jvp(' in op_name else 'update'


def op_names(hlo_text: str) -> dict[str, str]:
  """Instruction name → op_name, for every instruction of the compiled HLO that has one."""
  names = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if m:
      names[m.group(1)] = m.group(2).replace("\\'", "'")
  return names


def thunk_times(trace_path: str, names: dict[str, str]) -> dict[str, float]:
  """Instruction name → total traced microseconds, over every thread of the trace."""
  opener = gzip.open if trace_path.endswith('.gz') else open
  with opener(trace_path, 'rt') as f:
    events = json.load(f).get('traceEvents', [])
  totals = collections.Counter()
  for e in events:
    if e.get('ph') == 'X' and e.get('name') in names:
      totals[e['name']] += float(e.get('dur', 0.0))
  return dict(totals)


def summarise(times_us: dict[str, float], names: dict[str, str], steps: int
              ) -> tuple[list[tuple[str, dict[str, float], float]], list[tuple[str, str, float]]]:
  """(groups: [(group, {direction: ms/step}, total ms/step)], top: [(instr, op_name, ms/step)]).

  Groups are sorted by their total, largest first; `top` by each instruction's time.
  """
  by_group: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for name, us in times_us.items():
    op = names[name]
    by_group[group_of(op)][direction_of(op)] += us / 1e3 / steps
  groups = sorted(((g, dict(d), sum(d.values())) for g, d in by_group.items()),
                  key=lambda row: -row[2])
  top = sorted(((n, names[n], us / 1e3 / steps) for n, us in times_us.items()),
               key=lambda row: -row[2])
  return groups, top


def format_tables(groups, top, *, wall_ms: float, header: str, top_n: int) -> str:
  """Markdown: the groups (forward, backward, update, total, share) and the top instructions."""
  total = sum(row[2] for row in groups) or 1.0
  lines = [header, '',
           f'Wall step (median, before tracing): {wall_ms:.1f} ms; thunk time summed over '
           f"XLA's threads: {total:.1f} ms per traced step.", '',
           '| group | forward ms | backward ms | update ms | total ms/step | share |',
           '|---|---|---|---|---|---|']
  for g, d, t in groups:
    cell = lambda k, d=d: f'{d[k]:.1f}' if k in d else ''
    lines.append(f'| {g} | {cell("forward")} | {cell("backward")} | {cell("update")} | '
                 f'{t:.1f} | {100 * t / total:.1f}% |')
  lines += ['', f'Costliest {top_n} instructions:', '',
            '| instruction | op_name | ms/step |', '|---|---|---|']
  for n, op, ms in top[:top_n]:
    short = re.sub(r'^jit\(train_step\)/', '', op)
    lines.append(f'| `{n}` | `{short[:110]}` | {ms:.2f} |')
  return '\n'.join(lines)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model', default='b0')
  p.add_argument('--phi', type=float, default=None)
  p.add_argument('--resolution', type=int, default=32)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  p.add_argument('--mode', default='train', choices=['train', 'infer'])
  p.add_argument('--steps', type=int, default=5, help='Timed steps (and traced steps, ≤ 5).')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--depthwise_impl', default='auto', choices=['auto', 'conv', 'shift'])
  p.add_argument('--top', type=int, default=15)
  p.add_argument('--trace_dir', default=None,
                 help='Keep the trace here (default: a temporary directory, removed).')
  args = p.parse_args(argv)
  if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.resolution < 8:
    p.error('--steps ≥ 1, --warmup ≥ 0, --batch ≥ 1 and --resolution ≥ 8 are required.')
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  # pylint: disable=g-import-not-at-top  (XLA's flags must be set before the backend starts)
  from efficientnet_jax.training import xla_options
  xla_options.apply()
  from efficientnet_jax.benchmarking import harness
  import jax
  bench = harness.build(args.model, batch=args.batch, resolution=args.resolution,
                        mode=args.mode, dtype=args.dtype, depthwise_impl=args.depthwise_impl,
                        phi=args.phi)
  compiled = harness.compile_step(bench)
  names = op_names(compiled.executable.as_text())
  with tempfile.TemporaryDirectory() as tmp:
    trace_dir = args.trace_dir or tmp
    result = harness.run(bench, steps=args.steps, warmup=args.warmup, profile_dir=trace_dir,
                         compiled=compiled)
    traces = sorted(glob.glob(os.path.join(trace_dir, 'plugins', 'profile', '*',
                                           '*.trace.json.gz')))
    if not traces:
      print(f'error: no trace was written under {trace_dir}.', file=sys.stderr)
      return 1
    times = thunk_times(traces[-1], names)
  groups, top = summarise(times, names, min(args.steps, 5))
  phi = f' φ={args.phi:g}' if args.phi is not None else ''
  header = (f'{args.model}{phi} {args.mode}, {args.resolution} px, batch {args.batch}, '
            f'{args.dtype}; jax {jax.__version__}, {result["device_kind"]}, '
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(format_tables(groups, top, wall_ms=result['step_ms_median'], header=header,
                      top_n=args.top))
  return 0


if __name__ == '__main__':
  sys.exit(main())
