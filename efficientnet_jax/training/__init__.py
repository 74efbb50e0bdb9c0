"""Training and evaluation: the loop, the jitted steps and everything a run keeps on disk.

  loop.py            `train_and_evaluate(config, workdir)`: what `main` runs
  setup.py           what a config builds before any step: model, plan, mesh, optimizer, steps
  run_paths.py       run directories: a local path or gs://, checked before anything is written
  steps.py           the jitted train and eval steps, the data mesh and its shardings
  state.py           `TrainState`
  optimizer.py       optax chain, learning-rate schedule, weight-decay mask, EMA
  evaluation.py      one pass over the eval split; restore-and-evaluate a checkpoint
  checkpointing.py   orbax CheckpointManager, damaged-checkpoint fallback, a failed write as
                     one error
  preemption.py      SIGTERM/SIGINT → a stop step all processes agree on
  quiet_orbax.py     keeps the libraries' duplicate reports of a failed write off the console
  metric_writers.py  TensorBoard + JSONL + the progress line
  warm_start.py      `config.init_from`
  compile_cache.py   the persistent XLA compilation cache
  xla_options.py     XLA's optimisation level and XLA:CPU's preset, set before the backend starts
  host_cpu.py        the host CPU XLA:CPU compiles for, as results and benchmarks record it
  hooks.py           the loop's one extension point (tests inject faults through it)

Importable without TensorFlow: the input pipeline is imported on first use.
"""
