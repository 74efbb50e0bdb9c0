"""EfficientNet-B5, the TF reference recipe (docs/reference.md §5).

What makes it B5, as the builder (`config.get_config('b5')`) and `recipes.PUBLISHED`
define it (tests/test_configs_doc.py keeps these lines equal to them):
  variant         b5: width 1.6, depth 2.2 (docs/reference.md §1)
  resolution      456 px
  dropout         0.4 (before the classifier)
  augmentation    AutoAugment v0
  BN group        512 examples (batch/8, as on TF TPUs: README, "Recipes")
  batch           4096
  epochs          350
  ImageNet top-1  83.6% (paper Table 2; TF README §2, AutoAugment row)
  also published  `:aug=none` 83.1% (TF README §2, baseline preprocessing row)
                  `:aug=randaugment` 83.7%, N=2, M=17 (TF README §2, RandAugment row)

Every other key is the TF reference recipe all variants share (README, "Training").

Launch:
  python -m efficientnet_jax.main --config=configs/b5.py --workdir=runs/b5 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/b5.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/b5.py:smoke,dataset=digits --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('b5', arg)
