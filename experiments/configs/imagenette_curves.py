r"""Step 2 and the single-dimension ablations on imagenette, for a GPU/TPU host or a sweep.

  python experiments/scaling_curves.py --config=experiments/configs/imagenette_curves.py \
      --workdir=$RUNS/imagenette_curves --config.train.data_dir=$DATA \
      --config.curves.alpha=1.2 --config.curves.beta=1.1 --config.curves.gamma=1.15
  # (pass the triple that imagenette_search.py printed) or, as a sweep: --list, then --merge.

φ = 0..4 from B0 at 160 px (up to ~16× its FLOPs; φ = 4 is 280 px, width 1.46, depth 2.07):
5 compound models and 12 single-dimension ones, the same 40-epoch budget each. Data preparation
as in imagenette_search.py.
"""

from efficientnet_jax.studies import proxies


def get_config(arg=None):
  c = proxies.experiment(proxies.imagenette_train(), proxies.IMAGENETTE_BASELINE)
  c.train.compilation_cache_dir = None
  c.curves = dict(alpha=1.2, beta=1.1, gamma=1.15, phis=(0, 1, 2, 3, 4),
                  dimensions=('width', 'depth', 'resolution'), max_coefficient=64.0)
  if arg:
    raise ValueError(f'Unknown config arg {arg!r}; this config takes none.')
  return c
