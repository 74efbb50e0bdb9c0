"""One train step against another in the same process, steps alternated: a paired ratio.

  python benchmarks/paired_step.py --model=b0 --resolution=128 --batch=32 --rounds=20 \
      --variant=cpu_forms: --variant=bn_autodiff:batch_norm_gradient=autodiff

Each `--variant=NAME:FORM=VALUE,...` builds and compiles the real train step
(`benchmarking.harness`, as `python -m efficientnet_jax.benchmark` does) with those forms forced
(`models.layers.forced_forms`; an empty list keeps the backend's own, `--variant=NAME:` alone).
After `--warmup` steps each, the variants' steps alternate, the order reversed every round, each
step timed on its own. On this project's 2-core VM two processes of the same code differ by
±10–15%, which swamps a 5% change; steps of two variants interleaved in one process share that
drift, so the ratio of each step to its partner of the first variant in the same round
cancels it.

Printed, one Markdown row per variant: its median step (ms), the median of the paired ratios
to the first variant with their quartiles, and a 95% bootstrap interval of that median (rounds
resampled); `--json` adds the raw step times. A ratio below 1: faster than the first variant.
Forms and their values: `models.layers.FORMS`. As training, it runs on tcmalloc where that is
installed (`EFFICIENTNET_JAX_MALLOC` chooses) and with XLA:CPU's FAST_COMPILE preset.
"""

from __future__ import annotations

# Read by the package's import: the steps run on tcmalloc where it is installed, as training's
# do (efficientnet_jax/host_malloc.py).
USE_PREFERRED_HOST_MALLOC = True

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import json
import os
import sys
import time

import jax
import numpy as np

from efficientnet_jax import host_malloc
from efficientnet_jax.benchmarking import harness
from efficientnet_jax.errors import UsageError
from efficientnet_jax.models import layers
from efficientnet_jax.training import xla_options


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
  """'NAME:FORM=VALUE,...' → (name, forms), values typed as in `layers.FORMS`.

  Raises:
    ValueError: a malformed variant, an unknown form or value (one line, with the choices).
  """
  name, sep, spec = text.partition(':')
  if not sep or not name:
    raise ValueError(f'--variant={text!r} must be NAME:FORM=VALUE,... (the list may be empty: '
                     f'--variant={text or "base"}:).')
  forms: dict[str, object] = {}
  for item in filter(None, spec.split(',')):
    form, eq, value = item.partition('=')
    if not eq or form not in layers.FORMS:
      raise ValueError(f'--variant={text!r}: {item!r} is not FORM=VALUE with FORM one of '
                       f'{", ".join(layers.FORMS)}.')
    by_text = {str(choice): choice for choice in layers.FORMS[form]}
    if value not in by_text:
      raise ValueError(f'--variant={text!r}: {form} takes one of {", ".join(by_text)}, not '
                       f'{value!r}.')
    forms[form] = by_text[value]
  return name, forms


def paired_summary(times: dict[str, list[float]], *, resamples: int = 2000, seed: int = 0
                   ) -> list[dict[str, float | str]]:
  """Per variant: median ms, and the paired ratios to the first variant (median, quartiles, CI).

  `times` maps each variant (first: the base) to its step times in seconds, one per round.
  The interval is a percentile bootstrap of the median ratio over resampled rounds.
  """
  names = list(times)
  base = np.asarray(times[names[0]])
  rng = np.random.default_rng(seed)
  rows = []
  for name in names:
    steps = np.asarray(times[name])
    ratio = steps / base
    picks = rng.integers(0, len(ratio), size=(resamples, len(ratio)))
    medians = np.median(ratio[picks], axis=1)
    rows.append({'variant': name, 'median_ms': float(np.median(steps) * 1e3),
                 'ratio': float(np.median(ratio)), 'q25': float(np.quantile(ratio, 0.25)),
                 'q75': float(np.quantile(ratio, 0.75)),
                 'ci_low': float(np.quantile(medians, 0.025)),
                 'ci_high': float(np.quantile(medians, 0.975))})
  return rows


def format_table(rows: list[dict], rounds: int) -> str:
  """The Markdown table `main` prints."""
  lines = [f'| variant | median ms ({rounds} rounds) | paired ratio to {rows[0]["variant"]} '
           '[quartiles] | 95% interval of the median ratio |', '|---|---|---|---|']
  for r in rows:
    lines.append(f'| {r["variant"]} | {r["median_ms"]:.1f} | {r["ratio"]:.3f} '
                 f'[{r["q25"]:.3f}, {r["q75"]:.3f}] | {r["ci_low"]:.3f}–{r["ci_high"]:.3f} |')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
  p.add_argument('--model', default='b0')
  p.add_argument('--phi', type=float, default=None)
  p.add_argument('--resolution', type=int, default=32)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--dtype', default='float32', choices=harness.DTYPES)
  p.add_argument('--rounds', type=int, default=20, help='Timed steps per variant.')
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--variant', action='append', default=[],
                 help='NAME:FORM=VALUE,... (repeat; the first is the base of the ratios).')
  p.add_argument('--xla_cpu_opt_preset', default=xla_options.DEFAULT_CPU_OPT_PRESET,
                 choices=xla_options.CPU_OPT_PRESETS, help="XLA:CPU's preset, as training's.")
  p.add_argument('--json', action='store_true', help='Also print the raw times as JSON.')
  args = p.parse_args(argv)
  xla_options.apply(cpu_opt_preset=args.xla_cpu_opt_preset)  # Before the backend starts.
  try:
    variants = [parse_variant(v) for v in args.variant]
    if len(variants) < 2 or len({name for name, _ in variants}) != len(variants):
      raise ValueError('give at least two --variant=NAME:... with distinct names (e.g. '
                       '--variant=base: --variant=bn:batch_norm_gradient=autodiff).')
    if args.rounds < 2 or args.warmup < 0:
      raise ValueError(f'--rounds={args.rounds} must be ≥ 2 and --warmup={args.warmup} ≥ 0.')
    harness.validate(args.model, batch=args.batch, resolution=args.resolution, mode='train',
                     dtype=args.dtype)
  except (ValueError, UsageError) as e:
    print(f'error: {e}', file=sys.stderr)
    raise SystemExit(2) from None

  built = {}
  for name, forms in variants:
    with layers.forced_forms(**forms):
      bench = harness.build(args.model, batch=args.batch, resolution=args.resolution,
                            dtype=args.dtype, phi=args.phi)
      compiled = harness.compile_step(bench)
    step_args = bench.args
    for _ in range(args.warmup):
      out = compiled.executable(*step_args)
      jax.block_until_ready(out)
      step_args = bench.advance(step_args, out)
    built[name] = [compiled.executable, bench.advance, step_args]
    print(f'{name}: compiled in {compiled.compile_s:.1f} s', file=sys.stderr, flush=True)

  times: dict[str, list[float]] = {name: [] for name, _ in variants}
  order = list(times)
  for r in range(args.rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
      executable, advance, step_args = built[name]
      start = time.perf_counter()
      out = executable(*step_args)
      jax.block_until_ready(out)
      times[name].append(time.perf_counter() - start)
      built[name][2] = advance(step_args, out)

  rows = paired_summary(times)
  print(f'{args.model}' + (f' φ={args.phi:g}' if args.phi is not None else '') +
        f', {args.resolution} px, batch {args.batch}, {args.dtype}, {jax.default_backend()}, '
        f'jax {jax.__version__}, XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}, '
        f'malloc {host_malloc.in_use()}')
  print(format_table(rows, args.rounds))
  if args.json:
    print(json.dumps({'rows': rows, 'times_s': times}))


if __name__ == '__main__':
  main()
