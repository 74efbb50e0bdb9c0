"""EfficientNet-Lite0: no SE, ReLU6, (x-127)/128 inputs, bilinear resize.

What makes it Lite0, as the builder (`config.get_config('lite0')`) and `recipes.PUBLISHED`
define it (tests/test_configs_doc.py keeps these lines equal to them):
  variant         lite0: width 1.0, depth 1.0 (docs/reference.md §1)
  resolution      224 px
  dropout         0.2 (before the classifier)
  augmentation    none
  BN group        512 examples (batch/8, as on TF TPUs: README, "Recipes")
  batch           4096
  epochs          350
  ImageNet top-1  75.1% (TF lite/README.md, FP32 accuracy)

Every other key is the TF reference recipe all variants share (README, "Training").

Launch:
  python -m efficientnet_jax.main --config=configs/lite0.py --workdir=runs/lite0 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/lite0.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/lite0.py:smoke,dataset=digits \
      --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('lite0', arg)
