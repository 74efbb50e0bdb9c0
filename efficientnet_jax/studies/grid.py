"""Step 1's search space: (α, β, γ) on a grid, α, β, γ ≥ 1, with α·β²·γ² close to a target.

FLOPs of a convolutional network grow ∝ depth · width² · resolution², so α·β²·γ² is the FLOPs
multiplier of one compound step (φ → φ + 1) *before* rounding; the paper constrains it to ≈ 2.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, Sequence


@dataclasses.dataclass(frozen=True)
class Triple:
  """Compound bases: depth α, width β, resolution γ (per unit of φ)."""
  alpha: float
  beta: float
  gamma: float

  @property
  def nominal_ratio(self) -> float:
    """α·β²·γ²: the FLOPs multiplier per unit φ that the rule promises before rounding."""
    return nominal_ratio(self.alpha, self.beta, self.gamma)


def nominal_ratio(alpha: float, beta: float, gamma: float) -> float:
  """α·β²·γ² (depth is linear in FLOPs; width and resolution are quadratic)."""
  return alpha * beta ** 2 * gamma ** 2


def frange(start: float, stop: float, step: float) -> tuple[float, ...]:
  """`start, start + step, …, stop` inclusive, rounded (1.3, not 1.3000000000000003)."""
  if step <= 0:
    raise ValueError(f'step must be positive, got {step}.')
  count = int(round((stop - start) / step)) + 1
  return tuple(round(start + i * step, 6) for i in range(max(count, 0)))


def enumerate_triples(alphas: Iterable[float], betas: Iterable[float], gammas: Iterable[float],
                      *, target: float = 2.0, tolerance: float = 0.05) -> list[Triple]:
  """The grid points that satisfy the constraint, in a fixed order (α, then β, then γ).

  Args:
    alphas: candidate depth bases.
    betas: candidate width bases.
    gammas: candidate resolution bases.
    target: the FLOPs multiplier per unit φ (2 in the paper).
    tolerance: relative: keep `|α·β²·γ² / target − 1| ≤ tolerance`.

  Returns:
    The admissible triples, sorted, without duplicates. The order is the trial numbering, so it
    must not depend on how the candidate lists were written.

  Raises:
    ValueError: on a candidate below 1 (that would shrink a dimension while the others grow).
  """
  axes = {'alpha': _clean(alphas), 'beta': _clean(betas), 'gamma': _clean(gammas)}
  for label, values in axes.items():
    below = [v for v in values if v < 1.0]
    if below:
      raise ValueError(f'Every {label} must be ≥ 1 (the search only grows the baseline); got '
                       f'{below}.')
  if target <= 0 or tolerance < 0:
    raise ValueError(f'Need target > 0 and tolerance ≥ 0, got {target}, {tolerance}.')
  triples = []
  for alpha, beta, gamma in itertools.product(axes['alpha'], axes['beta'], axes['gamma']):
    # The epsilon keeps grid points that sit exactly on the boundary (e.g. 2.1 for 2 ± 5%).
    if abs(nominal_ratio(alpha, beta, gamma) / target - 1.0) <= tolerance + 1e-9:
      triples.append(Triple(alpha, beta, gamma))
  return triples


def _clean(values: Iterable[float]) -> Sequence[float]:
  return sorted({round(float(v), 6) for v in values})
