"""Multi-host on one machine: 2 processes × 2 CPU devices against 1 process × 4 devices.

Also on 2 processes: a preemption notice to one of them (both stop at one agreed step, exit 75,
and the rerun resumes where they stopped, still equal to the single process), and a studies
trial.

The pair is started with the multi-process flags (`--coordinator_address`, `--num_processes`,
`--process_id`), joins through `jax.distributed.initialize` and talks over gloo. The global batch
is the same for any process count (each process feeds its slice of it), so the losses must equal
the single process's (the `reliability_reference` fixture) up to float32 rounding: gloo adds the devices'
partial BN statistics and gradients in another order than the in-process all-reduce, a few ulps
(≤ 5e-7 relative here). A wrong data slice or a missing all-reduce is ≥ 1e-3.
"""

import json
import math
import os
import re
import signal

import pytest

import reliability_helpers as rh
import shared_runs
from efficientnet_jax import errors
from efficientnet_jax.studies import sweep

RTOL = 1e-6


def _close(a: float, b: float) -> bool:
  return math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0)


def _pair(workdir, log_dir, *flags: str, faults: bool = False) -> list[rh.Launch]:
  """`main` as 2 processes × 2 CPU devices joined through the hand-started flags."""
  address = f'--coordinator_address=127.0.0.1:{rh.free_port()}'
  log_dir.mkdir()
  return [rh.Launch(rh.main_args(workdir, address, '--num_processes=2', f'--process_id={i}',
                                 *flags, faults=faults),
                    log_dir / f'process{i}', rh.environment(devices=2))
          for i in range(2)]


def _stopped_step(launch: rh.Launch) -> int:
  match = re.search(r'^preempted: \S+ .*stopped at step (\d+) with its checkpoint', launch.stderr,
                    re.MULTILINE)
  assert match, launch.tail()
  return int(match.group(1))


@pytest.mark.slow
def test_two_processes_equal_one_and_a_sigterm_to_one_stops_both_then_resume_like_one(
    reliability_reference, tmp_path):
  """2 × 2 devices compute what 1 × 4 do; a preemption notice to one host stops both at one step.

  A pair is sent SIGTERM on process 1 only (process 0 learns it through jax's preemption
  service): both exit 75 with a checkpoint of one agreed step. The rerun pair resumes from it;
  every step's loss, before the stop and after the resume, equals the single process's (1e-6),
  and the checkpoint the pair wrote together restores and evaluates in one process like the
  single process's. A wrong data slice, position or RNG after the resume moves a loss by
  ≥ 1e-3. (Two pairs, not also an uninterrupted one to compare bit for bit: on CPU each
  process of a pair compiles cold, ~40 CPU-seconds; the single process's resume is checked bit
  for bit in tests/training/test_reliability.py.)
  """
  reference_dir, reference_eval = reliability_reference
  workdir = tmp_path / 'pair'
  runs = {}
  try:
    # Slowed steps (0.3 s each), so that the signal lands mid-run.
    runs['preempted'] = _pair(workdir, tmp_path / 'preempted_logs', '--fault_step_delay=0.3',
                              faults=True)
    first, second = runs['preempted']
    first.wait_until(lambda: 'step 2/' in first.stdout, 'step 2')
    second.signal(signal.SIGTERM)
    codes = [launch.wait() for launch in runs['preempted']]
    assert codes == [errors.RETRY_EXIT_CODE] * 2, (codes, first.tail(), second.tail())
    assert 'Process 1/2 of a multi-process run' in second.stdout  # Really two.
    stopped = {_stopped_step(launch) for launch in runs['preempted']}
    assert len(stopped) == 1, stopped  # One agreed step, saved by both.
    step, = stopped
    assert 2 <= step < rh.TOTAL_STEPS and step in rh.checkpoint_steps(workdir)
    runs['resumed'] = _pair(workdir, tmp_path / 'resumed_logs')
    for launch in runs['resumed']:
      assert launch.wait() == 0, launch.tail()
  finally:
    for launches in runs.values():
      for launch in launches:
        launch.kill()

  resumed = re.search(r'^Resumed from \S+ at step (\d+)\.', runs['resumed'][0].stdout, re.MULTILINE)
  assert resumed and int(resumed.group(1)) == step, runs['resumed'][0].tail()
  expected, losses = rh.train_losses(reference_dir), rh.train_losses(workdir)
  assert sorted(losses) == list(range(1, rh.TOTAL_STEPS + 1))
  for logged_step, loss in expected.items():
    assert _close(losses[logged_step], loss), (logged_step, losses[logged_step], loss)
  # The pair's checkpoint (each process wrote its part) restores in one process of 4 devices and
  # evaluates like the single process's.
  restored = rh.evaluate_json(workdir)
  assert restored['step'] == reference_eval['step'] == rh.TOTAL_STEPS
  for key, value in reference_eval.items():
    assert _close(restored[key], value), (key, restored, reference_eval)


@pytest.mark.slow
def test_a_studies_trial_runs_on_two_processes_like_on_one(tiny_search, tmp_path):
  """The experiment scripts join a multi-process run as `main` does (trial 0 of the tiny search)."""
  workdir = tmp_path / 'pair_search'
  address = f'--coordinator_address=127.0.0.1:{rh.free_port()}'
  launches = [rh.Launch(shared_runs.search_args(f'--workdir={workdir}', '--trial=0', address,
                                                '--num_processes=2', f'--process_id={i}',
                                                root=str(tmp_path)),
                        tmp_path / f'trial{i}', rh.environment(devices=2))
              for i in range(2)]
  try:
    for launch in launches:
      assert launch.wait() == 0, launch.tail()
  finally:
    for launch in launches:
      launch.kill()
  with open(os.path.join(workdir, 'trials', '0', sweep.RESULT_FILE)) as f:
    pair = json.load(f)
  with open(os.path.join(tiny_search[0], 'trials', '0', sweep.RESULT_FILE)) as f:
    single = json.load(f)
  assert pair['environment']['processes'] == 2 and single['environment']['processes'] == 1
  planned = ('train_config_hash', 'flops', 'params', 'steps', 'seed')
  assert {k: pair[k] for k in planned} == {k: single[k] for k in planned}
  # The devices' partial sums add up in another order across processes: float32 ulps, which
  # two steps at the recipe's learning rate do not grow past 1e-4; top-1 within one image.
  for key in ('loss', 'recal_loss'):
    assert math.isclose(pair[key], single[key], rel_tol=1e-4), (key, pair[key], single[key])
  for key in ('top1', 'recal_top1'):
    assert abs(pair[key] - single[key]) <= 1 / 360 + 1e-9, (key, pair[key], single[key])
  # Process 0 saved the whole test set's correctness, in the source's order (the labels are the
  # single process's), each figure its mean.
  predictions = sweep.read_predictions(str(workdir), 0)
  assert (predictions['labels'] == sweep.read_predictions(tiny_search[0], 0)['labels']).all()
  for key in ('top1', 'ema_top1', 'recal_top1', 'recal_ema_top1'):
    assert predictions[key].mean() == pair[key], key
