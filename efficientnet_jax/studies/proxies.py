"""The proxy tasks the scaling experiments train on: digits (CPU, minutes) and imagenette (GPU/TPU).

An experiment config is a ConfigDict with
  train     a training config (`efficientnet_jax.config.get_config`): data, recipe and the fixed
            per-trial budget (`total_steps`); width/depth/image_size are set per trial;
  baseline  width, depth, resolution, resolution_multiple: the network every trial scales from
            (φ = 0), and the multiple scaled resolutions are rounded to;
  metric    the result field that ranks trials ('top1', 'recal_top1', 'ema_top1', …);
  seeds     how many times each trial trains, seed index S with `train.seed + S` (default 1;
            results then report each metric's mean and sample std over the seeds: `seeds.py`);
  recalibrate_bn_batches   0, or the batches to re-estimate BN statistics on before a 2nd eval;
  source_detail   0, or the fraction of each trial's resolution the digits are area-reduced to
            first (`:detail`; each trial's `train.source_side`, `points.with_point`).
XLA's optimisation level is the training config's (`train.xla_backend_optimization_level`), so
that it is part of a trial's identity.
The search, curves and width-by-depth-and-resolution configs add their own section
(`search`, `curves`, `fig4`).
"""

from __future__ import annotations

import ml_collections

from efficientnet_jax import config


def experiment(train, baseline: dict, **extra) -> ml_collections.ConfigDict:
  """Assembles an experiment config from a training config and a baseline."""
  c = ml_collections.ConfigDict()
  c.train = train
  c.baseline = ml_collections.ConfigDict(baseline)
  c.metric = 'top1'
  # Not part of the training config (`train`), so its hash, which guards saved results, stays
  # the same whatever the number of seeds.
  c.seeds = 1
  # Training batches (of 64) to re-estimate BN statistics on before a second eval (`recal_*`
  # fields); 0: off. Short proxy runs may need it (`recalibration`).
  c.recalibrate_bn_batches = 0
  c.source_detail = 0.0
  for key, value in extra.items():
    c[key] = value
  return c


# Digits: B0 at width 0.5, depth 0.25 (one block per stage: 7 blocks, 0.9 M multiply-adds) at
# 24 px. The five stride-2 stages end on a 1×1 map for inputs up to 32 px and on 2×2 above, so
# from a 32 px baseline any γ > 1 costs 2.5–4× the FLOPs instead of γ²; from 24 px every γ ≤ 1.4
# stays within 32 px (multiple 4: 24, 28, 32) and costs what the rounding says.
DIGITS_BASELINE = dict(width=0.5, depth=0.25, resolution=24, resolution_multiple=4)


# Steps of 32 images per digits trial. DIGITS_STEPS (26.7 epochs, about the quick start's 25):
# the deepest network any digits study trains has reached its plateau by then (its curve:
# experiments/README.md, "Does every trial converge?"), so a trial's top-1 measures the network,
# not how fast it gets going. DIGITS_SHORT_STEPS (5.3 epochs) is the earlier budget, kept as the
# configs' `:short` so that the results saved with it can be reproduced and compared.
DIGITS_STEPS = 1200
DIGITS_SHORT_STEPS = 240


def digits_train(total_steps: int = DIGITS_STEPS, **overrides) -> ml_collections.ConfigDict:
  """The fixed per-trial budget on the embedded digits (1,437 train / 360 test images).

  A cosine run of `total_steps` steps of 32 images, RMSProp at the quick start's peak rate after
  two warm-up epochs, BN momentum 0.9 as in the quick start. Each choice keeps a run from ranking
  how fast a network gets going instead of the network: a higher rate diverged, a shorter warm-up
  stalled the deeper trials, and TF's BN momentum 0.99 left the moving statistics describing much
  earlier weights (the figures: experiments/README.md, "Why the digits proxy is set up this way").
  """
  values = dict(
      dataset='digits', dtype='float32', batch_size=32, eval_batch_size=360,
      total_steps=total_steps, lr_schedule='cosine', learning_rate=0.016, lr_base_batch_size=128,
      warmup_epochs=2.0, bn_momentum=0.9, ema_decay=0.99, dropout_rate=0.1, drop_path_rate=0.1,
      label_smoothing=0.1, log_every_steps=40,
      eval_every_steps=1_000_000,  # Evaluate once, after the last step.
      checkpoint_every_steps=200 if total_steps > DIGITS_SHORT_STEPS else 80, keep_checkpoints=1,
      shuffle_buffer=2048, bn_group_size=0)
  values['augment.policy'] = 'none'  # 8×8 digits: AutoAugment's shifts are sized for 224 px.
  values.update(overrides)
  return config.get_config('b0', **values)


def digits_experiment(short: bool = False) -> ml_collections.ConfigDict:
  """The digits proxy every digits config starts from.

  Args:
    short: the earlier 240-step budget (`DIGITS_SHORT_STEPS`) instead of the converged one.
  """
  c = experiment(digits_train(DIGITS_SHORT_STEPS if short else DIGITS_STEPS), DIGITS_BASELINE)
  # With BN momentum 0.9 the raw eval is sound, so no recalibration (set 8 to compare: 512 images).
  c.recalibrate_bn_batches = 0
  c.metric = 'top1'
  # XLA's level 0 compiles a trial's steps faster and runs them slower on CPU: the faster choice
  # for 240 steps, the slower one for 1,200 (measurements in experiments/README.md).
  c.train.xla_backend_optimization_level = 0 if short else None
  return c


# `:detail`: each trial sees the digits area-reduced to a quarter of its input resolution
# (`source_detail`, each trial's `train.source_side`): the 24-px baseline 6×6, 28 px 7×7, 32 px and up the stored 8×8. On the
# stored digits a larger input is the same 64 pixels upsampled, only more compute; with this,
# raising the resolution also shows the network detail it could not see, the paper's premise.
DIGITS_DETAIL = 0.25


def digits_config_arg(c: ml_collections.ConfigDict, arg: str | None) -> None:
  """Applies a digits config's ':arg': None, 'short', 'detail' (`DIGITS_DETAIL`) or 'tiny'.

  'short' is applied by `digits_experiment(short=True)`; here it is only accepted.
  """
  if arg == 'tiny':
    apply_tiny(c)
  elif arg == 'detail':
    c.source_detail = DIGITS_DETAIL
  elif arg not in (None, '', 'short'):
    raise ValueError(f"Unknown config arg {arg!r}; the args are 'short', 'detail' and 'tiny'.")


def apply_tiny(c: ml_collections.ConfigDict) -> None:
  """`:tiny`: 2 train steps of a 7-block, 8-filter model at 32 px (tests and plumbing checks).

  Depthwise layers use XLA's grouped convolution: for two steps, compiling is all the time, and
  the CPU's faster-running 'shift' form compiles a third slower.
  """
  c.baseline.update(dict(width=0.25, depth=0.25, resolution=32, resolution_multiple=8))
  c.recalibrate_bn_batches = 1
  t = c.train
  t.xla_backend_optimization_level = 0  # Two steps: compiling is all the time.
  t.depthwise_impl = 'conv'
  t.batch_size, t.eval_batch_size, t.total_steps = 16, 360, 2
  t.warmup_epochs, t.lr_schedule = 0.0, 'constant'
  t.log_every_steps = t.eval_every_steps = t.checkpoint_every_steps = 2


# Cluttered digits (`input/cluttered_digits.py`, the schema's default construction: one digit of
# 10–14 px among 2 pieces of 4 px on a 32 px canvas; 10,000 train / 5,000 test canvases): the
# digits baseline, which at 24 px sees the digit at 7.5–10.5 px. CLUTTERED_STEPS (15.4 epochs) is
# the budget chosen on the baseline's convergence curve (experiments/README.md, "A proxy with
# headroom"): the baseline needs several thousand steps to leave chance on this task at all.
CLUTTERED_STEPS = 4800


def cluttered_train(total_steps: int = CLUTTERED_STEPS, **overrides) -> ml_collections.ConfigDict:
  """The fixed per-trial budget on the cluttered digits: `digits_train`'s recipe, two changes.

  The global gradient norm is clipped at 1 and the peak rate doubled (0.008 at batch 32). With
  10 classes, the reference's head initialisation (uniform ±1/√10) starts the logits large
  (train loss ≈ 4.3, gradient norm ≈ 50 over the first 40 steps); unclipped, those first steps
  knock the network onto the class prior, where it stays for hundreds of steps (the calibration
  runs in experiments/README.md). Warm-up 0.3 epochs (94 steps), as in the calibration.
  """
  values = dict(dataset='cluttered_digits', eval_batch_size=500, warmup_epochs=0.3,
                learning_rate=0.032, grad_clip_norm=1.0, checkpoint_every_steps=600)
  values.update(overrides)  # The dataset's preset resizes the whole canvas: no crop or flip.
  return digits_train(total_steps, **values)


def cluttered_experiment() -> ml_collections.ConfigDict:
  """The cluttered-digits proxy every cluttered config starts from (the digits baseline)."""
  return experiment(cluttered_train(), DIGITS_BASELINE)


def cluttered_config_arg(c: ml_collections.ConfigDict, arg: str | None,
                         own_args: tuple[str, ...] = ()) -> None:
  """Applies a cluttered config's ':arg': None or 'tiny' (`apply_tiny`, on small splits).

  `own_args` are the args the calling config handles itself (accepted here, named in the error).
  """
  if arg == 'tiny':
    apply_tiny(c)
    c.train.cluttered_digits.train_size = 256
    c.train.cluttered_digits.test_size = 200
    c.train.eval_batch_size = 200
  elif arg not in (None, '', *own_args):
    known = ' and '.join(repr(a) for a in ('tiny', *own_args))
    raise ValueError(f'Unknown config arg {arg!r}; '
                     f'{"the args are" if own_args else "the one arg is"} {known}.')


# Imagenette (10 ImageNet classes, 9,469 train / 3,925 validation images; TFDS `imagenette`,
# prepared beforehand in `train.data_dir`, never downloaded): B0 itself at 160 px, so φ = 1 of the
# paper's triple is 184 px and the whole grid stays cheap on one accelerator.
IMAGENETTE_BASELINE = dict(width=1.0, depth=1.0, resolution=160, resolution_multiple=8)


def imagenette_train(**overrides) -> ml_collections.ConfigDict:
  """A fixed 40-epoch budget per trial (1,480 steps of 256), bfloat16, for one GPU/TPU host.

  The TF recipe (RMSProp, 0.016 per 256 images, EMA, label smoothing, RandAugment) with a cosine
  schedule, since each trial is a short run.
  """
  values = dict(
      dataset='imagenette', dtype='bfloat16', batch_size=256, eval_batch_size=500,
      num_epochs=40.0, lr_schedule='cosine', learning_rate=0.016, warmup_epochs=2.0,
      ema_decay=0.999, label_smoothing=0.1, log_every_steps=100, eval_every_steps=100_000,
      checkpoint_every_steps=500, keep_checkpoints=2, shuffle_buffer=10_000, bn_group_size=0)
  values['augment.policy'] = 'randaugment'
  values.update(overrides)
  return config.get_config('b0', **values)
