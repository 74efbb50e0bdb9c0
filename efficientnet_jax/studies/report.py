"""Tables and plots of experiment results (the scripts and the notebook share these).

Records are the dicts of `results.json`. "FLOPs" are multiply-adds per image, as in the paper,
shown in millions (MFLOPs). Plots use `matplotlib.figure.Figure` directly (no pyplot state), so
the scripts need no display and the notebook can pass its own axes.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

Record = Mapping[str, Any]
SERIES = ('compound', 'width', 'depth', 'resolution')
_SERIES_STYLE = {'compound': ('C3', 'o', 'compound (α, β, γ)'), 'width': ('C0', 's', 'width only'),
                 'depth': ('C2', '^', 'depth only'), 'resolution': ('C1', 'D', 'resolution only')}


def best(records: Sequence[Record], metric: str = 'top1') -> Record:
  """The record with the highest `metric` (the lowest trial id on ties: deterministic)."""
  return max(records, key=lambda r: (r[metric], -r['trial']))


def _num(value, digits: int = 4) -> str:
  if value is None:
    return '–'
  return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def _has_recal(records: Sequence[Record]) -> bool:
  """Whether any trial was also evaluated after BN recalibration (else the column is dropped)."""
  return any(r.get('recal_top1') is not None for r in records)


def _drop_column(header: list[str], rows: list[list[str]], name: str):
  i = header.index(name)
  return header[:i] + header[i + 1:], [row[:i] + row[i + 1:] for row in rows]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def search_table(records: Sequence[Record], metric: str = 'top1') -> str:
  """Markdown table of a compound search, one row per trial, the best in bold."""
  winner = best(records, metric)['trial']
  header = ['trial', 'α', 'β', 'γ', 'α·β²·γ²', 'width', 'depth', 'res', 'params', 'MFLOPs',
            'measured ×base', 'top-1', 'recal. top-1', 'EMA top-1', 'train s']
  rows = []
  for r in sorted(records, key=lambda r: r['trial']):
    row = [str(r['trial']), _num(r['alpha'], 2), _num(r['beta'], 2), _num(r['gamma'], 3),
           _num(r['nominal_ratio'], 3), _num(r['width'], 3), _num(r['depth'], 3),
           str(r['resolution']), f'{r["params"]:,}', f'{r["flops"] / 1e6:.2f}',
           _num(r['flops_ratio'], 2), _num(r['top1']), _num(r.get('recal_top1')),
           _num(r['ema_top1']), _num(r.get('train_seconds'), 0)]
    rows.append([f'**{cell}**' for cell in row] if r['trial'] == winner else row)
  if not _has_recal(records):
    header, rows = _drop_column(header, rows, 'recal. top-1')
  return _table(header, rows)


def curves_table(records: Sequence[Record]) -> str:
  """Markdown table of the scaling curves, grouped by series, then φ."""
  header = ['series', 'φ', 'coefficient', 'width', 'depth', 'res', 'params', 'MFLOPs',
            'vs budget', 'top-1', 'recal. top-1', 'EMA top-1', 'train s']
  order = {name: i for i, name in enumerate(SERIES)}
  rows = []
  for r in sorted(records, key=lambda r: (order[r['series']], r['phi'])):
    budget = r.get('flops_vs_budget')
    rows.append([r['series'], f'{r["phi"]:g}', _num(r.get('coefficient'), 3),
                 _num(r['width'], 3), _num(r['depth'], 3), str(r['resolution']),
                 f'{r["params"]:,}', f'{r["flops"] / 1e6:.2f}',
                 '–' if budget is None else f'{budget:+.1%}', _num(r['top1']),
                 _num(r.get('recal_top1')), _num(r['ema_top1']),
                 _num(r.get('train_seconds'), 0)])
  if not _has_recal(records):
    header, rows = _drop_column(header, rows, 'recal. top-1')
  return _table(header, rows)


def ablation_table(records: Sequence[Record], metric: str = 'top1') -> str:
  """Paper Table 7 style: one row per scaling method, one column per FLOPs budget (φ)."""
  series = curve_series(records)
  phis = sorted({r['phi'] for rs in series.values() for r in rs})
  header = ['scaling'] + [f'φ = {phi:g}' for phi in phis]
  rows = []
  for name, rs in series.items():
    by_phi = {r['phi']: r for r in rs}
    rows.append([_SERIES_STYLE[name][2]] + [
        f'{by_phi[p][metric]:.4f} ({by_phi[p]["flops"] / 1e6:.2f} M)' if p in by_phi else '–'
        for p in phis])
  return _table(header, rows)


def plot_search(records: Sequence[Record], metric: str = 'top1', ax=None):
  """Top-1 against measured FLOPs, one point per (α, β, γ), the best starred. Returns the figure."""
  fig, ax = _figure(ax)
  winner = best(records, metric)
  xs = [r['flops'] / 1e6 for r in records]
  ax.scatter(xs, [r[metric] for r in records], color='C0', zorder=2)
  for r, x in zip(records, xs):
    ax.annotate(f'({r["alpha"]:g}, {r["beta"]:g}, {r["gamma"]:g})', (x, r[metric]),
                textcoords='offset points', xytext=(4, 4), fontsize=7)
  ax.scatter([winner['flops'] / 1e6], [winner[metric]], marker='*', s=260, color='C3', zorder=3,
             label=f'best ({winner["alpha"]:g}, {winner["beta"]:g}, {winner["gamma"]:g})')
  baseline_flops = records[0]['flops'] / records[0]['flops_ratio']
  ax.axvline(2 * baseline_flops / 1e6, color='grey', linestyle=':', label='2 × baseline FLOPs')
  ax.set_xlabel('measured FLOPs (M multiply-adds per image)')
  ax.set_ylabel(_metric_label(metric))
  ax.set_title('Step 1: φ = 1 models, α·β²·γ² ≈ 2')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='best')
  return fig


def plot_curves(records: Sequence[Record], metric: str = 'top1', ax=None):
  """Top-1 against measured FLOPs: compound scaling and the three single-dimension ablations."""
  fig, ax = _figure(ax)
  for name, series in curve_series(records).items():
    color, marker, label = _SERIES_STYLE[name]
    ax.plot([r['flops'] / 1e6 for r in series], [r[metric] for r in series], marker=marker,
            color=color, label=label, linewidth=2.2 if name == 'compound' else 1.2)
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
  ax.set_ylabel(_metric_label(metric))
  ax.set_title('Scaling one dimension vs compound scaling')
  ax.grid(alpha=0.3, which='both')
  ax.legend(fontsize=8, loc='best')
  return fig


def curve_series(records: Sequence[Record]) -> dict[str, list[Record]]:
  """Each series sorted by φ; the single-dimension series start at the shared φ = 0 baseline."""
  series = {name: sorted((r for r in records if r['series'] == name), key=lambda r: r['phi'])
            for name in SERIES}
  start = [r for r in series['compound'] if r['phi'] == 0]
  for name in SERIES[1:]:
    series[name] = start + series[name]
  return {name: rs for name, rs in series.items() if rs}


def write_search(records: Sequence[Record], workdir: str, metric: str = 'top1') -> str:
  """Writes results.md and search.png; returns the one-line summary of the best triple."""
  winner = best(records, metric)
  summary = (f'best triple: alpha={winner["alpha"]:g} beta={winner["beta"]:g} '
             f'gamma={winner["gamma"]:g} (trial {winner["trial"]}): {metric} '
             f'{winner[metric]:.4f} at {winner["flops_ratio"]:.2f}× baseline FLOPs '
             f'(nominal α·β²·γ² = {winner["nominal_ratio"]:.3f})')
  text = ('# Compound search: φ = 1, (α, β, γ) on a grid\n\n'
          f'Ranked by `{metric}`'
          + (' ("recal.": after BN recalibration)' if _has_recal(records) else '') +
          '. "measured ×base" is the FLOPs ratio over the baseline measured '
          'on the built models; α·β²·γ² is the nominal one (rounding of filters, repeats and '
          'resolution makes them differ).\n\n' + search_table(records, metric) +
          f'\n{summary}\n')
  _write(os.path.join(workdir, 'results.md'), text)
  plot_search(records, metric).savefig(os.path.join(workdir, 'search.png'), dpi=120)
  return summary


def write_curves(records: Sequence[Record], workdir: str, metric: str = 'top1') -> str:
  """Writes results.md and curves.png; returns a one-line summary per series."""
  lines = []
  for name, series in curve_series(records).items():
    top = series[-1]
    lines.append(f'{name}: {metric} {top[metric]:.4f} at {top["flops"] / 1e6:.2f} MFLOPs '
                 f'(φ = {top["phi"]:g})')
  summary = '\n'.join(lines)
  text = ('# Scaling curves: compound vs single-dimension scaling at equal FLOPs\n\n'
          'Each single-dimension model is solved to the measured FLOPs of the compound model of '
          'the same φ ("vs budget": how close the rounding let it get).\n\n' +
          f'{metric} (MFLOPs) per FLOPs budget:\n\n' + ablation_table(records, metric) +
          '\nAll trials:\n\n' + curves_table(records) + '\n```\n' + summary + '\n```\n')
  _write(os.path.join(workdir, 'results.md'), text)
  plot_curves(records, metric).savefig(os.path.join(workdir, 'curves.png'), dpi=120)
  return summary


def _metric_label(metric: str) -> str:
  return {'top1': 'top-1 accuracy', 'ema_top1': 'top-1 accuracy (EMA weights)',
          'recal_top1': 'top-1 accuracy (BN recalibrated)'}.get(metric, metric)


def _figure(ax):
  if ax is not None:
    return ax.figure, ax
  fig = Figure(figsize=(7, 4.5), layout='constrained')
  return fig, fig.add_subplot()


def _write(path: str, text: str) -> None:
  with open(path, 'w') as f:
    f.write(text)
