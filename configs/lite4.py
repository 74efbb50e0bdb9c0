"""EfficientNet-Lite4: no SE, ReLU6, (x-127)/128 inputs, bilinear resize.

What makes it Lite4, as the builder (`config.get_config('lite4')`) and `recipes.PUBLISHED`
define it (tests/test_configs_doc.py keeps these lines equal to them):
  variant         lite4: width 1.4, depth 1.8 (docs/reference.md §1)
  resolution      300 px
  dropout         0.3 (before the classifier)
  augmentation    none
  BN group        512 examples (batch/8, as on TF TPUs: README, "Recipes")
  batch           4096
  epochs          350
  ImageNet top-1  81.5% (TF lite/README.md, FP32 accuracy)

Every other key is the TF reference recipe all variants share (README, "Training").

Launch:
  python -m efficientnet_jax.main --config=configs/lite4.py --workdir=runs/lite4 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/lite4.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/lite4.py:smoke,dataset=digits \
      --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('lite4', arg)
