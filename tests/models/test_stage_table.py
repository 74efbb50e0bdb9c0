"""The per-stage table (`models/stages.py`, `summary --model`): the paper's Table 1, exact costs.

Everything is abstract (`jax.eval_shape`): no test compiles a network. The whole-network totals
below are what `flops.count_params` / `flops.count_macs` measure (checked here), so the
command-line test can compare its output with them without tracing the network again.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from efficientnet_jax import summary
from efficientnet_jax.models import efficientnet
from efficientnet_jax.models import flops
from efficientnet_jax.models import scaling
from efficientnet_jax.models import stages

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Tan & Le 2019 (arXiv 1905.11946), Table 1, "EfficientNet-B0 baseline network":
# (operator, input resolution, output channels, layers) of stages 1 to 9.
PAPER_TABLE_1 = (
    ('Conv3x3', 224, 32, 1),
    ('MBConv1, k3x3', 112, 16, 1),
    ('MBConv6, k3x3', 112, 24, 2),
    ('MBConv6, k5x5', 56, 40, 2),
    ('MBConv6, k3x3', 28, 80, 3),
    ('MBConv6, k5x5', 14, 112, 3),
    ('MBConv6, k5x5', 14, 192, 4),
    ('MBConv6, k3x3', 7, 320, 1),
    ('Conv1x1 & Pooling & FC', 7, 1280, 1),
)
# (params, MACs) of whole networks; the params of b0 and lite1 are docs/reference.md §1's.
B0_TOTALS = (5_288_548, 385_814_752)
LITE1_TOTALS = (5_416_680, 600_185_232)
B0_PHI_2_5_TOTALS = (14_337_078, 2_334_378_624)


def _run_summary(*args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run([sys.executable, '-m', 'efficientnet_jax.summary', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=120, check=False)


def test_b0_is_the_papers_table_1_as_printed():
  report = summary.stage_report('b0')  # The path of `summary --model=b0`.
  assert [row['stage'] for row in report['stages']] == list(range(1, 10))
  assert [(row['operator'], row['resolution'], row['channels'], row['layers'])
          for row in report['stages']] == [
              (operator, (side, side), channels, layers)
              for operator, side, channels, layers in PAPER_TABLE_1]
  assert (report['total']['params'], report['total']['macs']) == B0_TOTALS

  lines = summary.format_stage_table(report).splitlines()
  assert lines[0] == 'b0: width 1.0, depth 1.0, resolution 224'
  table = lines[2:lines.index('', 2)]
  assert table[0].split() == ['stage', 'operator', 'resolution', 'channels', 'layers', 'params',
                              'MACs']
  assert table[2].split() == ['1', 'Conv3x3', '224x224', '32', '1', '928', '10,838,016']
  assert '  MBConv6, k5x5  ' in table[5] and table[5].split()[3:6] == ['56x56', '40', '2']
  assert table[-1].split() == ['total', '18', f'{B0_TOTALS[0]:,}', f'{B0_TOTALS[1]:,}']
  assert len({len(line) for line in table}) == 1  # Aligned.


@pytest.mark.parametrize('model_args, totals', [
    (('b0', {}), B0_TOTALS),
    (('lite1', {}), LITE1_TOTALS),  # Fixed stem and head, end stages' repeats unscaled.
    (('b0', scaling.compound(2.5).as_overrides()), B0_PHI_2_5_TOTALS),
], ids=['b0', 'lite1', 'b0-phi2.5'])
def test_stages_add_up_to_the_whole_network(model_args, totals):
  name, overrides = model_args
  net = efficientnet.create_model(name, **overrides)
  rows = stages.stage_table(net)
  whole = (flops.count_params(net), flops.count_macs(net))
  assert (sum(r.params for r in rows), sum(r.macs for r in rows)) == whole == totals
  assert sum(r.layers for r in rows[1:-1]) == len(net.spec.blocks)
  assert rows[0].resolution == (net.resolution, net.resolution)
  assert all(r.params > 0 and r.macs > 0 for r in rows)


def test_json_of_a_phi_scaled_network_has_the_whole_networks_totals():
  result = _run_summary('--model=b0', '--phi=2.5', '--json')
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(result.stdout)  # Only JSON on stdout.
  scaled = scaling.compound(2.5)
  assert (report['width'], report['depth'], report['resolution']) == (
      scaled.width, scaled.depth, scaled.resolution)
  assert [row['stage'] for row in report['stages']] == list(range(1, 10))
  assert (report['total']['params'], report['total']['macs']) == B0_PHI_2_5_TOTALS
  assert report['total']['macs'] == sum(row['macs'] for row in report['stages'])


def test_a_non_numeric_coefficient_fails_in_one_line():
  result = _run_summary('--model=b0', '--phi=abc')
  assert result.returncode == 2 and not result.stdout
  assert result.stderr.strip().splitlines() == [
      "error: --phi=abc: expected a number, got 'abc'"]
