"""Fault tolerance, end to end: real `main` subprocesses killed, signalled, corrupted and poisoned.

Each test compares against one uninterrupted run of tests/reliability_config.py (8 steps, a
checkpoint every 2) made once per session (the `reliability_reference` fixture). Results must be
bit-identical: JSON floats round-trip exactly, so `==` on the parsed values compares the bits.
"""

import os
import re
import shutil
import signal
import time

import pytest

import fault_injection
from efficientnet_jax import errors
import reliability_helpers as rh

# Slows each step down so that a signal lands between steps of the test's choosing.
SLOW_STEPS = '--fault_step_delay=0.3'
PREEMPTION_BOUND_S = 60  # Signal → exit: the current step, a checkpoint write and its wait.


def _resumed_step(launch: rh.Launch) -> int:
  return int(re.search(r'Resumed from \S+ at step (\d+)\.', launch.stdout).group(1))


def _preempt(launch: rh.Launch, sig: int, after_step: int) -> int:
  """Signals `launch` once it logged `after_step`; checks a clean, prompt exit; returns its step."""
  launch.wait_until(lambda: f'step {after_step}/' in launch.stdout, f'step {after_step}')
  sent = time.time()
  launch.signal(sig)
  assert launch.wait() == errors.RETRY_EXIT_CODE, launch.tail()
  assert time.time() - sent < PREEMPTION_BOUND_S
  name = signal.Signals(sig).name
  stopped = int(re.search(rf'^preempted: {name} received: stopped at step (\d+) ', launch.stderr,
                          re.MULTILINE).group(1))
  assert after_step <= stopped < rh.TOTAL_STEPS
  return stopped


def _kill_during_checkpoint_write(launch: rh.Launch, workdir, after_step: int) -> str:
  """SIGKILLs `launch` while orbax is writing a checkpoint of a step > `after_step`.

  The process is frozen (SIGSTOP) as soon as a write's temporary directory appears; if the write
  is still unfinished then, the kill certainly interrupts it, else the next write is tried.
  """
  deadline = time.time() + rh.TIMEOUT_S
  while time.time() < deadline:
    pending = [n for n in rh.unfinished_writes(workdir) if int(n.split('.')[0]) > after_step]
    if pending:
      launch.signal(signal.SIGSTOP)
      if set(pending) <= set(rh.unfinished_writes(workdir)):
        launch.kill()
        return pending[0]
      launch.signal(signal.SIGCONT)
    assert launch.process.poll() is None, f'ended before a write was caught:\n{launch.tail()}'
    time.sleep(0.005)
  raise AssertionError('no checkpoint write seen')


@pytest.mark.slow
def test_killed_or_preempted_anywhere_then_rerun_ends_bit_identical(reliability_reference,
                                                                     tmp_path):
  reference_dir, reference_eval = reliability_reference
  workdir = tmp_path / 'run'
  launch = lambda n: rh.Launch(rh.main_args(workdir, SLOW_STEPS, faults=True),
                               tmp_path / f'launch{n}')

  # 1. SIGKILL during set-up (the checkpoint manager exists, step 1 has not finished).
  first = launch(1)
  first.wait_until(lambda: fault_injection.FIRST_STEP_LINE in first.stdout, 'set-up')
  first.kill()
  assert 'step 1/' not in first.stdout and not rh.checkpoint_steps(workdir)

  # 2. SIGTERM between checkpoints: a checkpoint of the current step, exit 75; the next run
  # resumes from it.
  second = launch(2)
  preempted = _preempt(second, signal.SIGTERM, after_step=3)
  assert preempted in rh.checkpoint_steps(workdir)

  # 3. SIGKILL in the middle of a checkpoint write.
  third = launch(3)
  third.wait_until(lambda: 'Resumed from' in third.stdout, 'resume')
  assert _resumed_step(third) == preempted
  interrupted = _kill_during_checkpoint_write(third, workdir, after_step=preempted)
  assert interrupted in rh.unfinished_writes(workdir)

  # 4. The unfinished write is ignored and removed; SIGINT then stops the run like SIGTERM.
  fourth = launch(4)
  fourth.wait_until(lambda: 'Resumed from' in fourth.stdout, 'resume')
  assert 'unfinished checkpoint write' in fourth.stderr and interrupted in fourth.stderr
  resumed = _resumed_step(fourth)
  assert preempted <= resumed < int(interrupted.split('.')[0])
  interrupted_again = _preempt(fourth, signal.SIGINT, after_step=resumed + 1)

  # 5. Finish without interruption.
  fifth = rh.run_main(workdir, log_prefix=tmp_path / 'launch5')
  assert _resumed_step(fifth) == interrupted_again
  assert not rh.unfinished_writes(workdir)

  assert rh.train_losses(workdir) == rh.train_losses(reference_dir)
  assert sorted(rh.train_losses(workdir)) == list(range(1, rh.TOTAL_STEPS + 1))
  assert rh.final_eval(workdir) == rh.final_eval(reference_dir)
  assert rh.evaluate_json(workdir) == reference_eval


@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_previous_with_warning(reliability_reference,
                                                                       tmp_path):
  reference_dir, _ = reliability_reference
  workdir, checkpoints = rh.copy_of_reference(reference_dir, tmp_path / 'run')
  latest = os.path.join(checkpoints, str(rh.TOTAL_STEPS))
  # Truncate the largest file of the latest checkpoint (its array data) to half, as a full disk
  # or an interrupted copy would.
  files = [os.path.join(root, name) for root, _, names in os.walk(latest) for name in names]
  biggest = max(files, key=os.path.getsize)
  os.truncate(biggest, os.path.getsize(biggest) // 2)

  launch = rh.run_main(workdir, log_prefix=tmp_path / 'rerun')

  previous = os.path.join(checkpoints, str(rh.TOTAL_STEPS - 2))
  warning = next(line for line in launch.stderr.splitlines() if 'is damaged' in line)
  assert f'{latest} (' in warning and f'checkpoint {previous} instead' in warning
  assert _resumed_step(launch) == rh.TOTAL_STEPS - 2
  assert os.path.isdir(latest + '.damaged')  # Kept for inspection, out of orbax's way.
  assert rh.checkpoint_steps(workdir)[-1] == rh.TOTAL_STEPS  # Saved again.
  assert rh.train_losses(workdir) == rh.train_losses(reference_dir)
  assert rh.final_eval(workdir) == rh.final_eval(reference_dir)


@pytest.mark.slow
def test_nan_stops_the_run_with_one_line_and_keeps_the_last_checkpoint(reliability_reference,
                                                                       tmp_path):
  reference_dir, _ = reliability_reference
  workdir = tmp_path / 'run'
  launch = rh.run_main(workdir, '--fault_nonfinite_step=3', faults=True, check=False)

  assert launch.process.returncode == 3, launch.tail()
  errors = [line for line in launch.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'Traceback' not in launch.stderr, launch.tail()
  assert 'NaN/Inf at step 3' in errors[0] and 'skip_nonfinite_steps' in errors[0]
  assert os.path.join(str(workdir), 'checkpoints', '2') in errors[0]
  assert rh.checkpoint_steps(workdir) == [2] and not rh.unfinished_writes(workdir)
  # Intact: the same bits as the uninterrupted run's checkpoint of step 2.
  assert rh.restore_arrays(workdir, 2) == rh.restore_arrays(reference_dir, 2)


@pytest.mark.slow
def test_failed_checkpoint_write_is_one_line_exit_4_and_keeps_the_last_one(reliability_reference,
                                                                           tmp_path):
  reference_dir, _ = reliability_reference
  workdir, checkpoints = rh.copy_of_reference(reference_dir, tmp_path / 'run')
  for step in (6, 8):  # As if the run had reached step 5 of 8.
    shutil.rmtree(os.path.join(checkpoints, str(step)))

  # Every file may grow to 200 kB: the metrics fit, the checkpoint of step 6 (~2 MB) does not,
  # as on a full disk.
  launch = rh.run_main(workdir, '--fault_file_size_limit=200000', faults=True, check=False)
  assert launch.process.returncode == 4, launch.tail()
  errors = [line for line in launch.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and launch.stderr.rstrip().endswith(errors[0]), launch.tail()
  assert f'Writing checkpoint {os.path.join(checkpoints, "6")} failed' in errors[0]
  assert f'the last complete checkpoint, {os.path.join(checkpoints, "4")}, is intact' in errors[0]
  assert 'rerun the same command to resume' in errors[0]
  # Intact: the last complete checkpoint has the uninterrupted run's bits, so the rerun resumes
  # from it as after any other stop (the tests above).
  assert rh.checkpoint_steps(workdir) == [2, 4]
  assert rh.restore_arrays(workdir, 4) == rh.restore_arrays(reference_dir, 4)
