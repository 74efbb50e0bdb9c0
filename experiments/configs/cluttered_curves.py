r"""Paper Fig. 3 and step 2 on the cluttered digits, on a 2-core CPU (13 trials).

  python experiments/scaling_curves.py --config=experiments/configs/cluttered_curves.py \
      --workdir=runs/cluttered_curves --config.seeds=3

The baseline, budget and recipe of cluttered_search.py; the paper's (α, β, γ) =
(1.2, 1.1, 1.15) by default (pass a search's best with `--config.curves.alpha=…`). φ = 0, 1, 2, 3
(up to ~8× the baseline's FLOPs): 4 compound models, then width-, depth- and resolution-only
models at the measured FLOPs of φ = 1, 2 and 3, so each single dimension is scaled by as much as
the compound model is in all three. `:tiny`: φ = 0, 1 with 2-step trials on small splits.
"""

from efficientnet_jax.studies import proxies


def get_config(arg=None):
  c = proxies.cluttered_experiment()
  c.curves = dict(alpha=1.2, beta=1.1, gamma=1.15, phis=(0, 1, 2, 3),
                  dimensions=('width', 'depth', 'resolution'), max_coefficient=64.0)
  proxies.cluttered_config_arg(c, arg)
  if arg == 'tiny':
    c.curves.phis = (0, 1)
  return c
