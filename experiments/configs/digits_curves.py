r"""Step 2 and the single-dimension ablations on the embedded digits, on CPU (9 trials).

  python experiments/scaling_curves.py --config=experiments/configs/digits_curves.py \
      --workdir=runs/digits_curves

The same baseline, budget and recipe as digits_search.py; the paper's (α, β, γ) =
(1.2, 1.1, 1.15) by default — pass a search's best with e.g. `--config.curves.alpha=1.4`.
φ = 0, 1, 2 (up to ~4× the baseline's FLOPs): 3 compound models, then width-, depth- and
resolution-only models at the measured FLOPs of φ = 1 and 2. `:short`: the earlier 240-step
budget (the saved figures in experiments/README.md); `:detail`: each trial sees the digits
reduced to a quarter of its resolution, so resolution adds information (`proxies.DIGITS_DETAIL`);
`:tiny`: φ = 0, 1 with 2-step trials.
"""

from efficientnet_jax.studies import proxies


def get_config(arg=None):
  c = proxies.digits_experiment(short=arg == 'short')
  c.curves = dict(alpha=1.2, beta=1.1, gamma=1.15, phis=(0, 1, 2),
                  dimensions=('width', 'depth', 'resolution'), max_coefficient=64.0)
  proxies.digits_config_arg(c, arg)
  if arg == 'tiny':
    c.curves.phis = (0, 1)
  return c
