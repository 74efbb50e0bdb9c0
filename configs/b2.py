"""EfficientNet-B2, the TF reference recipe (docs/reference.md §5).

What makes it B2, as the builder (`config.get_config('b2')`) and `recipes.PUBLISHED`
define it (tests/test_configs_doc.py keeps these lines equal to them):
  variant         b2: width 1.1, depth 1.2 (docs/reference.md §1)
  resolution      260 px
  dropout         0.3 (before the classifier)
  augmentation    AutoAugment v0
  BN group        512 examples (batch/8, as on TF TPUs: README, "Recipes")
  batch           4096
  epochs          350
  ImageNet top-1  80.1% (paper Table 2; TF README §2, AutoAugment row)
  also published  `:aug=none` 79.8% (TF README §2, baseline preprocessing row)

Every other key is the TF reference recipe all variants share (README, "Training").

Launch:
  python -m efficientnet_jax.main --config=configs/b2.py --workdir=runs/b2 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/b2.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/b2.py:smoke,dataset=digits --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('b2', arg)
