r"""Step 1 on the embedded digits, on a 2-core CPU (6 trials; times in experiments/README.md).

  python experiments/compound_search.py --config=experiments/configs/digits_search.py \
      --workdir=runs/digits_search

The grid (α ∈ 1, 1.2, …, 2; β, γ ∈ 1, 1.2, 1.4) admits six triples within 5% of
α·β²·γ² = 2: depth only (2, 1, 1), width only (1, 1.4, 1), resolution only (1, 1, 1.4) and the
three pairs (1, 1.2, 1.2), (1.4, 1, 1.2), (1.4, 1.2, 1). Each trial trains the converged budget,
`proxies.DIGITS_STEPS`; `:short` the earlier 240 steps; `:detail` the digits reduced to a quarter
of each trial's resolution (`proxies.DIGITS_DETAIL`); `:tiny` shrinks everything to two 2-step
trials (the tests use it).
"""

from efficientnet_jax.studies import grid
from efficientnet_jax.studies import proxies


def get_config(arg=None):
  c = proxies.digits_experiment(short=arg == 'short')
  c.search = dict(alphas=grid.frange(1.0, 2.0, 0.2), betas=grid.frange(1.0, 1.4, 0.2),
                  gammas=grid.frange(1.0, 1.4, 0.2), target=2.0, tolerance=0.05)
  proxies.digits_config_arg(c, arg)
  if arg == 'tiny':
    # (1, 1, 1.4) and (1, 1.4, 1): both stay 7 blocks, so the tests' compilations stay short.
    c.search.update(alphas=(1.0,), betas=(1.0, 1.4), gammas=(1.0, 1.4))
  return c
