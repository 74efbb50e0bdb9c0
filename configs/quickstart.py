"""Quick start: a compound-scaled EfficientNet on the embedded digits, on CPU, in minutes.

  python -m efficientnet_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

The model is the B0 baseline scaled down with the compound rule (φ = -2: depth α^φ, width β^φ)
and trained on scikit-learn's 1,797 real 8×8 handwritten digits, upscaled to 32 px (fixed
train/test split, no download). Everything else is the real system: RMSProp recipe, EMA,
checkpoints, resume, TensorBoard and JSONL metrics.
"""

from configs import common


def get_config(arg=None):
  return common.get_config(
      'b0', arg, dataset='digits', phi=-2.0, image_size=32, dtype='float32',
      batch_size=64, eval_batch_size=360, num_epochs=40.0, warmup_epochs=2.0,
      learning_rate=0.016, lr_decay_epochs=2.4, ema_decay=0.999, dropout_rate=0.1,
      drop_path_rate=0.1, label_smoothing=0.1, log_every_steps=50, eval_every_steps=300,
      checkpoint_every_steps=300, shuffle_buffer=2048)
