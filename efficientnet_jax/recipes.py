"""The published recipes: which augmentation and BN normalisation batch each number came from.

A variant's default config (`configs/b0.py` …) is the recipe behind its published ImageNet top-1;
`config.describe_recipe` says, for any config, whether it is that recipe and, if not, in which keys
it differs.

Sources (details and the full table: docs/reference.md §5, README "Recipes"):
* paper (arXiv 1905.11946 v5) Table 2, and tensorflow/tpu `models/official/efficientnet/README.md`
  §2: B0–B7 were trained with AutoAugment policy v0 (its "AutoAugment (AA)" row, the paper's
  numbers); RandAugment checkpoints exist for B5 (M=17) and B7 (M=28), and its footnote gives
  B8's flags (M=28) without a RandAugment number;
* tensorflow/tpu `models/official/efficientnet/lite/README.md`: Lite0–4 FP32 top-1 (that README does
  not say which augmentation; TF `main.py`'s default, `augment_name=None`, is none);
* tensorflow/tpu `utils.py`, `TpuBatchNormalization._moments`: BN statistics per core up to 8
  cores, over groups of `max(8, cores // 8)` cores above; for a global batch B on 8 cores or on
  any slice of ≥ 64 cores that is B/8 examples (512 at the recipe's 4096; 1024 on a 32-core and
  2048 on a 16-core slice, which the sources do not say were used).
"""

from __future__ import annotations

import dataclasses


TF_BN_CORES = 8  # The batch is split into this many normalisation groups (see module docstring).


@dataclasses.dataclass(frozen=True)
class Published:
  """A published recipe: the variant, its augmentation and the number it reproduces."""
  model: str
  policy: str
  top1: float | None  # ImageNet top-1 in %; None where TF gives the flags but no number.
  source: str
  magnitude: int | None = None  # RandAugment's M (N = 2 throughout).


_AA = 'paper Table 2; TF README §2, AutoAugment row'
_RA = 'TF README §2, RandAugment row and footnote'
_BASE = 'TF README §2, baseline preprocessing row'
_LITE = 'TF lite/README.md, FP32 accuracy'
PUBLISHED: dict[tuple[str, str], Published] = {
    (p.model, p.policy): p for p in (
        Published('b0', 'none', 76.7, _BASE),
        Published('b1', 'none', 78.7, _BASE),
        Published('b2', 'none', 79.8, _BASE),
        Published('b3', 'none', 81.1, _BASE),
        Published('b4', 'none', 82.5, _BASE),
        Published('b5', 'none', 83.1, _BASE),
        Published('b0', 'autoaugment', 77.1, _AA),
        Published('b1', 'autoaugment', 79.1, _AA),
        Published('b2', 'autoaugment', 80.1, _AA),
        Published('b3', 'autoaugment', 81.6, _AA),
        Published('b4', 'autoaugment', 82.9, _AA),
        Published('b5', 'autoaugment', 83.6, _AA),
        Published('b6', 'autoaugment', 84.0, _AA),
        Published('b7', 'autoaugment', 84.3, _AA),
        Published('b5', 'randaugment', 83.7, _RA, magnitude=17),
        Published('b7', 'randaugment', 84.7, _RA, magnitude=28),
        Published('b8', 'randaugment', None,
                  "TF README §2 footnote (B8's only published number, 85.5%, is AdvProp + "
                  'AutoAugment, which this codebase does not implement)', magnitude=28),
        Published('lite0', 'none', 75.1, _LITE),
        Published('lite1', 'none', 76.7, _LITE),
        Published('lite2', 'none', 77.6, _LITE),
        Published('lite3', 'none', 79.8, _LITE),
        Published('lite4', 'none', 81.5, _LITE),
    )
}
# TF main.py's `randaug_magnitude` default, for variants without a published RandAugment recipe.
TF_DEFAULT_MAGNITUDE = 10
def default_policy(model: str) -> str:
  """The augmentation policy of `model`'s published recipe (randaugment for l2, which has none)."""
  if model.startswith('lite'):
    return 'none'
  return 'autoaugment' if (model, 'autoaugment') in PUBLISHED else 'randaugment'


def randaugment_magnitude(model: str) -> int:
  """TF's RandAugment M for `model`: the published one, else TF main.py's default (10)."""
  published = PUBLISHED.get((model, 'randaugment'))
  return published.magnitude if published else TF_DEFAULT_MAGNITUDE


def tf_bn_group_size(batch_size: int, grad_accum_steps: int = 1) -> int:
  """TF's BN normalisation batch for a global batch: batch/8 (0, the whole batch, if it cannot).

  With gradient accumulation the statistics are per micro-batch, so the group is at most one.
  """
  if batch_size % TF_BN_CORES:
    return 0
  group = batch_size // TF_BN_CORES
  micro = batch_size // max(1, grad_accum_steps)
  group = min(group, micro)
  return group if micro % group == 0 else 0


def top1_text(published: Published) -> str:
  """'77.1% ImageNet top-1', or 'no published top-1'."""
  return (f'{published.top1}% ImageNet top-1' if published.top1 is not None
          else 'no published top-1')
