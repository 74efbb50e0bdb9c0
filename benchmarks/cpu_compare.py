"""Ours against timm eager on the same CPU shapes, one command, each side alone on the cores.

  python benchmarks/cpu_compare.py                      # the four study shapes, train and infer
  python benchmarks/cpu_compare.py --shapes=b0@128x32 --modes=train --steps=3

For each shape and mode, `python -m efficientnet_jax.benchmark --json` (our real train step, or
the forward pass) and then `benchmarks/timm_benchmark.py --device=cpu --no-compile --json` (timm
eager: RMSpropTF + EMA, or the no-grad forward) run as child processes, one after the other,
while this process only waits: neither side shares the cores with the other or with a busy
parent. Both use float32, synthetic batches, the same batch, resolution and network
(`SHAPE`: MODEL[φPHI]@RESOLUTIONxBATCH; `b0φ-4` is the quick start's network, built by timm's
own generator on its side). Our compile is cold (no persistent cache) unless `--cache`.

Printed: a Markdown table, one row per shape and mode: the median step of each side, the ratio
(timm's step / ours: above 1 means ours is faster), the CPU-seconds per image of each side, and
our compile time; then the versions. `--json` adds one JSON line with every child's result.
`--xla_flags` is passed to our side as `XLA_FLAGS`.

`--allocators=system,tcmalloc` runs every row under each host malloc, both sides alike: `system`
is the C library's, `tcmalloc` preloads the installed tcmalloc into both children (ours through
`EFFICIENTNET_JAX_MALLOC`, timm's through `LD_PRELOAD`; efficientnet_jax/host_malloc.py says why
it matters for XLA:CPU). The default, `auto`, leaves each side as a user would run it: ours with
tcmalloc where it is installed, timm with the C library's malloc.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

from efficientnet_jax import host_malloc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SHAPES = 'b0φ-4@32x64,b0@32x64,b0@64x64,b0@128x32'
SHAPE = re.compile(r'^(?P<model>b0)(?:(?:φ|phi)(?P<phi>-?[0-9.]+))?@(?P<res>\d+)x(?P<batch>\d+)$')
TIMM_MODEL = {'b0': 'efficientnet_b0'}


def usage(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  raise SystemExit(2)


def parse_shapes(text: str) -> list[dict]:
  """'b0φ-4@32x64,b0@128x32' → [{'model', 'phi', 'resolution', 'batch'}]; one-line error else."""
  shapes = []
  for item in filter(None, (s.strip() for s in text.split(','))):
    m = SHAPE.match(item)
    if not m:
      usage(f'--shapes item {item!r} must be MODEL[φPHI]@RESOLUTIONxBATCH with MODEL b0, '
            f'e.g. b0φ-4@32x64 or b0@128x32.')
    shapes.append({'model': m['model'], 'phi': float(m['phi']) if m['phi'] else None,
                   'resolution': int(m['res']), 'batch': int(m['batch'])})
  if not shapes:
    usage('--shapes is empty; e.g. --shapes=b0@32x64.')
  return shapes


def child(command: list[str], env: dict | None = None) -> dict:
  """Runs one benchmark child; its last JSON line, or a one-line error and exit 1."""
  done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  lines = [l for l in done.stdout.splitlines() if l.startswith('{')]
  if done.returncode or not lines:
    tail = (done.stderr.strip().splitlines() or ['no output'])[-1]
    print(f'error: {" ".join(command[1:3])} failed: {tail}', file=sys.stderr)
    raise SystemExit(1)
  return json.loads(lines[-1])


def allocator_env(allocator: str, side: str) -> dict:
  """The environment of a child of `side` ('ours' or 'timm') under `allocator`."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('LD_PRELOAD', host_malloc.ENV, host_malloc.REEXECUTED_ENV)}
  if allocator == 'auto':
    return env
  if side == 'ours':
    env[host_malloc.ENV] = allocator
  elif allocator == 'tcmalloc':
    env['LD_PRELOAD'] = host_malloc.find_tcmalloc()
  return env


def ours(shape: dict, mode: str, args: argparse.Namespace, allocator: str = 'auto') -> dict:
  command = [sys.executable, '-m', 'efficientnet_jax.benchmark', '--json', f'--mode={mode}',
             f'--model={shape["model"]}', f'--resolution={shape["resolution"]}',
             f'--batch={shape["batch"]}', '--dtype=float32', f'--steps={args.steps}',
             f'--warmup={args.warmup}']
  if shape['phi'] is not None:
    command.append(f'--phi={shape["phi"]}')
  if not args.cache:
    command.append('--cache_dir=')
  env = allocator_env(allocator, 'ours')
  if args.xla_flags is not None:
    env['XLA_FLAGS'] = args.xla_flags
  return child(command, env)


def timm(shape: dict, mode: str, args: argparse.Namespace, allocator: str = 'auto') -> dict:
  command = [sys.executable, os.path.join(HERE, 'timm_benchmark.py'), '--json', '--device=cpu',
             '--no-compile', '--dtype=float32', f'--mode={mode}',
             f'--model={TIMM_MODEL[shape["model"]]}', f'--resolution={shape["resolution"]}',
             f'--batch={shape["batch"]}', f'--steps={args.steps}', f'--warmup={args.warmup}']
  if shape['phi'] is not None:
    command.append(f'--phi={shape["phi"]}')
  return child(command, allocator_env(allocator, 'timm'))


def row(shape: dict, mode: str, a: dict, t: dict, allocator: str) -> str:
  """One Markdown row: allocators, steps, ratio, CPU-s per image, our compile."""
  phi = '' if shape['phi'] is None else f' φ={shape["phi"]:g}'
  name = shape['model'] + phi
  batch = shape['batch']
  malloc = f'{allocator}: {a.get("host_malloc")} / {t.get("host_malloc")}'
  return (f'| {name} | {shape["resolution"]} | {batch} | {mode} | {malloc} | '
          f'{a["step_ms_median"]:,.1f} | '
          f'{t["step_ms_median"]:,.1f} | {t["step_ms_median"] / a["step_ms_median"]:.2f}× | '
          f'{a["host_cpu_ms_per_step"] / batch / 1e3:.4f} | '
          f'{t["host_cpu_ms_per_step"] / batch / 1e3:.4f} | {a["compile_s"]:.1f} |')


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--shapes', default=DEFAULT_SHAPES)
  p.add_argument('--modes', default='train,infer')
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--cache', action='store_true', help='Use our persistent compilation cache.')
  p.add_argument('--xla_flags', default=None, help='XLA_FLAGS for our side (default: inherited).')
  p.add_argument('--allocators', default='auto',
                 help='Comma list of auto, system, tcmalloc: each row under each (both sides).')
  p.add_argument('--json', action='store_true')
  args = p.parse_args(argv)
  shapes = parse_shapes(args.shapes)
  modes = [m for m in args.modes.split(',') if m]
  if not modes or set(modes) - {'train', 'infer'}:
    usage(f'--modes={args.modes!r} must be train, infer or train,infer.')
  if args.steps < 1 or args.warmup < 0:
    usage('--steps must be ≥ 1 and --warmup ≥ 0.')
  allocators = [a for a in args.allocators.split(',') if a]
  if not allocators or set(allocators) - {'auto', 'system', 'tcmalloc'}:
    usage(f'--allocators={args.allocators!r} must list auto, system or tcmalloc.')
  if 'tcmalloc' in allocators and host_malloc.find_tcmalloc() is None:
    usage('--allocators names tcmalloc but none is installed (apt-get install '
          'libtcmalloc-minimal4).')
  print('| network | px | batch | mode | malloc: ours / timm | ours ms/step | timm ms/step | '
        'timm/ours | ours CPU-s/img | timm CPU-s/img | our compile s |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  results = []
  for shape in shapes:
    for mode in modes:
      for allocator in allocators:
        a, t = ours(shape, mode, args, allocator), timm(shape, mode, args, allocator)
        results.append({'shape': shape, 'mode': mode, 'allocator': allocator, 'ours': a,
                        'timm': t})
        print(row(shape, mode, a, t, allocator), flush=True)
  a, t = results[0]['ours'], results[0]['timm']
  print(f'\nours: jax {a.get("jax_version")}, flax {a.get("flax_version")}, XLA_FLAGS='
        f'{args.xla_flags if args.xla_flags is not None else os.environ.get("XLA_FLAGS", "")!r}; '
        f'timm {t.get("timm_version")}, torch {t.get("torch_version")} '
        f'({t.get("torch_threads")} threads) on {t.get("device_kind")}')
  if args.json:
    print(json.dumps(results))


if __name__ == '__main__':
  main()
