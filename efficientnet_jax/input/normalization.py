"""The input normalisations: (mean, std) per RGB channel, by name (`config.normalization`).

The one table of them, read by the host pipeline (preprocessing.py, in TF), the device path
(device_preprocessing.py, in JAX) and the weight converters (the preprocessing a converted file
records). Plain Python: it imports neither TensorFlow nor JAX, so all three can read it.
"""

from __future__ import annotations

MeanStd = tuple[tuple[float, float, float], tuple[float, float, float]]

# name -> (mean, std) per RGB channel, on the 0..255 scale: the model sees (x - mean) / std.
NORMALIZATIONS: dict[str, MeanStd] = {
    'imagenet': ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    'lite': ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    'inception': ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    'none': ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def mean_std(name: str) -> MeanStd:
  """The (mean, std) of normalisation `name`; a ValueError names the valid ones."""
  if name not in NORMALIZATIONS:
    raise ValueError(f'Unknown normalization {name!r}; expected one of {sorted(NORMALIZATIONS)}.')
  return NORMALIZATIONS[name]
