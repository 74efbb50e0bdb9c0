"""Independent, resumable trials and the command line both experiment scripts share.

An experiment *plans* a deterministic list of `Trial`s from its config (planning measures FLOPs
but trains nothing), then each trial trains in `DIR/trials/K/` with `loop.train_and_evaluate`:

* a finished trial has `DIR/trials/K/result.json` (written atomically, last) and is skipped on
  rerun; an unfinished one resumes from its own checkpoints;
* `--list` prints one shell command per trial, so a cluster or pod sweep runs them anywhere that
  sees DIR, in any order, in parallel;
* merging reads every finished `result.json` and writes `DIR/results.json` sorted by trial id,
  so it is the same whichever process ran which trial, except for the fields in `TIMING_FIELDS`.

Each result remembers what it was trained for (its record and a hash of the training config); a
rerun with a different config in the same DIR stops with an error instead of mixing results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from absl import flags
from ml_collections import config_flags

from efficientnet_jax import cli
from efficientnet_jax import config as config_lib
from efficientnet_jax import errors
from efficientnet_jax.studies import points as points_lib

FLAGS = flags.FLAGS
RESULT_FILE = 'result.json'
RESULTS_FILE = 'results.json'
# Wall-clock fields: they differ between a sequential and a distributed run of the same trials,
# so they are left out when results are compared (see `without_timing`).
TIMING_FIELDS = ('train_seconds',)
# Config keys that say where things are or how often to log, not what is trained: a trial may be
# resumed or run elsewhere with other values.
_NOT_IDENTITY = ('data_dir', 'manual_dir', 'compilation_cache_dir', 'log_every_steps',
                 'checkpoint_every_steps', 'keep_checkpoints')
# Keys added after results were saved: hashed only when set (None, their default, leaves them
# out), so that the results written before them still match their trials.
_HASHED_ONLY_WHEN_SET = ('augment.on_device',)


# Training stopped before a trial's last step (preempted); rerunning resumes it.
TrialInterrupted = errors.TrialInterrupted


@dataclasses.dataclass(frozen=True)
class Trial:
  """One model to train.

  Attributes:
    id: the trial number K (its directory is `DIR/trials/K`).
    point: the model size (width, depth, resolution).
    record: what the results table shows besides the metrics: the experiment's labels (e.g. α, β,
      γ) and the measured `flops`, `params` and ratios. JSON-serialisable.
  """
  id: int
  point: points_lib.Point
  record: Mapping[str, Any]


def trial_dir(workdir: str, trial_id: int) -> str:
  return os.path.join(workdir, 'trials', str(trial_id))


def config_hash(train_config) -> str:
  """A short hash of what a training config trains (paths and logging intervals excluded).

  Keys that moved into a group (`config.RENAMED_KEYS`) are hashed under their former flat
  names, and keys added later are left out while unset (`_HASHED_ONLY_WHEN_SET`), so results
  written before still match their trials.
  """
  values = {k: v for k, v in train_config.to_dict().items() if k not in _NOT_IDENTITY}
  for key in _HASHED_ONLY_WHEN_SET:
    group, name = key.split('.')
    if values.get(group, {}).get(name, 0) is None:
      values[group] = {k: v for k, v in values[group].items() if k != name}
  for old, new in config_lib.RENAMED_KEYS.items():
    group, name = new.split('.')
    if name in values.get(group, {}):
      values[old] = values[group].pop(name)
  values = {k: v for k, v in values.items() if v != {}}
  text = json.dumps(values, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def planned_record(trial: Trial, config) -> dict[str, Any]:
  """The deterministic part of a trial's result: identity, size, measured cost, how evaluated."""
  return {'trial': trial.id, **dataclasses.asdict(trial.point), **trial.record,
          'train_config_hash': config_hash(config.train),
          'recal_batches': int(config.get('recalibrate_bn_batches') or 0)}


def load_result(workdir: str, trial: Trial, config) -> dict[str, Any] | None:
  """A finished trial's result, or None; raises if it was trained for another config."""
  path = os.path.join(trial_dir(workdir, trial.id), RESULT_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  expected = planned_record(trial, config)
  stale = {k: (result.get(k), v) for k, v in expected.items() if result.get(k) != v}
  if stale:
    raise ValueError(f'{path} was trained for another config (field: (stored, planned) = {stale}); '
                     'use a new --workdir for a changed experiment.')
  return result


_METRICS = ('top1', 'top5', 'loss', 'ema_top1', 'ema_top5', 'ema_loss')


def run_trial(workdir: str, trial: Trial, config) -> dict[str, Any]:
  """Trains (or resumes) one trial and writes its result.json; returns the result.

  Raises:
    TrialInterrupted: training stopped early (preempted); the checkpoint is kept.
  """
  # Imported here: TensorFlow's import is slow, and `--list`/`--merge` never train.
  # pylint: disable=g-import-not-at-top
  import jax
  from efficientnet_jax.studies import recalibration
  from efficientnet_jax.training import checkpointing
  from efficientnet_jax.training import loop
  from efficientnet_jax.training import setup

  directory = trial_dir(workdir, trial.id)
  train_config = points_lib.with_point(config.train, trial.point)
  start = time.time()
  metrics = loop.train_and_evaluate(train_config, directory)
  plan = setup.plan_for_dataset(train_config)
  checkpointer = checkpointing.for_run(train_config, directory, create=False)
  step = checkpointer.latest_step()
  checkpointer.close()
  if step is None or step < plan.total_steps:
    raise TrialInterrupted(f'Trial {trial.id} stopped at step {step} of {plan.total_steps}; '
                           'rerun the same command to resume it.')
  if metrics:
    metrics = {k.removeprefix('eval_'): v for k, v in metrics.items()}
  else:  # Killed after its last checkpoint but before result.json: evaluate that checkpoint.
    metrics = recalibration.checkpoint_metrics(train_config, directory, num_batches=0)
  result = planned_record(trial, config)
  result.update(steps=plan.total_steps, **{k: metrics.get(k) for k in _METRICS})
  recal_batches = result['recal_batches']
  if recal_batches:
    recal = recalibration.checkpoint_metrics(train_config, directory, num_batches=recal_batches)
    result.update({f'recal_{k}': recal.get(k) for k in _METRICS})
  result['train_seconds'] = round(time.time() - start, 1)
  if jax.process_index() == 0:
    _write_json(os.path.join(directory, RESULT_FILE), result)
  return result


def merge(workdir: str, trials: Sequence[Trial], config) -> list[dict[str, Any]]:
  """Writes `DIR/results.json` from every finished trial, sorted by trial id; returns it."""
  results = [r for r in (load_result(workdir, t, config) for t in trials) if r is not None]
  results.sort(key=lambda r: r['trial'])
  _write_json(os.path.join(workdir, RESULTS_FILE), results)
  return results


def without_timing(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Results minus wall-clock fields: what must agree between any two runs of the same trials."""
  return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in results]


def _write_json(path: str, value) -> None:
  """Writes via a temporary file and a rename, so a killed process never leaves half a file."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The command line.

Planner = Callable[[Any], Sequence[Trial]]
Reporter = Callable[[Any, Sequence[Mapping[str, Any]], str], None]


def define_flags() -> None:
  """The flags of an experiment script (called from its `__main__` only: flags are global)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file '
                                  '(experiments/configs/NAME.py[:arg]).', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Experiment directory (trials/, results.*).')
  flags.DEFINE_bool('list', False, 'Print one shell command per trial and exit.')
  flags.DEFINE_integer('trial', None, 'Run only this trial (no merge).')
  flags.DEFINE_bool('merge', False, 'Only merge the finished trials into results.* (no training).')
  flags.mark_flags_as_required(['config', 'workdir'])


def apply_runtime_settings(config, workdir: str) -> None:
  """Process-wide settings; must run before JAX compiles anything.

  * A failed checkpoint write is reported once, as for `main` (`training.quiet_orbax`).
  * `config.xla_backend_optimization_level`: XLA reads XLA_FLAGS when its backend starts (the
    first computation), not at `import jax`, so setting it here still applies.
  * A persistent compilation cache, `config.train.compilation_cache_dir` or else DIR/xla_cache:
    the programs a trial compiles again after training (evaluating its checkpoint) load from it,
    and so does every step of a resumed trial, on any host that shares DIR.
  """
  # pylint: disable=g-import-not-at-top
  from efficientnet_jax.training import checkpointing
  from efficientnet_jax.training import compile_cache
  from efficientnet_jax.training import quiet_orbax
  quiet_orbax.install(checkpointing.is_write_failure)
  compile_cache.set_backend_optimization_level(config.get('xla_backend_optimization_level'))
  compile_cache.enable(config.train.get('compilation_cache_dir') or
                       os.path.join(workdir, 'xla_cache'))


def trial_commands(trials: Sequence[Trial], argv: Sequence[str]) -> list[str]:
  """One shell command per trial: this script, the same config flags, `--trial=K`."""
  kept, args = [], list(argv[1:])
  while args:
    arg = args.pop(0)
    name = arg.lstrip('-').split('=', 1)[0]
    if name in ('list', 'nolist', 'merge', 'nomerge', 'trial'):
      if name == 'trial' and '=' not in arg and args:
        args.pop(0)  # `--trial K`
      continue
    kept.append(arg)
  return [shlex.join(['python', argv[0], *kept, f'--trial={t.id}']) for t in trials]


def main(planner: Planner, reporter: Reporter) -> Callable[[list[str]], None]:
  """The absl main of an experiment script: list, run one trial, run all, or merge.

  Run it as `app.run(sweep.main(plan, report), flags_parser=cli.parse_flags)`: bad input is one
  `error:` line and exit 2, an interrupted (preempted) trial exit 75 (rerun to resume it).
  """
  @cli.run
  def _main(argv):
    if len(argv) > 1:
      raise ValueError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
    cli.quiet_libraries()
    config, workdir = FLAGS.config, FLAGS.workdir
    apply_runtime_settings(config, workdir)
    trials = planner(config)
    if FLAGS.list:
      print('\n'.join(trial_commands(trials, sys.argv)), flush=True)
      return
    if FLAGS.trial is not None:
      by_id = {t.id: t for t in trials}
      if FLAGS.trial not in by_id:
        raise ValueError(f'--trial={FLAGS.trial} is not a trial of this config; ids are '
                         f'0..{len(trials) - 1} (see --list).')
      _run_or_skip(workdir, by_id[FLAGS.trial], config, len(trials))
      return
    if not FLAGS.merge:
      for trial in trials:
        _run_or_skip(workdir, trial, config, len(trials))
    results = merge(workdir, trials, config)
    missing = sorted({t.id for t in trials} - {r['trial'] for r in results})
    if missing:
      print(f'not finished yet: trials {missing} (run them, then --merge again)', flush=True)
    if not results:
      raise ValueError(f'No finished trials in {workdir}; run some first.')
    reporter(config, results, workdir)

  return _main


def _run_or_skip(workdir: str, trial: Trial, config, count: int) -> None:
  label = ', '.join(f'{k}={v}' for k, v in trial.record.items() if k in _LABELS)
  if load_result(workdir, trial, config) is not None:
    print(f'trial {trial.id}/{count}: finished before, skipped ({label})', flush=True)
    return
  print(f'trial {trial.id}/{count}: training {label} at {trial.point}', flush=True)
  result = run_trial(workdir, trial, config)
  scores = ', '.join(f'{k} {result[k]:.4f}' for k in ('top1', 'recal_top1', 'ema_top1')
                     if result.get(k) is not None)
  print(f'trial {trial.id}/{count}: {scores}, {result["train_seconds"]:.0f} s', flush=True)


# Record fields worth a progress line.
_LABELS = ('alpha', 'beta', 'gamma', 'series', 'phi', 'coefficient')
