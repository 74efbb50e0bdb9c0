"""`training.xla_options`: the CPU preset and optimisation level reach XLA_FLAGS; bad ones fail."""

import os

import pytest

from efficientnet_jax import config as config_lib
from efficientnet_jax.errors import ConfigError
from efficientnet_jax.training import setup
from efficientnet_jax.training import xla_options


def test_apply_adds_both_flags(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_dump_to=/tmp/x')
  xla_options.apply(backend_optimization_level=1, cpu_opt_preset='FAST_RUNTIME')
  assert os.environ['XLA_FLAGS'].split() == [
      '--xla_dump_to=/tmp/x', '--xla_backend_optimization_level=1',
      '--xla_cpu_opt_preset=FAST_RUNTIME']


def test_the_users_xla_flags_win(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_opt_preset=DEFAULT')
  xla_options.apply(cpu_opt_preset='FAST_COMPILE')
  assert os.environ['XLA_FLAGS'] == '--xla_cpu_opt_preset=DEFAULT'


def test_none_leaves_xla_its_defaults(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  xla_options.apply(backend_optimization_level=None, cpu_opt_preset=None)
  assert 'XLA_FLAGS' not in os.environ


def test_an_unknown_preset_is_one_line_before_anything_is_set(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '')
  with pytest.raises(ConfigError, match=r"Unknown xla_cpu_opt_preset 'fast'; use one of: "
                                        r'FAST_COMPILE, DEFAULT, FAST_RUNTIME'):
    xla_options.apply(backend_optimization_level=0, cpu_opt_preset='fast')
  assert os.environ['XLA_FLAGS'] == ''


def test_the_config_default_is_fast_compile_and_validate_refuses_a_bad_one():
  config = config_lib.get_config('b0')
  assert config.xla_cpu_opt_preset == xla_options.DEFAULT_CPU_OPT_PRESET == 'FAST_COMPILE'
  config.xla_cpu_opt_preset = 'O3'
  with pytest.raises(ConfigError, match='xla_cpu_opt_preset'):
    setup.validate(config)
