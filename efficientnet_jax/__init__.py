"""EfficientNet and compound model scaling in JAX/Flax Linen."""

from efficientnet_jax.model import EfficientNet, create_model
from efficientnet_jax.pretrained import load_pretrained
from efficientnet_jax.scaling import MODEL_NAMES, compound

__all__ = ['EfficientNet', 'MODEL_NAMES', 'compound', 'create_model', 'load_pretrained']
