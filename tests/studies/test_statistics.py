"""The intervals and verdicts of studies/statistics.py, and the comparisons built on them.

Simulated data: two models' per-example correctness, each example i correct when
mu + u_i + v_g(i) + a_s + e_si > 0 (probit): u the image's difficulty (shared by the models, so
pairing helps), v a per-model effect of the example's group (correlated examples), a a per-model
seed effect, e per-(seed, example) noise. The true difference of expected top-1 is known in
closed form, so coverage is measured against it.
"""

import math
import time

import numpy as np
import pytest

from efficientnet_jax.studies import comparisons
from efficientnet_jax.studies import report
from efficientnet_jax.studies import statistics


def _phi(x):
  return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _simulate(rng, seeds=3, examples=360, mu=(2.5, 2.3), seed_sd=0.1, group_size=1,
              group_sd=0.0):
  """(correct_a, correct_b, groups, true difference) of the model above."""
  groups = np.repeat(np.arange(examples // group_size), group_size)
  u = rng.normal(0, 1, examples)
  out = []
  for m in mu:
    v = rng.normal(0, group_sd, examples // group_size)[groups]
    a = rng.normal(0, seed_sd, (seeds, 1))
    out.append(m + u + v + a + rng.normal(0, 1, (seeds, examples)) > 0)
  scale = math.sqrt(2 + seed_sd ** 2 + group_sd ** 2)
  return out[0], out[1], groups, _phi(mu[0] / scale) - _phi(mu[1] / scale)


def test_the_interval_covers_the_true_difference_at_about_the_nominal_rate():
  rng = np.random.default_rng(0)
  for seeds, seed_sd in ((3, 0.1), (3, 0.3), (5, 0.3)):  # Seed variance small to dominant.
    covered = 0
    for replication in range(150):
      a, b, _, true = _simulate(rng, seeds=seeds, seed_sd=seed_sd)
      estimate = statistics.paired_bootstrap(a, b, n_boot=400, seed=replication)
      covered += estimate.low <= true <= estimate.high
    # 95% nominal; 150 replications: a standard error of 1.8 points.
    assert 0.89 <= covered / 150 <= 0.995, (seeds, seed_sd, covered)


def test_groups_widen_the_interval_when_examples_of_a_group_are_correlated():
  # One seed: the test-set part alone (with three, the seeds' t part is most of the width).
  rng = np.random.default_rng(1)
  a, b, groups, _ = _simulate(rng, seeds=1, examples=1000, mu=(1.5, 1.3), group_size=5,
                              group_sd=1.0)
  grouped = statistics.paired_bootstrap(a, b, groups=groups, n_boot=2000)
  single = statistics.paired_bootstrap(a, b, n_boot=2000)
  assert grouped.value == single.value and grouped.groups == 200 and single.groups == 1000
  assert grouped.high - grouped.low > 1.2 * (single.high - single.low)
  # Group ids are labels: any integers, in any order, give the same draws.
  relabelled = statistics.paired_bootstrap(a, b, groups=groups * 7 + 3, n_boot=2000)
  assert relabelled == grouped


def test_identical_models_are_inconclusive_and_a_large_effect_decides_by_its_sign():
  rng = np.random.default_rng(2)
  a, b, _, _ = _simulate(rng, seeds=3, mu=(1.0, 0.0))
  same = statistics.paired_bootstrap(a, a)
  assert same.value == 0 and same.low <= 0 <= same.high and same.p_value == 1.0
  assert statistics.verdict(same.interval, +1) == 'inconclusive'
  better = statistics.paired_bootstrap(a, b)
  assert better.low > 0 and better.p_value < 0.01
  assert statistics.verdict(better.interval, +1) == 'supported'
  assert statistics.verdict(better.interval, -1) == 'contradicted'
  worse = statistics.paired_bootstrap(b, a)
  assert worse.value == -better.value and worse.high < 0
  assert statistics.verdict(worse.interval, +1) == 'contradicted'
  assert statistics.verdict(worse.interval, -1) == 'supported'
  assert statistics.verdict((0.0, 0.1), +1) == 'inconclusive'  # An end at 0 decides nothing.
  # A difference of differences: `contrast`, with `paired_bootstrap` as its two-term case.
  assert statistics.contrast([a, b], [1, -1]) == better
  assert statistics.contrast([a, b, b, a], [1, -1, -1, 1]).value == pytest.approx(
      2 * better.value)


def test_a_models_own_interval_and_what_one_seed_leaves_out():
  rng = np.random.default_rng(3)
  a, _, _, _ = _simulate(rng, seeds=3)
  one = statistics.top1_interval(a)
  assert one.value == pytest.approx(a.mean()) and one.low < a.mean() < one.high
  assert one.seeds == 3 and one.examples == 360 and 0.9 < one.low
  # One seed: the test images alone (the binomial-like interval of one run).
  single = statistics.top1_interval(a[:1])
  p = a[0].mean()
  assert single.high - single.low == pytest.approx(
      2 * 1.96 * math.sqrt(p * (1 - p) / 360), rel=0.15)


def test_a_top1_interval_stays_inside_0_and_1_while_a_difference_is_not_clipped():
  # Three seeds at 0.99, 0.80, 0.99: the t-interval over seeds reaches past 1.
  correct = np.zeros((3, 200))
  correct[0, :198] = correct[2, :198] = 1
  correct[1, :160] = 1
  top1 = statistics.top1_interval(correct)
  assert top1.high == 1.0 and 0.0 <= top1.low < top1.value
  difference = statistics.contrast([correct, np.zeros_like(correct)], [1, -1])
  assert difference.high > 1.0  # The same draws, unclipped: the cut is the top-1's range only.


def test_the_draws_are_deterministic_given_the_seed_and_fast():
  rng = np.random.default_rng(4)
  a = rng.random((5, 5000)) < 0.8
  b = rng.random((5, 5000)) < 0.79
  start = time.perf_counter()
  first = statistics.paired_bootstrap(a, b)
  elapsed = time.perf_counter() - start
  assert first == statistics.paired_bootstrap(a, b)
  assert first != statistics.paired_bootstrap(a, b, seed=1)
  assert first.n_boot == 10_000 and first.level == 0.95
  # 10,000 draws of 5 seeds × 5,000 examples: ~0.3 s on one idle core; loose for loaded CI.
  assert elapsed < 5, elapsed


def test_bad_inputs_are_one_line_value_errors():
  a = np.ones((3, 10), bool)
  cases = [
      (lambda: statistics.paired_bootstrap(a, a[:2]), 'must have one shape'),
      (lambda: statistics.paired_bootstrap(a[0], a[0]), r'\[seeds, examples\]'),
      (lambda: statistics.top1_interval(np.ones((1, 1))), 'nothing to resample'),
      (lambda: statistics.top1_interval(np.ones((1, 4)), groups=[5, 5, 5, 5]),
       'nothing to resample'),
      (lambda: statistics.paired_bootstrap(a, a, groups=[0, 1]), 'one id per example'),
      (lambda: statistics.paired_bootstrap(a, a, n_boot=0), 'n_boot'),
      (lambda: statistics.top1_interval(np.full((2, 2), np.nan)), 'NaN'),
      (lambda: statistics.contrast([a, a], [1]), 'one weight per array'),
      (lambda: statistics.verdict((-1, 1), 0), 'claim_direction'),
  ]
  for call, message in cases:
    with pytest.raises(ValueError, match=message) as error:
      call()
    assert '\n' not in str(error.value)


# --- Comparisons: claims tested from saved predictions -------------------------------------------

def _search_records(values, with_seeds=3):
  return [{'trial': k, 'alpha': 1.0, 'beta': 1.0 + 0.4 * k, 'gamma': 1.0, 'top1': v,
           'per_seed': [{'seed_index': s} for s in range(with_seeds)]}
          for k, v in enumerate(values)]


def test_comparisons_from_predictions_and_without_them():
  rng = np.random.default_rng(5)
  a, b, _, _ = _simulate(rng, seeds=3, mu=(1.5, 0.5))
  labels = np.arange(360) % 10
  saved = {(0, s): {'labels': labels, 'top1': a[s].astype(np.uint8)} for s in range(3)}
  saved.update({(1, s): {'labels': labels, 'top1': b[s].astype(np.uint8)} for s in range(3)})
  records = _search_records([a.mean(), b.mean()])
  claims = comparisons.search_claims(records, 'top1')
  assert [c.terms for c in claims] == [((0, 1.0), (1, -1.0))]

  def load(trial, seed_index):
    return saved.get((trial, seed_index))

  merged = comparisons.add_to_records(records, 'top1', load, claims, n_boot=1000)
  [comparison] = merged[0]['comparisons']
  assert comparison['verdict'] == 'supported' and comparison['note'] is None
  assert comparison['difference'] == pytest.approx(a.mean() - b.mean())
  assert comparison['seeds'] == [0, 1, 2] and comparison['groups'] == 360
  assert merged[1]['top1_interval'][0] < b.mean() < merged[1]['top1_interval'][1]
  # The report reads it back: the runner-up line and the claims table.
  assert report.search_comparisons(merged, 'top1') == [comparison]
  assert report.lead_line(merged).endswith('test units: supported')
  assert '| supported |' in report.comparison_table([comparison])
  # Read for another metric than the merge's: no interval, and the note says which it has.
  [other] = report.search_comparisons([{**r, 'ema_top1': r['top1']} for r in merged], 'ema_top1')
  assert other['interval'] is None and 'computed at the merge for top1, not ema_top1' in (
      other['note'])

  # Without predictions (results saved before them): the difference, no interval, no verdict.
  [bare] = report.search_comparisons(records, 'top1')
  assert bare['interval'] is None and bare['verdict'] is None
  assert bare['note'] == comparisons.NO_PREDICTIONS == (
      'no per-example predictions: interval not available')
  assert report.lead_line(records).endswith(': no per-example predictions: interval not '
                                            'available')
  # One seed: an interval over the test images, but no verdict beyond inconclusive.
  one = comparisons.compare(claims, _search_records([a[0].mean(), b[0].mean()], 1), 'top1',
                            load, n_boot=1000)[0]
  assert one['interval'][0] > 0 and one['verdict'] == 'inconclusive'
  assert one['note'] == comparisons.ONE_SEED
  # A seed without predictions: the others are used, and the note says so.
  del saved[(1, 2)]
  partial = comparisons.compare(claims, records, 'top1', load, n_boot=1000)[0]
  assert partial['seeds'] == [0, 1] and 'on seeds [0, 1] only' in partial['note']
  # Two test sets: no pairing, no interval.
  saved[(1, 2)] = {'labels': labels[::-1], 'top1': b[2].astype(np.uint8)}
  assert 'different test examples' in comparisons.compare(claims, records, 'top1', load)[0][
      'note']


def test_curves_and_width_claims_name_the_papers_comparisons():
  curves = [{'trial': k, 'series': s, 'phi': p} for k, (s, p) in enumerate(
      [('compound', 0.0), ('compound', 1.0), ('width', 1.0), ('depth', 1.0),
       ('resolution', 1.0)])]
  claims = comparisons.curves_claims(curves, 'top1')
  assert [c.terms for c in claims[:3]] == [((1, 1.0), (k, -1.0)) for k in (2, 3, 4)]
  assert claims[0].text.startswith('compound scaling beats width-only scaling at φ = 1')
  # One φ per single dimension: each improves on the baseline; no saturation claim yet.
  assert [c.terms for c in claims[3:]] == [((k, 1.0), (0, -1.0)) for k in (2, 3, 4)]
  assert claims[3].text.startswith('width-only scaling at φ = 1 beats the baseline')


def test_saturation_claims_compare_the_first_and_last_step_per_unit_of_phi():
  # Width at φ = 1, 2, 4 (trials 1–3), depth at φ = 1 only (trial 4); trial 0 the baseline.
  records = [{'trial': k, 'series': s, 'phi': p} for k, (s, p) in enumerate(
      [('compound', 0.0), ('width', 1.0), ('width', 2.0), ('width', 4.0), ('depth', 1.0)])]
  improve, saturate, depth = comparisons.saturation_claims(records)
  assert improve.terms == ((3, 1.0), (0, -1.0)) and improve.attach_to == 3
  assert saturate.terms == ((1, 1.0), (0, -1.0), (3, -0.5), (2, 0.5))
  assert saturate.direction == 1 and saturate.text.startswith(
      'width-only scaling saturates: φ = 2 → 4 gains less per unit of φ than φ = 0 → 1')
  assert depth.terms == ((4, 1.0), (0, -1.0))
  # A curve that keeps its gain (linear in φ) makes the saturation sum zero, a concave one positive.
  top1 = {0: 0.80, 1: 0.85, 2: 0.90, 3: 1.00}
  assert sum(w * top1[t] for t, w in saturate.terms) == pytest.approx(0.0)
  top1[3] = 0.92
  assert sum(w * top1[t] for t, w in saturate.terms) > 0
  assert comparisons.saturation_claims(records[1:]) == []  # No baseline, no claim.
  width = [{'trial': k, 'depth_coefficient': d, 'resolution_coefficient': r,
            'width_coefficient': w} for k, (d, r, w) in enumerate(
                [(1, 1, 1), (1, 1, 2), (2, 1.3, 1), (2, 1.3, 2)])]
  [claim] = comparisons.width_claims(width, 'top1')
  assert claim.terms == ((3, 1.0), (2, -1.0), (1, -1.0), (0, 1.0)) and claim.attach_to == 3
