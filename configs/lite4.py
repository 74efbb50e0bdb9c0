"""EfficientNet-Lite4: no SE, ReLU6, (x-127)/128 inputs, bilinear resize.

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
