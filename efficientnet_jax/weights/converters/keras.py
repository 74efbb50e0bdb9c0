"""keras.applications EfficientNetB0–B7 weight files → our variables (read with h5py only).

Two file layouts (and `.keras` archives, zips holding a Keras 3 `model.weights.h5`):
* legacy `.h5` (Keras 2 `save_weights`, the files keras.applications downloads, or a full-model
  `.h5` with a `model_weights` group): a `layer_names` attribute and one group per layer whose
  `weight_names` attribute lists `layer/kernel:0`-style datasets;
* Keras 3 `.weights.h5`: `layers/<auto name>/vars/0, 1, …` with the layer's name in the `vars`
  group's `name` attribute and the variables in creation order.

Layers: `stem_conv`, `stem_bn`, `block{stage}{letter}_{expand_conv, expand_bn, dwconv, bn,
se_reduce, se_expand, project_conv, project_bn}`, `top_conv`, `top_bn`, `predictions`.
Keras pads stride-2 convs with `correct_pad` then 'valid', which is TF-'SAME'; BN epsilon 1e-3.

Preprocessing lives inside the Keras model: `Rescaling(1/255)` then `Normalization(mean, variance)`
computing `(x/255 − mean) / max(sqrt(variance), 1e-7)`. Keras's ImageNet files store the ImageNet
*standard deviations* (0.229, 0.224, 0.225) as the variance (tensorflow/tensorflow#49930), and the
model built for those weights appends `Rescaling(1/sqrt(std))`, so it divides by
sqrt(0.229)·sqrt(0.229) = 0.229 after all. We record the equivalent 0..255-scale mean/std:
`mean = 255·m`, `std = 255·sqrt(v)`, times `sqrt(imagenet_std)` when the file holds that quirk.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from typing import Any

import numpy as np
from absl import logging

from efficientnet_jax.weights.converters import common

SOURCE = 'keras'
_IMAGENET_STD_01 = (0.229, 0.224, 0.225)
_KERAS_ARCHIVE_WEIGHTS = 'model.weights.h5'
_KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), the floor of the Normalization divisor.
# The most bytes of arrays a weights file may declare per byte it holds (`_check_declared_size`),
# plus a margin for tiny files: float weights compress by far less than 4x.
_MAX_EXPANSION = 4
_SMALL_FILE_BYTES = 1 << 20

_BLOCK_LAYER = re.compile(r'^block(\d+)([a-z]+)_(.+)$')
# Keras block layer suffix → (our layer, kind).
_BLOCK_LAYERS = {
    'expand_conv': ('expand_conv', 'conv'), 'expand_bn': ('expand_bn', 'bn'),
    'dwconv': ('depthwise_conv', 'depthwise'), 'bn': ('depthwise_bn', 'bn'),
    'se_reduce': ('se/reduce', 'se'), 'se_expand': ('se/expand', 'se'),
    'project_conv': ('project_conv', 'conv'), 'project_bn': ('project_bn', 'bn')}
_TOP_LAYERS = {'stem_conv': ('stem_conv', 'conv'), 'stem_bn': ('stem_bn', 'bn'),
               'top_conv': ('head_conv', 'conv'), 'top_bn': ('head_bn', 'bn'),
               'predictions': ('classifier', 'dense')}
# Variable names per layer kind, in Keras creation order (Keras 3 files store only the order).
_VARIABLES = {'conv': ('kernel', 'bias'), 'depthwise': ('kernel', 'bias'), 'se': ('kernel', 'bias'),
              'dense': ('kernel', 'bias'), 'normalization': ('mean', 'variance', 'count'),
              'bn': ('gamma', 'beta', 'moving_mean', 'moving_variance')}
_BN_LEAVES = {'gamma': ('params', 'scale'), 'beta': ('params', 'bias'),
              'moving_mean': ('batch_stats', 'mean'), 'moving_variance': ('batch_stats', 'var')}


def resolve_target(name: str) -> common.Target:
  """Maps `b0`, `EfficientNetB0` or `efficientnetb0` to a `Target`."""
  model = re.sub(r'^efficientnet[-_]?', '', name, flags=re.IGNORECASE).lower()
  common.check_variant_name(model)
  return common.Target(model, SOURCE, f'EfficientNet{model.upper()}', 'same',
                       common.TF_BN_EPSILON)


def _layer_kind(layer: str) -> tuple[tuple[int, str] | None, tuple[str, ...], str] | None:
  """(block key (stage, letters) or None, our module path, kind) of a Keras layer name.

  None for a layer we do not map.
  """
  if layer.startswith('normalization'):
    return None, (), 'normalization'
  if layer in _TOP_LAYERS:
    ours, kind = _TOP_LAYERS[layer]
    return None, (ours,), kind
  match = _BLOCK_LAYER.match(layer)
  if match and match[3] in _BLOCK_LAYERS:
    ours, kind = _BLOCK_LAYERS[match[3]]
    return (int(match[1]), match[2]), tuple(ours.split('/')), kind
  return None


def read_weights(path: str) -> dict[str, dict[str, np.ndarray]]:
  """Reads a Keras weight file into layer name → {variable name → array} (legacy or Keras 3)."""
  import h5py  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No such weights file: {path}')
  source, size = path, os.path.getsize(path)
  if zipfile.is_zipfile(path):  # A Keras 3 `.keras` archive holds its weights as model.weights.h5.
    with zipfile.ZipFile(path) as archive:
      if _KERAS_ARCHIVE_WEIGHTS not in archive.namelist():
        raise ValueError(f'{path} is a zip file without {_KERAS_ARCHIVE_WEIGHTS}; --source=keras '
                         'expects a Keras .h5, .weights.h5 or .keras file.')
      declared = archive.getinfo(_KERAS_ARCHIVE_WEIGHTS).file_size
      if declared > _MAX_EXPANSION * size + _SMALL_FILE_BYTES:  # Unpacked into memory next.
        raise ValueError(f'{path} declares a {declared:,}-byte {_KERAS_ARCHIVE_WEIGHTS} in a '
                         f'{size:,}-byte archive (a zip bomb?); it is not a Keras weights file: '
                         'get the weights again.')
      source = io.BytesIO(archive.read(_KERAS_ARCHIVE_WEIGHTS))
      size = len(source.getvalue())
  try:
    handle = h5py.File(source, 'r')
  except OSError as e:
    reason = str(e).splitlines()[0][:150]
    if 'truncated file' in reason:
      raise ValueError(f'{path} is cut short ({reason}); download or copy it again.') from None
    raise ValueError(f'{path} is not an HDF5 file, as --source=keras expects (a Keras .h5 or '
                     f'.weights.h5): {reason}') from None
  # h5py reports damage inside an HDF5 file as any of these, the first time it touches it.
  try:
    with handle as f:
      _check_declared_size(f, size, path)
      root = f['model_weights'] if 'model_weights' in f else f
      if 'layer_names' in root.attrs:
        layers = _read_legacy(root)
      elif 'layers' in root:
        layers = _read_keras3(root['layers'])
      else:
        raise ValueError(f'{path} is HDF5 but not a Keras weights file (no layer_names attribute '
                         'and no layers/ group).')
  except (OSError, RuntimeError, KeyError) as e:
    reason = str(e.args[0] if isinstance(e, KeyError) and e.args else e).splitlines()[0][:150]
    raise ValueError(f'{path} is a damaged HDF5 file ({reason}); download or copy it again.'
                     ) from None
  if not layers:
    raise ValueError(f'{path} holds no weights of a Keras EfficientNet.')
  return layers


def _check_declared_size(f, size: int, path: str) -> None:
  """Refuses a file whose arrays declare far more bytes than it holds, before reading any.

  HDF5 returns a fill value for data never written, so a file of a few kilobytes can declare
  arrays of terabytes, which reading would allocate. Keras writes weights uncompressed (what they
  declare is what the file holds); `_MAX_EXPANSION` leaves room for compressed ones.
  """
  import h5py  # pylint: disable=g-import-not-at-top
  declared = 0

  def add(_, node):
    nonlocal declared
    if isinstance(node, h5py.Dataset):
      declared += node.size * node.dtype.itemsize

  f.visititems(add)
  if declared > _MAX_EXPANSION * size + _SMALL_FILE_BYTES:
    raise ValueError(f'{path} declares {declared:,} bytes of arrays in a {size:,}-byte file, '
                     'which reading would allocate; it is not a Keras weights file (a crafted or '
                     'damaged one): get the weights again.')


def _text(value: Any) -> str:
  return value.decode('utf8') if isinstance(value, bytes) else str(value)


def _read_legacy(root) -> dict[str, dict[str, np.ndarray]]:
  layers = {}
  for group_name in map(_text, root.attrs['layer_names']):
    group = root[group_name]
    for weight_name in map(_text, group.attrs.get('weight_names', [])):
      # 'stem_bn/gamma:0' (Keras 2), 'stem_bn/gamma' (Keras 3's legacy writer); a nested model's
      # group holds all its layers' weights, named '[model/]layer/variable:0'.
      parts = weight_name.split('/')
      layer = parts[-2] if len(parts) > 1 else group_name
      short = parts[-1].split(':')[0]
      short = 'kernel' if short == 'depthwise_kernel' else short
      layers.setdefault(layer, {})[short] = np.asarray(group[weight_name])
  return layers


def _read_keras3(layers_group) -> dict[str, dict[str, np.ndarray]]:
  layers = {}

  def visit(_, node):
    if not (node.name.endswith('/vars') and 'name' in node.attrs and len(node)):
      return
    layer = _text(node.attrs['name'])
    kind = _layer_kind(layer)
    names = _VARIABLES[kind[2]] if kind else tuple(str(i) for i in range(len(node)))
    values = [np.asarray(node[str(i)]) for i in range(len(node))]
    layers[layer] = dict(zip(names, values))

  layers_group.visititems(visit)
  return layers


def preprocessing_from_normalization(mean: np.ndarray, variance: np.ndarray) -> tuple[list, list]:
  """0..255-scale (mean, std) equal to Keras's Rescaling(1/255) → Normalization [→ quirk fix]."""
  std = np.maximum(np.sqrt(variance), _KERAS_EPSILON)
  if np.allclose(variance, _IMAGENET_STD_01, atol=1e-4):
    # Keras's ImageNet weights: the model adds Rescaling(1/sqrt(std)) after Normalization.
    std = std * np.sqrt(_IMAGENET_STD_01)
  return [float(v) for v in 255.0 * mean], [float(v) for v in 255.0 * std]


def map_layers(layers: dict[str, dict[str, np.ndarray]]) -> tuple[common.Mapped, Any]:
  """Maps Keras layers to our paths; returns (mapped, the Normalization layer's variables)."""
  mapped: common.Mapped = {}
  normalization = None
  blocks = {}
  for layer, variables in layers.items():
    parsed = _layer_kind(layer)
    if parsed is None:
      raise ValueError(f'Unexpected layer {layer!r} in a Keras EfficientNet weights file.')
    block, module, kind = parsed
    if kind == 'normalization':
      normalization = variables
    elif block is None:
      _add_layer(mapped, module, layer, kind, variables)
    else:
      blocks.setdefault(block, []).append((layer, module, kind, variables))
  # Keras names blocks per stage with letters (block2a, block2b, …); ours are flat.
  for flat_index, block in enumerate(sorted(blocks, key=lambda b: (b[0], len(b[1]), b[1]))):
    for layer, module, kind, variables in blocks[block]:
      _add_layer(mapped, (f'blocks_{flat_index}', *module), layer, kind, variables)
  return mapped, normalization


def _add_layer(mapped: common.Mapped, module: tuple[str, ...], layer: str, kind: str,
               variables: dict[str, np.ndarray]) -> None:
  for name, array in variables.items():
    source_name = f'{layer}/{name}'
    if kind == 'bn' and name in _BN_LEAVES:
      collection, leaf = _BN_LEAVES[name]
      mapped[(collection, *module, leaf)] = (source_name, array)
    elif name == 'bias' and kind in ('se', 'dense'):
      mapped[('params', *module, 'bias')] = (source_name, array)
    elif name == 'kernel' and kind != 'bn':
      transform = {'depthwise': common.keras_depthwise, 'se': common.keras_conv1x1_as_dense}.get(
          kind, lambda w: w)
      mapped[('params', *module, 'kernel')] = (source_name, transform(array))
    else:
      raise ValueError(f'Unexpected variable {source_name!r} in a Keras EfficientNet weights '
                       'file (a conv bias?).')


def convert(path: str, model: str) -> common.Converted:
  """Converts a Keras EfficientNet weights file (.h5 / .weights.h5) for `model`."""
  target = resolve_target(model)
  return convert_layers(read_weights(path), target)


def convert_layers(layers: dict[str, dict[str, np.ndarray]],
                   target: common.Target) -> common.Converted:
  """Converts Keras layers as `read_weights` returns them."""
  mapped, normalization = map_layers(layers)
  if normalization is not None and {'mean', 'variance'} <= set(normalization):
    mean, std = preprocessing_from_normalization(
        np.asarray(normalization['mean'], np.float64).reshape(-1),
        np.asarray(normalization['variance'], np.float64).reshape(-1))
  else:
    logging.warning('No Normalization layer in the Keras file: recording x / 255 as the input '
                    'scaling (what its Rescaling layer alone does).')
    mean, std = [0.0] * 3, [255.0] * 3
  preprocessing = common.default_preprocessing(target.model, mean=mean, std=std,
                                               interpolation='bicubic')
  return common.finish(mapped, target, preprocessing)

