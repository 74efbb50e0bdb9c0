"""Tables and plots of experiment results (the scripts and the notebook share these).

Records are the dicts of `results.json`. "FLOPs" are multiply-adds per image, as in the paper,
shown in millions (MFLOPs). Plots use `matplotlib.figure.Figure` directly (no pyplot state), so
the scripts need no display and the notebook can pass its own axes.

A record trained with several seeds holds each metric's mean under the metric's name, its sample
std as `<metric>_std` and every seed's figures (`seeds.py`): tables show `mean ± std` and, for
the ranking metric, the per-seed values; plots draw the std as error bars. Records written
before seeds existed read as one seed.

Whether one model beats another is not read from the stds: each study's claims
(`comparisons.py`) are tabled with their difference, its 95% interval over seeds and test images
and a verdict (supported, contradicted or inconclusive), and each trial's own 95% interval is a
column, all as `sweep.merge` computed them from the seeds' per-example predictions. Results
without predictions get the difference and "no per-example predictions: interval not
available".
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

from efficientnet_jax.studies import comparisons as comparisons_lib
from efficientnet_jax.studies import seeds as seeds_lib
from efficientnet_jax.studies import sweep

Record = Mapping[str, Any]
SERIES = ('compound', 'width', 'depth', 'resolution')
_SERIES_STYLE = {'compound': ('C3', 'o', 'compound (α, β, γ)'), 'width': ('C0', 's', 'width only'),
                 'depth': ('C2', '^', 'depth only'), 'resolution': ('C1', 'D', 'resolution only')}


def best(records: Sequence[Record], metric: str = 'top1') -> Record:
  """The record with the highest `metric` (its mean over seeds; the lowest trial id on ties)."""
  return ranked(records, metric)[0]


def ranked(records: Sequence[Record], metric: str = 'top1') -> list[Record]:
  """The records from the highest `metric` down (the lower trial id first on ties)."""
  return sorted(records, key=lambda r: (-r[metric], r['trial']))


def _num(value, digits: int = 4) -> str:
  if value is None:
    return '–'
  return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def _mean_std(record: Record, metric: str, digits: int = 4) -> str:
  """'0.9111 ± 0.0123' (mean ± sample std over seeds), or the plain value for one seed."""
  spread = seeds_lib.std(record, metric)
  text = _num(record.get(metric), digits)
  return text if spread is None else f'{text} ± {spread:.{digits}f}'


def _per_seed(record: Record, metric: str) -> str:
  """The metric's value for each seed, in seed-index order: '0.9111, 0.8972, 0.9028'."""
  return ', '.join(_num(v) for v in seeds_lib.per_seed(record, metric))


def _several_seeds(records: Sequence[Record]) -> bool:
  """Whether any record has more than one seed (else the per-seed column is dropped)."""
  return any(seeds_lib.seed_count(r) > 1 for r in records)


def _has(records: Sequence[Record], field: str) -> bool:
  """Whether any record has a value for `field` (else its column is dropped)."""
  return any(r.get(field) is not None for r in records)


def _drop_column(header: list[str], rows: list[list[str]], name: str):
  i = header.index(name)
  return header[:i] + header[i + 1:], [row[:i] + row[i + 1:] for row in rows]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def search_table(records: Sequence[Record], metric: str = 'top1') -> str:
  """Markdown table of a compound search, one row per trial, the best (by mean) in bold."""
  winner = best(records, metric)['trial']
  header = ['trial', 'α', 'β', 'γ', 'α·β²·γ²', 'width', 'depth', 'res', 'params', 'MFLOPs',
            'measured ×base', 'top-1', 'recal. top-1', 'EMA top-1', _INTERVAL_COLUMN, 'seeds',
            _SEEDS_COLUMN, _LOSS_END_COLUMN, 'train s']
  rows = []
  for r in sorted(records, key=lambda r: r['trial']):
    row = [str(r['trial']), _num(r['alpha'], 2), _num(r['beta'], 2), _num(r['gamma'], 3),
           _num(r['nominal_ratio'], 3), _num(r['width'], 3), _num(r['depth'], 3),
           str(r['resolution']), f'{r["params"]:,}', f'{r["flops"] / 1e6:.2f}',
           _num(r['flops_ratio'], 2), _mean_std(r, 'top1'), _mean_std(r, 'recal_top1'),
           _mean_std(r, 'ema_top1'), _interval(r, metric), str(seeds_lib.seed_count(r)),
           _per_seed(r, metric), _mean_std(r, sweep.TRAIN_LOSS_END, 3),
           _num(r.get('train_seconds'), 0)]
    rows.append([f'**{cell}**' for cell in row] if r['trial'] == winner else row)
  return _table(*_drop_unused(header, rows, records, metric))


def curves_table(records: Sequence[Record], metric: str = 'top1') -> str:
  """Markdown table of the scaling curves, grouped by series, then φ."""
  header = ['series', 'φ', 'coefficient', 'width', 'depth', 'res', 'params', 'MFLOPs',
            'vs budget', 'top-1', 'recal. top-1', 'EMA top-1', _INTERVAL_COLUMN, 'seeds',
            _SEEDS_COLUMN, _LOSS_END_COLUMN, 'train s']
  order = {name: i for i, name in enumerate(SERIES)}
  rows = []
  for r in sorted(records, key=lambda r: (order[r['series']], r['phi'])):
    budget = r.get('flops_vs_budget')
    rows.append([r['series'], f'{r["phi"]:g}', _num(r.get('coefficient'), 3),
                 _num(r['width'], 3), _num(r['depth'], 3), str(r['resolution']),
                 f'{r["params"]:,}', f'{r["flops"] / 1e6:.2f}',
                 '–' if budget is None else f'{budget:+.1%}', _mean_std(r, 'top1'),
                 _mean_std(r, 'recal_top1'), _mean_std(r, 'ema_top1'), _interval(r, metric),
                 str(seeds_lib.seed_count(r)), _per_seed(r, metric),
                 _mean_std(r, sweep.TRAIN_LOSS_END, 3), _num(r.get('train_seconds'), 0)])
  return _table(*_drop_unused(header, rows, records, metric))


def width_table(records: Sequence[Record], metric: str = 'top1') -> str:
  """Markdown table of paper Fig. 4's models: grouped by (depth, resolution), then width."""
  header = ['trial', 'd', 'r', 'w', 'width', 'depth', 'res', 'params', 'MFLOPs',
            'measured ×base', 'top-1', 'recal. top-1', 'EMA top-1', _INTERVAL_COLUMN, 'seeds',
            _SEEDS_COLUMN, _LOSS_END_COLUMN, 'train s']
  rows = []
  for curve in width_curves(records).values():
    for r in curve:
      rows.append([str(r['trial']), f'{r["depth_coefficient"]:g}',
                   f'{r["resolution_coefficient"]:g}', f'{r["width_coefficient"]:g}',
                   _num(r['width'], 3), _num(r['depth'], 3), str(r['resolution']),
                   f'{r["params"]:,}', f'{r["flops"] / 1e6:.2f}', _num(r['flops_ratio'], 2),
                   _mean_std(r, 'top1'), _mean_std(r, 'recal_top1'), _mean_std(r, 'ema_top1'),
                   _interval(r, metric), str(seeds_lib.seed_count(r)), _per_seed(r, metric),
                   _mean_std(r, sweep.TRAIN_LOSS_END, 3),
                   _num(r.get('train_seconds'), 0)])
  return _table(*_drop_unused(header, rows, records, metric))


# The column of the ranking metric's per-seed values (shown when some trial has several seeds).
_SEEDS_COLUMN = 'per seed'
# The mean train loss of the last 10% of steps (results written before it have none: dropped).
_LOSS_END_COLUMN = 'train loss (end)'
# The ranking metric's 95% interval over seeds and test images (results with predictions only).
_INTERVAL_COLUMN = '95% interval'


def _interval(record: Record, metric: str) -> str:
  """'[0.9750, 0.9917]': the record's interval of `metric`, or '–' without predictions."""
  interval = record.get(metric + comparisons_lib.INTERVAL_SUFFIX)
  return '–' if interval is None else f'[{interval[0]:.4f}, {interval[1]:.4f}]'


def _drop_unused(header: list[str], rows: list[list[str]], records: Sequence[Record],
                 metric: str = 'top1'):
  """Drops the columns no record fills: recalibration, interval, seeds (one seed), end loss."""
  if not _has(records, 'recal_top1'):  # Not evaluated after BN recalibration.
    header, rows = _drop_column(header, rows, 'recal. top-1')
  if not _has(records, metric + comparisons_lib.INTERVAL_SUFFIX):  # No predictions.
    header, rows = _drop_column(header, rows, _INTERVAL_COLUMN)
  if not _has(records, sweep.TRAIN_LOSS_END):
    header, rows = _drop_column(header, rows, _LOSS_END_COLUMN)
  if not _several_seeds(records):
    for name in ('seeds', _SEEDS_COLUMN):
      header, rows = _drop_column(header, rows, name)
  return header, rows


def ablation_table(records: Sequence[Record], metric: str = 'top1') -> str:
  """Paper Table 7 style: one row per scaling method, one column per FLOPs budget (φ)."""
  series = curve_series(records)
  phis = sorted({r['phi'] for rs in series.values() for r in rs})
  header = ['scaling'] + [f'φ = {phi:g}' for phi in phis]
  rows = []
  for name, rs in series.items():
    by_phi = {r['phi']: r for r in rs}
    rows.append([_SERIES_STYLE[name][2]] + [
        f'{_mean_std(by_phi[p], metric)} ({by_phi[p]["flops"] / 1e6:.2f} M)' if p in by_phi
        else '–' for p in phis])
  return _table(header, rows)


def plot_search(records: Sequence[Record], metric: str = 'top1', ax=None):
  """Top-1 against measured FLOPs, one point per (α, β, γ), the best starred. Returns the figure.

  With several seeds each point is the mean and its error bar ± one sample std.
  """
  fig, ax = _figure(ax)
  winner = best(records, metric)
  xs = [r['flops'] / 1e6 for r in records]
  ax.errorbar(xs, [r[metric] for r in records], yerr=_error_bars(records, metric), fmt='o',
              color='C0', capsize=3, zorder=2)
  for r, x in zip(records, xs):
    ax.annotate(f'({r["alpha"]:g}, {r["beta"]:g}, {r["gamma"]:g})', (x, r[metric]),
                textcoords='offset points', xytext=(4, 4), fontsize=7)
  ax.scatter([winner['flops'] / 1e6], [winner[metric]], marker='*', s=260, color='C3', zorder=3,
             label=f'best ({winner["alpha"]:g}, {winner["beta"]:g}, {winner["gamma"]:g})')
  baseline_flops = records[0]['flops'] / records[0]['flops_ratio']
  ax.axvline(2 * baseline_flops / 1e6, color='grey', linestyle=':', label='2 × baseline FLOPs')
  ax.set_xlabel('measured FLOPs (M multiply-adds per image)')
  ax.set_ylabel(_metric_label(metric, records))
  ax.set_title('Step 1: φ = 1 models, α·β²·γ² ≈ 2')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='best')
  return fig


def plot_curves(records: Sequence[Record], metric: str = 'top1', ax=None):
  """Top-1 against measured FLOPs: compound scaling and the three single-dimension ablations."""
  fig, ax = _figure(ax)
  for name, series in curve_series(records).items():
    color, marker, label = _SERIES_STYLE[name]
    ax.errorbar([r['flops'] / 1e6 for r in series], [r[metric] for r in series],
                yerr=_error_bars(series, metric), marker=marker, color=color, label=label,
                linewidth=2.2 if name == 'compound' else 1.2, capsize=3)
    if name == 'compound':
      for r in series:
        ax.annotate(f'φ={r["phi"]:g}', (r['flops'] / 1e6, r[metric]), textcoords='offset points',
                    xytext=(4, -10), fontsize=7, color=color)
  # Log scale (φ steps are ~2× FLOPs), ticked at the compound models' budgets.
  ax.set_xscale('log', base=2)
  budgets = [r['flops'] / 1e6 for r in curve_series(records).get('compound', [])]
  if budgets:
    ax.set_xticks(budgets, [f'{b:.2f}' for b in budgets])
    ax.minorticks_off()
  ax.set_xlabel('measured FLOPs (M multiply-adds per image, log scale)')
  ax.set_ylabel(_metric_label(metric, records))
  ax.set_title('Scaling one dimension vs compound scaling')
  ax.grid(alpha=0.3, which='both')
  ax.legend(fontsize=8, loc='best')
  return fig


def plot_width_curves(records: Sequence[Record], metric: str = 'top1', ax=None):
  """Paper Fig. 4: top-1 against measured FLOPs as width grows, one curve per (depth, res)."""
  fig, ax = _figure(ax)
  for i, ((d, r), curve) in enumerate(width_curves(records).items()):
    xs = [p['flops'] / 1e6 for p in curve]
    ax.errorbar(xs, [p[metric] for p in curve], yerr=_error_bars(curve, metric), marker='o',
                color=f'C{i}', capsize=3, label=f'd={d:g}, r={r:g} ({curve[0]["depth"]:g} depth, '
                f'{curve[0]["resolution"]} px)')
    for p, x in list(zip(curve, xs))[::max(len(curve) - 1, 1)]:  # The ends: w's range.
      ax.annotate(f'w={p["width_coefficient"]:g}', (x, p[metric]), textcoords='offset points',
                  xytext=(4, -10), fontsize=7, color=f'C{i}')
  ax.margins(x=0.08)  # Room for the last point's 'w=…' label.
  ax.set_xlabel('measured FLOPs (M multiply-adds per image)')
  ax.set_ylabel(_metric_label(metric, records))
  ax.set_title('Scaling width for different baseline depths and resolutions')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='best')
  return fig


def width_curves(records: Sequence[Record]) -> dict[tuple[float, float], list[Record]]:
  """{(depth coefficient, resolution coefficient): its records by width}, in trial order."""
  curves: dict[tuple[float, float], list[Record]] = {}
  for r in sorted(records, key=lambda r: r['trial']):
    curves.setdefault((r['depth_coefficient'], r['resolution_coefficient']), []).append(r)
  return {key: sorted(curve, key=lambda r: r['width_coefficient'])
          for key, curve in curves.items()}


def _error_bars(records: Sequence[Record], metric: str):
  """± one sample std per record (NaN, drawn as no bar, for a one-seed record); None if none."""
  spreads = [seeds_lib.std(r, metric) for r in records]
  if all(s is None for s in spreads):
    return None
  return [float('nan') if s is None else s for s in spreads]


def curve_series(records: Sequence[Record]) -> dict[str, list[Record]]:
  """Each series sorted by φ; the single-dimension series start at the shared φ = 0 baseline."""
  series = {name: sorted((r for r in records if r['series'] == name), key=lambda r: r['phi'])
            for name in SERIES}
  start = [r for r in series['compound'] if r['phi'] == 0]
  for name in SERIES[1:]:
    series[name] = start + series[name]
  return {name: rs for name, rs in series.items() if rs}


def write_search(records: Sequence[Record], workdir: str, metric: str = 'top1') -> str:
  """Writes results.md and search.png; returns the summary of the best triple.

  The summary's first line names the best triple (by the mean over seeds); a second line its lead
  over the runner-up, with the interval and verdict where there are predictions (`lead_line`).
  """
  winner = best(records, metric)
  summary = (f'best triple: alpha={winner["alpha"]:g} beta={winner["beta"]:g} '
             f'gamma={winner["gamma"]:g} (trial {winner["trial"]}): {metric} '
             f'{_mean_std(winner, metric)} at {winner["flops_ratio"]:.2f}× baseline FLOPs '
             f'(nominal α·β²·γ² = {winner["nominal_ratio"]:.3f})')
  lead = lead_line(records, metric)
  if lead:
    summary += '\n' + lead
  text = ('# Compound search: φ = 1, (α, β, γ) on a grid\n\n'
          f'Ranked by `{metric}`'
          + (' ("recal.": after BN recalibration)' if _has(records, 'recal_top1') else '') +
          (f', the mean over each trial\'s seeds (± the sample std; "per seed": each seed\'s '
           f'`{metric}`)' if _several_seeds(records) else '') +
          '. "measured ×base" is the FLOPs ratio over the baseline measured '
          'on the built models; α·β²·γ² is the nominal one (rounding of filters, repeats and '
          'resolution makes them differ).' + _interval_note(records, metric) + '\n\n' +
          search_table(records, metric) + f'\n{summary}\n' +
          _claims_section(search_comparisons(records, metric)))
  _write(os.path.join(workdir, 'results.md'), text)
  plot_search(records, metric).savefig(os.path.join(workdir, 'search.png'), dpi=120)
  return summary


def lead_line(records: Sequence[Record], metric: str = 'top1') -> str | None:
  """The runner-up and the best's lead over it: its 95% interval and verdict, or why there are none.

  None with a single trial. The verdict is on the claim "the best beats the runner-up"
  (`comparisons.search_claims`); the two were picked on the same test images, so the lead is
  biased upward and 'supported' is the most the line can say.
  """
  if len(records) < 2:
    return None
  runner_up = ranked(records, metric)[1]
  [comparison] = search_comparisons(records, metric)
  return (f'runner-up: trial {runner_up["trial"]} ({_labels(runner_up)}), {metric} '
          f'{_mean_std(runner_up, metric)}; the best leads by {_signed(comparison["difference"])}'
          f'{_judged(comparison)}')


def search_comparisons(records: Sequence[Record], metric: str = 'top1') -> list[dict[str, Any]]:
  """The search's claim (the best beats the runner-up) as results.json holds it, or without an
  interval for results without predictions (`comparisons.stored`)."""
  return comparisons_lib.stored(comparisons_lib.search_claims(records, metric), records, metric)


def curves_comparisons(records: Sequence[Record], metric: str = 'top1') -> list[dict[str, Any]]:
  """Compound vs each single dimension at each φ > 0 (`comparisons.curves_claims`)."""
  return comparisons_lib.stored(comparisons_lib.curves_claims(records, metric), records, metric)


def width_comparisons(records: Sequence[Record], metric: str = 'top1') -> list[dict[str, Any]]:
  """Fig. 4's claim per (d, r) curve: widening gains more there (`comparisons.width_claims`)."""
  return comparisons_lib.stored(comparisons_lib.width_claims(records, metric), records, metric)


def comparison_table(comparisons: Sequence[Mapping[str, Any]]) -> str:
  """Markdown table of claims: difference, 95% interval, verdict, and what they rest on."""
  header = ['claim', 'metric', 'difference', '95% interval', 'verdict', 'seeds × test units']
  rows = []
  for c in comparisons:
    interval = c['interval']
    rows.append([c['claim'], c['metric'], _signed(c['difference']),
                 '–' if interval is None else f'[{interval[0]:+.4f}, {interval[1]:+.4f}]',
                 (c['verdict'] or '–') + (f' ({c["note"]})' if c['note'] else ''),
                 '–' if c['seeds'] is None else f'{len(c["seeds"])} × {c["groups"]:,}'])
  return _table(header, rows)


def _judged(comparison: Mapping[str, Any]) -> str:
  """', 95% interval [-0.0056, +0.0111] over 3 seed(s) × 360 test units: inconclusive', or ': '
  and why there is no interval."""
  interval, note = comparison['interval'], comparison['note']
  if interval is None:
    return f': {note}'
  return (f', 95% interval [{interval[0]:+.4f}, {interval[1]:+.4f}] over '
          f'{len(comparison["seeds"])} seed(s) × {comparison["groups"]:,} test units: '
          f'{comparison["verdict"]}' + (f' ({note})' if note else ''))


def _signed(value) -> str:
  return '–' if value is None else f'{value:+.4f}'


def _claims_section(comparisons: Sequence[Mapping[str, Any]]) -> str:
  """The results.md section of a study's claims (empty without any)."""
  if not comparisons:
    return ''
  return ('\n## Claims\n\nEach claim\'s difference of the means, its 95% interval over the '
          'seeds and the test images (a paired bootstrap: `efficientnet_jax/studies/'
          'statistics.py`) and the verdict: supported (the interval excludes 0 on the claimed '
          'side), contradicted (on the other side) or inconclusive (it contains 0, or there is '
          'one seed). "Test units" are the resampled test examples, or their groups when '
          'several share a source.\n\n' + comparison_table(comparisons))


def _interval_note(records: Sequence[Record], metric: str) -> str:
  if not _has(records, metric + comparisons_lib.INTERVAL_SUFFIX):
    return ''
  return (f' "95% interval": the mean `{metric}`\'s interval over the seeds and test images '
          '(with one seed, over the test images only).')


def _labels(record: Record) -> str:
  """A trial's coordinates for a sentence: 'alpha=1 beta=1.4 gamma=1'."""
  return ' '.join(f'{k}={record[k]:g}' for k in ('alpha', 'beta', 'gamma') if k in record)


def write_curves(records: Sequence[Record], workdir: str, metric: str = 'top1') -> str:
  """Writes results.md and curves.png; returns a one-line summary per series."""
  lines = []
  for name, series in curve_series(records).items():
    top = series[-1]
    lines.append(f'{name}: {metric} {_mean_std(top, metric)} at {top["flops"] / 1e6:.2f} MFLOPs '
                 f'(φ = {top["phi"]:g})')
  summary = '\n'.join(lines)
  text = ('# Scaling curves: compound vs single-dimension scaling '
          "at each compound model's FLOPs\n\n"
          'Each single-dimension model is solved to the measured FLOPs of the compound model of '
          'the same φ ("vs budget": how close the rounding let it get).' + _seeds_note(records) +
          _interval_note(records, metric) + '\n\n' + f'{metric} (MFLOPs) per FLOPs budget:\n\n' +
          ablation_table(records, metric) + '\nAll trials:\n\n' + curves_table(records, metric) +
          '\n```\n' + summary + '\n```\n' + _claims_section(curves_comparisons(records, metric)))
  _write(os.path.join(workdir, 'results.md'), text)
  plot_curves(records, metric).savefig(os.path.join(workdir, 'curves.png'), dpi=120)
  return summary


def write_width_curves(records: Sequence[Record], workdir: str, metric: str = 'top1') -> str:
  """Writes results.md and width_by_depth_res.png; returns a one-line summary per curve."""
  lines = []
  for (d, r), curve in width_curves(records).items():
    top = max(curve, key=lambda p: p[metric])
    lines.append(f'd={d:g} r={r:g}: best {metric} {_mean_std(top, metric)} at '
                 f'w={top["width_coefficient"]:g} ({top["flops"] / 1e6:.2f} MFLOPs); widest '
                 f'w={curve[-1]["width_coefficient"]:g}: {_mean_std(curve[-1], metric)}')
  summary = '\n'.join(lines)
  text = ('# Width scaling for different baseline depths and resolutions (paper Fig. 4)\n\n'
          'd, r, w: the depth, resolution and width coefficients over the baseline; FLOPs are '
          'measured on the built models.' + _seeds_note(records) +
          _interval_note(records, metric) + '\n\n' + width_table(records, metric) + '\n```\n' +
          summary + '\n```\n' + _claims_section(width_comparisons(records, metric)))
  _write(os.path.join(workdir, 'results.md'), text)
  plot_width_curves(records, metric).savefig(os.path.join(workdir, 'width_by_depth_res.png'),
                                             dpi=120)
  return summary


def _seeds_note(records: Sequence[Record]) -> str:
  if not _several_seeds(records):
    return ''
  return (' Figures are the mean over each trial\'s seeds ± their sample standard deviation; '
          '"per seed" lists each seed\'s value of the ranking metric.')


def _metric_label(metric: str, records: Sequence[Record] = ()) -> str:
  label = {'top1': 'top-1 accuracy', 'ema_top1': 'top-1 accuracy (EMA weights)',
           'recal_top1': 'top-1 accuracy (BN recalibrated)'}.get(metric, metric)
  return label + (', mean ± std over seeds' if _several_seeds(records) else '')


def _figure(ax):
  if ax is not None:
    return ax.figure, ax
  fig = Figure(figsize=(7, 4.5), layout='constrained')
  return fig, fig.add_subplot()


def _write(path: str, text: str) -> None:
  with open(path, 'w') as f:
    f.write(text)
