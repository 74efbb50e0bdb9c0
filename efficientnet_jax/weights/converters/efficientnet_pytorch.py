"""efficientnet_pytorch (lukemelas/EfficientNet-PyTorch) state dicts → our variables.

Layout: `_conv_stem`, `_bn0` (stem), `_blocks.{i}` numbered flat over the whole network, each with
`_expand_conv`/`_bn0` (absent when the expand ratio is 1), `_depthwise_conv`/`_bn1`,
`_se_reduce`/`_se_expand` (1×1 convs with bias; absent in Lite files), `_project_conv`/`_bn2`;
then `_conv_head`, `_bn1` (head) and `_fc`.

Its convolutions use TF-'SAME' padding, computed statically for the `image_size` the model was
built with (identical to ours at that size), so padding='same'. BN: epsilon 1e-3 and PyTorch
momentum 0.01, which is TF's 0.99 (`1 - momentum`); both as ours, nothing to adjust.
Covers b0 … b8 and l2 (`EfficientNet.from_name('efficientnet-bN')`) and Lite files with the same
naming; AdvProp weights (`adv-efficientnet-*`) have the same layout but expect inputs scaled to
[-1, 1]: convert them with `--mean=127.5,127.5,127.5 --std=127.5,127.5,127.5`.
"""

from __future__ import annotations

import re

import numpy as np

from efficientnet_jax.weights.converters import common
from efficientnet_jax.weights.converters import torch_files

SOURCE = 'efficientnet_pytorch'
_BLOCK_KEY = re.compile(r'^_blocks\.(\d+)\.(.+)$')

# efficientnet_pytorch layer → (our layer, kind).
_BLOCK_LAYERS = {
    '_expand_conv': ('expand_conv', 'conv'), '_bn0': ('expand_bn', 'bn'),
    '_depthwise_conv': ('depthwise_conv', 'conv'), '_bn1': ('depthwise_bn', 'bn'),
    '_se_reduce': ('se/reduce', 'se'), '_se_expand': ('se/expand', 'se'),
    '_project_conv': ('project_conv', 'conv'), '_bn2': ('project_bn', 'bn')}
_TOP_LAYERS = {'_conv_stem': ('stem_conv', 'conv'), '_bn0': ('stem_bn', 'bn'),
               '_conv_head': ('head_conv', 'conv'), '_bn1': ('head_bn', 'bn'),
               '_fc': ('classifier', 'linear')}


def resolve_target(name: str) -> common.Target:
  """Maps `b0` or `efficientnet-b0` (also `efficientnet_b0`, `efficientnet-lite0`) to a `Target`."""
  model = re.sub(r'^efficientnet[-_]', '', name)
  common.check_variant_name(model)
  return common.Target(model, SOURCE, f'efficientnet-{model}', 'same', common.TF_BN_EPSILON)


def map_state_dict(state: dict[str, np.ndarray]) -> common.Mapped:
  """Renames and transposes efficientnet_pytorch tensors to our paths (no shape check here)."""
  mapped: common.Mapped = {}
  for name, array in state.items():
    if name.endswith('.num_batches_tracked'):
      continue
    match = _BLOCK_KEY.match(name)
    prefix, layers, rest = ((f'blocks_{int(match[1])}',), _BLOCK_LAYERS, match[2]) if match else (
        (), _TOP_LAYERS, name)
    layer, _, leaf = rest.rpartition('.')
    if layer not in layers:
      common.reject_unknown_tensor(name, state, SOURCE)
    ours, kind = layers[layer]
    common.add_torch_tensor(mapped, prefix + tuple(ours.split('/')), kind, name, leaf, array,
                            SOURCE)
  return mapped


def convert(path: str, model: str) -> common.Converted:
  """Converts an efficientnet_pytorch state dict file (.pth/.safetensors) for `model`."""
  target = resolve_target(model)
  return convert_state_dict(torch_files.load_state_dict(path, SOURCE), target)


def convert_state_dict(state: dict[str, np.ndarray], target: common.Target) -> common.Converted:
  """Converts an in-memory efficientnet_pytorch state dict (name → numpy array)."""
  return common.finish(map_state_dict(state), target)
