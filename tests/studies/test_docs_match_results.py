"""The scaling studies' numbers in the docs, checked against the committed results.json files.

Each figure the README and experiments/README.md quote from a committed run is recomputed here
from that run's `docs/scaling/<run>/results.json`, and must appear in the text as written: a
re-run that changes a result fails this test until the prose follows the data.
"""

import json
import os
import re

import pytest
from scipy import stats

ROOT = os.path.join(os.path.dirname(__file__), '..', '..')


def _results(run: str) -> list[dict]:
  with open(os.path.join(ROOT, 'docs', 'scaling', run, 'results.json')) as f:
    return json.load(f)


def _text(path: str) -> str:
  with open(os.path.join(ROOT, path), encoding='utf-8') as f:
    return ' '.join(f.read().split())  # Line breaks in prose are spaces.


def _percent(value: float) -> str:
  return f'{100 * value:.1f}'


def _per_seed(record: dict) -> list[float]:
  return [seed['top1'] for seed in record['per_seed']]


def _curve(results: list[dict], series: str, phi: float) -> dict:
  return next(r for r in results if r['series'] == series and r['phi'] == phi)


@pytest.fixture(scope='module')
def readme() -> str:
  return _text('README.md')


def test_readme_search_ranges(readme):
  results = _results('digits_search_3seeds')
  top1 = [r['top1'] for r in results]
  assert f'reach {_percent(min(top1))}–{_percent(max(top1))}% (3 seeds)' in readme
  ratios = [r['flops_ratio'] for r in results]
  assert f'run at {min(ratios):.2f}–{max(ratios):.2f}× measured FLOPs' in readme
  assert f'from {min(ratios):.2f}× to {max(ratios):.2f}×' in readme
  ranked = sorted(top1, reverse=True)
  assert ranked[0] == ranked[1] and 'the top two tie on the mean' in readme


# Resolution-only at φ = 1 scored the same on all three seeds: scipy warns about the zero spread.
@pytest.mark.filterwarnings('ignore:Precision loss occurred')
def test_readme_detail_curve_and_its_p_values(readme):
  results = _results('digits_curves_detail')
  base = _curve(results, 'compound', 0.0)
  res1, res2 = _curve(results, 'resolution', 1.0), _curve(results, 'resolution', 2.0)
  chain = ' → '.join(_percent(r['top1']) for r in (base, res1, res2))
  assert f'resolution-only goes {chain}%' in readme
  p_values = [stats.ttest_ind(_per_seed(base), _per_seed(r), equal_var=False).pvalue
              for r in (res1, res2)]
  assert f'(Welch p = {p_values[0]:.2f} and {p_values[1]:.2f} against the baseline)' in readme
  compound = [stats.ttest_ind(_per_seed(r), _per_seed(_curve(results, 'compound', r['phi'])),
                              equal_var=False).pvalue for r in (res1, res2)]
  low, high = sorted(compound)
  assert f'compound trails resolution-only at p = {low:.2f}–{high:.2f}' in readme
  assert all(_curve(results, 'compound', phi)['top1'] < _curve(results, 'resolution', phi)['top1']
             for phi in (1.0, 2.0))


def test_readme_1200_step_curve_range(readme):
  top1 = [r['top1'] for r in _results('digits_curves_converged')]
  assert f'the 1,200-step one-seed curves (`docs/scaling/digits_curves_converged/`) span ' \
         f'{_percent(min(top1))}–{_percent(max(top1))}%' in readme


def test_experiments_readme_detail_table():
  text = _text('experiments/README.md')
  text = text[text.index('**With resolution carrying information**'):]  # The `:detail` table.
  results = _results('digits_curves_detail')
  for label, series in (('compound (α, β, γ)', 'compound'), ('width only', 'width'),
                        ('depth only', 'depth'), ('resolution only', 'resolution')):
    row = re.search(rf'\| {re.escape(label)} \|([^|]*)\|([^|]*)\|([^|]*)\|', text)
    assert row, label
    for phi, cell in zip((0.0, 1.0, 2.0), row.groups()):
      record = _curve(results, 'compound' if phi == 0.0 else series, phi)
      assert f'{record["top1"]:.4f} ± {record["top1_std"]:.4f}' in cell, (label, phi, cell)


def test_cluttered_search_figures_in_both_readmes(readme):
  results = _results('cluttered_search_3seeds')
  experiments = _text('experiments/README.md')
  top1 = [r['top1'] for r in results]
  quoted = f'reach {_percent(min(top1))}–{_percent(max(top1))}% (means'
  assert quoted in readme and quoted in experiments
  best, runner_up = sorted(results, key=lambda r: -r['top1'])[:2]
  [claim] = best['comparisons']
  low, high = claim['interval']
  lead = (f"+{100 * claim['difference']:.2f} points, 95% interval "
          f"[{100 * low:+.2f}, {100 * high:+.2f}]".replace('-', '−'))
  assert claim['verdict'] == 'inconclusive' and 'inconclusive' in readme
  assert lead in readme and lead in experiments
  paper = next(r for r in results if (r['alpha'], r['beta'], r['gamma']) == (1.2, 1.1, 1.15))
  assert f"{_percent(paper['top1'])} ± {_percent(paper['top1_std'])}%" in readme
  spread = sorted(s['top1'] for s in min(results, key=lambda r: r['top1'])['per_seed'])
  assert f'{_percent(spread[0])}–{_percent(spread[-1])}%' in readme


def _points(value: float, sign: bool = True) -> str:
  return f'{100 * value:{"+" if sign else ""}.2f}'.replace('-', '−')


def _interval(claim: dict) -> str:
  low, high = claim['interval']
  return f'[{_points(low)}, {_points(high)}]'


def test_cluttered_curves_table_and_every_claim_in_experiments_readme():
  results = _results('cluttered_curves_3seeds')
  experiments = _text('experiments/README.md')
  for record in results:
    cell = (f"{_percent(record['top1'])} ± {_percent(record['top1_std'])}% "
            f"({'loss ' if record['phi'] == 0 else ''}{record['train_loss_end']:.2f})")
    assert cell in experiments, (record['series'], record['phi'], cell)
  claims = [c for r in results for c in r.get('comparisons') or []]
  assert len(claims) == 15
  for claim in claims:
    assert _points(claim['difference']) in experiments, claim['claim']
    assert _interval(claim) in experiments, claim['claim']


def test_cluttered_curves_verdicts_in_both_readmes(readme):
  results = _results('cluttered_curves_3seeds')
  experiments = _text('experiments/README.md')
  claims = [c for r in results for c in r.get('comparisons') or []]
  compound = [c for c in claims if c['claim'].startswith('compound')]
  verdicts = [c['verdict'] for c in compound]
  words = {0: 'none', 1: 'one', 8: 'eight', 9: 'nine'}
  summary = (f"Of {words[len(compound)]} comparisons {words[verdicts.count('supported')]} is "
             f"supported")
  assert summary in readme and summary in experiments
  assert f"{words[verdicts.count('inconclusive')]} are inconclusive" in experiments
  assert verdicts.count('contradicted') == 0 and 'none contradicted' in readme
  [supported] = [c for c in compound if c['verdict'] == 'supported']
  quoted = f'{_points(supported["difference"])} points, 95% interval {_interval(supported)}'
  assert quoted in readme and quoted in experiments
  for series in ('width', 'resolution'):
    [better] = [c for c in claims if c['claim'].startswith(f'{series}-only scaling at φ = 3 beats')]
    assert better['verdict'] == 'supported'
    assert f'{_points(better["difference"])} points' in readme
  saturation = [c for c in claims if 'saturates' in c['claim']]
  assert {c['verdict'] for c in saturation} == {'inconclusive'}
  assert 'inconclusive for all three' in readme and 'inconclusive for all three' in experiments
  for series in ('compound', 'resolution'):
    assert f"{_percent(_curve(results, series, 3.0)['top1'])}%" in readme
  depth = _curve(results, 'depth', 3.0)
  assert f"{_percent(depth['top1'])} ± {_percent(depth['top1_std'])}%" in readme
  assert f"end train loss {depth['train_loss_end']:.2f}" in readme


def test_committed_top1_intervals_stay_inside_0_and_1():
  runs = [run for run in os.listdir(os.path.join(ROOT, 'docs', 'scaling'))
          if os.path.isfile(os.path.join(ROOT, 'docs', 'scaling', run, 'results.json'))]
  assert 'cluttered_curves_3seeds' in runs
  for run in runs:
    for record in _results(run):
      if record.get('top1_interval'):
        low, high = record['top1_interval']
        assert 0.0 <= low <= record['top1'] <= high <= 1.0, (run, record['trial'])


def _fig4_claims() -> list[dict]:
  return [c for r in _results('cluttered_fig4_3seeds') for c in r.get('comparisons') or []]


def test_cluttered_fig4_table_in_experiments_readme():
  results = sorted(_results('cluttered_fig4_3seeds'), key=lambda r: r['trial'])
  experiments = _text('experiments/README.md')
  assert len(results) == 12 and all(len(r['per_seed']) == 3 for r in results)
  for curve in range(4):
    narrow, middle, wide = results[3 * curve:3 * curve + 3]
    cells = ' | '.join(f"{_percent(r['top1'])} ± {_percent(r['top1_std'])}% "
                       f"({r['train_loss_end']:.2f})" for r in (narrow, middle, wide))
    assert f'| {cells} | {_points(wide["top1"] - narrow["top1"])} points |' in experiments, curve
  ratios = [r['flops_ratio'] for r in results]
  mflops = [r['flops'] / 1e6 for r in results]
  assert (f'{min(mflops):.2f}–{max(mflops):.2f} MFLOPs (1× to {max(ratios):.2f}× the baseline'
          in experiments)
  widest = [results[3 * c + 2]['train_loss_end'] for c in range(4)]
  assert f'train loss of {min(widest):.2f}–{max(widest):.2f}' in experiments


def test_cluttered_fig4_verdicts_in_both_readmes(readme):
  experiments = _text('experiments/README.md')
  claims = _fig4_claims()
  assert len(claims) == 3 and {c['verdict'] for c in claims} == {'inconclusive'}
  assert 'inconclusive in all three comparisons' in readme
  assert 'inconclusive in all three comparisons' in experiments
  for claim in claims:
    quoted = f"{_points(claim['difference'])} points, 95% interval {_interval(claim)}"
    short = f"{_points(claim['difference'])} {_interval(claim)}"
    assert quoted in readme or short in readme, claim['claim']
    assert quoted in experiments or short in experiments, claim['claim']
  # The unfinished seeds the docs name: the lowest seed of each narrow 24-px model.
  results = {r['trial']: r for r in _results('cluttered_fig4_3seeds')}
  for trial in (0, 6):
    low = min(results[trial]['per_seed'], key=lambda s: s['top1'])
    assert f"{_percent(low['top1'])}%" in readme and f"{low['train_loss_end']:.2f}" in readme
    assert (f"seed {low['seed_index']} at {_percent(low['top1'])}%" in experiments and
            f"{low['train_loss_end']:.2f}" in experiments)
  base = results[2]['top1'] - results[0]['top1']
  assert f'gains {_points(base)} points at the baseline' in readme
  # The 32-px curves start higher, and gain less on the means, than the baseline's.
  narrow = [results[t]['top1'] for t in (3, 9)]
  assert f'narrowest models already reach {_percent(narrow[0])}% and {_percent(narrow[1])}%' \
      in experiments
  assert all(results[t + 2]['top1'] - results[t]['top1'] < base for t in (3, 9))
