"""EfficientNet-L2 (480M parameters): needs remat and a pod (README, "TPU pod").

What makes it L2, as the builder (`config.get_config('l2')`) and `recipes.PUBLISHED`
define it (tests/test_configs_doc.py keeps these lines equal to them):
  variant         l2: width 4.3, depth 5.3 (docs/reference.md §1)
  resolution      800 px
  dropout         0.5 (before the classifier)
  augmentation    RandAugment (N=2, M=10; TF main.py's default)
  BN group        512 examples (batch/8, as on TF TPUs: README, "Recipes")
  batch           4096
  epochs          350
  ImageNet top-1  none published: its 88.4% is NoisyStudent, with 300 M unlabelled JFT images

Every other key is the TF reference recipe all variants share (README, "Training").

Launch:
  python -m efficientnet_jax.main --config=configs/l2.py --workdir=runs/l2 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/l2.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/l2.py:smoke,dataset=digits --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('l2', arg)
