"""EfficientNet-B6, the TF reference recipe (REFERENCE section 4).

Launch:
  python -m efficientnet_jax.main --config=configs/b6.py --workdir=runs/b6 \
      --config.data_dir=$TFDS_DATA_DIR
  python -m efficientnet_jax.main --config=configs/b6.py:batch=512,epochs=30 --workdir=...
  python -m efficientnet_jax.main --config=configs/b6.py:smoke,dataset=digits --workdir=/tmp/smoke
"""

from configs import common


def get_config(arg=None):
  return common.get_config('b6', arg)
