"""EfficientNet-B7, the TF reference recipe (docs/reference.md §5).

What makes it B7, as the builder (`config.get_config('b7')`) and `recipes.PUBLISHED`
define it (tests/test_configs_doc.py keeps these lines equal to them):
  variant         b7: width 2.0, depth 3.1 (docs/reference.md §1)
  resolution      600 px
  dropout         0.5 (before the classifier)
  augmentation    AutoAugment v0
  BN group        512 examples (batch/8, as on TF TPUs: README, "Recipes")
  batch           4096
  epochs          350
  ImageNet top-1  84.3% (paper Table 2; TF README §2, AutoAugment row)
  also published  `:aug=randaugment` 84.7%, N=2, M=28 (TF README §2, RandAugment row)

Every other key is the TF reference recipe all variants share (README, "Training").

Launch:
  python -m efficientnet_jax.main --config=configs/b7.py --workdir=runs/b7 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/b7.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/b7.py:smoke,dataset=digits --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('b7', arg)
