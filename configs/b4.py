"""EfficientNet-B4, the TF reference recipe (docs/reference.md §5).

What makes it B4, as the builder (`config.get_config('b4')`) and `recipes.PUBLISHED`
define it (tests/test_configs_doc.py keeps these lines equal to them):
  variant         b4: width 1.4, depth 1.8 (docs/reference.md §1)
  resolution      380 px
  dropout         0.4 (before the classifier)
  augmentation    AutoAugment v0
  BN group        512 examples (batch/8, as on TF TPUs: README, "Recipes")
  batch           4096
  epochs          350
  ImageNet top-1  82.9% (paper Table 2; TF README §2, AutoAugment row)
  also published  `:aug=none` 82.5% (TF README §2, baseline preprocessing row)

Every other key is the TF reference recipe all variants share (README, "Training").

Launch:
  python -m efficientnet_jax.main --config=configs/b4.py --workdir=runs/b4 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/b4.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/b4.py:smoke,dataset=digits --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('b4', arg)
