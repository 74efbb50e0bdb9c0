r"""Step 1 on the cluttered digits, on a 2-core CPU (5 trials; plan and cost: experiments/README.md).

  python experiments/compound_search.py --config=experiments/configs/cluttered_search.py \
      --workdir=runs/cluttered_search --config.seeds=3

The digits baseline (B0 at width 0.5, depth 0.25, 24 px) on `dataset=cluttered_digits`, each
trial `proxies.CLUTTERED_STEPS` steps. The grid α ∈ 1, 1.2, …, 2; β ∈ 1, 1.1, 1.4;
γ ∈ 1, 1.15, 1.4 within 5% of α·β²·γ² = 2 holds five triples: depth only (2, 1, 1), width only
(1, 1.4, 1), resolution only (1, 1, 1.4), the paper's (1.2, 1.1, 1.15) (α·β²·γ² = 1.920) and
(1.6, 1.1, 1). `:wide`: β, γ ∈ 1, 1.1, 1.15, 1.2, 1.4, ten triples with three more pairs;
`:tiny`: two 2-step trials on small splits (the tests use it).
"""

from efficientnet_jax.studies import grid
from efficientnet_jax.studies import proxies


def get_config(arg=None):
  c = proxies.cluttered_experiment()
  c.search = dict(alphas=grid.frange(1.0, 2.0, 0.2), betas=(1.0, 1.1, 1.4),
                  gammas=(1.0, 1.15, 1.4), target=2.0, tolerance=0.05)
  if arg == 'wide':
    c.search.update(betas=(1.0, 1.1, 1.2, 1.4), gammas=(1.0, 1.15, 1.2, 1.4))
    arg = None
  proxies.cluttered_config_arg(c, arg)
  if arg == 'tiny':
    c.search.update(alphas=(1.0,), betas=(1.0, 1.4), gammas=(1.0, 1.4))
  return c
