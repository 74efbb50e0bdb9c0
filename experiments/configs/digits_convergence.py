r"""How long the digits proxy must train: the studies' deepest network, evaluated as it trains.

  python -m efficientnet_jax.main --config=experiments/configs/digits_convergence.py \
      --workdir=runs/digits_convergence [--config.total_steps=N]

A plain training run (not a sweep) of the deepest network any digits study trains: the
depth-only model at φ = 2 of digits_curves.py (B0 at width 0.5, depth 1.0: 16 blocks, 24 px),
with the studies' recipe (`proxies.digits_train`) but 1,200 steps of 32 images (26.7 epochs, about
the quick start's 25) and a test evaluation every 120 steps. Its test top-1 against the step is
the curve that says at which budget the deepest trial has converged (experiments/README.md,
"Does every trial converge?"). The cosine schedule ends at `total_steps`, so a point of the curve
is not the result of a shorter run; it shows where the accuracy stops rising.
"""

from efficientnet_jax.studies import proxies


def get_config(arg=None):
  if arg:
    raise ValueError(f'Unknown config arg {arg!r}; this config takes none (use --config.KEY=VALUE).')
  return proxies.digits_train(width=0.5, depth=1.0, image_size=24, total_steps=1200,
                              eval_every_steps=120, checkpoint_every_steps=240)
