r"""Step 1 on imagenette, for a GPU/TPU host or a sweep over many (not runnable on the CPU box).

  # Once, where TFDS may download (the experiments never do): prepare the data in $DATA.
  python -c "import tensorflow_datasets as tfds, sys; \
      tfds.builder('imagenette', data_dir=sys.argv[1]).download_and_prepare()" $DATA
  # Everything on one host, trial after trial (resumable; rerun to continue):
  python experiments/compound_search.py --config=experiments/configs/imagenette_search.py \
      --workdir=$RUNS/imagenette_search --config.train.data_dir=$DATA
  # Or as a sweep: one job per printed line (any order, in parallel), then merge.
  python experiments/compound_search.py --config=... --workdir=$RUNS/imagenette_search \
      --config.train.data_dir=$DATA --list
  python experiments/compound_search.py --config=... --workdir=... --merge

α, β, γ in steps of 0.05 (α up to 2, β and γ up to 1.4) within 5% of α·β²·γ² = 2: 109 trials
of B0 at 160 px (40 epochs each). 5%, because the paper's own triple (1.2, 1.1, 1.15) has
α·β²·γ² = 1.920, 4% below 2: a tighter tolerance could not find it. `:small` keeps the 0.1 grid
within 5% (21 trials; 1.15 is not on it). Each trial's directory has TensorBoard events and checkpoints; a preempted
trial resumes where it stopped.
"""

from efficientnet_jax.studies import grid
from efficientnet_jax.studies import proxies


def get_config(arg=None):
  c = proxies.experiment(proxies.imagenette_train(), proxies.IMAGENETTE_BASELINE)
  c.train.compilation_cache_dir = None  # e.g. a shared directory: reruns skip recompiling.
  c.search = dict(alphas=grid.frange(1.0, 2.0, 0.05), betas=grid.frange(1.0, 1.4, 0.05),
                  gammas=grid.frange(1.0, 1.4, 0.05), target=2.0, tolerance=0.05)
  if arg == 'small':
    c.search.update(alphas=grid.frange(1.0, 2.0, 0.1), betas=grid.frange(1.0, 1.4, 0.1),
                    gammas=grid.frange(1.0, 1.4, 0.1), tolerance=0.05)
  elif arg:
    raise ValueError(f"Unknown config arg {arg!r}; the only one is 'small'.")
  return c
