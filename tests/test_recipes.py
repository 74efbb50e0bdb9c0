"""The published recipes: each variant's default, the `:aug=` alternatives, BN groups, the README."""

import os
import re

import pytest

from efficientnet_jax import config as config_lib
from efficientnet_jax import recipes
from efficientnet_jax.models import scaling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_TABLE_2 = {'b0': 77.1, 'b1': 79.1, 'b2': 80.1, 'b3': 81.6, 'b4': 82.9, 'b5': 83.6,
                 'b6': 84.0, 'b7': 84.3}


@pytest.mark.parametrize('model', sorted(PAPER_TABLE_2))
def test_b_configs_default_to_autoaugment_and_the_paper_number(model):
  config = config_lib.get_config(model)
  assert config.augment.policy == 'autoaugment'
  assert (config.batch_size, config.num_epochs, config.bn_group_size) == (4096, 350.0, 512)
  line = config_lib.describe_recipe(config)
  assert line.startswith(f'recipe: {model}, AutoAugment v0 augmentation, as published')
  assert f'{PAPER_TABLE_2[model]}% ImageNet top-1' in line and 'groups of 512' in line


@pytest.mark.parametrize('model, magnitude, top1', [('b5', 17, 83.7), ('b7', 28, 84.7)])
def test_randaugment_is_one_override_away_with_tf_magnitude(model, magnitude, top1):
  config = config_lib.get_config(model, 'aug=randaugment')
  assert (config.augment.policy, config.augment.randaugment_magnitude) == ('randaugment',
                                                                            magnitude)
  assert config.augment.randaugment_layers == 2
  assert f'as published' in config_lib.describe_recipe(config)
  assert f'{top1}% ImageNet top-1' in config_lib.describe_recipe(config)


def test_unpublished_combination_runs_but_says_so():
  config = config_lib.get_config('b0', 'aug=randaugment')
  assert config.augment.randaugment_magnitude == recipes.TF_DEFAULT_MAGNITUDE
  line = config_lib.describe_recipe(config)
  assert line.startswith('recipe: not a published one') and 'b5, b7, b8' in line
  assert "b0's is AutoAugment v0" in line
  changed = config_lib.describe_recipe(config_lib.get_config('b0', 'batch=512,epochs=30'))
  assert changed.startswith('recipe: not as published') and 'batch_size=512' in changed
  # Keys that change how a run executes, not what it computes, keep it the published recipe.
  same = config_lib.get_config('b0', 'seed=3,log_every_steps=7,res=224')
  assert 'as published' in config_lib.describe_recipe(same)


def test_b8_l2_and_lite_recipes():
  b8 = config_lib.get_config('b8')
  assert (b8.augment.policy, b8.augment.randaugment_magnitude) == ('randaugment', 28)
  assert 'no published top-1' in config_lib.describe_recipe(b8)
  assert config_lib.describe_recipe(config_lib.get_config('l2')).startswith('recipe: not a published one')
  lite = config_lib.get_config('lite3')
  assert lite.augment.policy == 'none' and '79.8%' in config_lib.describe_recipe(lite)


def test_bn_group_is_tf_normalisation_batch_unless_set():
  assert config_lib.get_config('b0', 'batch=1024').bn_group_size == 128
  assert config_lib.get_config('b0', 'batch=1024,grad_accum_steps=16').bn_group_size == 64
  assert config_lib.get_config('b0', 'bn_group_size=0').bn_group_size == 0
  assert config_lib.get_config('b0', 'batch=100').bn_group_size == 0  # Not a multiple of 8.
  assert config_lib.get_config('b0', 'smoke').bn_group_size == 4
  assert config_lib.get_config('b0', 'bn_group_size=8,smoke').bn_group_size == 8
  assert recipes.tf_bn_group_size(4096) == 512


def test_smoke_on_digits_keeps_the_recipe_augmentation():
  config = config_lib.get_config('b0', 'smoke,dataset=digits')
  assert config.augment.policy == 'autoaugment'


def test_readme_recipe_table_matches_the_code():
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  rows = re.findall(r'^\| (\w+) \| (\d+) \| ([^|]+) \| (\d+) \| (\d+) \| (\d+) \| ([^|]+) \|',
                    readme, re.M)
  assert {row[0] for row in rows} == set(scaling.MODEL_NAMES)
  names = {'AutoAugment v0': 'autoaugment', 'RandAugment': 'randaugment', 'none': 'none'}
  for model, res, augmentation, group, batch, epochs, number in rows:
    config = config_lib.get_config(model)
    policy = names[augmentation.split(' (')[0].strip()]
    assert policy == config.augment.policy, model
    assert int(res) == scaling.get_variant(model).resolution
    assert (int(group), int(batch), float(epochs)) == (
        config.bn_group_size, config.batch_size, config.num_epochs), model
    published = recipes.PUBLISHED.get((model, policy))
    if published and published.top1 is not None:
      assert f'**{published.top1}%**' in number, model
    else:
      assert number.strip().startswith('none'), model
    if policy == 'randaugment':
      assert f'M={config.augment.randaugment_magnitude}' in augmentation, model
