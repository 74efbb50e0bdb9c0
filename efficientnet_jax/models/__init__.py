"""The networks: compound-scaling rules, Linen modules and cost counting.

  scaling.py       variant table, block strings, rounding rules, `compound(φ, α, β, γ)`
  layers.py        TF initialisers, BatchNorm (optionally grouped), depthwise conv, drop-path
  efficientnet.py  `EfficientNet` (Linen), `create_model`, `model_from_config`
  flops.py         multiply-adds and parameters measured on the built network
  stages.py        any network stage by stage as the paper's Table 1, with each stage's costs

Knows nothing of data or training; importable without TensorFlow.
"""

from efficientnet_jax.models.efficientnet import EfficientNet, create_model, model_from_config
from efficientnet_jax.models.scaling import MODEL_NAMES, compound

__all__ = ['EfficientNet', 'MODEL_NAMES', 'compound', 'create_model', 'model_from_config']
