"""A trial's identity cannot go stale: a tiny trial's numbers are pinned to the computation version.

A study reuses a finished trial whose identity (`sweep.config_hash`: the computation version and
every config key the numbers depend on) matches, so a code change that makes the same config
compute other numbers must bump `sweep.COMPUTATION_VERSION`, or a resumed sweep would mix old and
new numbers under one identity. This test fails on such a change until the version is bumped and
the new version's numbers are added to `GOLDEN`.

The numbers are trial 0 of the tiny compound search (`experiments/configs/digits_search.py:tiny`,
two steps at XLA's level 0, as `tests/shared_runs.py` runs it). Evaluation counts are compared
exactly; losses to 1e-5 relative: bit for bit on one machine, but XLA:CPU vectorises for the host
CPU, so float32 sums may round differently on another (the multi-host test sees ~7e-7), while a
change in what is computed (data, initialisation, augmentation, optimisation) moves them further.
"""

import json
import os

import pytest

from efficientnet_jax.studies import sweep

# The tiny trial's figures from version 3 on: versions 4 to 7 changed the rounding of sums the
# tiny trial's two steps do not reach (or not beyond the losses' tolerance), so only the identity
# moved.
_FIGURES_SINCE_3 = {'top1': 0.10277777777777777, 'top5': 0.5055555555555555,
                    'recal_top1': 0.14722222222222223, 'recal_top5': 0.5944444444444444,
                    'loss': 2.3041273328993057, 'ema_loss': 2.303569539388021,
                    'recal_loss': 2.9695149739583333, 'recal_ema_loss': 3.03794182671441}

# Computation version → trial 0's identity and numbers. Append a version; never edit an old one.
GOLDEN = {
    2: {'train_config_hash': '72ba50468da1', 'top1': 0.10277777777777777,
        'top5': 0.5055555555555555, 'recal_top1': 0.14722222222222223,
        'recal_top5': 0.5944444444444444, 'loss': 2.3041273328993057,
        'ema_loss': 2.303569539388021, 'recal_loss': 2.96951904296875,
        'recal_ema_loss': 3.0379431830512154},
    # XLA:CPU's FAST_COMPILE preset by default (`train.xla_cpu_opt_preset`): a new key, so a new
    # hash; the numbers moved within the losses' tolerance (recal_loss by 1.4e-6 relative).
    3: {'train_config_hash': '3ea998438040', **_FIGURES_SINCE_3},
    # The shift-form depthwise convolution's hand-written gradient (CPU): its sums round in
    # another order (B0's train state moves by ~1e-6 relative over three steps).
    4: {'train_config_hash': '34d011469cf5', **_FIGURES_SINCE_3},
    # The shift form leaves out the taps that meet only padding (on small maps): some sums lose
    # exact zeros and round otherwise.
    5: {'train_config_hash': 'c9def205e0af', **_FIGURES_SINCE_3},
    # Its kernel gradient is summed in two stages (row chunks added elementwise, then one
    # reduction): another order.
    6: {'train_config_hash': 'c645ef7c114e', **_FIGURES_SINCE_3},
    # The 1×1 products on (rows, channels): XLA:CPU's kernel gradient by another kernel.
    7: {'train_config_hash': '2805ce0966a4', **_FIGURES_SINCE_3},
}
_LOSSES = ('loss', 'ema_loss', 'recal_loss', 'recal_ema_loss')


def test_the_numbers_of_this_computation_version_are_pinned(tiny_search):
  workdir, _ = tiny_search
  with open(os.path.join(workdir, 'trials', '0', sweep.RESULT_FILE)) as f:
    result = json.load(f)
  assert max(GOLDEN) == sweep.COMPUTATION_VERSION, (
      f'sweep.COMPUTATION_VERSION is {sweep.COMPUTATION_VERSION}: add its numbers to GOLDEN')
  golden = GOLDEN[sweep.COMPUTATION_VERSION]
  assert result['computation_version'] == sweep.COMPUTATION_VERSION
  assert result['train_config_hash'] == golden['train_config_hash'], (
      "the tiny search's training config changed: a config change is a new identity by "
      'itself; update train_config_hash in GOLDEN (and the numbers, if they moved too)')
  changed = {k: (result[k], v) for k, v in golden.items() if k != 'train_config_hash' and
             result[k] != (pytest.approx(v, rel=1e-5) if k in _LOSSES else v)}
  assert not changed, (
      f'The same config now computes other numbers than computation version '
      f'{sweep.COMPUTATION_VERSION} did ((now, pinned) = {changed}). If the change is meant, '
      'bump sweep.COMPUTATION_VERSION and add its numbers to GOLDEN here: saved results of the '
      'old version are then refused by name instead of being mixed with new ones.')
