"""Any EfficientNet as the paper's Table 1: one row per stage, with what each stage costs.

Table 1 of Tan & Le (arXiv 1905.11946, "EfficientNet-B0 baseline network") describes B0 as nine
stages: the stem convolution, the seven MBConv stages of the baseline's block strings, and the
head (1×1 convolution, pooling, classifier), each with its operator, input resolution, output
channels and number of layers. `stage_table` gives the same description for any built network
(a published variant, a compound φ, explicit coefficients), and adds the parameters and
multiply-adds of each stage.

The costs come from one abstract trace (`flops.trace`, `jax.eval_shape`): every counted layer and
every parameter belongs to exactly one stage (BatchNorm to the stage of the convolution it
follows), and a module that belongs to none is an error, so the stages add up to
`flops.count_params` and `flops.count_macs` exactly.
"""

from __future__ import annotations

import dataclasses

from efficientnet_jax.models import efficientnet
from efficientnet_jax.models import flops
from efficientnet_jax.models import scaling

_BLOCK_PREFIX = 'blocks_'


@dataclasses.dataclass(frozen=True)
class StageRow:
  """One row of Table 1, with the stage's measured cost.

  Attributes:
    stage: 1-based, as in the paper (1: the stem; the last: the head).
    operator: the paper's name: 'Conv3x3', 'MBConv6, k5x5', 'Conv1x1 & Pooling & FC'.
    resolution: height and width of the stage's input.
    channels: the stage's output channels (for the head, those of its 1×1 convolution).
    layers: the stage's layers (blocks, for an MBConv stage).
    params: trainable parameters of the stage, its BatchNorm scales and offsets included.
    macs: multiply-adds per image at the network's resolution.
  """
  stage: int
  operator: str
  resolution: tuple[int, int]
  channels: int
  layers: int
  params: int
  macs: int


def stage_table(model: efficientnet.EfficientNet) -> list[StageRow]:
  """The network's stages as in the paper's Table 1, with each stage's parameters and MACs.

  Args:
    model: an `EfficientNet`; it is traced abstractly at `model.resolution` (seconds, even for L2).

  Returns:
    One `StageRow` per stage: the stem, one per block string, the head.

  Raises:
    RuntimeError: a top-level module of the network belongs to no stage (the model grew a part
      this table does not know; the totals would no longer add up).
  """
  spec = model.spec
  trace = flops.trace(model)
  num_stages = len(model.block_strings) + 2
  stage_of = lambda name: _stage_index(name, spec, num_stages)

  params = [0] * num_stages
  for name, subtree in trace.params.items():
    params[stage_of(name)] += flops.tree_size(subtree)
  macs = [0] * num_stages
  first_layer: list[flops.LayerCount | None] = [None] * num_stages
  for layer in trace.layers:  # In call order, so a stage's first layer sees its input.
    index = stage_of(layer.path[0])
    macs[index] += layer.macs
    if first_layer[index] is None:
      first_layer[index] = layer

  described = _describe(model, spec, first_layer)
  return [StageRow(stage=i + 1, operator=operator, resolution=first_layer[i].input_shape[1:3],
                   channels=channels, layers=layers, params=params[i], macs=macs[i])
          for i, (operator, channels, layers) in enumerate(described)]


def _stage_index(module_name: str, spec: scaling.NetworkSpec, num_stages: int) -> int:
  """0-based stage of a top-level module of `EfficientNet` (the names it gives its layers)."""
  if module_name.startswith('stem_'):
    return 0
  if module_name.startswith(_BLOCK_PREFIX):
    return 1 + spec.stage_of_block[int(module_name[len(_BLOCK_PREFIX):])]
  if module_name.startswith('head_') or module_name == 'classifier':
    return num_stages - 1
  raise RuntimeError(f'Module {module_name!r} of the network belongs to no stage; teach '
                     'efficientnet_jax/models/stages.py (_stage_index) where it goes.')


def _describe(model: efficientnet.EfficientNet, spec: scaling.NetworkSpec,
              first_layer: list[flops.LayerCount | None]) -> list[tuple[str, int, int]]:
  """(operator, output channels, layers) of each stage, in the paper's words."""
  if any(layer is None for layer in first_layer):
    raise RuntimeError('A stage of the network has no convolution or dense layer.')
  stem_kernel, head_kernel = first_layer[0].kernel_size, first_layer[-1].kernel_size
  head = f'{_conv(head_kernel)} & Pooling' + (' & FC' if model.include_top else '')
  rows = [(_conv(stem_kernel), spec.stem_filters, 1)]
  for stage in range(len(model.block_strings)):
    blocks = [b for b, s in zip(spec.blocks, spec.stage_of_block) if s == stage]
    first = blocks[0]  # The blocks of a stage share their operator; the first sets the width.
    rows.append((f'MBConv{first.expand_ratio}, k{first.kernel_size}x{first.kernel_size}',
                 first.output_filters, len(blocks)))
  rows.append((head, spec.head_filters, 1))
  return rows


def _conv(kernel_size: tuple[int, ...]) -> str:
  return 'Conv' + 'x'.join(str(k) for k in kernel_size)
