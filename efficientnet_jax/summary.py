"""The variant table computed from the code, beside the published figures.

  python -m efficientnet_jax.summary                 # aligned text table
  python -m efficientnet_jax.summary --json          # only a JSON list on stdout (pipe it to jq)
  python -m efficientnet_jax.summary --models=b0,lite0

One network, stage by stage as the paper's Table 1 (stem, MBConv stages, head), with each stage's
parameters and multiply-adds and their totals:

  python -m efficientnet_jax.summary --model=b4
  python -m efficientnet_jax.summary --model=b0 --phi=2.5 [--json]
  python -m efficientnet_jax.summary --model=b0 --width=1.2 --depth=1.4 --resolution=300

`--phi`, `--width`, `--depth` and `--resolution` mean what the config keys `phi`, `width`,
`depth` and `image_size` mean (the network is built by `efficientnet.model_from_config`): φ
scales the variant's family baseline (B0, or Lite0 for a Lite name) by the compound rule, and an
explicit coefficient or resolution overrides φ's.

Parameters and multiply-adds are measured on the built network (`flops.count_params`,
`flops.count_macs`, both abstract via `jax.eval_shape`), so the table is a check of the code
against the paper rather than a copy of it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any, Sequence

from absl import app
from absl import flags

from efficientnet_jax import cli
from efficientnet_jax import config as config_lib
from efficientnet_jax import recipes
from efficientnet_jax.models import efficientnet
from efficientnet_jax.models import flops
from efficientnet_jax.models import scaling
from efficientnet_jax.models import stages


# Published figures (docs/reference.md §1). Paper Table 2 (arXiv 1905.11946 v5): params and FLOPs
# (multiply-adds) for B0–B7, whose top-1 is the AutoAugment row of `recipes.PUBLISHED`; TF's
# README MAdds for Lite; timm's GMACs at native size.
PAPER_TABLE_2 = {
    'b0': (5.3e6, 0.39e9), 'b1': (7.8e6, 0.70e9), 'b2': (9.2e6, 1.0e9), 'b3': (12e6, 1.8e9),
    'b4': (19e6, 4.2e9), 'b5': (30e6, 9.9e9), 'b6': (43e6, 19e9), 'b7': (66e6, 37e9),
}
TF_LITE_MADDS = {'lite0': 407e6, 'lite1': 631e6, 'lite2': 899e6, 'lite3': 1.44e9,
                 'lite4': 2.64e9}
TIMM_GMACS = {'b0': 0.40, 'b1': 0.71, 'b2': 1.02, 'b3': 1.87, 'b4': 4.49, 'b5': 10.46,
              'b6': 19.40, 'b7': 38.33, 'b8': 63.48}


def variant_row(name: str) -> dict[str, Any]:
  """Measures one variant and pairs it with its published figures (None where there are none)."""
  variant = scaling.get_variant(name)
  net = efficientnet.create_model(name)
  paper_params, paper_flops = PAPER_TABLE_2.get(name, (None, None))
  published = recipes.PUBLISHED.get((name, 'autoaugment'))  # The paper's Table 2 numbers.
  top1 = published.top1 if published and name in PAPER_TABLE_2 else None
  return {
      'name': name,
      'width': variant.width,
      'depth': variant.depth,
      'resolution': variant.resolution,
      'dropout': variant.dropout,
      'blocks': len(net.spec.blocks),
      'params': int(flops.count_params(net)),
      'flops': int(flops.count_macs(net)),
      'paper_params': paper_params,
      'paper_flops': paper_flops or TF_LITE_MADDS.get(name),
      'paper_top1': top1,
      'timm_gmacs': TIMM_GMACS.get(name),
  }


def _coefficient(value: float) -> str:
  # One decimal as the paper writes them, more only for custom coefficients such as 1.1^0.5.
  return f'{value:.1f}' if value == round(value, 1) else f'{value:.4g}'


def _scaled(value: float, unit: float, suffix: str, digits: int) -> str:
  return f'{value / unit:.{digits}f}{suffix}'


def _published(value: float | None, unit: float, suffix: str) -> str:
  return '-' if value is None else f'{value / unit:g}{suffix}'  # As printed at the source.


def _ratio(measured: float, published: float | None) -> str:
  return '-' if published is None else f'{measured / published:.3f}'


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """Renders rows as an aligned text table with measured/published ratios."""
  header = ('name', 'width', 'depth', 'res', 'drop', 'blocks', 'params', 'paper', 'ratio',
            'MACs', 'paper', 'ratio', 'timm', 'ratio', 'top-1')
  lines = []
  for r in rows:
    timm = None if r['timm_gmacs'] is None else r['timm_gmacs'] * 1e9
    lines.append((
        r['name'], _coefficient(r['width']), _coefficient(r['depth']), str(r['resolution']),
        _coefficient(r['dropout']), str(r['blocks']),
        _scaled(r['params'], 1e6, 'M', 2), _published(r['paper_params'], 1e6, 'M'),
        _ratio(r['params'], r['paper_params']),
        _scaled(r['flops'], 1e9, 'B', 3), _published(r['paper_flops'], 1e9, 'B'),
        _ratio(r['flops'], r['paper_flops']),
        _published(timm, 1e9, 'B'), _ratio(r['flops'], timm),
        '-' if r['paper_top1'] is None else f"{r['paper_top1']:.1f}%"))
  widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
  render = lambda row: '  '.join(
      cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
  notes = ('params: trainable parameters (1000 classes); MACs: multiply-adds of every conv and '
           'dense layer per image at the native resolution.',
           'paper: Table 2 of arXiv 1905.11946 v5 (B0-B7); for Lite, the TF reference MAdds. '
           'timm: its GMACs at native resolution. ratio = measured / published.')
  return '\n'.join([render(header), render(['-' * w for w in widths])]
                   + [render(row) for row in lines] + [''] + list(notes))


def build_network(name: str, phi: float | None = None, width: float | None = None,
                  depth: float | None = None, resolution: int | None = None
                  ) -> efficientnet.EfficientNet:
  """The network a config of variant `name` with these keys trains (None: the key is unset).

  Built by the configs' own path (`config.get_config` → `efficientnet.model_from_config`), so
  φ and the explicit overrides combine exactly as they do for training.
  """
  config = config_lib.get_config(name, phi=phi, width=width, depth=depth, image_size=resolution)
  return efficientnet.model_from_config(config)


def stage_report(name: str, phi: float | None = None, width: float | None = None,
                 depth: float | None = None, resolution: int | None = None) -> dict[str, Any]:
  """One network's Table 1 rows, the coefficients it was built with and its totals."""
  net = build_network(name, phi, width, depth, resolution)
  rows = [dataclasses.asdict(row) for row in stages.stage_table(net)]
  return {
      'model': name,
      'phi': phi,
      'width': net.width,
      'depth': net.depth,
      'resolution': net.resolution,
      'stages': rows,
      'total': {key: sum(row[key] for row in rows) for key in ('layers', 'params', 'macs')},
  }


def format_stage_table(report: dict[str, Any]) -> str:
  """Renders a `stage_report` as an aligned text table, totals last."""
  header = ('stage', 'operator', 'resolution', 'channels', 'layers', 'params', 'MACs')
  body = [(str(r['stage']), r['operator'], 'x'.join(map(str, r['resolution'])),
           str(r['channels']), str(r['layers']), f"{r['params']:,}", f"{r['macs']:,}")
          for r in report['stages']]
  total = report['total']
  totals = ('total', '', '', '', str(total['layers']), f"{total['params']:,}",
            f"{total['macs']:,}")
  widths = [max(len(row[i]) for row in [header, *body, totals]) for i in range(len(header))]
  render = lambda row: '  '.join(  # Operators read left-aligned, numbers right-aligned.
      cell.ljust(w) if i == 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
  rule = render(['-' * w for w in widths])
  phi = '' if report['phi'] is None else f"phi {report['phi']:g}, "
  title = (f"{report['model']}: {phi}width {_coefficient(report['width'])}, depth "
           f"{_coefficient(report['depth'])}, resolution {report['resolution']}")
  notes = ('Stages as in Table 1 of arXiv 1905.11946 (EfficientNet-B0 baseline network): '
           'resolution is the stage\'s input, channels its output.',
           'params: trainable, BatchNorm with its convolution\'s stage (1000 classes); MACs: '
           'multiply-adds per image. The totals equal the whole network\'s counts.')
  return '\n'.join([title, '', render(header), rule, *map(render, body), rule, render(totals),
                    '', *notes])


# The flags that describe the one network of `--model`.
_NETWORK_FLAGS = ('phi', 'width', 'depth', 'resolution')


def _define_flags() -> None:
  # Defined only when run as a program, so importing this module (tests) cannot collide with
  # another tool's flags of the same name.
  flags.DEFINE_bool('json', False, 'Print only the rows, as one JSON list (with --model: one '
                    'JSON object).')
  flags.DEFINE_list('models', None, 'Variants to list (default: all of them).')
  flags.DEFINE_string('model', None, 'One network, stage by stage as the paper\'s Table 1: a '
                      f'variant name ({", ".join(scaling.MODEL_NAMES)}).')
  flags.DEFINE_float('phi', None, 'With --model: compound scaling of the variant\'s family '
                     'baseline by phi (the config key phi).')
  flags.DEFINE_float('width', None, 'With --model: width coefficient (overrides phi\'s).')
  flags.DEFINE_float('depth', None, 'With --model: depth coefficient (overrides phi\'s).')
  flags.DEFINE_integer('resolution', None, 'With --model: input resolution (overrides phi\'s; '
                       'the config key image_size).')


def _check_network_flags() -> None:
  """Refuses the network flags without --model, beside --models, or out of range."""
  given = [name for name in _NETWORK_FLAGS if flags.FLAGS[name].value is not None]
  if flags.FLAGS.model is None:
    if given:
      raise cli.UsageError(f'--{given[0]} describes the network of --model; add --model=NAME, '
                           'e.g. --model=b0 --phi=2.5.')
    return
  if flags.FLAGS.models is not None:
    raise cli.UsageError('--model (one network, stage by stage) and --models (the variant '
                         'table) exclude each other; pass one of them.')
  for name in given:
    value = flags.FLAGS[name].value
    if not math.isfinite(value):
      raise cli.UsageError(f'--{name} must be a finite number, got {value}.')
    if name != 'phi' and value <= 0:
      raise cli.UsageError(f'--{name} must be positive, got {value}.')


@cli.run
def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
  cli.quiet_libraries()
  _check_network_flags()
  if flags.FLAGS.model is not None:
    report = stage_report(flags.FLAGS.model, phi=flags.FLAGS.phi, width=flags.FLAGS.width,
                          depth=flags.FLAGS.depth, resolution=flags.FLAGS.resolution)
    print(json.dumps(report) if flags.FLAGS.json else format_stage_table(report), flush=True)
    return
  names = flags.FLAGS.models or scaling.MODEL_NAMES
  for name in names:  # Fail on a bad name before measuring anything.
    scaling.get_variant(name)
  rows = [variant_row(name) for name in names]
  print(json.dumps(rows) if flags.FLAGS.json else format_table(rows), flush=True)


if __name__ == '__main__':
  _define_flags()
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
