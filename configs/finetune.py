"""Fine-tuning converted weights on the embedded digits (the paper's transfer set-up, small).

  python -m efficientnet_jax.convert --source=timm --model=b0 --input=tf_efficientnet_b0.pth \\
      --output=weights/b0
  python -m efficientnet_jax.main --config=configs/finetune.py --workdir=runs/finetune \\
      --config.init_from=weights/b0

Every backbone variable comes from `init_from`; the 10-class head is freshly initialised because
its shape differs from the 1000-class source. Inputs use the ImageNet normalisation the converted
timm/Keras B-series weights expect (use `:model=lite0,normalization=lite`-style args for others).

Where it differs from the ImageNet recipe, it is because the run is short (3 epochs: 132 steps)
and the images are upscaled 8×8 digits:
* BN moving statistics with momentum 0.9 instead of 0.99. The converted weights bring ImageNet's
  moving statistics; with 0.99 a fraction 0.99^132 ≈ 27% of them is still there at the end, so
  evaluation normalises digits with ImageNet's statistics and collapses although training (which
  normalises with batch statistics) went well. With 0.9 they are gone within ~50 steps.
* BN statistics over the whole batch of 32 (TF's rule, batch/8, would normalise over 4 images);
* no AutoAugment: its translations and cutouts are sized for 224 px photographs, not digits;
* plain SGD (momentum 0.9) at 0.01, cosine, no warm-up: the pretrained backbone needs small steps
  (5× larger is worse, 10× diverges).
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config(
      'b0', arg, dataset='digits', image_size=64, dtype='float32', normalization='imagenet',
      batch_size=32, eval_batch_size=360, num_epochs=3.0, optimizer='sgd', learning_rate=0.01,
      lr_base_batch_size=0, lr_schedule='cosine', warmup_epochs=0.0, weight_decay=1e-5,
      ema_decay=0.0, drop_path_rate=0.1, bn_momentum=0.9, bn_group_size=0, log_every_steps=10,
      eval_every_steps=100, checkpoint_every_steps=100, **{'augment.policy': 'none'})
