"""The cluttered-digits studies: their calibrated proxy, their grid, and one real trial."""

import json
import math
import os
import shlex
import subprocess

import numpy as np
import pytest

import reliability_helpers as rh
import shared_runs
from efficientnet_jax import config as config_lib
from efficientnet_jax.input import cluttered_digits
from efficientnet_jax.studies import grid
from efficientnet_jax.studies import proxies
from efficientnet_jax.studies import sweep
from experiments.configs import cluttered_curves
from experiments.configs import cluttered_search
from experiments.configs import cluttered_width_by_depth_res

CONFIGS = (cluttered_search, cluttered_curves, cluttered_width_by_depth_res)


@pytest.mark.parametrize('module', CONFIGS, ids=lambda m: m.__name__.rsplit('.', 1)[-1])
def test_each_config_trains_the_calibrated_proxy(module):
  c = module.get_config()
  t = c.train
  assert (t.dataset, t.total_steps, t.grad_clip_norm, t.learning_rate, t.warmup_epochs) == (
      'cluttered_digits', proxies.CLUTTERED_STEPS, 1.0, 0.032, 0.3)
  assert dict(c.baseline) == proxies.DIGITS_BASELINE
  # The whole canvas at the trial's resolution: no crop, flip or augmentation policy.
  assert (t.augment.crop, t.augment.flip, t.augment.policy) == ('resize', False, 'none')
  # The calibrated construction is the schema's default, and the source's.
  assert cluttered_digits.Params.from_config(t) == cluttered_digits.Params()
  assert (cluttered_digits.Params().canvas, cluttered_digits.Params().clutter) == (32, 2)
  tiny = module.get_config('tiny')
  assert tiny.train.total_steps == 2 and tiny.train.cluttered_digits.test_size == 200
  with pytest.raises(ValueError, match="Unknown config arg 'detail'.*'tiny'"):
    module.get_config('detail')


def _triples(search):
  return [(t.alpha, t.beta, t.gamma) for t in grid.enumerate_triples(
      search.alphas, search.betas, search.gammas, target=search.target,
      tolerance=search.tolerance)]


def test_the_search_grid_holds_the_papers_triple_and_each_single_dimension():
  triples = _triples(cluttered_search.get_config().search)
  # As the config's docstring and experiments/README.md say.
  assert triples == [(1.0, 1.0, 1.4), (1.0, 1.4, 1.0), (1.2, 1.1, 1.15), (1.6, 1.1, 1.0),
                     (2.0, 1.0, 1.0)]
  wide = _triples(cluttered_search.get_config('wide').search)
  assert len(wide) == 10 and set(triples) < set(wide)
  assert math.isclose(grid.nominal_ratio(1.2, 1.1, 1.15), 1.92027)


def test_curves_reach_phi_3_in_each_dimension():
  curves = cluttered_curves.get_config().curves
  assert tuple(curves.phis) == (0, 1, 2, 3)
  assert (curves.alpha, curves.beta, curves.gamma) == (1.2, 1.1, 1.15)
  assert tuple(curves.dimensions) == ('width', 'depth', 'resolution')


def test_fig4_has_three_widths_per_curve_and_five_with_fine():
  fig4 = cluttered_width_by_depth_res.get_config().fig4
  assert tuple(fig4.depth_resolution) == ((1.0, 1.0), (1.0, 1.3), (2.0, 1.0), (2.0, 1.3))
  assert tuple(fig4.widths) == (1.0, 1.8, 2.6)
  fine = cluttered_width_by_depth_res.get_config('fine')
  assert tuple(fine.fig4.widths) == (1.0, 1.4, 1.8, 2.2, 2.6)
  assert fine.train.to_dict() == cluttered_width_by_depth_res.get_config().train.to_dict()


def test_the_dataset_alone_gives_the_calibrated_construction():
  plain = config_lib.get_config('b0', dataset='cluttered_digits')
  assert cluttered_digits.Params.from_config(plain) == cluttered_digits.Params()


@pytest.mark.slow
def test_a_tiny_trial_saves_predictions_grouped_by_test_digit(tmp_path_factory, tmp_path):
  """One real trial on the canvases: its per-example predictions carry each canvas's digit."""
  root = rh.session_dir(tmp_path_factory)
  workdir = str(tmp_path / 'search')
  command = shared_runs.search_args(
      '--config=experiments/configs/cluttered_search.py:tiny', f'--workdir={workdir}',
      '--trial=0', root=root)
  command = [a for a in command if not a.startswith('--config=experiments/configs/digits')]
  done = subprocess.run(command, cwd=rh.REPO, capture_output=True, text=True,
                        timeout=600, env=shared_runs.search_environment())
  assert done.returncode == 0, f'{shlex.join(command)}\n{done.stdout}\n{done.stderr[-4000:]}'
  with open(os.path.join(sweep.trial_dir(workdir, 0), sweep.RESULT_FILE)) as f:
    result = json.load(f)
  predictions = sweep.read_predictions(workdir, 0)
  assert predictions['labels'].shape == (200,) and predictions['groups'].shape == (200,)
  # 200 test canvases over the 360 test digits: each digit on at most one canvas.
  assert len(np.unique(predictions['groups'])) == 200
  assert predictions['top1'].mean() == result['top1']
  assert result['train_loss_end'] is not None and np.isfinite(result['train_loss_end'])
