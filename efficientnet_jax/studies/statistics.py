"""Intervals for top-1 and for differences of top-1, over training seeds and test images.

A study's figure is the mean over its seeds of a top-1 measured on one test set. It would move if
the seeds were others (training noise) and if the test images were others (the test set is a
sample). Both are in the intervals here, which read arrays `correct[seed, example]` (1 where that
seed's model classified that test example correctly; `sweep.run_trial` saves them per seed in
predictions.npz).

The statistic is the mean over seeds and examples (for a comparison, of the difference of the two
models' `correct`). Write its error as a seed part plus a test-set part:

* **Test images (resampled).** The test set is resampled with replacement, B times, by *group*:
  the unit a new test set would draw. Examples sharing a group id (several canvases made from one
  source digit) are resampled together, since their outcomes are correlated and resampling them
  one by one would understate the variance; `groups=None` makes each example its own group. Each
  resample keeps every seed, and for a comparison both models, so the comparison is paired on
  images: what both models find easy or hard cancels.
* **Seeds (paired by seed index, t-distributed).** Seed index s trains both models with the same
  `train.seed` (the same data order and augmentation draws), so the pairs (a_s, b_s) are the
  independent units; the seed part is read from the per-seed differences m_s = mean over
  examples of a_s − b_s, whatever their correlation within a pair (resampling the two models'
  seeds independently would ignore it). Seeds are few (1–5), and a resample of 3 seeds has 10
  possible means, the extreme ones being the worst and best seed themselves: a percentile of such
  a resample cannot reach a 95% tail (in the simulation below, resampled seeds covered 90% where
  the seed-to-seed variance dominates). So the seed part of each draw is the t distribution with
  S − 1 degrees of freedom scaled by the standard error of m_s, s/√S: the t-interval over seeds,
  drawn alongside the test resamples.
* **No noise twice.** m_s already carries the per-seed noise on these test images (a model that
  gets an image right in one seed and wrong in another), which the test resample carries too.
  The test part is therefore shrunk to what is common to the seeds, the between-image variance
  of the paired outcome (its estimate minus the per-seed noise's share, never below 0). Resampling
  seeds and images both, as a two-way bootstrap does, counts that noise up to three times and
  the seeds as above: in the simulation its intervals covered 99.7–100% where the per-seed noise
  dominates, and 91% at 3 seeds where the seed-to-seed variance does.

Each draw is the observed mean plus its two parts; the interval is the draws' 2.5% and 97.5%
percentiles, and `p_value` the two-sided fraction of draws on the far side of 0 (twice the
smaller tail; a reading aid, verdicts use the interval).

With one seed there is no seed part: the interval covers the test set only and leaves out the
seed-to-seed variance, which on the digits proxy is as large as the differences studied, so a
report should not conclude from one seed (`comparisons.py` does not). With one group and several
seeds there is no test part.

Coverage, simulated (probit outcomes, two models sharing image difficulty, 360 examples, 1,000
draws, 400–500 replications per row): 2 seeds 95–97%, 3 seeds 95–96%, 5 seeds 96–97%, whether
the seed-to-seed variance is zero, moderate or dominant; one seed 94% without seed variance and
61% with a dominant one; groups of 5 correlated examples 98% with `groups`, 89% without.
tests/studies/test_statistics.py checks the coverage and the rest on smaller simulations.

Pure numpy, deterministic given `seed`; 10,000 draws over 5 seeds × 5,000 examples take a few
tenths of a second (the draws are 16-bit group indices, gathered in chunks).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

SUPPORTED, CONTRADICTED, INCONCLUSIVE = 'supported', 'contradicted', 'inconclusive'
LEVEL = 0.95
N_BOOT = 10_000
# Group draws per chunk: (draws × groups) indices of at most this many entries at a time.
_CHUNK_ENTRIES = 4_000_000


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A mean (of top-1, or of a difference of top-1) with its interval.

  Attributes:
    value: the observed mean over seeds and examples.
    low, high: the interval's ends (`level`, 95% unless asked otherwise).
    p_value: twice the smaller fraction of draws at or beyond 0 on either side, at most 1.
    seeds, examples, groups: what the arrays held (groups = examples without group ids).
    n_boot, level: the number of draws and the interval's coverage.
  """
  value: float
  low: float
  high: float
  p_value: float
  seeds: int
  examples: int
  groups: int
  n_boot: int
  level: float

  @property
  def interval(self) -> tuple[float, float]:
    return self.low, self.high


def paired_bootstrap(correct_a, correct_b, groups=None, n_boot: int = N_BOOT, seed: int = 0,
                     level: float = LEVEL) -> Estimate:
  """Model a's top-1 minus model b's, with its interval (module docstring).

  Args:
    correct_a, correct_b: [seeds, examples] arrays (bool or 0/1): each seed's per-example
      correctness on one test set, in one example order, seed index s of both trained with the
      same training seed (paired by row).
    groups: [examples] group ids (any integers; examples sharing one are resampled together), or
      None: every example its own group.
    n_boot: draws. seed: the draws' random seed (same inputs and seed, same result).
    level: the interval's coverage.

  Raises:
    ValueError: the arrays differ in shape, are not 2-D, or hold one seed and one group.
  """
  a, b = _as_matrix(correct_a, 'correct_a'), _as_matrix(correct_b, 'correct_b')
  if a.shape != b.shape:
    raise ValueError(f'correct_a {a.shape} and correct_b {b.shape} must have one shape '
                     '[seeds, examples]: the two models on the same test examples and seeds.')
  return _estimate(a - b, groups, n_boot, seed, level)


def contrast(corrects: Sequence, weights: Sequence[float], groups=None, n_boot: int = N_BOOT,
             seed: int = 0, level: float = LEVEL) -> Estimate:
  """Σ weight·top-1 over several models (e.g. a difference of two differences), with its interval.

  Every array is [seeds, examples] on the same examples and seed indices; the pairing and the
  draws are `paired_bootstrap`'s (which is `contrast([a, b], [1, -1])`).
  """
  if len(corrects) != len(weights) or not corrects:
    raise ValueError(f'contrast needs one weight per array, got {len(corrects)} arrays and '
                     f'{len(weights)} weights.')
  arrays = [_as_matrix(c, f'corrects[{i}]') for i, c in enumerate(corrects)]
  if len({x.shape for x in arrays}) > 1:
    raise ValueError(f'contrast arrays must have one shape [seeds, examples], got '
                     f'{[x.shape for x in arrays]}.')
  values = sum(float(w) * x for w, x in zip(weights, arrays))
  return _estimate(values, groups, n_boot, seed, level)


def top1_interval(correct, groups=None, n_boot: int = N_BOOT, seed: int = 0,
                  level: float = LEVEL) -> Estimate:
  """One model's top-1 (the mean over seeds and examples) with its interval (module docstring).

  The seed part is a t-interval, which near 0 or 1 can reach past them with few, spread seeds
  (0.88 ± 0.07 over 3 seeds reaches 1.06); a top-1 cannot, so the ends are clipped to [0, 1]
  (which keeps the coverage: only impossible values are cut) and `p_value` is left as drawn.
  """
  estimate = _estimate(_as_matrix(correct, 'correct'), groups, n_boot, seed, level)
  return dataclasses.replace(estimate, low=max(estimate.low, 0.0), high=min(estimate.high, 1.0))


def verdict(interval: tuple[float, float], claim_direction: int) -> str:
  """What an interval of a difference says about a claim that the difference is > 0 or < 0.

  Args:
    interval: (low, high) of the difference.
    claim_direction: +1 if the claim is that the difference is positive, −1 if negative.

  Returns:
    'supported' (the interval excludes 0 on the claimed side), 'contradicted' (it excludes 0 on
    the other side) or 'inconclusive' (it contains 0, an end at 0 included).
  """
  if claim_direction not in (1, -1):
    raise ValueError(f'claim_direction must be +1 or -1, got {claim_direction!r}.')
  low, high = interval
  if low > high:
    raise ValueError(f'interval {interval} has its low end above its high end.')
  if low > 0:
    return SUPPORTED if claim_direction > 0 else CONTRADICTED
  if high < 0:
    return SUPPORTED if claim_direction < 0 else CONTRADICTED
  return INCONCLUSIVE


def _as_matrix(values, name: str) -> np.ndarray:
  array = np.asarray(values)
  if array.ndim != 2 or 0 in array.shape:
    raise ValueError(f'{name} must be a non-empty [seeds, examples] array, got shape '
                     f'{array.shape}.')
  array = array.astype(np.float64)
  if not np.all(np.isfinite(array)):
    raise ValueError(f'{name} holds NaN or infinite values.')
  return array


def _group_index(groups, examples: int) -> np.ndarray:
  """Each example's group as 0..G−1 (in order of first id), from ids or None."""
  if groups is None:
    return np.arange(examples)
  ids = np.asarray(groups)
  if ids.shape != (examples,):
    raise ValueError(f'groups must have one id per example ({examples},), got shape '
                     f'{ids.shape}.')
  _, index = np.unique(ids, return_inverse=True)
  return index.reshape(-1)


def _estimate(values: np.ndarray, groups, n_boot: int, seed: int, level: float) -> Estimate:
  """The draws of the mean of `values` [seeds, examples] (module docstring) and their interval."""
  if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
    raise ValueError(f'n_boot must be a whole number ≥ 1, got {n_boot!r}.')
  if not 0 < level < 1:
    raise ValueError(f'level must be between 0 and 1, got {level!r}.')
  seeds, examples = values.shape
  index = _group_index(groups, examples)
  count = int(index.max()) + 1
  if seeds == 1 and count == 1:
    raise ValueError('One seed and one test group: there is nothing to resample (train more '
                     'seeds, or give each example or source its own group).')
  sizes = np.bincount(index, minlength=count).astype(np.float64)
  sums = np.stack([np.bincount(index, weights=row, minlength=count) for row in values])
  mean = float(values.mean())
  # Per group, the seeds' mean sum, centred: what a test resample moves.
  common = sums.mean(0) - sizes * mean
  rng = np.random.default_rng(seed)

  draws = np.full(n_boot, mean)
  if count > 1:
    test_part = _resampled_means(sums.mean(0), sizes, n_boot, rng) - mean
    scale = 1.0
    if seeds > 1:
      # The test-set variance of the mean (the draws' variance, in closed form) and the share of
      # it that is per-seed noise, which the seed part already carries.
      total = float(np.sum(common ** 2)) / examples ** 2 * count / (count - 1)
      per_seed = sums - sizes * values.mean(1)[:, None] - common
      noise = (float(np.sum(per_seed ** 2)) / seeds / examples ** 2 * count / (count - 1)
               / (seeds - 1))
      scale = np.sqrt(max(0.0, total - noise) / total) if total > 0 else 0.0
    draws += scale * test_part
  if seeds > 1:
    standard_error = float(np.std(values.mean(1), ddof=1)) / np.sqrt(seeds)
    draws += standard_error * rng.standard_t(seeds - 1, size=n_boot)
  tail = (1 - level) / 2
  low, high = np.quantile(draws, [tail, 1 - tail])
  p_value = min(1.0, 2 * min(float(np.mean(draws <= 0)), float(np.mean(draws >= 0))))
  return Estimate(value=mean, low=float(low), high=float(high), p_value=p_value, seeds=seeds,
                  examples=examples, groups=count, n_boot=int(n_boot), level=level)


def _resampled_means(group_sums: np.ndarray, sizes: np.ndarray, n_boot: int,
                     rng: np.random.Generator) -> np.ndarray:
  """Means over `n_boot` resamples (with replacement) of the groups: Σ drawn sums / Σ sizes."""
  count = len(sizes)
  # The narrowest index type: drawing and gathering 16-bit indices is what makes 10,000 draws of
  # 5,000 groups take tenths of a second.
  dtype = np.uint16 if count <= 1 << 16 else np.uint32 if count <= 1 << 32 else np.int64
  equal_sizes = bool(np.all(sizes == sizes[0]))
  out = np.empty(n_boot)
  chunk = max(1, _CHUNK_ENTRIES // count)
  for start in range(0, n_boot, chunk):
    n = min(chunk, n_boot - start)
    drawn = rng.integers(0, count, size=(n, count), dtype=dtype)
    total = np.take(group_sums, drawn).sum(1)
    out[start:start + n] = total / (count * sizes[0] if equal_sizes
                                    else np.take(sizes, drawn).sum(1))
  return out
