"""Quick start: a compound-scaled EfficientNet on the embedded digits, on a CPU, in minutes.

  python -m efficientnet_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

The model is the B0 baseline scaled down with the compound rule (φ = -4: depth 1.2⁻⁴ = 0.48,
width 1.1⁻⁴ = 0.68; 10 blocks, 1.19 M parameters, 3.0 M multiply-adds) and trained on
scikit-learn's 1,797 real 8×8 handwritten digits, upscaled to 32 px (fixed 1,437 / 360
train/test split, no download). Everything else is the real system: RMSProp, EMA, checkpoints,
resume, TensorBoard and JSONL metrics. What it reaches and how long it takes: README and
docs/benchmarks.md ("Quick start").

Where it differs from the ImageNet recipe, it is because the run is short and the images tiny:
* a cosine schedule with one warm-up epoch (the TF decay of ×0.97 every 2.4 epochs assumes 350);
* BN moving statistics with momentum 0.9 instead of 0.99: with 0.99 they remember ~100 steps,
  which here still describe much earlier weights, and evaluation collapses;
* BN statistics over the whole batch of 64 (TF's rule, batch/8, would normalise over 8 images);
* no AutoAugment: its translations and cutouts are sized for 224 px images, not 8×8 digits.
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config(
      'b0', arg, dataset='digits', phi=-4.0, image_size=32, dtype='float32',
      batch_size=64, eval_batch_size=360, num_epochs=25.0, lr_schedule='cosine',
      warmup_epochs=1.0, learning_rate=0.016, bn_momentum=0.9, ema_decay=0.999,
      dropout_rate=0.1, drop_path_rate=0.1, label_smoothing=0.1, log_every_steps=50,
      eval_every_steps=275, checkpoint_every_steps=275, shuffle_buffer=2048, bn_group_size=0,
      **{'augment.policy': 'none'})
