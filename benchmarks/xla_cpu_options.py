"""XLA:CPU options measured against each other on the real train step, one run, parent idle.

  python benchmarks/xla_cpu_options.py --model=b0 --phi=-4 --resolution=32 --batch=64 \
      --variant=default: --variant=fast_compile:--xla_cpu_opt_preset=FAST_COMPILE

Each `--variant=NAME:XLA_FLAGS` runs `python -m efficientnet_jax.benchmark --json` in a child
process with `XLA_FLAGS` set to its flags (the persistent compilation cache off, so every
compile is cold) while this process only waits, so no variant shares the cores with another
or with its parent. `--repeats` runs the whole list again, interleaved (A B A B), so drift of
the machine shows in the spread instead of in the ratio. Printed: one Markdown row per
variant with the median step, its CPU time, the cold compile (wall and CPU) and the ratio of
its step to the first variant's. `--depthwise_impl` and `--mode` pass through. An empty
variant runs the benchmark's default preset (FAST_COMPILE, as training); XLA's own default is
`--variant=xla_default:--xla_cpu_opt_preset=DEFAULT`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def parse_variant(text: str) -> tuple[str, str]:
  """'NAME:FLAGS' → (name, flags); a one-line error otherwise."""
  name, sep, flags = text.partition(':')
  if not sep or not name:
    print(f'error: --variant={text!r} must be NAME:XLA_FLAGS (flags may be empty: '
          f'--variant=default:).', file=sys.stderr)
    raise SystemExit(2)
  return name, flags


def run_variant(args: argparse.Namespace, flags: str) -> dict:
  """One cold benchmark run in a child process; its JSON result."""
  command = [sys.executable, '-m', 'efficientnet_jax.benchmark', '--json', '--cache_dir=',
             f'--model={args.model}', f'--batch={args.batch}', f'--resolution={args.resolution}',
             f'--dtype={args.dtype}', f'--mode={args.mode}', f'--steps={args.steps}',
             f'--warmup={args.warmup}', f'--depthwise_impl={args.depthwise_impl}']
  if args.phi is not None:
    command.append(f'--phi={args.phi}')
  env = dict(os.environ, XLA_FLAGS=flags)
  done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  lines = [l for l in done.stdout.splitlines() if l.startswith('{')]
  if done.returncode or not lines:
    tail = (done.stderr.strip().splitlines() or ['no output'])[-1]
    print(f'error: the variant with XLA_FLAGS={flags!r} failed: {tail}', file=sys.stderr)
    raise SystemExit(1)
  return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', default='b0')
  p.add_argument('--phi', type=float, default=None)
  p.add_argument('--resolution', type=int, default=32)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--mode', default='train')
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--repeats', type=int, default=1)
  p.add_argument('--depthwise_impl', default='auto')
  p.add_argument('--variant', action='append', default=[],
                 help='NAME:XLA_FLAGS; repeat the option; the first is the reference.')
  args = p.parse_args(argv)
  variants = [parse_variant(v) for v in args.variant] or [('default', '')]
  runs: dict[str, list[dict]] = {name: [] for name, _ in variants}
  for _ in range(args.repeats):
    for name, flags in variants:
      runs[name].append(run_variant(args, flags))
      r = runs[name][-1]
      print(f'# {name}: step {r["step_ms_median"]:.1f} ms, compile {r["compile_s"]:.1f} s',
            file=sys.stderr, flush=True)
  env = runs[variants[0][0]][0]
  print(f'{args.model}{"" if args.phi is None else f" φ={args.phi:g}"} {args.mode}, '
        f'{args.resolution} px, batch {args.batch}, {args.dtype}; jax {env.get("jax_version")}, '
        f'{env.get("device_kind")}; {args.repeats} run(s) per variant, medians')
  print('| variant | XLA_FLAGS | step ms | CPU ms/step | compile s (CPU s) | step vs first |')
  print('|---|---|---|---|---|---|')
  reference = None
  for name, flags in variants:
    step = statistics.median(r['step_ms_median'] for r in runs[name])
    cpu = statistics.median(r['host_cpu_ms_per_step'] for r in runs[name])
    comp = statistics.median(r['compile_s'] for r in runs[name])
    comp_cpu = statistics.median(r['compile_cpu_s'] for r in runs[name])
    reference = reference or step
    print(f'| {name} | `{flags or "(none)"}` | {step:.1f} | {cpu:.0f} | {comp:.1f} ({comp_cpu:.0f}) '
          f'| {reference / step:.2f}× |')


if __name__ == '__main__':
  main()
