"""What each study claims, and what its results say about it: difference, 95% interval, verdict.

A claim is a sign: a weighted sum of trials' top-1 (a difference, or a difference of
differences) that the paper says is positive. The studies test these:

* the compound search (`search_claims`): the best triple, by the mean of the ranking metric,
  beats the runner-up. The two were picked as the first two on these same test images, so the
  difference is biased upward (the winner's curse) and 'supported' is the most it can say, not
  how large the lead is;
* the scaling curves (`curves_claims`, paper Fig. 3 and Table 7): at each φ > 0, compound scaling
  beats each single-dimension scaling solved to the compound model's measured FLOPs; and each
  single dimension improves on the baseline but saturates (`saturation_claims`);
* Fig. 4 (`width_claims`): width saturates sooner at the baseline's depth and resolution, read
  as: widening from the narrowest to the widest w gains more on each other (d, r) curve than on
  the baseline's (the first pair, (1, 1) in the paper's list).

`compare` evaluates claims from each seed's per-example correctness (`sweep.read_predictions`,
saved by `sweep.run_trial` in predictions.npz) with `statistics.contrast`: the interval over
seeds and test images, and the verdict ('supported', 'contradicted', 'inconclusive'). Results
that predate the predictions (the digits studies under docs/scaling/) still get the difference,
from the records' means, and say 'no per-example predictions: interval not available' instead
of an interval. With one seed the interval covers the test images only, not the seed-to-seed
variance (as large as these differences on the digits proxy), so the verdict is 'inconclusive'
whatever the interval, and the note says why.

`sweep.merge` stores each claim's comparison in results.json, in the record of the trial the
claim is about (`Claim.attach_to`: the best triple, the compound model, the widest model of the
(d, r) curve) under 'comparisons', and each record's own interval as '<metric>_interval';
`report.py` tables them (`stored` finds them again, or says why there are none).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from efficientnet_jax.studies import statistics

Record = Mapping[str, Any]
# (trial id, seed index) -> that seed's predictions.npz arrays, or None.
Loader = Callable[[int, int], Mapping[str, np.ndarray] | None]
COMPARISONS = 'comparisons'
INTERVAL_SUFFIX = '_interval'
NO_PREDICTIONS = 'no per-example predictions: interval not available'
ONE_SEED = ('one seed: the interval covers the test images only, not the seed-to-seed variance, '
            'so it cannot decide the claim')
_SERIES = ('compound', 'width', 'depth', 'resolution')


@dataclasses.dataclass(frozen=True)
class Claim:
  """A claim that Σ weight·metric over some trials has the sign `direction`.

  Attributes:
    text: the claim in words (names the trials; with the metric, its key in results.json).
    terms: (trial id, weight) pairs.
    direction: +1 (the sum is claimed positive) or −1.
    attach_to: the trial whose record in results.json carries the comparison.
  """
  text: str
  terms: tuple[tuple[int, float], ...]
  direction: int
  attach_to: int


def search_claims(records: Sequence[Record], metric: str) -> list[Claim]:
  """The best trial (highest mean `metric`, lower id on ties) beats the runner-up."""
  if len(records) < 2:
    return []
  best, runner_up = sorted(records, key=lambda r: (-_mean(r, metric), r['trial']))[:2]
  return [Claim(f'the best, trial {best["trial"]} ({_triple(best)}), beats the runner-up, '
                f'trial {runner_up["trial"]} ({_triple(runner_up)})',
                ((best['trial'], 1.0), (runner_up['trial'], -1.0)), 1, best['trial'])]


def curves_claims(records: Sequence[Record], metric: str) -> list[Claim]:
  """Paper Fig. 3: each single dimension improves and saturates; compound beats each of them.

  At each φ > 0, compound scaling beats each single dimension solved to the compound model's
  FLOPs; then, per single dimension, `saturation_claims`.
  """
  del metric  # The claims do not depend on which figure is compared.
  by_key = {(r['series'], r['phi']): r for r in records}
  claims = []
  for phi in sorted({r['phi'] for r in records if r['series'] == 'compound' and r['phi'] > 0}):
    compound = by_key[('compound', phi)]
    for series in _SERIES[1:]:
      single = by_key.get((series, phi))
      if single is not None:
        # Rounding keeps some single-dimension models off the budget (up to 15% on digits):
        # the claim names how far, instead of calling the FLOPs equal.
        off = (f', FLOPs {single["flops"] / compound["flops"] - 1.0:+.1%} off the compound '
               "model's" if single.get('flops') and compound.get('flops') else '')
        claims.append(Claim(
            f'compound scaling beats {series}-only scaling at φ = {phi:g} (trial '
            f'{compound["trial"]} vs {single["trial"]}{off})',
            ((compound['trial'], 1.0), (single['trial'], -1.0)), 1, compound['trial']))
  return claims + saturation_claims(records)


def saturation_claims(records: Sequence[Record]) -> list[Claim]:
  """Per single dimension: scaling it up improves accuracy, but the gain diminishes (Fig. 3).

  Read as two signs on each series' curve from the baseline (the compound series at φ = 0):
  its largest φ beats the baseline; and the last step of the curve gains less per unit of φ than
  the first (each unit of φ doubles the budget, so equal steps in φ are equal steps in log
  FLOPs). Series with fewer than two φ > 0 make only the first claim.
  """
  by_key = {(r['series'], r['phi']): r for r in records}
  base = by_key.get(('compound', 0.0))
  if base is None:
    return []
  claims = []
  for series in _SERIES[1:]:
    phis = [0.0] + sorted(p for s, p in by_key if s == series and p > 0)
    if len(phis) < 2:
      continue
    curve = [base] + [by_key[(series, p)] for p in phis[1:]]
    top = curve[-1]
    claims.append(Claim(
        f'{series}-only scaling at φ = {phis[-1]:g} beats the baseline (trial {top["trial"]} '
        f'vs {base["trial"]})', ((top['trial'], 1.0), (base['trial'], -1.0)), 1, top['trial']))
    if len(phis) < 3:
      continue
    first, last = phis[1] - phis[0], phis[-1] - phis[-2]
    claims.append(Claim(
        f'{series}-only scaling saturates: φ = {phis[-2]:g} → {phis[-1]:g} gains less per unit '
        f'of φ than φ = 0 → {phis[1]:g} (trials {curve[-2]["trial"]} → {top["trial"]} vs '
        f'{base["trial"]} → {curve[1]["trial"]})',
        ((curve[1]['trial'], 1.0 / first), (base['trial'], -1.0 / first),
         (top['trial'], -1.0 / last), (curve[-2]['trial'], 1.0 / last)), 1, top['trial']))
  return claims


def width_claims(records: Sequence[Record], metric: str) -> list[Claim]:
  """Widening gains more on each (d, r) curve than on the baseline's (paper Fig. 4).

  The baseline curve is the first (d, r) in trial order; each curve's gain is its widest model's
  metric minus its narrowest's. Curves of one width make no claim.
  """
  del metric
  curves: dict[tuple[float, float], list[Record]] = {}
  for r in sorted(records, key=lambda r: r['trial']):
    curves.setdefault((r['depth_coefficient'], r['resolution_coefficient']), []).append(r)
  curves = {k: sorted(v, key=lambda r: r['width_coefficient']) for k, v in curves.items()}
  (d0, r0), base = next(iter(curves.items()), ((None, None), []))
  if len(base) < 2:
    return []
  claims = []
  for (d, r), curve in list(curves.items())[1:]:
    if len(curve) < 2:
      continue
    narrow, wide = curve[0], curve[-1]
    claims.append(Claim(
        f'widening w = {narrow["width_coefficient"]:g} → {wide["width_coefficient"]:g} gains '
        f'more at d={d:g}, r={r:g} (trials {narrow["trial"]} → {wide["trial"]}) than at '
        f'd={d0:g}, r={r0:g} (trials {base[0]["trial"]} → {base[-1]["trial"]})',
        ((wide['trial'], 1.0), (narrow['trial'], -1.0), (base[-1]['trial'], -1.0),
         (base[0]['trial'], 1.0)), 1, wide['trial']))
  return claims


def compare(claims: Sequence[Claim], records: Sequence[Record], metric: str,
            load: Loader | None, n_boot: int = statistics.N_BOOT,
            seed: int = 0) -> list[dict[str, Any]]:
  """Each claim's comparison (a JSON-ready dict), from the seeds' predictions where `load` has them.

  Returns, per claim: 'claim', 'metric', 'terms' ([trial, weight] pairs), 'direction',
  'difference' (Σ weight·metric: over the seeds used when an interval is computed, else over
  the records' means), 'interval' ([low, high] or None), 'p_value', 'verdict' (None without an
  interval), 'seeds' (the seed indices used), 'examples', 'groups' and 'note' (why there is no
  interval or verdict, or which seeds were left out; None otherwise).
  """
  by_trial = {r['trial']: r for r in records}
  out = []
  for claim in claims:
    terms = [(by_trial[t], w) for t, w in claim.terms]
    comparison = {'claim': claim.text, 'metric': metric,
                  'terms': [[t, w] for t, w in claim.terms], 'direction': claim.direction,
                  'difference': _sum(terms, metric), 'interval': None, 'p_value': None,
                  'verdict': None, 'seeds': None, 'examples': None, 'groups': None,
                  'note': NO_PREDICTIONS}
    arrays = _aligned([r for r, _ in terms], metric, load)
    if isinstance(arrays, str):
      comparison['note'] = arrays
    elif arrays is not None:
      seeds, matrices, groups, left_out = arrays
      estimate = statistics.contrast(matrices, [w for _, w in terms], groups, n_boot, seed)
      decided = len(seeds) > 1
      comparison.update(
          difference=estimate.value, interval=[estimate.low, estimate.high],
          p_value=estimate.p_value, seeds=seeds, examples=estimate.examples,
          groups=estimate.groups,
          verdict=(statistics.verdict(estimate.interval, claim.direction) if decided
                   else statistics.INCONCLUSIVE),
          note=ONE_SEED if not decided else (
              f'on seeds {seeds} only: {left_out} have no per-example predictions'
              if left_out else None))
    out.append(comparison)
  return out


def add_to_records(records: Sequence[Record], metric: str, load: Loader,
                   claims: Sequence[Claim] = (), n_boot: int = statistics.N_BOOT,
                   seed: int = 0) -> list[dict[str, Any]]:
  """The records with each one's `<metric>_interval` and the claims' comparisons attached.

  A record's interval ([low, high] of its mean `metric`: `statistics.top1_interval` over its
  seeds and test images) is there when every seed of it has predictions.
  """
  records = [dict(r) for r in records]
  for record in records:
    arrays = _aligned([record], metric, load)
    if arrays is not None and not isinstance(arrays, str) and not arrays[3]:
      seeds, [matrix], groups, _ = arrays
      units = matrix.shape[1] if groups is None else len(np.unique(groups))
      if len(seeds) > 1 or units > 1:  # Else nothing varies: no interval.
        estimate = statistics.top1_interval(matrix, groups, n_boot, seed)
        record[metric + INTERVAL_SUFFIX] = [estimate.low, estimate.high]
  by_trial = {r['trial']: r for r in records}
  for claim, comparison in zip(claims, compare(claims, records, metric, load, n_boot, seed)):
    by_trial[claim.attach_to].setdefault(COMPARISONS, []).append(comparison)
  return records


def stored(claims: Sequence[Claim], records: Sequence[Record], metric: str) -> list[dict]:
  """Each claim's comparison as results.json holds it, or, where it holds none (results written
  before the predictions, or another metric), the comparison without predictions: the
  difference of the means and `NO_PREDICTIONS`."""
  by_trial = {r['trial']: r for r in records}
  merged_for = sorted({c['metric'] for r in records for c in r.get(COMPARISONS) or []})
  out = []
  for claim in claims:
    saved = [c for c in by_trial[claim.attach_to].get(COMPARISONS) or []
             if c['claim'] == claim.text and c['metric'] == metric]
    if saved:
      out.append(saved[0])
      continue
    comparison = compare([claim], records, metric, None)[0]
    if merged_for and metric not in merged_for:  # Predictions exist; merged for another metric.
      comparison['note'] = (f'intervals were computed at the merge for {", ".join(merged_for)}, '
                            f'not {metric}: interval not available')
    out.append(comparison)
  return out


def _aligned(records: Sequence[Record], metric: str, load: Loader | None):
  """The records' correctness on the seed indices all of them have predictions for.

  Returns None (no predictions at all), a note (str: they cannot be paired), or (seed indices,
  one [seeds, examples] array per record, the group ids or None, the seed indices left out).
  """
  if load is None:
    return None
  per_record = []
  for record in records:
    rows = {}
    for seed_index in _seed_indices(record):
      data = load(record['trial'], seed_index)
      if data is not None and metric in data:
        rows[seed_index] = data
    per_record.append(rows)
  every = sorted(set().union(*(_seed_indices(r) for r in records)))
  seeds = [s for s in every if all(s in rows for rows in per_record)]
  if not seeds:
    return None
  first = per_record[0][seeds[0]]
  for rows in per_record:
    for s in seeds:
      if not np.array_equal(rows[s]['labels'], first['labels']):
        return 'evaluated on different test examples: interval not available'
      if not np.array_equal(rows[s].get('groups', -1), first.get('groups', -1)):
        return 'different test groups: interval not available'
  matrices = [np.stack([rows[s][metric] for s in seeds]) for rows in per_record]
  return seeds, matrices, first.get('groups'), [s for s in every if s not in seeds]


def _seed_indices(record: Record) -> list[int]:
  return [s['seed_index'] for s in record.get('per_seed') or [{'seed_index': 0}]]


def _mean(record: Record, metric: str) -> float:
  value = record.get(metric)
  return float('-inf') if value is None else value


def _sum(terms, metric: str) -> float | None:
  values = [(r.get(metric), w) for r, w in terms]
  if any(v is None for v, _ in values):
    return None
  return sum(w * v for v, w in values)


def _triple(record: Record) -> str:
  return ', '.join(f'{k}={record[k]:g}' for k in ('alpha', 'beta', 'gamma') if k in record)
