"""The scaling experiments, run small: grid, resumable sweeps, solver, notebook.

Trials use the digits configs' `:tiny` variant (two 2-step trials of 7-block, 8-filter models at
32 and 48 px) in subprocesses, exactly as a user or a cluster runs them. Where the time goes: each
trial process pays ~10 s of imports and planning and ~8 s of TensorFlow before it trains; a trial
whose steps are not cached compiles them (the train step alone: ~35 s on one core), one whose steps
are cached still traces them and loads them (~20 s). So the expensive part is made once per
session, in the background from its start (tests/shared_runs.py): the sequential run of the
whole search, which the full-run, separate-process and rerun tests read (the `tiny_search`
fixture; they must not modify it), and one persistent compilation cache shared by every trial
process of the session.
"""

import json
import math
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import reliability_helpers as rh
import shared_runs
from efficientnet_jax.studies import comparisons
from efficientnet_jax.studies import grid
from efficientnet_jax.studies import points
from efficientnet_jax.studies import proxies
from efficientnet_jax.studies import report
from efficientnet_jax.studies import seeds
from efficientnet_jax.studies import sweep
from experiments import compound_search
from experiments import scaling_curves
from experiments.configs import digits_curves
from experiments.configs import digits_search
from experiments.configs import digits_width_by_depth_res
from experiments.configs import imagenette_search

REPO = pathlib.Path(__file__).resolve().parents[2]
SEARCH, TINY_SEARCH = shared_runs.SEARCH, shared_runs.TINY_SEARCH
DATA = REPO / 'tests' / 'data' / 'experiments'


def test_grid_keeps_only_triples_within_tolerance():
  axis = grid.frange(1.0, 2.0, 0.1)
  assert axis[:3] == (1.0, 1.1, 1.2) and axis[-1] == 2.0  # No float drift in the grid.
  triples = grid.enumerate_triples(axis, axis, axis, target=2.0, tolerance=0.05)
  kept = {(t.alpha, t.beta, t.gamma) for t in triples}
  assert (2.0, 1.0, 1.0) in kept and (1.2, 1.1, 1.2) in kept
  for a in axis:  # Exactly the admissible points of the grid, each once, in a fixed order.
    for b in axis:
      for g in axis:
        assert ((a, b, g) in kept) == (abs(a * b * b * g * g / 2.0 - 1.0) <= 0.05 + 1e-9)
  assert len(kept) == len(triples) and triples == sorted(
      triples, key=lambda t: (t.alpha, t.beta, t.gamma))
  assert all(min(t.alpha, t.beta, t.gamma) >= 1.0 for t in triples)
  with pytest.raises(ValueError, match='≥ 1'):
    grid.enumerate_triples([0.9, 1.0], [1.0], [1.0])

  search = digits_search.get_config().search
  shipped = grid.enumerate_triples(search.alphas, search.betas, search.gammas,
                                   target=search.target, tolerance=search.tolerance)
  assert len(shipped) >= 6
  assert all(abs(t.nominal_ratio / 2.0 - 1.0) <= search.tolerance + 1e-9 for t in shipped)


def test_imagenette_grid_admits_the_papers_own_triple():
  """(1.2, 1.1, 1.15): α·β²·γ² = 1.920, 4% below 2; a search that excludes it cannot find it."""
  search = imagenette_search.get_config().search
  triples = grid.enumerate_triples(search.alphas, search.betas, search.gammas,
                                   target=search.target, tolerance=search.tolerance)
  assert any(math.isclose(t.alpha, 1.2) and math.isclose(t.beta, 1.1) and
             math.isclose(t.gamma, 1.15) for t in triples)
  assert len(triples) == 109  # As experiments/README.md and the config's docstring say.


def _tiny_train():
  return digits_search.get_config('tiny').train


def test_solver_matches_the_flops_budget_as_closely_as_rounding_allows():
  train = _tiny_train()
  # 40 px: the last stages see 2×2 maps for any input in 33–64 px, so FLOPs grow smoothly with
  # the resolution (from ≤ 32 px they jump 1×1 → 2×2 and no resolution can match some budgets).
  base = points.Baseline(width=0.5, depth=0.25, resolution=40, resolution_multiple=1)
  budget = points.count_macs(train, points.compound_point(base, 1.0, 1.2, 1.1, 1.15))
  for dimension, tolerance in (('width', 0.03), ('resolution', 0.08)):
    solution = points.solve_single(train, base, dimension, budget)
    assert solution.flops == points.count_macs(train, solution.point)
    assert abs(solution.relative_error) <= tolerance, solution
  # No width on a fine grid builds a network closer to the budget than the solver's.
  best = points.solve_single(train, base, 'width', budget)
  for step in range(0, 31):
    coefficient = 1.0 + 0.02 * step
    flops = points.count_macs(train, points.single_point(base, 'width', coefficient))
    assert abs(flops / budget - 1) >= abs(best.relative_error) - 1e-12
  with pytest.raises(ValueError, match='stays below'):
    points.solve_single(train, base, 'depth', budget * 1000, max_coefficient=4.0)


def test_curves_plan_shares_the_baseline_and_matches_each_budget():
  trials = scaling_curves.plan(digits_curves.get_config('tiny'))
  series = [(t.record['series'], t.record['phi']) for t in trials]
  assert series == [('compound', 0.0), ('compound', 1.0), ('width', 1.0), ('depth', 1.0),
                    ('resolution', 1.0)]
  assert [t.id for t in trials] == list(range(5))
  budget = trials[1].record['flops']
  for t in trials[2:]:
    assert t.record['budget_flops'] == budget
    assert t.record['flops_vs_budget'] == pytest.approx(t.record['flops'] / budget - 1, abs=1e-6)
  assert trials[2].point.depth == trials[0].point.depth  # Width-only keeps depth and resolution.
  assert trials[2].point.resolution == trials[0].point.resolution


def test_stale_result_from_another_config_is_refused(tmp_path):
  config = digits_search.get_config('tiny')
  trial = sweep.Trial(0, points.Point(0.25, 0.5, 32), {'alpha': 2.0, 'beta': 1.0, 'gamma': 1.0})
  record = sweep.planned_record(trial, config)
  path = tmp_path / 'trials' / '0' / sweep.RESULT_FILE
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps({**record, 'top1': 0.5}))
  assert sweep.load_result(str(tmp_path), trial, config)['top1'] == 0.5
  config.train.learning_rate = 1.0
  with pytest.raises(ValueError, match='another config'):
    sweep.load_result(str(tmp_path), trial, config)



def test_a_trials_identity_is_every_key_its_numbers_depend_on_and_the_version(monkeypatch):
  identity = sweep.config_hash(digits_search.get_config('short').train)
  # The same training config in two studies is the same trial.
  assert sweep.config_hash(digits_curves.get_config('short').train) == identity
  # RUN keys count (other draws or other bits), as do RECIPE keys; NOTHING keys do not.
  for key, value in (('seed', 1), ('augment.on_device', True), ('depthwise_impl', 'shift'),
                     ('xla_backend_optimization_level', None), ('eval_batch_size', 180),
                     ('jpeg_dct_scaling', True), ('source_side', 6),
                     ('learning_rate', 0.02)):
    train = digits_search.get_config('short').train
    group, _, name = key.rpartition('.')
    (train[group] if group else train)[name] = value
    assert sweep.config_hash(train) != identity, key
  for key, value in (('data_service_address', 'localhost:5050'), ('log_every_steps', 7),
                     ('checkpoint_every_steps', 7), ('data_dir', '/elsewhere')):
    train = digits_search.get_config('short').train
    train[key] = value
    assert sweep.config_hash(train) == identity, key
  # Another dataset's keys change nothing here; with that dataset they count.
  train = digits_search.get_config('short').train
  train.cluttered_digits.clutter = 3
  assert sweep.config_hash(train) == identity
  train.dataset = 'cluttered_digits'
  cluttered = sweep.config_hash(train)
  train.cluttered_digits.clutter = 4
  assert cluttered != identity and sweep.config_hash(train) != cluttered
  # A trial's record carries its own config's identity: the study's `:detail` counts.
  trial = sweep.Trial(0, points.Point(0.5, 0.25, 24), {})
  plain, detail = (sweep.planned_record(trial, digits_search.get_config(arg))['train_config_hash']
                   for arg in (None, 'detail'))
  assert plain != detail
  # The code's computation version is part of it.
  monkeypatch.setattr(sweep, 'COMPUTATION_VERSION', sweep.COMPUTATION_VERSION + 1)
  assert sweep.config_hash(digits_search.get_config('short').train) != identity


def test_a_result_of_an_earlier_computation_version_is_refused_by_name(tmp_path):
  config = digits_search.get_config('tiny')
  trial = sweep.Trial(0, points.Point(0.25, 0.5, 32), {'alpha': 2.0, 'beta': 1.0, 'gamma': 1.0})
  path = tmp_path / 'trials' / '0' / sweep.RESULT_FILE
  path.parent.mkdir(parents=True)
  record = sweep.planned_record(trial, config)
  path.write_text(json.dumps({**record, 'top1': 0.5, 'computation_version': 1}))
  with pytest.raises(ValueError, match=r'computation version 1, this code computes version'):
    sweep.load_result(str(tmp_path), trial, config)
  path.write_text(json.dumps({k: v for k, v in record.items() if k != 'computation_version'}))
  with pytest.raises(ValueError, match=r'computation version None'):
    sweep.load_result(str(tmp_path), trial, config)


def test_digits_configs_take_short_or_tiny_and_name_both_otherwise():
  assert digits_search.get_config().train.total_steps == proxies.DIGITS_STEPS
  assert digits_search.get_config('short').train.total_steps == proxies.DIGITS_SHORT_STEPS
  assert digits_search.get_config('short').train.xla_backend_optimization_level == 0
  assert digits_curves.get_config('tiny').train.total_steps == 2
  assert digits_curves.get_config().source_detail == 0.0
  detail = digits_width_by_depth_res.get_config('detail')
  assert detail.source_detail == proxies.DIGITS_DETAIL and detail.train.source_side is None
  assert detail.train.total_steps == proxies.DIGITS_STEPS
  # Each trial's training config: the digits reduced to a quarter of its resolution.
  for resolution, side in ((24, 6), (28, 7), (32, 8)):
    point = points.Point(0.5, 0.25, resolution)
    assert points.with_point(detail.train, point, detail.source_detail).source_side == side
    assert points.with_point(detail.train, point).source_side is None
  with pytest.raises(ValueError, match="'short', 'detail' and 'tiny'"):
    digits_curves.get_config('long')


# --- Subprocess runs of the real script -------------------------------------------------------

def _run(*args, root):
  """Runs compound_search.py like a user does; returns stdout (fails the test on an error)."""
  return _check(shared_runs.search_args(*args, root=root))


def _check(command):
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=shared_runs.search_environment())
  assert done.returncode == 0, f'{shlex.join(command)}\n{done.stdout}\n{done.stderr[-4000:]}'
  return done.stdout


def _results(workdir):
  with open(os.path.join(workdir, sweep.RESULTS_FILE)) as f:
    return json.load(f)


@pytest.fixture
def search_root(tmp_path_factory):
  """The session's shared directory: its trial processes share one compilation cache there."""
  return rh.session_dir(tmp_path_factory)


@pytest.mark.slow
def test_full_run_writes_results_and_prints_the_best_triple(tiny_search):
  workdir, stdout = tiny_search
  results = _results(workdir)
  assert [r['trial'] for r in results] == [0, 1]
  assert [(r['alpha'], r['beta'], r['gamma']) for r in results] == [(1.0, 1.0, 1.4),
                                                                    (1.0, 1.4, 1.0)]
  for r in results:
    assert {'alpha', 'beta', 'gamma', 'nominal_ratio', 'width', 'depth', 'resolution', 'params',
            'flops', 'flops_ratio', 'top1', 'train_seconds'} <= set(r)
    assert 0.0 <= r['top1'] <= 1.0 and 0.0 <= r['recal_top1'] <= 1.0
    assert r['steps'] == 2 and r['flops_ratio'] > 1.0
  assert 'best triple: alpha=' in stdout
  for name in ('results.md', 'search.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 0


@pytest.mark.slow
def test_each_seed_saves_its_test_predictions_and_the_merge_tests_the_claim(tiny_search):
  workdir, stdout = tiny_search
  for trial in (0, 1):
    with open(os.path.join(sweep.trial_dir(workdir, trial), sweep.RESULT_FILE)) as f:
      result = json.load(f)
    predictions = sweep.read_predictions(workdir, trial)
    assert predictions['labels'].shape == (360,) and predictions['labels'].dtype == np.int32
    assert 'groups' not in predictions  # Digits: every test image its own source.
    # Each figure is its per-example correctness's mean, exactly: the raw and recalibrated
    # evals, with and without EMA weights.
    for metric in ('top1', 'ema_top1', 'recal_top1', 'recal_ema_top1'):
      assert predictions[metric].dtype == np.uint8 and predictions[metric].shape == (360,)
      assert predictions[metric].mean() == result[metric], (trial, metric)
    assert result['results_version'] == sweep.RESULTS_VERSION
  results = _results(workdir)
  assert all(r['top1_interval'][0] < r['top1'] < r['top1_interval'][1] for r in results)
  [comparison] = results[0]['comparisons']  # Trial 0 is the best: the claim is about it.
  assert comparison['difference'] == pytest.approx(results[0]['top1'] - results[1]['top1'],
                                                   abs=1e-12)
  # One seed: an interval over the test images, no verdict beyond inconclusive.
  assert comparison['verdict'] == 'inconclusive' and comparison['note'] == comparisons.ONE_SEED
  assert comparison['seeds'] == [0] and comparison['groups'] == 360
  assert 'test units: inconclusive (one seed' in stdout


@pytest.mark.slow
def test_listed_trials_run_apart_and_merge_like_a_sequential_run(tiny_search, tmp_path,
                                                                 search_root):
  workdir = str(tmp_path / 'sweep')
  listed = _run(f'--workdir={workdir}', '--list', root=search_root).strip().splitlines()
  assert len(listed) == 2
  for k, line in enumerate(listed):
    command = shlex.split(line)
    assert command[:2] == ['python', SEARCH] and command[-1] == f'--trial={k}'
    assert f'--config={TINY_SEARCH}' in command and f'--workdir={workdir}' in command
  for line in reversed(listed):  # Separate processes, in another order than the sequential run.
    _check([sys.executable, *shlex.split(line)[1:]])
  assert not os.path.exists(os.path.join(workdir, sweep.RESULTS_FILE))  # --trial never merges.
  # What `--merge` runs (in this process: it only plans, merges and draws).
  config = digits_search.get_config('tiny')
  merged = sweep.merge(workdir, compound_search.plan(config), config, comparisons.search_claims)
  assert sweep.without_timing(merged) == sweep.without_timing(_results(tiny_search[0]))
  assert _results(workdir) == merged


@pytest.mark.slow
def test_rerun_skips_finished_trials(tiny_search, tmp_path, search_root):
  workdir = str(tmp_path / 'killed')
  shutil.copytree(tiny_search[0], workdir)
  # As if killed after trial 1's last checkpoint, before its result was written.
  finished = os.path.join(workdir, 'trials', '0', sweep.RESULT_FILE)
  os.utime(finished, (1_000_000_000, 1_000_000_000))
  os.remove(os.path.join(workdir, 'trials', '1', sweep.RESULT_FILE))
  stdout = _run(f'--workdir={workdir}', root=search_root)
  assert 'trial 0/2: finished before, skipped' in stdout
  assert 'trial 1/2: training' in stdout
  assert os.path.getmtime(finished) == 1_000_000_000  # Trial 0 was not touched.
  assert os.path.exists(os.path.join(workdir, 'trials', '1', sweep.RESULT_FILE))
  assert sweep.without_timing(_results(workdir)) == sweep.without_timing(
      _results(tiny_search[0]))


# --- The notebook --------------------------------------------------------------------------------

def _made_up_width_results(directory):
  """A results.json of width_by_depth_res.py: two (d, r) curves of two widths, two seeds each."""
  records = []
  for d, r in ((1.0, 1.0), (2.0, 1.3)):
    for w in (1.0, 1.4):
      values = [0.5 + 0.1 * w + 0.05 * d, 0.52 + 0.1 * w]
      mean, std = seeds.mean_std(values)
      records.append({'trial': len(records), 'depth_coefficient': d, 'resolution_coefficient': r,
                      'width_coefficient': w, 'width': 0.5 * w, 'depth': 0.25 * d,
                      'resolution': 32 if r > 1 else 24, 'params': 1000,
                      'flops': 1e6 * w * w * d * r * r, 'flops_ratio': w * w * d * r * r,
                      'top1': mean, 'top1_std': std, 'ema_top1': mean, 'ema_top1_std': std,
                      'seeds': [0, 1], 'per_seed': [{'seed_index': s, 'seed': s, 'top1': v}
                                                    for s, v in enumerate(values)]})
  directory.mkdir()
  (directory / sweep.RESULTS_FILE).write_text(json.dumps(records))
  return directory


def test_notebook_executes_on_saved_results(tmp_path):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  notebook_dir = REPO / 'experiments' / 'notebooks'  # Where a reader opens it.
  notebook = nbformat.read(notebook_dir / 'scaling_ablation.ipynb', 4)
  parameters = [c for c in notebook.cells if 'parameters' in c.metadata.get('tags', [])]
  assert len(parameters) == 1
  width = _made_up_width_results(tmp_path / 'width')
  parameters[0].source = (f"SEARCH_DIR = {str(DATA / 'search')!r}\n"
                          f"CURVES_DIR = {str(DATA / 'curves')!r}\n"
                          f"WIDTH_DIR = {str(width)!r}\nMETRIC = 'top1'\n"
                          "TABLE1_MODEL = 'b0'\nTABLE1_PHI = 2.5\n")
  nbclient.NotebookClient(notebook, timeout=300, kernel_name='python3',
                          resources={'metadata': {'path': str(notebook_dir)}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  assert not [o for o in outputs if o.output_type == 'error']
  text = ''.join(o.get('text', '') for o in outputs)
  assert 'best: alpha=' in text
  # Saved results without per-example predictions: their lead has no interval, and says so.
  assert 'the best leads by +0.0361: no per-example predictions: interval not available' in text
  tables = ''.join(o.get('data', {}).get('text/markdown', '') for o in outputs)
  assert 'compound scaling beats width-only scaling at φ = 1' in tables
  assert 'widening w = 1 → 1.4 gains more at d=2, r=1.3' in tables
  assert 'width: 4 trials' in text
  assert 'b0: phi 2.5, ' in text and 'MBConv6, k5x5' in text  # Table 1 of a scaled B0.
  # search, ratios, curves, width curves, Table 1's per-stage shares.
  assert sum('image/png' in o.get('data', {}) for o in outputs) == 5


def test_report_writes_tables_and_plots_from_saved_results(tmp_path):
  with open(DATA / 'curves' / 'results.json') as f:
    curves = json.load(f)
  with open(DATA / 'search' / 'results.json') as f:
    search = json.load(f)
  summary = report.write_search(search, str(tmp_path))
  assert summary.startswith('best triple: alpha=')
  report.write_curves(curves, str(tmp_path))
  for name in ('results.md', 'search.png', 'curves.png'):
    assert (tmp_path / name).stat().st_size > 0
  table = report.ablation_table(curves)
  assert all(label in table for label in ('compound', 'width only', 'depth only',
                                          'resolution only'))


def test_notebook_executes_as_opened_on_the_committed_results():
  # What a reader sees on opening it: the committed cluttered-digits runs, their claims tabled
  # with intervals and verdicts.
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  notebook_dir = REPO / 'experiments' / 'notebooks'
  notebook = nbformat.read(notebook_dir / 'scaling_ablation.ipynb', 4)
  nbclient.NotebookClient(notebook, timeout=300, kernel_name='python3',
                          resources={'metadata': {'path': str(notebook_dir)}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  assert not [o for o in outputs if o.output_type == 'error']
  tables = ''.join(o.get('data', {}).get('text/markdown', '') for o in outputs)
  assert 'compound scaling beats depth-only scaling at φ = 2' in tables
  assert 'resolution-only scaling saturates' in tables
  assert 'supported' in tables and 'inconclusive' in tables
  assert 'widening w = 1 → 2.6 gains more at d=2, r=1.3' in tables  # Fig. 4's, 3 seeds.


def test_notebook_defaults_are_committed_results():
  # Opened as it is, the notebook draws the cluttered-digits runs the docs describe: every
  # default directory holds a results.json in the repository.
  nbformat = pytest.importorskip('nbformat')
  notebook = nbformat.read(REPO / 'experiments' / 'notebooks' / 'scaling_ablation.ipynb', 4)
  parameters = next(c for c in notebook.cells if 'parameters' in c.metadata.get('tags', []))
  defaults = {}
  exec(parameters.source, defaults)  # pylint: disable=exec-used
  directories = [defaults[k] for k in ('SEARCH_DIR', 'CURVES_DIR', 'WIDTH_DIR')]
  assert all(directories)
  for directory in directories:
    assert (REPO / directory / sweep.RESULTS_FILE).is_file(), directory
