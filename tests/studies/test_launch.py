"""Sweeps run as job arrays: the plan cache, `--item` / `--count`, the item lock, experiments/launch.py.

The fast tests check each part alone: a planner that counts its calls (no JAX), finished results
written by hand (so that `--item` and a whole sweep skip them instead of training), a lock held
by the test process while a script runs. The slow one launches the tiny digits search
(`digits_search.py:tiny`, two 2-step trials) from experiments/launch.py as one array of
submitit's LocalExecutor, stops one item mid-run through its array task (SIGTERM, the signal the
launcher's executors send before a time limit), and checks that the item is resubmitted, resumes
from its checkpoint and that the merged results are the sequential run's (the session's
`tiny_search`).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import reliability_helpers as rh
import shared_runs
from efficientnet_jax import errors
from efficientnet_jax.studies import locks
from efficientnet_jax.studies import plan_cache
from efficientnet_jax.studies import points
from efficientnet_jax.studies import sweep
from experiments import compound_search
from experiments import launch
from experiments.configs import digits_search

REPO = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = 'experiments/launch.py'
PREEMPTED_SEARCH = 'tests/studies/preempted_search.py'


def _planner(calls):
  """A planner of one trial per β of the config, counting its calls in `calls` (no JAX)."""
  def plan(config):
    calls.append(1)
    return [sweep.Trial(i, points.Point(0.25 * b, 0.5, 32), {'beta': b, 'flops': 100 * i})
            for i, b in enumerate(config.search.betas)]
  return plan


def test_the_plan_is_made_once_and_made_again_or_refused_when_the_config_changes(tmp_path):
  calls, workdir = [], str(tmp_path)
  planner, config = _planner(calls), digits_search.get_config('tiny')
  first = sweep.planned_trials(planner, config, workdir)
  assert [t.id for t in first] == [0, 1] and len(calls) == 1
  assert sweep.planned_trials(planner, config, workdir) == first and len(calls) == 1
  # Keys that change no trial keep the plan: the seeds, the ranking, paths and intervals.
  config.seeds, config.metric = 3, 'ema_top1'
  config.train.compilation_cache_dir, config.train.log_every_steps = '/elsewhere', 7
  assert sweep.planned_trials(planner, config, workdir) == first and len(calls) == 1
  # A training key is planned again; the same trials: the file takes the new key.
  config.train.learning_rate = 0.5
  assert sweep.planned_trials(planner, config, workdir) == first and len(calls) == 2
  assert sweep.planned_trials(planner, config, workdir) == first and len(calls) == 2
  # Other trials replace a plan that no trial has started ...
  config.search.betas = (1.0,)
  assert len(sweep.planned_trials(planner, config, workdir)) == 1 and len(calls) == 3
  # ... and are refused, in one message naming the change, once one has.
  os.makedirs(sweep.trial_dir(workdir, 0))
  config.search.betas = (1.0, 1.2, 1.4)
  with pytest.raises(errors.ConfigError, match=r'planned for another config.*search\.betas.*'
                     r'1 trials cached, 3 now.*new --workdir'):
    sweep.planned_trials(planner, config, workdir)
  assert len(plan_cache.read(workdir)['trials']) == 1  # The cached plan is kept.


def test_a_cached_plan_is_what_the_planner_returns(tmp_path):
  config, calls = digits_search.get_config('tiny'), []

  def plan(c):
    calls.append(1)
    return compound_search.plan(c)

  fresh = compound_search.plan(config)
  assert sweep.planned_trials(plan, config, str(tmp_path)) == fresh  # Planned and written ...
  assert sweep.planned_trials(plan, config, str(tmp_path)) == fresh  # ... and read back.
  assert len(calls) == 1


def test_a_lock_is_exclusive_released_by_a_killed_holder_and_agreed_by_all_processes(tmp_path):
  directory = str(tmp_path / 'trials' / '0')
  with locks.item_lock(directory):
    with pytest.raises(locks.ItemLocked, match=r'being trained by another process \(\S+ pid '):
      with locks.item_lock(directory):
        pass
  # A holder killed with SIGKILL leaves no stale lock.
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import fcntl, sys, time; f = open(sys.argv[1], "a"); '
       'fcntl.flock(f, fcntl.LOCK_EX); print("held", flush=True); time.sleep(60)',
       locks.lock_path(directory)], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline() == 'held\n'
  with pytest.raises(locks.ItemLocked):
    with locks.item_lock(directory):
      pass
  holder.kill()
  holder.wait()
  with locks.item_lock(directory):
    pass
  # Several processes: each locks its own file; one that found its lock held stops them all,
  # and the others release theirs.
  assert locks.lock_path(directory, 2).endswith('.lock.2')
  with pytest.raises(locks.ItemLocked, match='another copy of this multi-process run'):
    with locks.item_lock(directory, process_index=1, agree=lambda held: False):
      pass
  with locks.item_lock(directory, process_index=1, agree=lambda held: held):
    pass


def _finish(workdir, config, trial, seed_index):
  """Writes the result.json `sweep.run_trial` would, with made-up figures (no training)."""
  result = sweep.planned_record(trial, config, seed_index)
  result.update(steps=2, top1=0.5 + 0.1 * trial.id, ema_top1=0.5, train_seconds=1.0)
  sweep._write_json(os.path.join(sweep.trial_dir(workdir, trial.id, seed_index),
                                 sweep.RESULT_FILE), result)


def _search(*args):
  """Starts compound_search.py on the tiny config, as a user does."""
  return subprocess.Popen([sys.executable, shared_runs.SEARCH,
                           f'--config={shared_runs.TINY_SEARCH}', *args],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=shared_runs.search_environment())


def _done(process):
  stdout, stderr = process.communicate(timeout=300)
  return process.returncode, stdout, stderr


def test_item_and_count_name_the_lines_of_list_and_read_the_plan_made_once(tmp_path):
  workdir = str(tmp_path)
  config = digits_search.get_config('tiny')
  config.seeds = 2
  trials = sweep.planned_trials(compound_search.plan, config, workdir)  # Plans, in this process.
  plan = os.path.join(workdir, plan_cache.PLAN_FILE)
  os.utime(plan, (1_000_000_000, 1_000_000_000))
  every_item = sweep.items(trials, config)
  for trial, seed_index in every_item:
    _finish(workdir, config, trial, seed_index)
  common = (f'--workdir={workdir}', '--config.seeds=2')
  started = {name: _search(*common, *flags) for name, flags in (
      ('list', ['--list']), ('count', ['--count']), ('item1', ['--item=1']),
      ('item2', ['--item=2']), ('item4', ['--item=4']), ('both', ['--item=1', '--trial=0']))}
  done = {name: _done(process) for name, process in started.items()}
  for name in ('list', 'count', 'item1', 'item2'):
    assert done[name][0] == 0, done[name]
  listed = done['list'][1].strip().splitlines()
  assert len(listed) == int(done['count'][1]) == len(every_item) == 4
  assert launch.listed_items(listed) == [(t.id, s) for t, s in every_item]
  for n in (1, 2):  # Item N is --list's line N.
    trial, seed_index = every_item[n]
    assert listed[n].endswith(f'--trial={trial.id} --seed={seed_index}')
    assert f'trial {trial.id}/2, seed {seed_index}/2: finished before, skipped' in done[
        f'item{n}'][1]
  code, _, stderr = done['item4']
  assert code == 2 and stderr.strip().splitlines()[-1] == (
      'error: --item=4 is not an item of this config; items are 0..3 (the lines of --list; '
      '--count).')
  code, _, stderr = done['both']
  assert code == 2 and stderr.strip().splitlines()[-1].startswith(
      'error: --trial and --item are alternatives')
  # Every process read the plan this test made: none planned again.
  assert os.path.getmtime(plan) == 1_000_000_000


def test_a_second_copy_of_a_locked_item_exits_73_and_a_whole_sweep_skips_it(tmp_path):
  workdir = str(tmp_path)
  config = digits_search.get_config('tiny')
  trials = sweep.planned_trials(compound_search.plan, config, workdir)
  _finish(workdir, config, trials[0], 0)
  with locks.item_lock(sweep.trial_dir(workdir, 1)):  # As a copy training item 1 holds it.
    alone, whole = _search(f'--workdir={workdir}', '--item=1'), _search(f'--workdir={workdir}')
    code, _, stderr = _done(alone)
    assert code == locks.ITEM_LOCKED_EXIT_CODE == 73, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f'locked: {sweep.trial_dir(workdir, 1)} is being trained by another '
                           'process') and 'this copy stops' in last
    code, stdout, stderr = _done(whole)
  assert code == 0, stderr
  assert 'trial 0/2: finished before, skipped' in stdout
  assert 'trial 1/2: skipped, ' in stdout and 'is being trained by another process' in stdout
  assert 'not finished yet: trials [1]' in stdout
  with open(os.path.join(workdir, sweep.RESULTS_FILE)) as f:
    assert [r['trial'] for r in json.load(f)] == [0]
  assert not os.path.exists(os.path.join(sweep.trial_dir(workdir, 1), 'checkpoints'))


@pytest.mark.parametrize('script', ['experiments/compound_search.py',
                                    'experiments/scaling_curves.py',
                                    'experiments/width_by_depth_res.py', LAUNCH])
def test_help_lists_the_sweep_flags(script):
  done = subprocess.run([sys.executable, script, '--help'], cwd=REPO, capture_output=True,
                        text=True, timeout=120, env=shared_runs.search_environment())
  assert done.returncode == 0, done.stderr
  names = (('--engine', '--script', '--config', '--workdir', '--max_parallel', '--timeout_min',
            '--slurm_partition', '--slurm_gpus_per_node') if script == LAUNCH else
           ('--list', '--trial', '--seed', '--merge', '--item', '--count', '--config',
            '--workdir', '--coordinator_address'))
  for name in names:
    assert f'  {name}:' in done.stdout or f'  --[no]{name[2:]}:' in done.stdout, name


def test_an_array_task_turns_submitits_signal_into_sigterm_for_its_item(tmp_path):
  # The child stands in for the training: exit 75 on SIGTERM, as a preempted item does.
  child = ('import signal, sys, time\n'
           'signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))\n'
           'print("ready", sys.argv[1:], flush=True)\n'
           'time.sleep(60)\n'
           'sys.exit(1)\n')
  task = subprocess.Popen(
      [sys.executable, '-c', 'import sys; from experiments import launch; '
       'sys.exit(launch.ItemTask([sys.executable, "-c", sys.argv[1]], ".", {})(3))', child],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert task.stdout.readline() == "ready ['--item=3']\n"
  task.send_signal(signal.SIGUSR2)  # submitit's default preemption signal.
  assert task.wait(timeout=30) == 75


def test_the_slurm_executor_signals_sigterm_before_the_limit_and_throttles_the_array(
    tmp_path, monkeypatch):
  with pytest.raises(errors.UsageError, match='--engine=slurm: .*srun'):
    monkeypatch.setenv('PATH', str(tmp_path))
    launch.make_executor('slurm', str(tmp_path / 'logs'), timeout_min=30, signal_delay_s=120,
                         max_parallel=4)
  srun = tmp_path / 'srun'  # submitit only looks for it; nothing is submitted.
  srun.write_text('#!/bin/sh\nexit 0\n')
  srun.chmod(0o755)
  executor = launch.make_executor('slurm', str(tmp_path / 'logs'), timeout_min=30,
                                  signal_delay_s=120, max_parallel=4, partition='gpu',
                                  gpus_per_node=1)
  script = executor._make_submission_file_text('CMD', 'uid')  # pylint: disable=protected-access
  for line in ('#SBATCH --signal=TERM@120', '#SBATCH --time=30', '#SBATCH --partition=gpu',
               '#SBATCH --gpus-per-node=1', '#SBATCH --ntasks-per-node=1',
               'export SUBMITIT_PREEMPT_SIGNAL=TERM'):
    assert line in script, line
  assert executor.parameters['array_parallelism'] == 4


def test_launcher_bad_input_is_one_error_line(tmp_path):
  done = subprocess.run([sys.executable, LAUNCH, '--engine=local', '--script=experiments/nope.py',
                         f'--config={shared_runs.TINY_SEARCH}', f'--workdir={tmp_path}'],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      'error: --script=experiments/nope.py: no such file; the studies are '
      'experiments/compound_search.py, scaling_curves.py, width_by_depth_res.py.']
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_launched_array_requeues_a_preempted_item_and_merges_like_a_sequential_run(
    tiny_search, tmp_path_factory):
  root = rh.session_dir(tmp_path_factory)
  workdir = str(tmp_path_factory.mktemp('launched'))
  mark = os.path.join(workdir + '-mark')
  env = {**shared_runs.search_environment(), 'PREEMPTED_SEARCH_MARK': mark}
  start = time.time()
  launcher = subprocess.Popen(
      [sys.executable, LAUNCH, '--engine=local', f'--script={PREEMPTED_SEARCH}',
       f'--config={shared_runs.TINY_SEARCH}', f'--workdir={workdir}', '--max_parallel=2',
       '--poll_s=0.5',
       f'--config.train.compilation_cache_dir={shared_runs.search_cache_dir(root)}'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  while not os.path.exists(mark):  # Trial 1's first step is about to run.
    assert launcher.poll() is None, launcher.communicate()
    assert time.time() - start < 400, 'trial 1 never started'
    time.sleep(0.1)
  with open(mark) as f:
    _, array_task = map(int, f.read().split())
  # What the local controller (or SLURM) sends an array task before its time limit.
  os.kill(array_task, signal.SIGTERM)
  stdout, stderr = launcher.communicate(timeout=600)
  print(f'launched array: {time.time() - start:.0f} s\n{stdout}')
  assert launcher.returncode == 0, f'{stdout}\n{stderr[-4000:]}'
  assert 'item 0 (trial 0): finished' in stdout
  assert ('item 1 (trial 1): preempted: stopped with its checkpoint, exit 75; resubmitted '
          '(attempt 2 of 11)') in stdout
  assert stdout.count('submitted items') == 2 and 'item 1 (trial 1): finished' in stdout
  logs = ''.join(p.read_text() for p in pathlib.Path(workdir, launch.LOGS).glob('*_log.*'))
  assert 'stopped at step 1 with its checkpoint' in logs
  assert f'Resumed from {sweep.trial_dir(workdir, 1)}/checkpoints at step 1.' in logs
  with open(os.path.join(workdir, sweep.RESULTS_FILE)) as f:
    launched = sweep.without_timing(json.load(f))
  with open(os.path.join(tiny_search[0], sweep.RESULTS_FILE)) as f:
    sequential = sweep.without_timing(json.load(f))
  # Bit for bit, the end train loss of the stopped trial included: the interval the stop cut is
  # logged from the same per-step losses (the checkpoint carries the unlogged ones).
  assert launched == sequential
