"""Multi-host on one machine: 2 processes × 2 CPU devices against 1 process × 4 devices.

The pair is started with the multi-process flags (`--coordinator_address`, `--num_processes`,
`--process_id`), joins through `jax.distributed.initialize` and talks over gloo. The global batch
is the same for any process count (each process feeds its slice of it), so the losses must equal
the single process's (the `reliability_reference` fixture) up to float32 rounding: gloo adds the devices'
partial BN statistics and gradients in another order than the in-process all-reduce, a few ulps
(≤ 5e-7 relative here). A wrong data slice or a missing all-reduce is ≥ 1e-3.
"""

import math

import pytest

import reliability_helpers as rh

RTOL = 1e-6


def _close(a: float, b: float) -> bool:
  return math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0)


@pytest.mark.slow
def test_two_processes_equal_one_and_their_checkpoint_restores_in_one(reliability_reference,
                                                                      tmp_path):
  reference_dir, reference_eval = reliability_reference
  pair = tmp_path / 'pair'
  address = f'--coordinator_address=127.0.0.1:{rh.free_port()}'
  launches = [rh.Launch(rh.main_args(pair, address, '--num_processes=2', f'--process_id={i}'),
                        tmp_path / f'process{i}', rh.environment(devices=2))
              for i in range(2)]
  try:
    for launch in launches:
      assert launch.wait() == 0, launch.tail()
  finally:
    for launch in launches:
      launch.kill()
  assert 'Process 1/2 of a multi-process run' in launches[1].stdout  # Really two processes.

  expected, losses = rh.train_losses(reference_dir), rh.train_losses(pair)
  assert sorted(losses) == list(range(1, rh.TOTAL_STEPS + 1))
  for step, loss in expected.items():
    assert _close(losses[step], loss), (step, losses[step], loss)

  # The pair's checkpoint (each process wrote its part) restores in one process of 4 devices and
  # evaluates like the single process's.
  restored = rh.evaluate_json(pair)
  assert restored['step'] == reference_eval['step'] == rh.TOTAL_STEPS
  for key, value in reference_eval.items():
    assert _close(restored[key], value), (key, restored, reference_eval)
