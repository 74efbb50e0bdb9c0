"""EfficientNet-L2 (480M parameters): needs remat and a pod; see README.

Launch:
  python -m efficientnet_jax.main --config=configs/l2.py --workdir=runs/l2 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/l2.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/l2.py:smoke,dataset=digits --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('l2', arg)
