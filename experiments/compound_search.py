r"""Step 1 of compound scaling: fix φ = 1 and grid-search (α, β, γ) under α·β²·γ² ≈ 2.

  python experiments/compound_search.py --config=experiments/configs/digits_search.py \
      --workdir=runs/search                  # every trial in turn, then the merge
  python experiments/compound_search.py --config=... --workdir=DIR --list     # one command/trial
  python experiments/compound_search.py --config=... --workdir=DIR --trial=3  # just trial 3
  python experiments/compound_search.py --config=... --workdir=DIR --merge    # results.* only
  python experiments/compound_search.py --config=... --workdir=DIR --count    # items in --list
  python experiments/compound_search.py --config=... --workdir=DIR --item=N   # --list's line N
  python experiments/launch.py --engine=local|slurm --script=experiments/compound_search.py \
      --config=... --workdir=DIR             # every unfinished item as one job array, merged

The plan (the trials and their measured FLOPs) is made once and kept in DIR/plan.json; an item
being trained holds DIR/trials/K/.lock, and a second copy exits 73 (experiments/README.md,
"Sweeps").

Each admissible triple gives one φ = 1 model: the baseline's width ·β, depth ·α and resolution ·γ
(the compound builder `scaling.compound(1, α, β, γ, base_resolution=…)`). Its FLOPs are measured
on the built network and reported beside the nominal α·β²·γ². Writes DIR/results.json,
DIR/results.md and DIR/search.png, and prints the best triple.

Config (see experiments/configs/digits_search.py): `train` (a training config of
`efficientnet_jax.config.get_config`: data, budget, recipe), `baseline` (width, depth,
resolution, resolution_multiple), `search` (alphas, betas, gammas, target, tolerance) and
`metric`.
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
from efficientnet_jax.studies import grid
from efficientnet_jax.studies import points
from efficientnet_jax.studies import report
from efficientnet_jax.studies import sweep


def triples(config) -> list[grid.Triple]:
  """The admissible (α, β, γ) of a search config, in trial order."""
  s = config.search
  return grid.enumerate_triples(s.alphas, s.betas, s.gammas, target=s.target,
                                tolerance=s.tolerance)


def plan(config) -> list[sweep.Trial]:
  """One φ = 1 trial per admissible triple, with its measured FLOPs and parameters."""
  base = points.baseline_from_config(config.baseline)
  base_flops = points.count_macs(config.train, base.point)
  trials = []
  for i, t in enumerate(triples(config)):
    point = points.compound_point(base, 1.0, t.alpha, t.beta, t.gamma)
    cost = points.measure(config.train, point)
    trials.append(sweep.Trial(i, point, {
        'alpha': t.alpha, 'beta': t.beta, 'gamma': t.gamma,
        'nominal_ratio': round(t.nominal_ratio, 6), **cost,
        'flops_ratio': round(cost['flops'] / base_flops, 6)}))
  if not trials:
    raise ValueError('No (α, β, γ) on the grid satisfies the constraint; widen the grid or '
                     'config.search.tolerance.')
  return trials


def summarize(config, results, workdir: str) -> None:
  print(report.write_search(results, workdir, config.metric), flush=True)
  print(f'wrote {os.path.join(workdir, "results.json")}, results.md, search.png', flush=True)


if __name__ == '__main__':
  sweep.define_flags()
  flags.adopt_module_key_flags(sweep)  # --help lists --list, --count, --item, --trial, …
  app.run(sweep.main(plan, summarize, comparisons.search_claims),
          flags_parser=cli.parse_flags)
