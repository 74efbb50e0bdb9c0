"""benchmarks/device_augment_parity.py: the device's augmentation pixels against XLA:CPU's."""

import numpy as np
import pytest

parity = pytest.importorskip('benchmarks.device_augment_parity')


def test_compare_counts_the_differences():
  cpu = np.zeros((3, 4, 4, 3), np.uint8)
  device = cpu.copy()
  assert parity.compare(cpu, device)['bit_exact']
  device[1, 2, 2, 0] = 5
  device[2, 0, 0, 1] = 255
  r = parity.compare(cpu, device)
  assert not r['bit_exact'] and r['differing_values'] == 2 and r['max_abs_diff'] == 255
  assert r['differing_images'] == 2 and r['differing_fraction'] == 2 / cpu.size


def test_each_op_gets_every_argument_and_both_signs():
  base = parity.images(16)
  assert base.dtype == np.uint8 and base.shape[1:] == (16, 16, 3)
  # Rotate: five magnitudes, each with several keys (the sign is drawn from the key).
  batch, ops, args, keys = parity.op_batch('Rotate', base)
  assert len(set(args.tolist())) == 5 and len(batch) == len(ops) == len(keys) == 20 * len(base)
  # Translations: RandAugment's and AutoAugment's constants at small levels too.
  assert len(parity.op_arguments('TranslateX')) > len(parity.op_arguments('Rotate'))
  assert parity.op_arguments('Invert') == [0.0]


def test_the_cli_on_the_cpu_reports_every_op(capsys):
  assert parity.main(['--size=16']) == 0
  out = capsys.readouterr().out
  assert '16 of 16 ops bit-exact' in out and 'autoaugment_v0' in out
  assert parity.main(['--size=4']) == 2
