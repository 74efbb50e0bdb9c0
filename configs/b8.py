"""EfficientNet-B8, the TF reference recipe (docs/reference.md §5).

What makes it B8, as the builder (`config.get_config('b8')`) and `recipes.PUBLISHED`
define it (tests/test_configs_doc.py keeps these lines equal to them):
  variant         b8: width 2.2, depth 3.6 (docs/reference.md §1)
  resolution      672 px
  dropout         0.5 (before the classifier)
  augmentation    RandAugment (N=2, M=28; TF README §2 footnote)
  BN group        512 examples (batch/8, as on TF TPUs: README, "Recipes")
  batch           4096
  epochs          350
  ImageNet top-1  none published: TF gives B8's RandAugment flags but no number (its 85.5% is
                  AdvProp + AutoAugment, not implemented here)

Every other key is the TF reference recipe all variants share (README, "Training").

Launch:
  python -m efficientnet_jax.main --config=configs/b8.py --workdir=runs/b8 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/b8.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/b8.py:smoke,dataset=digits --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('b8', arg)
