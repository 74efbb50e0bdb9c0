"""The command lines as the README shows them: `--help`, the quick start's smoke run, the console.

The quick start's console (stdout and stderr together) before its first progress line is the
config and at most 10 other lines; library INFO logging stays off unless `--verbosity` asks.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

import reliability_helpers as rh

CLIS = {
    'main': ('--config', '--workdir', '--coordinator_address'),
    'evaluate': ('--config', '--workdir', '--step'),
    'summary': ('--json', '--models'),
    'convert': ('--source', '--model', '--input', '--output'),
    'predict': ('--model', '--weights', '--json'),
    'benchmark': ('--model', '--batch', '--mode', '--dtype', '--json'),
}
EXPERIMENTS = ('experiments/compound_search.py', 'experiments/scaling_curves.py')
QUICKSTART = os.path.join(rh.REPO, 'configs', 'quickstart.py')


def _run(args, timeout=rh.TIMEOUT_S):
  return subprocess.run([sys.executable, *args], cwd=rh.REPO, env=rh.environment(),
                        capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize('name', CLIS)
def test_help_lists_the_flags_and_exits_0(name):
  result = _run(['-m', f'efficientnet_jax.{name}', '--help'])
  assert result.returncode == 0, result.stderr[-2000:]
  assert f'python -m efficientnet_jax.{name}' in result.stdout  # The module's usage text.
  for flag in CLIS[name]:
    assert flag in result.stdout, flag


@pytest.mark.parametrize('script', EXPERIMENTS)
def test_experiment_scripts_run_as_files_from_the_repository(script):
  result = _run([script, '--help'])
  assert result.returncode == 0, result.stderr[-2000:]
  assert '--workdir' in result.stdout and '--trial' in result.stdout


def _quickstart_config_lines(arg: str) -> int:
  module_spec = importlib.util.spec_from_file_location('quickstart', QUICKSTART)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return len(str(module.get_config(arg)).splitlines())


@pytest.mark.slow
def test_quickstart_smoke_runs_with_a_quiet_console(tmp_path):
  # --config.rmsprop.decay: a key in a group, on the command line.
  # The console is the point here, so the cheapest program: 32 px, XLA's grouped depthwise
  # convolution and φ = -8 instead of -4 (7 blocks instead of 10): 74 → 40 CPU-seconds, most of
  # them compiling (2-core VM, 2026-12-06); the smoke size (64 px, the 'shift' form) costs more.
  result = _run(['-m', 'efficientnet_jax.main', '--config=configs/quickstart.py:smoke',
                 f'--workdir={tmp_path / "run"}', '--config.rmsprop.decay=0.95',
                 '--config.image_size=32', '--config.depthwise_impl=conv', '--config.phi=-8'])
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  # stderr is merged after stdout here; every stderr line counts as "before" the progress line.
  stdout = result.stdout.splitlines()
  first_progress = next(i for i, line in enumerate(stdout) if line.startswith('step 1/4 '))
  before = stdout[:first_progress] + result.stderr.splitlines()
  config_lines = _quickstart_config_lines('smoke')
  assert len(before) <= config_lines + 10, '\n'.join(before[config_lines:])
  assert 'decay: 0.95' in result.stdout
  assert not any('CheckpointManager' in line or 'INFO' in line for line in before)
  assert [line for line in stdout if line.startswith('eval step 4 | ')]


def test_unknown_model_prints_at_most_five_lines_the_error_last(tmp_path):
  result = _run(['-m', 'efficientnet_jax.main', '--config=configs/quickstart.py',
                 f'--workdir={tmp_path / "run"}', '--config.model=b99'])
  assert result.returncode == 2
  lines = (result.stdout + result.stderr).splitlines()
  assert len(lines) <= 5, lines
  assert lines[-1].startswith("error: Unknown model 'b99'") and 'lite4' in lines[-1]
  assert not (tmp_path / 'run').exists()
