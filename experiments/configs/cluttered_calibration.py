r"""Calibration runs of the cluttered-digits proxy (experiments/README.md, "cluttered digits").

  python -m efficientnet_jax.main --config=experiments/configs/cluttered_calibration.py \
      --workdir=runs/cluttered_cal/NAME --config.total_steps=1200 --config.learning_rate=0.016 \
      --config.cluttered_digits.canvas=48 ...

The digits baseline (B0 at width 0.5, depth 0.25, 24 px) with `proxies.digits_train`'s recipe
(batch 32, RMSProp, cosine, BN momentum 0.9, no augmentation, no gradient clipping) on
dataset=cluttered_digits, the warm-up in epochs of the 10,000 train canvases (0.3: 94 steps),
evaluated once on all 5,000 test canvases. Every calibration run of the README's tables is this
config plus `--config.*` overrides: the first construction's rows name its keys
(canvas=64, digit_min=12, digit_max=16, clutter=8, clutter_size=8), the second series changes
the schema's defaults (the calibrated construction) only where its row says. The calibrated
recipe that came out of them is `proxies.cluttered_train` (`--config.grad_clip_norm=1.0
--config.learning_rate=0.032 --config.total_steps=4800` here).
"""

from efficientnet_jax.studies import proxies


def get_config(arg=None):
  del arg
  return proxies.digits_train(
      1200, dataset='cluttered_digits', width=0.5, depth=0.25, image_size=24,
      warmup_epochs=0.3, eval_batch_size=500, **{'augment.crop': 'resize',
                                                 'augment.policy': 'none'})
