r"""Paper Fig. 4 on the cluttered digits, on a 2-core CPU (12 trials; `:fine` 20).

  python experiments/width_by_depth_res.py \
      --config=experiments/configs/cluttered_width_by_depth_res.py \
      --workdir=runs/cluttered_fig4 --config.seeds=3

The baseline, budget and recipe of cluttered_search.py. The paper's four baselines,
(d, r) = (1, 1), (1, 1.3), (2, 1), (2, 1.3): depth 0.25 or 0.5 (7 or 10 blocks) at 24 or 32 px
(24 · 1.3 rounds to 32 on the multiple of 4, the canvas's own side), each widened by
w = 1, 1.8, 2.6 (width 0.5, 0.9, 1.3). Three widths, not five, because the 3-seed run must fit
several sittings of 2 CPU cores (about 14 h of summed training: experiments/README.md): the
claim compares the narrowest and the widest of each curve, and the middle point shows whether
the curve bends. `:fine`: w = 1, 1.4, 1.8, 2.2, 2.6
(20 trials, about 1.6× the cost). `:tiny`: a single 2-step trial on small splits.
"""

from efficientnet_jax.studies import proxies

WIDTHS = (1.0, 1.8, 2.6)
FINE_WIDTHS = (1.0, 1.4, 1.8, 2.2, 2.6)


def get_config(arg=None):
  c = proxies.cluttered_experiment()
  c.fig4 = dict(depth_resolution=((1.0, 1.0), (1.0, 1.3), (2.0, 1.0), (2.0, 1.3)),
                widths=FINE_WIDTHS if arg == 'fine' else WIDTHS)
  proxies.cluttered_config_arg(c, arg, own_args=('fine',))
  if arg == 'tiny':
    c.fig4.update(depth_resolution=((1.0, 1.0),), widths=(1.4,))
  return c
