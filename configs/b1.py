"""EfficientNet-B1, the TF reference recipe (docs/reference.md §5).

Launch:
  python -m efficientnet_jax.main --config=configs/b1.py --workdir=runs/b1 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/b1.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/b1.py:smoke,dataset=digits --workdir=/tmp/smoke
"""

from efficientnet_jax import config


def get_config(arg=None):
  return config.get_config('b1', arg)
