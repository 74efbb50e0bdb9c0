"""`python -m efficientnet_jax.summary`, run as a user would (subprocess)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from efficientnet_jax import summary
from efficientnet_jax.models import scaling

ROOT = pathlib.Path(__file__).resolve().parent.parent
REQUIRED_KEYS = ('name', 'width', 'depth', 'resolution', 'dropout', 'params', 'flops')


def _run(*args):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run([sys.executable, '-m', 'efficientnet_jax.summary', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_json_lists_every_variant_and_the_text_table_shows_the_same_rows():
  # One run of every variant (a minute of tracing) for both checks.
  full_json_run = _run('--json')
  assert full_json_run.returncode == 0, full_json_run.stderr[-2000:]
  rows = json.loads(full_json_run.stdout)  # Only JSON on stdout: it pipes into jq.
  assert [r['name'] for r in rows] == list(scaling.MODEL_NAMES)
  for row in rows:
    assert set(REQUIRED_KEYS) <= set(row)
    assert isinstance(row['params'], int) and isinstance(row['flops'], int)
    variant = scaling.VARIANTS[row['name']]
    assert (row['width'], row['depth'], row['resolution'], row['dropout']) == (
        variant.width, variant.depth, variant.resolution, variant.dropout)
  by_name = {r['name']: r for r in rows}
  # Spot values (the per-variant checks live in models/test_efficientnet.py, test_flops.py).
  assert by_name['b0']['params'] == 5_288_548
  assert by_name['l2']['params'] == 480_309_308
  assert by_name['lite4']['params'] == 13_006_568
  assert by_name['b0']['flops'] == pytest.approx(0.39e9, rel=0.05)
  assert by_name['b7']['flops'] == pytest.approx(37e9, rel=0.05)
  assert by_name['lite0']['flops'] == pytest.approx(407e6, rel=0.08)

  # The text output is this table of the same rows (`--models` below runs it end to end).
  lines = summary.format_table(rows).splitlines()
  header = lines[0].split()
  for column in ('name', 'width', 'depth', 'res', 'drop', 'params', 'paper', 'ratio', 'MACs',
                 'timm', 'top-1'):
    assert column in header
  rows = {line.split()[0]: line.split() for line in lines[2:] if line.strip()}
  assert set(scaling.MODEL_NAMES) <= set(rows)
  b0 = rows['b0']
  assert b0[:6] == ['b0', '1.0', '1.0', '224', '0.2', '16']
  assert '5.3M' in b0 and '0.39B' in ' '.join(b0) and '77.1%' in b0
  assert len({len(line) for line in lines[:2 + len(scaling.MODEL_NAMES)]}) == 1  # Aligned.


def test_models_flag_and_plain_text():
  result = _run('--models=b0,lite0')
  assert result.returncode == 0, result.stderr[-2000:]
  names = [line.split()[0] for line in result.stdout.splitlines()[2:4]]
  assert names == ['b0', 'lite0']
  assert not result.stdout.strip().splitlines()[-1].startswith('[')  # No JSON without --json.
  assert 'ratio = measured / published' in result.stdout


def test_bad_model_name_fails_in_one_line_with_valid_names():
  result = _run('--models=b9')
  assert result.returncode == 2 and not result.stdout
  assert result.stderr.strip().splitlines() == [result.stderr.strip()]
  assert result.stderr.startswith("error: Unknown model 'b9'") and 'lite4' in result.stderr
