"""Compound scaling: rounding rules, block strings, the variant table and (φ, α, β, γ).

Everything that turns "b4" or "φ = 1.5" into a concrete list of blocks lives here, and nothing else
does. The model (`efficientnet.py`) only consumes the `NetworkSpec` this module builds.

Rules follow the reference TF implementation (tensorflow/tpu `models/official/efficientnet`):

* `round_filters`: scale by width, snap to a multiple of 8, never below 8 and never more than 10%
  below the unrounded value.
* `round_repeats`: `ceil(depth * repeats)`.
* Only the first block of a stage carries the stage's stride and its in→out filter change.
* Lite variants: no squeeze-excite, a fixed 32-filter stem and 1280-filter head, and the first and
  last stages keep their repeats unscaled.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

# The B0 baseline found by the MnasNet-style search (paper Table 1), as TF block strings.
B0_BLOCKS: tuple[str, ...] = (
    'r1_k3_s11_e1_i32_o16_se0.25',
    'r2_k3_s22_e6_i16_o24_se0.25',
    'r2_k5_s22_e6_i24_o40_se0.25',
    'r3_k3_s22_e6_i40_o80_se0.25',
    'r3_k5_s11_e6_i80_o112_se0.25',
    'r4_k5_s22_e6_i112_o192_se0.25',
    'r1_k3_s11_e6_i192_o320_se0.25',
)
BASE_STEM_FILTERS = 32
BASE_HEAD_FILTERS = 1280
BASE_RESOLUTION = 224
DEFAULT_DROP_PATH_RATE = 0.2

# The compound coefficients found by the paper's grid search at φ = 1.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


@dataclasses.dataclass(frozen=True)
class BlockArgs:
  """One MBConv block (or, before expansion, one stage of identical blocks)."""
  kernel_size: int
  num_repeat: int
  input_filters: int
  output_filters: int
  expand_ratio: int
  strides: tuple[int, int]
  se_ratio: float | None = None
  id_skip: bool = True

  @property
  def has_skip(self) -> bool:
    """True when the block adds its input back (and so can be stochastically dropped)."""
    return (self.id_skip and self.strides == (1, 1)
            and self.input_filters == self.output_filters)


_BLOCK_KEY = re.compile(r'^(se|r|k|s|e|i|o)(.*)$')  # 'se' before 's'.


def decode_block_string(block_string: str) -> BlockArgs:
  """Decodes a TF block string such as `r1_k3_s11_e1_i32_o16_se0.25`.

  Args:
    block_string: underscore-separated keys: r (repeats), k (kernel), s (two stride digits),
      e (expand ratio), i / o (input / output filters), se (squeeze-excite ratio), noskip.

  Returns:
    The decoded `BlockArgs`.

  Raises:
    ValueError: if a key is unknown or a required key is missing.
  """
  fields: dict[str, str] = {}
  id_skip = True
  for part in block_string.split('_'):
    if part == 'noskip':
      id_skip = False
      continue
    match = _BLOCK_KEY.match(part)
    if not match or not match.group(2):
      raise ValueError(f'Bad key {part!r} in block string {block_string!r}; expected keys '
                       'r, k, s, e, i, o, se or noskip, e.g. r1_k3_s11_e1_i32_o16_se0.25.')
    if match.group(1) in fields:  # 'r1_r2_…' is a typo, not an override.
      raise ValueError(f'Key {match.group(1)!r} repeats in block string {block_string!r}.')
    fields[match.group(1)] = match.group(2)
  missing = [k for k in ('r', 'k', 's', 'e', 'i', 'o') if k not in fields]
  if missing:
    raise ValueError(f'Block string {block_string!r} lacks key(s) {missing}.')
  strides = fields['s']
  if len(strides) == 1:
    strides = strides * 2
  if len(strides) != 2:
    raise ValueError(f'Stride key in {block_string!r} must have one or two digits, e.g. s22.')
  return BlockArgs(
      kernel_size=int(fields['k']),
      num_repeat=int(fields['r']),
      input_filters=int(fields['i']),
      output_filters=int(fields['o']),
      expand_ratio=int(fields['e']),
      strides=(int(strides[0]), int(strides[1])),
      se_ratio=float(fields['se']) if 'se' in fields else None,
      id_skip=id_skip)


def encode_block_string(block: BlockArgs) -> str:
  """Encodes `BlockArgs` back to the TF block-string form (inverse of `decode_block_string`)."""
  parts = [f'r{block.num_repeat}', f'k{block.kernel_size}',
           f's{block.strides[0]}{block.strides[1]}', f'e{block.expand_ratio}',
           f'i{block.input_filters}', f'o{block.output_filters}']
  if block.se_ratio is not None and 0 < block.se_ratio <= 1:
    parts.append(f'se{block.se_ratio:g}')
  if not block.id_skip:
    parts.append('noskip')
  return '_'.join(parts)


def round_filters(filters: int, width: float | None, divisor: int = 8) -> int:
  """Scales a filter count by the width coefficient and rounds it as TF does."""
  if not width:
    return filters
  scaled = filters * width
  new_filters = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if new_filters < 0.9 * scaled:  # Rounding down must not lose more than 10%.
    new_filters += divisor
  return int(new_filters)


def round_repeats(repeats: int, depth: float | None) -> int:
  """Scales a stage's block count by the depth coefficient (always rounding up)."""
  if not depth:
    return repeats
  return int(math.ceil(depth * repeats))


@dataclasses.dataclass(frozen=True)
class Variant:
  """A published model: compound coefficients, native resolution and head dropout."""
  width: float
  depth: float
  resolution: int
  dropout: float
  lite: bool = False


# The published table (paper Table 2 and the TF reference; not exactly α^φ, β^φ, γ^φ).
VARIANTS: dict[str, Variant] = {
    'b0': Variant(1.0, 1.0, 224, 0.2),
    'b1': Variant(1.0, 1.1, 240, 0.2),
    'b2': Variant(1.1, 1.2, 260, 0.3),
    'b3': Variant(1.2, 1.4, 300, 0.3),
    'b4': Variant(1.4, 1.8, 380, 0.4),
    'b5': Variant(1.6, 2.2, 456, 0.4),
    'b6': Variant(1.8, 2.6, 528, 0.5),
    'b7': Variant(2.0, 3.1, 600, 0.5),
    'b8': Variant(2.2, 3.6, 672, 0.5),
    'l2': Variant(4.3, 5.3, 800, 0.5),
    'lite0': Variant(1.0, 1.0, 224, 0.2, lite=True),
    'lite1': Variant(1.0, 1.1, 240, 0.2, lite=True),
    'lite2': Variant(1.1, 1.2, 260, 0.3, lite=True),
    'lite3': Variant(1.2, 1.4, 280, 0.3, lite=True),
    'lite4': Variant(1.4, 1.8, 300, 0.3, lite=True),
}
MODEL_NAMES: tuple[str, ...] = tuple(VARIANTS)


def get_variant(name: str) -> Variant:
  """Looks a published variant up by name; the error lists every valid name."""
  try:
    return VARIANTS[name]
  except KeyError:
    raise ValueError(f'Unknown model {name!r}; valid names: {", ".join(MODEL_NAMES)}.') from None


@dataclasses.dataclass(frozen=True)
class Scaling:
  """Width, depth and resolution multipliers/values for one scaled model."""
  width: float
  depth: float
  resolution: int

  def as_overrides(self) -> dict[str, float | int]:
    """The keyword overrides `create_model('b0', **overrides)` takes."""
    return dataclasses.asdict(self)


def round_resolution(resolution: float, multiple: int = 8) -> int:
  """Rounds a resolution to the nearest multiple (at least one multiple)."""
  if multiple <= 1:
    return max(1, int(round(resolution)))
  return max(multiple, int(round(resolution / multiple)) * multiple)


def compound(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA, *,
             base_resolution: int = BASE_RESOLUTION, resolution_multiple: int = 8) -> Scaling:
  """The compound rule: depth α^φ, width β^φ, resolution γ^φ times the baseline's.

  Args:
    phi: the compound coefficient; any real value (negative values shrink the baseline).
    alpha: depth base (the paper found 1.2).
    beta: width base (1.1).
    gamma: resolution base (1.15).
    base_resolution: the baseline's input resolution.
    resolution_multiple: the resolution is rounded to the nearest multiple of this (1: no rounding).

  Returns:
    The `Scaling` (width, depth, resolution). With α·β²·γ² ≈ 2, FLOPs grow ≈ 2^φ.
  """
  for label, value in (('alpha', alpha), ('beta', beta), ('gamma', gamma)):
    if value <= 0:
      raise ValueError(f'{label} must be positive, got {value}.')
  return Scaling(width=beta ** phi, depth=alpha ** phi,
                 resolution=round_resolution(base_resolution * gamma ** phi,
                                             resolution_multiple))


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """The concrete network a (width, depth, lite) choice builds: what the model consumes."""
  stem_filters: int
  head_filters: int
  blocks: tuple[BlockArgs, ...]  # One entry per block (repeats expanded), in order.
  stage_of_block: tuple[int, ...]  # Stage index of each block.


def build_network(width: float, depth: float, *, lite: bool = False,
                  block_strings: Sequence[str] = B0_BLOCKS) -> NetworkSpec:
  """Expands the baseline's stages into the flat block list of a scaled network.

  Args:
    width: width coefficient (filters are multiplied by it and rounded).
    depth: depth coefficient (repeats are multiplied by it and rounded up).
    lite: build an EfficientNet-Lite network (no SE, fixed stem/head, first/last stage unscaled).
    block_strings: the baseline stages as TF block strings.

  Returns:
    A `NetworkSpec`.
  """
  if width <= 0 or depth <= 0:
    raise ValueError(f'width and depth must be positive, got width={width}, depth={depth}.')
  stages = [decode_block_string(s) for s in block_strings]
  stem = BASE_STEM_FILTERS if lite else round_filters(BASE_STEM_FILTERS, width)
  head = BASE_HEAD_FILTERS if lite else round_filters(BASE_HEAD_FILTERS, width)
  blocks, stage_index = [], []
  for i, stage in enumerate(stages):
    in_filters = round_filters(stage.input_filters, width)
    if i == 0:
      in_filters = stem  # The first stage reads the stem's output, whatever its rounding.
    out_filters = round_filters(stage.output_filters, width)
    unscaled = lite and i in (0, len(stages) - 1)
    repeats = stage.num_repeat if unscaled else round_repeats(stage.num_repeat, depth)
    se_ratio = None if lite else stage.se_ratio
    for j in range(repeats):
      blocks.append(dataclasses.replace(
          stage, num_repeat=1, se_ratio=se_ratio,
          input_filters=in_filters if j == 0 else out_filters,
          output_filters=out_filters,
          strides=stage.strides if j == 0 else (1, 1)))
      stage_index.append(i)
  return NetworkSpec(stem_filters=stem, head_filters=head, blocks=tuple(blocks),
                     stage_of_block=tuple(stage_index))


def drop_path_rates(num_blocks: int, rate: float) -> tuple[float, ...]:
  """Stochastic-depth schedule: block i of N drops its branch with rate · i / N."""
  return tuple(rate * i / num_blocks for i in range(num_blocks))


def endpoint_blocks(spec: NetworkSpec) -> dict[str, int]:
  """Maps `reduction_k` to the index of the last block before the k-th stride change.

  The last block of the network is always the final endpoint, so B0 gives reduction_1..5 at
  strides 2, 4, 8, 16, 32.
  """
  ends = {}
  for i, _ in enumerate(spec.blocks):
    is_last = i == len(spec.blocks) - 1
    if is_last or spec.blocks[i + 1].strides != (1, 1):
      ends[f'reduction_{len(ends) + 1}'] = i
  return ends
