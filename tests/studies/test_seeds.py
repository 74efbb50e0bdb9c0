"""Seeds and error bars: how a trial's seeds are derived, stored, combined and compared.

Everything here runs on made-up per-seed results written where a trial would write them, so no
model trains; the real multi-seed run is in test_width_by_depth_res.py.
"""

import json
import math
import os
import statistics

import ml_collections
import pytest

from efficientnet_jax.studies import points
from efficientnet_jax.studies import report
from efficientnet_jax.studies import seeds
from efficientnet_jax.studies import sweep
from efficientnet_jax.training import host_cpu
from experiments.configs import digits_search


def _config(seed_count=2):
  config = digits_search.get_config('tiny')
  config.seeds = seed_count
  return config


def _trials():
  return [sweep.Trial(k, points.Point(0.25 + 0.1 * k, 0.25, 32),
                      {'alpha': 1.0, 'beta': 1.0 + 0.4 * k, 'gamma': 1.0})
          for k in range(2)]


def _fake_top1(trial_id, seed_index):
  return round(0.5 + 0.1 * trial_id + 0.03 * seed_index, 4)


def _fake_run(workdir, trial, config, seed_index):
  """Writes what `sweep.run_trial` writes, with made-up figures (no training)."""
  result = sweep.planned_record(trial, config, seed_index)
  top1 = _fake_top1(trial.id, seed_index)
  result.update(steps=2, top1=top1, top5=1.0, loss=1.0 - top1, ema_top1=top1, ema_top5=1.0,
                ema_loss=1.0 - top1, train_seconds=10.0 + seed_index)
  sweep._write_json(os.path.join(sweep.trial_dir(workdir, trial.id, seed_index),
                                 sweep.RESULT_FILE), result)


def test_each_seed_index_trains_with_its_own_seed_in_its_own_directory():
  config = _config(3)
  assert seeds.count(config) == 3
  assert [seeds.training_seed(config, s) for s in range(3)] == [0, 1, 2]
  config.train.seed = 7
  assert [seeds.training_seed(config, s) for s in range(3)] == [7, 8, 9]
  # Seed index 0 keeps the single-seed directory; the others sit beside it.
  assert sweep.trial_dir('W', 4) == sweep.trial_dir('W', 4, 0) == os.path.join('W', 'trials',
                                                                              '4')
  assert sweep.trial_dir('W', 4, 2) == os.path.join('W', 'trials', '4-seed2')
  assert [(t.id, s) for t, s in sweep.items(_trials(), config)] == [
      (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
  # The number of seeds is not part of what a trial trains: its hash, which guards the saved
  # results, does not move.
  assert sweep.config_hash(_config(3).train) == sweep.config_hash(_config(1).train)
  assert seeds.count(digits_search.get_config()) == 1  # The default.
  for bad in (0, -1, 1.5, True):
    with pytest.raises(ValueError, match='whole number'):
      seeds.count(ml_collections.ConfigDict({'seeds': bad}))


def test_aggregate_keeps_every_seed_and_reports_mean_and_sample_std():
  shared = {'trial': 3, 'width': 0.5, 'alpha': 1.2, 'steps': 240, 'train_config_hash': 'abc'}
  values = [0.90, 0.80, 0.85]
  results = [{**shared, 'seed_index': s, 'seed': 5 + s, 'top1': v, 'ema_top1': None,
              'train_seconds': 100.0 + s} for s, v in enumerate(values)]
  record = seeds.aggregate(list(reversed(results)), ('top1', 'top5', 'ema_top1'),
                           sweep.TIMING_FIELDS)
  assert {k: record[k] for k in shared} == shared
  assert record['top1'] == pytest.approx(0.85)
  assert record['top1_std'] == pytest.approx(statistics.stdev(values)) == pytest.approx(0.05)
  assert record['ema_top1'] is None and record['ema_top1_std'] is None  # A missing metric.
  assert 'top5' not in record  # Produced by no seed.
  assert record['train_seconds'] == 101.0  # A seed's typical time.
  assert record['seeds'] == [5, 6, 7]
  assert [s['top1'] for s in record['per_seed']] == values  # In seed-index order.
  assert [s['seed_index'] for s in record['per_seed']] == [0, 1, 2]
  assert seeds.per_seed(record, 'top1') == values and seeds.seed_count(record) == 3

  one = seeds.aggregate(results[:1], ('top1',), sweep.TIMING_FIELDS)
  assert one['top1'] == 0.90 and one['top1_std'] is None  # No spread measured: None, not 0.
  assert seeds.mean_std([0.3]) == (0.3, None)
  assert seeds.mean_std([0.2, None]) == (None, None)


def _record(trial, values, alpha):
  mean, std = seeds.mean_std(values)
  return {'trial': trial, 'alpha': alpha, 'beta': 1.0, 'gamma': 1.0, 'nominal_ratio': alpha,
          'width': 0.5, 'depth': 0.25, 'resolution': 24, 'params': 1000, 'flops': 1e6 * alpha,
          'flops_ratio': alpha, 'top1': mean, 'top1_std': std, 'ema_top1': mean,
          'ema_top1_std': std, 'seeds': list(range(len(values))),
          'per_seed': [{'seed_index': s, 'seed': s, 'top1': v, 'ema_top1': v}
                       for s, v in enumerate(values)]}


def test_best_is_chosen_on_the_mean_and_its_lead_is_stated_with_what_can_be_said(tmp_path):
  # Trial 1 has the single best seed (0.95) but the lower mean; trial 0 wins on the mean.
  close = [_record(0, [0.88, 0.86, 0.87], 1.0), _record(1, [0.95, 0.70, 0.80], 2.0),
           _record(2, [0.50, 0.52, 0.51], 1.5)]
  assert report.best(close)['trial'] == 0
  summary = report.write_search(close, str(tmp_path))
  assert summary.startswith('best triple: alpha=1 beta=1 gamma=1 (trial 0): top1 0.8700 ± 0.0100')
  # No per-example predictions here: the lead, and no interval or verdict made up from stds.
  assert summary.splitlines()[1] == (
      'runner-up: trial 1 (alpha=2 beta=1 gamma=1), top1 0.8167 ± 0.1258; the best leads by '
      '+0.0533: no per-example predictions: interval not available')
  text = (tmp_path / 'results.md').read_text()
  assert '| **0.8700 ± 0.0100** |' in text and '0.9500, 0.7000, 0.8000' in text
  assert summary in text and (tmp_path / 'search.png').stat().st_size > 0
  assert '## Claims' in text and 'within one' not in text
  # One seed each: the same line (the difference is all there is to say).
  single = [_record(0, [0.9], 1.0), _record(1, [0.8], 2.0)]
  assert report.lead_line(single).endswith('interval not available')
  assert report.lead_line(single[:1]) is None
  assert '±' not in report.search_table(single) and 'per seed' not in report.search_table(single)


def test_list_names_one_command_per_trial_and_seed():
  argv = ['experiments/x.py', '--config=c.py:tiny', '--workdir=W', '--list', '--seed', '1',
          '--config.seeds=2']
  lines = sweep.trial_commands(_trials(), argv, seed_count=2)
  assert lines == [f'python experiments/x.py --config=c.py:tiny --workdir=W --config.seeds=2 '
                   f'--trial={k} --seed={s}' for k in range(2) for s in range(2)]
  # One seed: the commands a single-seed sweep always printed.
  assert sweep.trial_commands(_trials(), argv[:3], seed_count=1) == [
      f'python experiments/x.py --config=c.py:tiny --workdir=W --trial={k}' for k in range(2)]


def test_two_seed_sweep_resumes_and_merges_whatever_ran_where(tmp_path):
  config, trials = _config(2), _trials()
  apart, sequential = str(tmp_path / 'apart'), str(tmp_path / 'sequential')
  for trial, s in sweep.items(trials, config):
    _fake_run(sequential, trial, config, s)
  # Half the items, in another order, as separate jobs would: the merge takes what is finished.
  _fake_run(apart, trials[1], config, 1)
  _fake_run(apart, trials[0], config, 0)
  partial = sweep.merge(apart, trials, config)
  assert [(r['trial'], r['seeds']) for r in partial] == [(0, [0]), (1, [1])]
  assert partial[0]['top1_std'] is None
  assert sweep.unfinished(apart, trials, config) == [(0, 1), (1, 0)]
  for trial, s in ((trials[1], 0), (trials[0], 1)):
    _fake_run(apart, trial, config, s)
  merged = sweep.merge(apart, trials, config)
  assert sweep.unfinished(apart, trials, config) == []
  assert merged == sweep.merge(sequential, trials, config)
  with open(os.path.join(apart, sweep.RESULTS_FILE)) as f:
    assert json.load(f) == merged
  assert merged[1]['top1'] == pytest.approx(statistics.fmean([0.6, 0.63]))
  assert merged[1]['top1_std'] == pytest.approx(statistics.stdev([0.6, 0.63]))
  assert [s['train_seconds'] for s in merged[1]['per_seed']] == [10.0, 11.0]
  assert all('train_seconds' not in s for r in sweep.without_timing(merged)
             for s in r['per_seed'])

  # A seed trained for another config is refused, as a trial is.
  changed = _config(2)
  changed.train.learning_rate = 1.0
  with pytest.raises(ValueError, match='another config'):
    sweep.merge(apart, trials, changed)


def test_raising_the_seeds_reuses_a_finished_single_seed_trial_as_seed_zero(tmp_path):
  config, trial = _config(1), _trials()[0]
  path = os.path.join(sweep.trial_dir(str(tmp_path), trial.id), sweep.RESULT_FILE)
  sweep._write_json(path, {**sweep.planned_record(trial, config), 'top1': 0.75,
                           'train_seconds': 3.0})
  [record] = sweep.merge(str(tmp_path), [trial], config)
  assert record['top1'] == 0.75 and record['top1_std'] is None and record['seeds'] == [0]
  more = _config(2)
  assert sweep.load_result(str(tmp_path), trial, more)['top1'] == 0.75
  assert sweep.unfinished(str(tmp_path), [trial], more) == [(0, 1)]


def test_plots_draw_error_bars_for_several_seeds_and_none_for_one():
  several = [_record(0, [0.88, 0.86], 1.0), _record(1, [0.9, 0.7], 2.0)]
  fig = report.plot_search(several)
  containers = fig.axes[0].containers
  assert len(containers) == 1 and containers[0].has_yerr
  assert 'mean ± std' in fig.axes[0].get_ylabel()
  fig = report.plot_search([_record(0, [0.9], 1.0), _record(1, [0.8], 2.0)])
  assert not fig.axes[0].containers[0].has_yerr
  # A partial merge: one trial with a std, one without: a bar for the first only.
  bars = report._error_bars([several[0], _record(1, [0.8], 2.0)], 'top1')
  assert bars[0] == pytest.approx(0.0141421, abs=1e-6) and math.isnan(bars[1])


def test_end_train_loss_is_read_from_the_run_log_averaged_over_seeds_and_tabled(tmp_path):
  # The last 10% of 100 steps is steps 91-100; step 100 was logged twice (a resumed run): the
  # later value counts.
  log = [{'step': s, 'train_loss': loss} for s, loss in
         ((80, 9.0), (90, 9.0), (95, 1.0), (100, 7.0), (100, 2.0))] + [{'step': 100, 'top1': 0.5}]
  directory = tmp_path / 'run'
  directory.mkdir()
  (directory / 'metrics.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in log))
  assert sweep.train_loss_end(str(directory), 100) == 1.5
  assert sweep.train_loss_end(str(directory), 1000) is None  # Nothing logged after step 900.
  assert sweep.train_loss_end(str(tmp_path / 'missing'), 100) is None

  config, trials = _config(2), _trials()
  for trial, s in sweep.items(trials, config):
    _fake_run(str(tmp_path), trial, config, s)
    path = os.path.join(sweep.trial_dir(str(tmp_path), trial.id, s), sweep.RESULT_FILE)
    with open(path) as f:
      result = json.load(f)
    sweep._write_json(path, {**result, sweep.TRAIN_LOSS_END: 0.5 + trial.id + 0.1 * s})
  records = sweep.merge(str(tmp_path), trials, config)
  assert records[1][sweep.TRAIN_LOSS_END] == pytest.approx(1.55)
  assert [s[sweep.TRAIN_LOSS_END] for s in records[1]['per_seed']] == [1.5, 1.6]
  # Tabled as mean ± std beside the other figures; results written before it: no column.
  tabled = [{**_record(r['trial'], [0.9, 0.8], 1.0), sweep.TRAIN_LOSS_END: r[sweep.TRAIN_LOSS_END],
             f'{sweep.TRAIN_LOSS_END}_std': r[f'{sweep.TRAIN_LOSS_END}_std'],
             'per_seed': r['per_seed']} for r in records]
  assert '| train loss (end) |' in report.search_table(tabled)
  assert '| 1.550 ± 0.071 |' in report.search_table(tabled)
  assert 'train loss (end)' not in report.search_table([_record(0, [0.9, 0.8], 1.0)])


_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni

processor\t: 1
model name\t: Other
flags\t\t: fpu
"""


def test_cpu_identity_tells_apart_two_cpus_with_one_model_name():
  genoa = host_cpu.parse(_CPUINFO)
  assert genoa == {'cpu': 'AMD EPYC', 'cpu_id': 'family 25 model 17',
                   'cpu_simd': 'avx2 fma avx512f avx512_bf16 avx512_vnni'}
  milan = host_cpu.parse(_CPUINFO.replace('model\t\t: 17', 'model\t\t: 1')
                         .replace(' avx512f avx512_bf16 avx512_vnni', ''))
  assert milan['cpu'] == genoa['cpu'] and milan != genoa
  arm = host_cpu.parse('processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n')
  assert arm['cpu_simd'] == 'asimd sve' and 'cpu_id' not in arm


def test_each_seed_records_the_cpu_it_ran_on():
  env = sweep.environment()
  assert {'cpu', 'cpu_simd', 'cpu_count', 'jax', 'xla_flags'} <= set(env)
