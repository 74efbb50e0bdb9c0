"""benchmarks/end_to_end_input.py: real JPEGs through the real pipeline into the real step.

One tiny run (B0 at φ = -8, 32 px, batch 8, 8 JPEGs of 500×375 in 2 classes, 2 timed steps, both
placements) checks the plumbing and that the figures agree with each other, not the speed. It
compiles into the tests' persistent cache (conftest.py), so a rerun skips most compiling.
"""

import json
import math
import os
import subprocess
import sys
import tempfile

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks', 'end_to_end_input.py')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(SCRIPT))
import end_to_end_input  # pylint: disable=g-import-not-at-top,wrong-import-position

CACHE = os.path.join(tempfile.gettempdir(), 'efficientnet_jax_test_xla_cache')
B0_CONFIG = os.path.join(REPO, 'configs', 'b0.py')


def run_script(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, check=False)


def test_variant_names_the_network_as_cpu_compare_does():
  assert end_to_end_input.parse_variant('b0φ-4') == ('b0', -4.0)
  assert end_to_end_input.parse_variant('b0phi-8') == ('b0', -8.0)
  assert end_to_end_input.parse_variant('b4') == ('b4', None)
  with pytest.raises(ValueError, match='b0, b1'):
    end_to_end_input.parse_variant('b0φ')


def test_the_config_is_the_config_files_with_the_keys_in_its_arg_string():
  args = end_to_end_input.parse_args([f'--config={B0_CONFIG}:epochs=3', '--batch_size=64'])
  config = end_to_end_input.training_config(args, data_dir='/data/jpegs', num_classes=4,
                                            on_device=True, dtype='float32')
  assert (config.dataset, config.data_dir, config.num_classes) == ('folder', '/data/jpegs', 4)
  assert (config.model, config.phi, config.image_size) == ('b0', -4.0, 64)
  assert config.augment.on_device and config.augment.policy == 'autoaugment'
  assert config.num_epochs == 3.0  # The user's ':arg' is kept.
  # Derived by the builder from the final batch (TF's batch/8), as `main` derives it.
  assert config.bn_group_size == 8
  with pytest.raises(AttributeError):
    config.no_such_key = 1  # Locked, as config_flags locks it.


def test_a_tiny_run_reports_consistent_figures_for_both_placements(tmp_path):
  jpeg_dir = tmp_path / 'jpegs'
  done = run_script(f'--config={B0_CONFIG}:compilation_cache_dir={CACHE}', '--variant=b0φ-8',
                    '--image_size=32', '--batch_size=8', '--num_jpegs=8', '--num_classes=2',
                    '--steps=2', '--warmup_steps=1', '--target_images_per_sec=15000',
                    f'--jpeg_dir={jpeg_dir}', '--json')
  assert done.returncode == 0, done.stderr[-3000:]
  r = json.loads(done.stdout.strip().splitlines()[-1])

  assert r['jpegs']['count'] == 8 and r['jpegs']['classes'] == 2 and not r['jpegs']['reused']
  assert 50e3 < r['jpegs']['bytes_mean'] < 200e3  # ImageNet-like (~110 KB), not noise or flat.
  assert sorted(os.listdir(jpeg_dir / 'train')) == ['class_00', 'class_01']  # Kept.
  assert r['dtype'] == 'float32' and r['machine']['jax_backend'] == 'cpu'
  assert r['machine']['host_cpus'] == os.cpu_count() and r['machine']['cpu']
  for key in ('device_kind', 'jax_version', 'flax_version', 'tensorflow_version', 'date'):
    assert r['machine'][key]

  assert set(r['placements']) == {'host', 'device'}
  for name, p in r['placements'].items():
    assert p['augment_on_device'] == (name == 'device')
    assert p['augment_policy'] == 'autoaugment'
    e2e, inputs, step = p['end_to_end'], p['input_alone'], p['step_alone']
    for rate in (e2e['images_per_sec'], inputs['images_per_sec'], step['images_per_sec'],
                 inputs['images_per_cpu_sec'], e2e['host_cpu_s_per_image']):
      assert rate > 0
    assert p['efficiency'] == pytest.approx(
        e2e['images_per_sec'] / min(inputs['images_per_sec'], step['images_per_sec']))
    assert p['cores_needed_for_target'] == math.ceil(15000 / inputs['images_per_cpu_sec'])
    assert 0 <= e2e['input_wait_fraction'] <= 1
    assert e2e['input_wait_s'] <= e2e['wall_s']
    assert p['input_bound'] == (e2e['input_wait_fraction'] > r['input_bound_wait'])
    assert p['verdict'] == ('input-bound' if p['input_bound'] else 'step-bound')


@pytest.mark.parametrize('bad, says', [('--placements=host,gpu', '--placements'),
                                       ('--num_jpegs=4', '--num_jpegs=4'),
                                       ('--variant=b9', 'b0, b1'),
                                       (f'--config={B0_CONFIG}:aug=bogus', 'augment.policy')])
def test_a_bad_flag_is_one_error_line(bad, says):
  done = run_script(bad)
  assert done.returncode == 2
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and says in lines[0], done.stderr
