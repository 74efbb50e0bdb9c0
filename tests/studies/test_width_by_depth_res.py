"""Paper Fig. 4 (width scaling under fixed depth and resolution): plan, report, and a real sweep.

The sweep uses the digits config's `:tiny` variant (one 2-step trial) with two seeds, in
subprocesses as a user or a cluster runs it, with the session's shared compilation cache
(tests/shared_runs.py). It waits for the shared tiny search (`tiny_search`), which compiles the
same network, so this test pays for processes and seeds, not for compiling.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

import reliability_helpers as rh
import shared_runs
from efficientnet_jax.studies import points
from efficientnet_jax.studies import report
from efficientnet_jax.studies import seeds
from efficientnet_jax.studies import sweep
from experiments import width_by_depth_res
from experiments.configs import digits_width_by_depth_res
from experiments.configs import imagenette_width_by_depth_res

SCRIPT = 'experiments/width_by_depth_res.py'
TINY = 'experiments/configs/digits_width_by_depth_res.py:tiny'


def test_plan_is_one_curve_of_growing_width_per_depth_and_resolution():
  config = digits_width_by_depth_res.get_config()
  trials = width_by_depth_res.plan(config)
  labels = [(t.record['depth_coefficient'], t.record['resolution_coefficient'],
             t.record['width_coefficient']) for t in trials]
  assert labels == [(d, r, w) for d, r in ((1.0, 1.0), (1.0, 1.3), (2.0, 1.0), (2.0, 1.3))
                    for w in (1.0, 1.4, 1.8, 2.2, 2.6)]
  assert [t.id for t in trials] == list(range(20))
  base = points.baseline_from_config(config.baseline)
  for t in trials:
    d, r, w = (t.record[k] for k in ('depth_coefficient', 'resolution_coefficient',
                                     'width_coefficient'))
    assert t.point == points.Point(round(base.width * w, 6), base.depth * d,
                                   24 if r == 1.0 else 32)  # 24 · 1.3 rounds to 32 (multiple 4).
    assert t.record['flops'] == points.count_macs(config.train, t.point)  # Measured.
  for k in range(0, 20, 5):  # Along each curve, FLOPs grow with the width.
    flops = [t.record['flops'] for t in trials[k:k + 5]]
    assert flops == sorted(flops) and len(set(flops)) == 5
  assert trials[0].record['flops_ratio'] == 1.0
  imagenette = imagenette_width_by_depth_res.get_config()  # Planned, not measured: B0-sized.
  assert width_by_depth_res.pairs(imagenette) == width_by_depth_res.pairs(config)
  assert width_by_depth_res.widths(imagenette) == width_by_depth_res.widths(config)
  config.fig4.widths = (1.0, 1.0)
  with pytest.raises(ValueError, match='distinct'):
    width_by_depth_res.plan(config)


def _record(trial, d, r, w, values):
  mean, std = seeds.mean_std(values)
  return {'trial': trial, 'depth_coefficient': d, 'resolution_coefficient': r,
          'width_coefficient': w, 'width': 0.5 * w, 'depth': 0.25 * d, 'resolution': 24,
          'params': 1000, 'flops': 1e6 * w * w * d * r * r, 'flops_ratio': w * w * d * r * r,
          'top1': mean, 'top1_std': std, 'ema_top1': mean, 'ema_top1_std': std,
          'per_seed': [{'seed_index': s, 'seed': s, 'top1': v} for s, v in enumerate(values)]}


def test_report_draws_one_curve_per_depth_and_resolution_with_error_bars(tmp_path):
  records = [_record(k * 2 + i, d, r, w, [0.5 + 0.1 * i + 0.05 * k, 0.52 + 0.1 * i])
             for k, (d, r) in enumerate(((1.0, 1.0), (2.0, 1.3)))
             for i, w in enumerate((1.0, 1.4))]
  summary = report.write_width_curves(records, str(tmp_path))
  assert summary.splitlines()[0].startswith('d=1 r=1: best top1 0.6100 ± 0.0141 at w=1.4')
  text = (tmp_path / 'results.md').read_text()
  assert '0.6350 ± 0.0212' in text and '0.6500, 0.6200' in text
  assert (tmp_path / 'width_by_depth_res.png').stat().st_size > 0
  ax = report.plot_width_curves(records).axes[0]
  assert [c.get_label() for c in ax.containers] == ['d=1, r=1 (0.25 depth, 24 px)',
                                                    'd=2, r=1.3 (0.5 depth, 24 px)']
  assert all(c.has_yerr for c in ax.containers)


# --- A real sweep of the tiny config, two seeds --------------------------------------------------

def _args(*args, root):
  return [sys.executable, SCRIPT, f'--config={TINY}', '--config.seeds=2', *args,
          f'--config.train.compilation_cache_dir={shared_runs.search_cache_dir(root)}']


def _check(command):
  done = subprocess.run(command, cwd=rh.REPO, capture_output=True, text=True, timeout=600,
                        env=shared_runs.search_environment())
  assert done.returncode == 0, f'{shlex.join(command)}\n{done.stdout}\n{done.stderr[-4000:]}'
  return done.stdout


def _results(workdir):
  with open(os.path.join(workdir, sweep.RESULTS_FILE)) as f:
    return json.load(f)


@pytest.mark.slow
def test_tiny_sweep_with_two_seeds_runs_apart_and_merges_like_a_sequential_run(
    tiny_search, tmp_path, tmp_path_factory):
  del tiny_search  # Waited for: its trial 1 compiled this config's one network.
  root = rh.session_dir(tmp_path_factory)
  sequential, apart = str(tmp_path / 'sequential'), str(tmp_path / 'apart')
  stdout = _check(_args(f'--workdir={sequential}', root=root))
  assert 'trial 0/1, seed 1/2: training' in stdout and stdout.count('training') == 2
  [record] = _results(sequential)
  assert record['seeds'] == [0, 1] and [s['seed_index'] for s in record['per_seed']] == [0, 1]
  assert record['top1'] == pytest.approx(sum(s['top1'] for s in record['per_seed']) / 2)
  assert record['top1_std'] is not None and record['recal_top1_std'] is not None
  assert record['steps'] == 2 and (record['width'], record['resolution']) == (0.35, 32)
  assert os.path.exists(os.path.join(sequential, 'trials', '0-seed1', sweep.RESULT_FILE))
  assert '±' in open(os.path.join(sequential, 'results.md')).read()
  assert os.path.getsize(os.path.join(sequential, 'width_by_depth_res.png')) > 0

  listed = _check(_args(f'--workdir={apart}', '--list', root=root)).strip().splitlines()
  assert [shlex.split(line)[-2:] for line in listed] == [['--trial=0', '--seed=0'],
                                                         ['--trial=0', '--seed=1']]
  # Seed 1 runs as a separate job, before seed 0 exists there. Seed 0 is copied from the
  # sequential run instead of trained again (that would add a third of the test's time and
  # show nothing more); the merge must still match the sequential run exactly.
  _check([sys.executable, *shlex.split(listed[1])[1:]])
  assert not os.path.exists(os.path.join(apart, sweep.RESULTS_FILE))  # --trial never merges.
  shutil.copytree(os.path.join(sequential, 'trials', '0'), os.path.join(apart, 'trials', '0'))
  stdout = _check(_args(f'--workdir={apart}', '--merge', root=root))
  assert 'd=1 r=1: best top1' in stdout and 'not finished' not in stdout
  assert sweep.without_timing(_results(apart)) == sweep.without_timing([record])
  assert os.path.getsize(os.path.join(apart, 'width_by_depth_res.png')) > 0
