"""benchmarks/paired_step.py: variant parsing, the paired summary, a tiny real run, bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'paired_step.py')
sys.path.insert(0, os.path.dirname(SCRIPT))
import paired_step  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_parse_variant_types_values_as_the_forms_list():
  assert paired_step.parse_variant('base:') == ('base', {})
  assert paired_step.parse_variant('x:stem_channel_multiple=1,pointwise=conv') == (
      'x', {'stem_channel_multiple': 1, 'pointwise': 'conv'})


@pytest.mark.parametrize('text, message', [
    ('base', 'must be NAME:FORM=VALUE'),
    ('x:colour=red', 'FORM one of depthwise'),
    ('x:pointwise=matmul', 'pointwise takes one of dot, conv'),
])
def test_parse_variant_rejects_bad_input(text, message):
  with pytest.raises(ValueError, match=message):
    paired_step.parse_variant(text)


def test_paired_summary_ratios_are_per_round():
  # The second variant is exactly 10% slower in every round while the rounds drift 2×: the
  # paired ratio is 1.1 with no spread, though the medians alone overlap.
  base = [1.0, 2.0, 1.5, 1.2, 1.8]
  rows = paired_step.paired_summary({'a': base, 'b': [t * 1.1 for t in base]})
  assert rows[0]['ratio'] == 1.0 and rows[0]['ci_low'] == rows[0]['ci_high'] == 1.0
  b = rows[1]
  assert np.isclose(b['ratio'], 1.1) and np.isclose(b['ci_low'], 1.1)
  assert np.isclose(b['ci_high'], 1.1) and np.isclose(b['median_ms'], 1650.0)
  assert '| b | 1650.0 | 1.100 [1.100, 1.100] | 1.100–1.100 |' in paired_step.format_table(
      rows, 5)


def _run(*flags):
  return subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True,
                        check=False, timeout=600)


def test_a_tiny_real_run_prints_both_variants():
  done = _run('--model=b0', '--phi=-8', '--resolution=16', '--batch=4', '--rounds=2',
              '--warmup=1', '--variant=base:', '--variant=bn:batch_norm_gradient=autodiff')
  assert done.returncode == 0, done.stderr[-2000:]
  assert '| base |' in done.stdout and '| bn |' in done.stdout


def test_bad_input_is_one_line_and_exit_2():
  done = _run('--variant=base:', '--variant=x:depthwise=fft')
  assert done.returncode == 2
  assert done.stderr.strip().count('\n') == 0 and 'depthwise takes one of' in done.stderr
  done = _run('--variant=base:')
  assert done.returncode == 2 and 'at least two' in done.stderr
