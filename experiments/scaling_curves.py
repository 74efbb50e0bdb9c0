r"""Step 2 of compound scaling and its ablations (paper Fig. 3 and Table 7 style).

  python experiments/scaling_curves.py --config=experiments/configs/digits_curves.py \
      --workdir=runs/digits_curves
  python experiments/scaling_curves.py --config=... --workdir=DIR --list | --trial=K | --merge
  python experiments/scaling_curves.py --config=... --workdir=DIR --count | --item=N  # job arrays
  python experiments/launch.py --engine=local|slurm --script=experiments/scaling_curves.py \
      --config=... --workdir=DIR        # every unfinished item as one job array, then merged

For a fixed (α, β, γ) (`config.curves`), trains the compound models φ = 0..N; then, at the
*measured* FLOPs of each compound model, the width-only, depth-only and resolution-only models
whose single coefficient is solved (bisection on the measured FLOPs) to match that budget.
Trials: the compound models in φ order, then each dimension's models in φ order; φ = 0 is the
shared baseline and is trained once. Writes DIR/results.json, DIR/results.md and DIR/curves.png.
Resumable and sweepable exactly like compound_search.py (both use `efficientnet_jax.studies.sweep`).
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


def plan(config) -> list[sweep.Trial]:
  """The compound trials, then the single-dimension trials matched to their FLOPs."""
  base = points.baseline_from_config(config.baseline)
  cur = config.curves
  base_flops = points.count_macs(config.train, base.point)
  trials: list[sweep.Trial] = []

  def add(point: points.Point, labels: dict) -> dict:
    cost = points.measure(config.train, point)
    record = {**labels, **cost, 'flops_ratio': round(cost['flops'] / base_flops, 6)}
    trials.append(sweep.Trial(len(trials), point, record))
    return record

  budgets = {}
  for phi in cur.phis:
    point = points.compound_point(base, phi, cur.alpha, cur.beta, cur.gamma)
    record = add(point, {'series': 'compound', 'phi': float(phi), 'coefficient': None,
                         'budget_flops': None, 'flops_vs_budget': None})
    budgets[float(phi)] = record['flops']
  for dimension in cur.dimensions:
    for phi, budget in budgets.items():
      if phi == 0:
        continue  # The baseline itself: already trained as compound φ = 0.
      solution = points.solve_single(config.train, base, dimension, budget,
                                     max_coefficient=cur.max_coefficient)
      add(solution.point, {'series': dimension, 'phi': phi, 'coefficient': solution.coefficient,
                           'budget_flops': budget,
                           'flops_vs_budget': round(solution.relative_error, 6)})
  return trials


def summarize(config, results, workdir: str) -> None:
  print(report.write_curves(results, workdir, config.metric), flush=True)
  print(f'wrote {os.path.join(workdir, "results.json")}, results.md, curves.png', flush=True)


if __name__ == '__main__':
  sweep.define_flags()
  flags.adopt_module_key_flags(sweep)  # --help lists --list, --count, --item, --trial, …
  app.run(sweep.main(plan, summarize, comparisons.curves_claims),
          flags_parser=cli.parse_flags)
