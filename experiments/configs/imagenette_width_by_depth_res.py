r"""Paper Fig. 4 on imagenette, for a GPU/TPU host or a sweep (not runnable on the CPU box).

  # Data preparation as in imagenette_search.py (once, where TFDS may download), then:
  python experiments/width_by_depth_res.py \
      --config=experiments/configs/imagenette_width_by_depth_res.py \
      --workdir=$RUNS/imagenette_fig4 --config.train.data_dir=$DATA
  # Or as a sweep: --list prints one command per (trial, seed); run them anywhere, then --merge.

B0 at 160 px as the baseline, the same 40-epoch budget and recipe per trial as the other
imagenette configs. The paper's four baselines, (d, r) = (1, 1), (1, 1.3), (2, 1), (2, 1.3):
depth 1 or 2 at 160 or 208 px, each widened by w = 1, 1.4, 1.8, 2.2, 2.6 (20 trials, from the
baseline's 0.197 G multiply-adds up to 4.48 G, 22.8× it, for w = 2.6 at d = 2, r = 1.3).
`--config.seeds=3` trains each trial three times (60 runs) for error bars.
"""

from efficientnet_jax.studies import proxies


def get_config(arg=None):
  c = proxies.experiment(proxies.imagenette_train(), proxies.IMAGENETTE_BASELINE)
  c.train.compilation_cache_dir = None  # e.g. a shared directory: reruns skip recompiling.
  c.fig4 = dict(depth_resolution=((1.0, 1.0), (1.0, 1.3), (2.0, 1.0), (2.0, 1.3)),
                widths=(1.0, 1.4, 1.8, 2.2, 2.6))
  if arg:
    raise ValueError(f'Unknown config arg {arg!r}; this config takes none.')
  return c
