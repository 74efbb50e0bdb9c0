"""Foreign EfficientNet weights → our `{'params', 'batch_stats'}`, one module per source.

  converted = converters.convert_file('timm', 'tf_efficientnet_b0', 'model.safetensors')
  converted.variables, converted.meta   # meta: model, padding, num_classes, preprocessing, …

Every converter checks every shape against the model it targets and raises a one-line
ValueError naming the first mismatching layer and both shapes.
"""

from __future__ import annotations

import importlib
from typing import Any

from efficientnet_jax.weights.converters.common import Converted

# source name → module (imported on use: each pulls in only what its format needs).
_MODULES = {
    'timm': 'efficientnet_jax.weights.converters.timm',
    'efficientnet_pytorch': 'efficientnet_jax.weights.converters.efficientnet_pytorch',
    'keras': 'efficientnet_jax.weights.converters.keras',
}
SOURCES: tuple[str, ...] = tuple(_MODULES)

# What each source reads, for help texts.
SOURCE_FORMATS = {
    'timm': 'timm state dict (.pth/.bin/.safetensors)',
    'efficientnet_pytorch': 'efficientnet_pytorch state dict (.pth/.safetensors)',
    'keras': 'keras.applications weights (.h5 or .weights.h5)',
}


def get_converter(source: str):
  """The converter module of `source` (has `convert(path, model) -> Converted`)."""
  if source not in _MODULES:
    raise ValueError(f'Unknown source {source!r}; supported sources: {", ".join(SOURCES)}.')
  return importlib.import_module(_MODULES[source])


def convert_file(source: str, model: str, path: str,
                 preprocessing: dict[str, Any] | None = None) -> Converted:
  """Converts a foreign weights file.

  Args:
    source: 'timm', 'efficientnet_pytorch' or 'keras'.
    model: our variant name (b0 … b8, l2, lite0 … lite4); each source also takes its own names
      (e.g. timm's `tf_efficientnet_b0` vs `efficientnet_b0`, which differ in padding).
    path: the weights file.
    preprocessing: overrides of the recorded eval preprocessing (keys of meta's
      'preprocessing': mean, std, crop_padding, interpolation, resolution).

  Returns:
    The variables (float32 numpy) and the metadata `meta.json` records.

  Raises:
    ValueError: unknown source or model, a file of another format, or a shape mismatch.
    ImportError: a reader the format needs is missing (the message says what to install).
  """
  converted = get_converter(source).convert(path, model)
  if preprocessing:
    unknown = sorted(set(preprocessing) - set(converted.meta['preprocessing']))
    if unknown:
      raise ValueError(f'Unknown preprocessing key(s) {unknown}; valid: '
                       f'{", ".join(converted.meta["preprocessing"])}.')
    converted.meta['preprocessing'].update(preprocessing)
  return converted


__all__ = ['Converted', 'SOURCES', 'SOURCE_FORMATS', 'convert_file', 'get_converter']
