"""Fine-tuning converted weights on the embedded digits (the paper's transfer set-up, small).

  python -m efficientnet_jax.convert --source=timm --model=b0 --input=tf_efficientnet_b0.pth \\
      --output=weights/b0
  python -m efficientnet_jax.main --config=configs/finetune.py --workdir=runs/finetune \\
      --config.init_from=weights/b0

Every backbone variable comes from `init_from`; the 10-class head is freshly initialised because
its shape differs from the 1000-class source. Inputs use the ImageNet normalisation the converted
timm/Keras B-series weights expect (use `:model=lite0,normalization=lite`-style args for others).
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config(
      'b0', arg, dataset='digits', image_size=64, dtype='float32', normalization='imagenet',
      batch_size=32, eval_batch_size=360, num_epochs=3.0, optimizer='sgd', learning_rate=0.01,
      lr_base_batch_size=0, lr_schedule='cosine', warmup_epochs=0.0, weight_decay=1e-5,
      ema_decay=0.0, drop_path_rate=0.1, log_every_steps=10, eval_every_steps=100,
      checkpoint_every_steps=100)
