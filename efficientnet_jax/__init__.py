"""EfficientNet and compound model scaling in JAX/Flax Linen.

  import efficientnet_jax as ej
  model = ej.create_model('b0')                     # any of ej.MODEL_NAMES
  scaled = ej.create_model('b0', **ej.compound(1.5).as_overrides())
  module, variables = ej.load_pretrained('weights/b0')

The parts (docs/architecture.md): `models` (scaling rules, Linen modules, FLOPs), `input`
(tf.data pipeline; the only part that imports TensorFlow), `training` (loop, steps, optimizer,
checkpoints), `weights` (converted weights, converters), `benchmarking`, `studies` (the scaling
experiments' machinery), `config` (the config builder); the command-line tools `main`,
`evaluate`, `summary`, `convert`, `predict`, `benchmark` sit at the top.
"""

# The entry points choose the host's malloc before JAX is imported (host_malloc.py): this may
# re-execute the process, so it comes first.
from efficientnet_jax import host_malloc as _host_malloc

_host_malloc.reexec_if_entry_point()

# pylint: disable=g-import-not-at-top,wrong-import-position
from efficientnet_jax.models.efficientnet import EfficientNet, create_model
from efficientnet_jax.models.scaling import MODEL_NAMES, compound
from efficientnet_jax.weights.pretrained import load_pretrained

__all__ = ['EfficientNet', 'MODEL_NAMES', 'compound', 'create_model', 'load_pretrained']
