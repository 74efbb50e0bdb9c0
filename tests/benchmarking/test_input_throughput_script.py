"""benchmarks/input_pipeline_throughput.py: one command gives our stage, timm's and their ratio.

Tiny settings (64 px, 8 timed images in batches of 2, one repeat) and two stages a side: what is
tested is the plumbing (the timm child process, the batching, the JSON), not the speed.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'benchmarks', 'input_pipeline_throughput.py')


def run_script(*args: str) -> dict:
  """The script's JSON (its last stdout line)."""
  done = subprocess.run(
      [sys.executable, SCRIPT, '--num_jpegs=4', '--images=8', '--warmup_images=2',
       '--repeats=1', '--image_size=64', '--batch_size=2', '--json', *args],
      cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def timm_installed() -> bool:
  # find_spec, not importorskip: importing torch here would cost seconds and is not needed.
  return all(importlib.util.find_spec(name) is not None for name in ('torch', 'timm'))


def test_one_command_gives_our_stage_timm_stage_and_ratio():
  result = run_script('--stages=decode,autoaugment,timm_decode,timm_autoaugment',
                      '--timm_after_ours')

  ours = result['stages']['decode']
  assert ours['images_per_cpu_sec'] > 0
  assert ours['range']['images_per_cpu_sec'] == [ours['images_per_cpu_sec']] * 2
  if not timm_installed():
    assert 'timm stages skipped' in result['timm']['skipped']
    pytest.skip('timm or torch not installed: only our stage was measured')
  timm = result['stages']['timm_decode']
  assert timm['images_per_cpu_sec'] > 0 and timm['images_per_sec_per_core'] > 0
  ratio = result['vs_timm']['decode']
  assert ratio['timm_stage'] == 'timm_decode'
  assert ratio['ratio_per_cpu_sec'] == pytest.approx(
      ours['images_per_cpu_sec'] / timm['images_per_cpu_sec'])
  assert result['timm']['torch_threads'] == 1
  # timm is timed first, this process waiting: its busy share is the check, recorded.
  assert 0 <= result['timm']['parent_busy_share'] < 0.5
  assert result['timm']['child_wall_seconds'] > 0
  # Timed again after ours: reported against the first run, which the ratios use.
  after = result['timm']['after_ours']
  assert after['rate_vs_first']['timm_decode'] == pytest.approx(
      after['images_per_cpu_sec']['timm_decode'] / timm['images_per_cpu_sec'])
  assert ratio['timm_images_per_cpu_sec'] == timm['images_per_cpu_sec']
  assert result['vs_timm']['autoaugment']['timm_stage'] == 'timm_autoaugment'
  assert result['cores_needed_for_target'].keys() == {'decode', 'autoaugment'}

