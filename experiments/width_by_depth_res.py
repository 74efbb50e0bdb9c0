r"""Paper Fig. 4: scaling width for baselines of different depth and resolution.

  python experiments/width_by_depth_res.py \
      --config=experiments/configs/digits_width_by_depth_res.py --workdir=runs/digits_fig4
  python experiments/width_by_depth_res.py --config=... --workdir=DIR --list | --trial=K | --merge
  python experiments/width_by_depth_res.py --config=... --workdir=DIR --count | --item=N  # job arrays
  python experiments/launch.py --engine=local|slurm --script=experiments/width_by_depth_res.py \
      --config=... --workdir=DIR        # every unfinished item as one job array, then merged
  python experiments/width_by_depth_res.py --config=... --workdir=DIR --config.seeds=3  # error bars

For each (d, r) in `config.fig4.depth_resolution` (depth and resolution coefficients over the
baseline; the paper's (1, 1), (1, 1.3), (2, 1), (2, 1.3)), trains one model per width coefficient
w in `config.fig4.widths`: the baseline's width ·w, depth ·d and resolution ·r (rounded to the
baseline's resolution multiple). The paper's point: width scaling saturates sooner at the
baseline's depth and resolution than when depth and resolution grow too, which is what motivates
scaling all three together. Trials: the (d, r) pairs in order, each by increasing w. Each model's
FLOPs are measured on the built network. Writes DIR/results.json, DIR/results.md and
DIR/width_by_depth_res.png (top-1 against measured FLOPs, one curve per (d, r), error bars with
several seeds). Resumable and sweepable exactly like compound_search.py (`studies.sweep`).
"""

from __future__ import annotations

# Read by the package's import: a study's trials run on tcmalloc where it is installed
# (efficientnet_jax/host_malloc.py).
USE_PREFERRED_HOST_MALLOC = True

import os

from absl import app
from absl import flags

from efficientnet_jax import cli
from efficientnet_jax.studies import comparisons
from efficientnet_jax.studies import points
from efficientnet_jax.studies import report
from efficientnet_jax.studies import sweep


def pairs(config) -> list[tuple[float, float]]:
  """The config's (depth, resolution) coefficient pairs, checked: distinct, each ≥ 1 long."""
  values = [(float(d), float(r)) for d, r in config.fig4.depth_resolution]
  if not values or len(set(values)) != len(values):
    raise ValueError(f'config.fig4.depth_resolution needs distinct (d, r) pairs, got {values}.')
  return values


def widths(config) -> list[float]:
  """The config's width coefficients, increasing, checked: distinct and positive."""
  values = sorted(float(w) for w in config.fig4.widths)
  if not values or len(set(values)) != len(values) or values[0] <= 0:
    raise ValueError(f'config.fig4.widths needs distinct positive coefficients, got {values}.')
  return values


def plan(config) -> list[sweep.Trial]:
  """One trial per (d, r) pair and width w, with its measured FLOPs and parameters."""
  base = points.baseline_from_config(config.baseline)
  base_flops = points.count_macs(config.train, base.point)
  trials = []
  for d, r in pairs(config):
    for w in widths(config):
      point = points.scaled_point(base, width=w, depth=d, resolution=r)
      cost = points.measure(config.train, point)
      trials.append(sweep.Trial(len(trials), point, {
          'depth_coefficient': d, 'resolution_coefficient': r, 'width_coefficient': w,
          **cost, 'flops_ratio': round(cost['flops'] / base_flops, 6)}))
  return trials


def summarize(config, results, workdir: str) -> None:
  print(report.write_width_curves(results, workdir, config.metric), flush=True)
  print(f'wrote {os.path.join(workdir, "results.json")}, results.md, width_by_depth_res.png',
        flush=True)


if __name__ == '__main__':
  sweep.define_flags()
  flags.adopt_module_key_flags(sweep)  # --help lists --list, --count, --item, --trial, …
  app.run(sweep.main(plan, summarize, comparisons.width_claims),
          flags_parser=cli.parse_flags)
