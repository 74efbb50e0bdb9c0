r"""Paper Fig. 4 on the embedded digits, on a 2-core CPU (20 trials).

  python experiments/width_by_depth_res.py \
      --config=experiments/configs/digits_width_by_depth_res.py --workdir=runs/digits_fig4

The same baseline, budget and recipe as digits_search.py (B0 at width 0.5, depth 0.25, 24 px;
1,200 steps of 32 images, `proxies.DIGITS_STEPS`). The paper's four baselines, (d, r) = (1, 1),
(1, 1.3), (2, 1), (2, 1.3): depth 0.25 or 0.5 (7 or 10 blocks) at 24 or 32 px (24 · 1.3 rounds
to 32 on the multiple of 4), each widened by w = 1, 1.4, 1.8, 2.2, 2.6 (width 0.5 to 1.3).
`:short`: the earlier 240-step budget; `:detail`: the digits reduced to a quarter of each
trial's resolution (`proxies.DIGITS_DETAIL`); `:tiny`: a single 2-step trial (one baseline, one
width; the tests use it).
"""

from efficientnet_jax.studies import proxies


def get_config(arg=None):
  c = proxies.digits_experiment(short=arg == 'short')
  c.fig4 = dict(depth_resolution=((1.0, 1.0), (1.0, 1.3), (2.0, 1.0), (2.0, 1.3)),
                widths=(1.0, 1.4, 1.8, 2.2, 2.6))
  proxies.digits_config_arg(c, arg)
  if arg == 'tiny':
    # One model, width 0.35 at 32 px with 7 blocks: also a trial of digits_search's `:tiny`,
    # so the tests' shared compilation cache already holds its programs (the tests spend their
    # time on seeds and separate processes, not on compiling another network).
    c.fig4.update(depth_resolution=((1.0, 1.0),), widths=(1.4,))
  return c
