"""timm EfficientNet state dicts → our variables.

Two timm families share one tensor layout but not the same arithmetic, and a state dict does not
say which it is, so the model name does:

* `tf_efficientnet_b0 … b8, tf_efficientnet_l2, tf_efficientnet_lite0 … 4`: weights ported from
  TF; TF-'SAME' padding, BN epsilon 1e-3 (padding='same'). A plain `b0` means this family.
* `efficientnet_b0 … b8, efficientnet_l2, efficientnet_lite0 … 4`: trained in PyTorch by timm;
  symmetric k//2 padding and PyTorch's BN epsilon 1e-5. Their tensor shapes equal the tf_ ones
  for every variant (checked for all 15), so they all convert, and the shape check cannot tell
  the families apart. Where the file says which model it holds (a training checkpoint's 'arch',
  the 'architecture' of a Hugging Face Hub `config.json` beside it, or timm's own file name such
  as `efficientnet_b1_ra-...pth`), a `--model` of the other family or variant is refused. timm's
  other EfficientNet-named models (`*_pruned`, `*_gn`, `*_evos`, EdgeTPU `es/em/el`, `_x_`,
  `_h_`, `blur`) are different networks; the shape check rejects them.

Layout: `conv_stem`, `bn1` (stem), `blocks.{stage}.{i}.*`, `conv_head`, `bn2` (head),
`classifier`. Blocks with expand ratio 1 are timm `DepthwiseSeparableConv` (`conv_dw`, `bn1`,
`se`, `conv_pw` = project, `bn2`); the others `InvertedResidual` (`conv_pw` = expand, `bn1`,
`conv_dw`, `bn2`, `se`, `conv_pwl` = project, `bn3`). timm's BN momentum (0.1, PyTorch sense) is
TF's 0.99 and matters only for training; it is not recorded.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
from absl import logging

from efficientnet_jax.input import normalization
from efficientnet_jax.weights.converters import common
from efficientnet_jax.weights.converters import torch_files

SOURCE = 'timm'
_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.(\d+)\.(.+)$')
# A timm EfficientNet name at the start of a file name or an architecture string.
_TIMM_NAME = re.compile(r'^(tf_)?efficientnet_(b[0-8]|l2|lite[0-4])(?![0-9a-z])')
_FAMILY = {True: "TF-ported: TF-'SAME' padding, BN epsilon 1e-3",
           False: 'trained in PyTorch: symmetric padding, BN epsilon 1e-5'}

# timm layer → (our layer, kind), per block type.
_INVERTED_RESIDUAL = {
    'conv_pw': ('expand_conv', 'conv'), 'bn1': ('expand_bn', 'bn'),
    'conv_dw': ('depthwise_conv', 'conv'), 'bn2': ('depthwise_bn', 'bn'),
    'se.conv_reduce': ('se/reduce', 'se'), 'se.conv_expand': ('se/expand', 'se'),
    'conv_pwl': ('project_conv', 'conv'), 'bn3': ('project_bn', 'bn')}
_DEPTHWISE_SEPARABLE = {
    'conv_dw': ('depthwise_conv', 'conv'), 'bn1': ('depthwise_bn', 'bn'),
    'se.conv_reduce': ('se/reduce', 'se'), 'se.conv_expand': ('se/expand', 'se'),
    'conv_pw': ('project_conv', 'conv'), 'bn2': ('project_bn', 'bn')}
_TOP = {'conv_stem': ('stem_conv', 'conv'), 'bn1': ('stem_bn', 'bn'),
        'conv_head': ('head_conv', 'conv'), 'bn2': ('head_bn', 'bn'),
        'classifier': ('classifier', 'linear')}


def resolve_target(name: str) -> common.Target:
  """Maps `b0`, `tf_efficientnet_b0` or `efficientnet_b0` (optionally `.tag`) to a `Target`."""
  timm_name = name.split('.')[0]
  if timm_name.startswith('tf_efficientnet_'):
    model, tf_family = timm_name[len('tf_efficientnet_'):], True
  elif timm_name.startswith('efficientnet_'):
    model, tf_family = timm_name[len('efficientnet_'):], False
  else:
    model, tf_family = timm_name, True
  try:
    common.check_variant_name(model)
  except ValueError:
    raise ValueError(f'timm model {name!r} is not a convertible EfficientNet; use one of '
                     'tf_efficientnet_<v> or efficientnet_<v> with <v> one of b0 … b8, l2, '
                     'lite0 … lite4 (a plain <v> means tf_efficientnet_<v>).') from None
  if tf_family:
    return common.Target(model, SOURCE, f'tf_efficientnet_{model}', 'same', common.TF_BN_EPSILON)
  return common.Target(model, SOURCE, f'efficientnet_{model}', 'symmetric',
                       common.TORCH_BN_EPSILON)


def declared_model(path: str, arch: str | None = None) -> tuple[str, str] | None:
  """The timm model a weights file says it holds, and where it says so; None if it does not.

  Looked up, in order: the checkpoint's 'arch' entry, the 'architecture' of a Hugging Face Hub
  `config.json` in the same folder, and the file name (timm's release files are named after
  their model, e.g. `tf_efficientnet_b0_aa-827b6e33.pth`, `efficientnet_b1_ra-533bc792.pth`).
  """
  config_path = os.path.join(os.path.dirname(os.path.abspath(path)), 'config.json')
  architecture = None
  if os.path.isfile(config_path):
    try:
      with open(config_path) as f:
        architecture = json.load(f).get('architecture')
    except (OSError, ValueError, AttributeError):
      architecture = None
  for text, where in ((arch, "its 'arch' entry"), (architecture, config_path),
                      (os.path.basename(path), 'its file name')):
    match = _TIMM_NAME.match(text) if isinstance(text, str) else None
    if match:
      return match.group(0), where
  return None


def check_declared_model(path: str, arch: str | None, name: str,
                         target: common.Target) -> None:
  """Refuses a `--model` that contradicts the model the file says it holds (`declared_model`)."""
  declared = declared_model(path, arch)
  if declared is None:
    if not name.split('.')[0].startswith(('tf_efficientnet_', 'efficientnet_')):
      logging.warning("--source=timm --model=%s: assuming TF-ported weights (tf_efficientnet_%s, "
                      "'same' padding); for timm-trained weights pass --model=efficientnet_%s.",
                      name, target.model, target.model)
    return
  timm_name, where = declared
  if timm_name != target.source_model:
    family = _FAMILY[timm_name.startswith('tf_')]
    raise ValueError(f'{path} holds timm\'s {timm_name} ({family}; from {where}), but '
                     f'--model={name} converts it as {target.source_model}; pass '
                     f'--model={timm_name}.')


def map_state_dict(state: dict[str, np.ndarray]) -> common.Mapped:
  """Renames and transposes timm tensors to our variable paths (no shape check here)."""
  blocks: dict[tuple[int, int], dict[str, np.ndarray]] = {}
  mapped: common.Mapped = {}
  for name, array in state.items():
    if name.endswith('.num_batches_tracked'):
      continue
    match = _BLOCK_KEY.match(name)
    if match:
      blocks.setdefault((int(match[1]), int(match[2])), {})[match[3]] = array
      continue
    _add(mapped, (), _TOP, name, name, array, state)
  # timm numbers blocks per stage; ours are flat, in the order the network runs them.
  for flat_index, (stage, index) in enumerate(sorted(blocks)):
    tensors = blocks[(stage, index)]
    layers = _INVERTED_RESIDUAL if 'conv_pwl.weight' in tensors else _DEPTHWISE_SEPARABLE
    for rest, array in tensors.items():
      _add(mapped, (f'blocks_{flat_index}',), layers, f'blocks.{stage}.{index}.{rest}', rest,
           array, state)
  return mapped


def _add(mapped: common.Mapped, prefix: tuple[str, ...], layers: dict[str, tuple[str, str]],
         name: str, rest: str, array: np.ndarray, state: dict[str, np.ndarray]) -> None:
  """Maps tensor `name` whose path below `prefix` is `rest` (e.g. 'se.conv_reduce.weight')."""
  layer, _, leaf = rest.rpartition('.')
  if layer not in layers:
    common.reject_unknown_tensor(name, state, SOURCE)
  ours, kind = layers[layer]
  common.add_torch_tensor(mapped, prefix + tuple(ours.split('/')), kind, name, leaf, array,
                          SOURCE)


def convert(path: str, model: str) -> common.Converted:
  """Converts a timm state dict file (.pth/.bin/.safetensors) for `model` (see module doc)."""
  target = resolve_target(model)
  state, arch = torch_files.load_state_dict_and_arch(path, SOURCE)
  check_declared_model(path, arch, model, target)
  return convert_state_dict(state, target)


def convert_state_dict(state: dict[str, np.ndarray], target: common.Target) -> common.Converted:
  """Converts an in-memory timm state dict (name → numpy array)."""
  preprocessing = None  # TF-ported: the TF defaults.
  if target.padding == 'symmetric':
    # timm trains its own models (Lite included) on ImageNet mean/std with bicubic resizing.
    mean, std = normalization.NORMALIZATIONS['imagenet']
    preprocessing = common.default_preprocessing(target.model, mean=mean, std=std,
                                                 interpolation='bicubic')
  return common.finish(map_state_dict(state), target, preprocessing)
