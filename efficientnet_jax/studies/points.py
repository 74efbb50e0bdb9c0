"""Scaled models as points (width, depth, resolution), their measured cost, and the ablation solver.

A *point* is absolute: the coefficients handed to `create_model` (the baseline's own width/depth
multiplied by the scaling) and the input side. Costs are measured on the built network with
`efficientnet_jax.models.flops`, never computed from α·β²·γ², because filters are rounded to
multiples of 8, repeats are rounded *up* and the resolution snaps to a multiple: the paper's
(1.2, 1.1, 1.15) φ = 1 model measures 2.23× B0, not the nominal 1.92×.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from efficientnet_jax.models import efficientnet
from efficientnet_jax.models import flops
from efficientnet_jax.models import scaling

DIMENSIONS = ('width', 'depth', 'resolution')


@dataclasses.dataclass(frozen=True)
class Point:
  """One concrete model size: the `create_model` width/depth and the input resolution."""
  width: float
  depth: float
  resolution: int

  def rounded(self) -> Point:
    """Coefficients at 6 decimals, so that results files and trial identities are stable."""
    return Point(round(self.width, 6), round(self.depth, 6), int(self.resolution))


@dataclasses.dataclass(frozen=True)
class Baseline:
  """The network every experiment scales from, and how scaled resolutions are rounded."""
  width: float
  depth: float
  resolution: int
  resolution_multiple: int = 8

  @property
  def point(self) -> Point:
    return Point(self.width, self.depth, self.resolution).rounded()


def baseline_from_config(c) -> Baseline:
  """`config.baseline` (width, depth, resolution, resolution_multiple) as a `Baseline`."""
  return Baseline(float(c.width), float(c.depth), int(c.resolution), int(c.resolution_multiple))


def compound_point(base: Baseline, phi: float, alpha: float, beta: float, gamma: float) -> Point:
  """The baseline scaled by the compound rule: depth ·α^φ, width ·β^φ, resolution ·γ^φ."""
  s = scaling.compound(phi, alpha, beta, gamma, base_resolution=base.resolution,
                       resolution_multiple=base.resolution_multiple)
  return Point(base.width * s.width, base.depth * s.depth, s.resolution).rounded()


def single_point(base: Baseline, dimension: str, coefficient: float) -> Point:
  """The baseline scaled along one dimension only (the paper's Fig. 3 ablations)."""
  if dimension == 'width':
    return Point(base.width * coefficient, base.depth, base.resolution).rounded()
  if dimension == 'depth':
    return Point(base.width, base.depth * coefficient, base.resolution).rounded()
  if dimension == 'resolution':
    side = scaling.round_resolution(base.resolution * coefficient, base.resolution_multiple)
    return Point(base.width, base.depth, side)
  raise ValueError(f'Unknown dimension {dimension!r}; expected one of {DIMENSIONS}.')


def scaled_point(base: Baseline, width: float = 1.0, depth: float = 1.0,
                 resolution: float = 1.0) -> Point:
  """The baseline with each dimension multiplied by its own coefficient (paper Fig. 4's models).

  The resolution is rounded to the baseline's multiple, as compound scaling rounds it.
  """
  side = scaling.round_resolution(base.resolution * resolution, base.resolution_multiple)
  return Point(base.width * width, base.depth * depth, side).rounded()


def with_point(train_config, point: Point, source_detail: float = 0.0):
  """A copy of the training config that builds `point` (explicit width/depth/size, no φ).

  Args:
    train_config: the study's training config.
    point: the trial's model size.
    source_detail: the study's `source_detail`: 0, or the fraction of the trial's resolution the
      digits are area-reduced to first (`train.source_side`, at least 1 pixel).

  Raises:
    ValueError: a `source_detail` outside [0, 1].
  """
  if not 0.0 <= source_detail <= 1.0:
    raise ValueError(f'config.source_detail must be in [0, 1] (a fraction of the trial\'s '
                     f'resolution; 0: the images as stored), not {source_detail!r}.')
  c = train_config.copy_and_resolve_references()
  c.phi = None
  c.width, c.depth, c.image_size = float(point.width), float(point.depth), int(point.resolution)
  if source_detail:
    c.source_side = max(1, round(source_detail * point.resolution))
  return c


def model_for(train_config, point: Point):
  """The exact module a trial trains (what training builds: `model_from_config`)."""
  return efficientnet.model_from_config(with_point(train_config, point))


def network_key(train_config, point: Point) -> tuple:
  """What a point builds: equal keys, equal networks (so equal FLOPs and parameters)."""
  model = model_for(train_config, point)
  return (model.spec, model.lite, model.num_classes, point.resolution)


# network_key → multiply-adds / parameters. Rounding maps whole intervals of coefficients to one
# network, so a bisection probing dozens of coefficients traces only the few networks they build.
_MACS: dict[tuple, int] = {}
_PARAMS: dict[tuple, int] = {}


def count_macs(train_config, point: Point) -> int:
  """Multiply-adds per image (the paper's "FLOPs") of the model a trial trains, measured."""
  key = network_key(train_config, point)
  if key not in _MACS:
    _MACS[key] = flops.count_macs(model_for(train_config, point), point.resolution)
  return _MACS[key]


def measure(train_config, point: Point) -> dict[str, int]:
  """`{'flops': multiply-adds per image, 'params': trainable parameters}` of a point."""
  key = network_key(train_config, point)
  if key not in _PARAMS:
    _PARAMS[key] = flops.count_params(model_for(train_config, point))
  return {'flops': count_macs(train_config, point), 'params': _PARAMS[key]}


@dataclasses.dataclass(frozen=True)
class Solution:
  """A single-dimension scaling that matches a FLOPs budget as closely as rounding allows."""
  dimension: str
  coefficient: float
  point: Point
  flops: int
  target_flops: int

  @property
  def relative_error(self) -> float:
    """Measured over budget, minus one (0.03: 3% over the budget)."""
    return self.flops / self.target_flops - 1.0


def solve_single(train_config, base: Baseline, dimension: str, target_flops: int, *,
                 max_coefficient: float = 64.0, precision: float = 1e-3) -> Solution:
  """The coefficient c ≥ 1 whose `dimension`-only model measures closest to `target_flops`.

  Measured MACs are a non-decreasing step function of c (filters, repeats and the resolution are
  rounded), so bisection brackets the budget between the largest network below it and the
  smallest at or above it; the closer of the two (in log ratio) wins. The answer is as exact as
  the rounding allows: a depth step adds whole blocks, a width step whole groups of 8 filters.

  Args:
    train_config: the training config (classes and variant of the model that will be trained).
    base: the baseline to scale.
    dimension: 'width', 'depth' or 'resolution'.
    target_flops: the budget, e.g. the measured MACs of a compound-scaled model.
    max_coefficient: give up above this (the budget is unreachable in this dimension).
    precision: stop bisecting when the bracket is this narrow.

  Returns:
    The `Solution`; `relative_error` says how close it came.
  """
  def cost(c: float) -> int:
    return count_macs(train_config, single_point(base, dimension, c))

  lo, hi = 1.0, 2.0
  if cost(lo) >= target_flops:
    hi = lo
  while cost(hi) < target_flops:
    lo, hi = hi, hi * 2.0
    if hi > max_coefficient:
      raise ValueError(f'{dimension}-only scaling up to {max_coefficient}× stays below '
                       f'{target_flops} MACs; raise max_coefficient or lower the budget.')
  while hi - lo > precision:
    mid = 0.5 * (lo + hi)
    if cost(mid) < target_flops:
      lo = mid
    else:
      hi = mid
  best = min((hi, lo), key=lambda c: abs(math.log(cost(c) / target_flops)))
  best = _simplest(best, lambda c: network_key(train_config, single_point(base, dimension, c)))
  return Solution(dimension, best, single_point(base, dimension, best), cost(best), target_flops)


def _simplest(coefficient: float, builds: Callable[[float], tuple]) -> float:
  """The shortest decimal that builds the same network (1.4 rather than bisection's 1.416626)."""
  target = builds(coefficient)
  for digits in range(1, 7):
    candidate = round(coefficient, digits)
    if candidate >= 1.0 and builds(candidate) == target:
      return candidate
  return round(coefficient, 6)
