"""Independent, resumable trials and the command line both experiment scripts share.

An experiment *plans* a deterministic list of `Trial`s from its config (planning measures FLOPs
but trains nothing), then each trial trains in `DIR/trials/K/` with `loop.train_and_evaluate`:

* the plan is made once per DIR and kept in `DIR/plan.json` (`plan_cache.py`), keyed by the
  study config, so that `--list`, `--count`, `--merge` and every `--trial` / `--item` of a job
  array read it instead of planning again;
* with `config.seeds` = N (default 1), each trial is N items, one per seed index S (`seeds.py`:
  S trains with `train.seed + S`); seed index 0 trains in `DIR/trials/K/`, seed index S ≥ 1 in
  `DIR/trials/K-seedS/`, so a single-seed sweep's directories are what they always were;
* a finished item has `result.json` in its directory (written atomically, last) and is skipped on
  rerun; beside it, `predictions.npz` holds each test example's top-1 correctness, the labels and
  any group ids (`read_predictions`: what the intervals of `comparisons.py` are computed from);
  an unfinished item resumes from its own checkpoints; one being trained holds the lock in its
  directory (`locks.py`), and a second copy stops (exit 73) or, in a run of several items, skips
  it;
* `--list` prints one shell command per item (`--trial=K`, plus `--seed=S` when N > 1), so a
  cluster or pod sweep runs them anywhere that sees DIR, in any order, in parallel; `--trial=K`
  alone runs every seed of trial K in turn; `--item=N` runs the item of `--list`'s line N and
  `--count` prints how many there are (a job array: `--array=0-$((count-1))`, `--item=$TASK`;
  `experiments/launch.py` submits one through submitit);
* merging reads every finished `result.json`, combines each trial's seeds (mean, sample std and
  every seed's figures: `seeds.aggregate`), adds each trial's interval and the study's claims
  with their differences, intervals and verdicts (`comparisons.py`, from the predictions) and
  writes `DIR/results.json` sorted by trial id, so it is the same whichever process ran which
  item, except for the fields in `TIMING_FIELDS`.

Each result remembers what it was trained for (its record and a hash of the training config); a
rerun with a different config in the same DIR stops with an error instead of mixing results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import shlex
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from absl import flags
from ml_collections import config_flags

from efficientnet_jax import cli
from efficientnet_jax import errors
from efficientnet_jax import host_malloc
from efficientnet_jax import schema
from efficientnet_jax.studies import comparisons as comparisons_lib
from efficientnet_jax.studies import locks
from efficientnet_jax.studies import plan_cache
from efficientnet_jax.studies import points as points_lib
from efficientnet_jax.studies import seeds as seeds_lib
from efficientnet_jax.training import host_cpu

FLAGS = flags.FLAGS
RESULT_FILE = 'result.json'
RESULTS_FILE = 'results.json'
# A seed's per-example correctness, beside its result.json (`write_predictions`).
PREDICTIONS_FILE = 'predictions.npz'
# Fields of the process that ran a seed: its wall-clock, and its environment (JAX, the device,
# XLA_FLAGS: what a result's bits also depend on, recorded so that two results of one identity
# that differ can be traced). They differ between a sequential and a distributed run of the same
# trials, so they are left out when results are compared (see `without_timing`).
TIMING_FIELDS = ('train_seconds', 'environment')
# What a trial computes from its config, beyond the config: bump it with every change that makes
# the same config give other numbers (a new default in the code, another data order, other
# floating-point arithmetic). It is part of every trial's identity, so results computed before the
# change are refused by name instead of being reused (tests/studies/test_identity.py pins a tiny
# trial's numbers to this version: it fails until the version is bumped). 3: XLA:CPU's FAST_COMPILE
# preset became the default (`train.xla_cpu_opt_preset`). 4: the CPU's depthwise convolution
# (the shift form) has a hand-written gradient, which rounds its sums in another order. 5: it
# leaves out the taps that meet only padding (small maps), which rounds some sums otherwise. 6: its
# kernel gradient is summed in two stages (row chunks, then one reduction), the CPU's stem
# convolution sees the image with a fourth, zero channel (`layers.StemConv`), the CPU's batch
# norm has a hand-written gradient (`layers.batch_norm_train`) and its 1×1 convolutions are matrix
# products (`layers.PointwiseConv`): other orders. 7: those products are taken on the
# activations flattened to (rows, channels), so XLA:CPU sums the kernel gradient with another
# kernel (bit-identical for some configs, not for all: the quick start's moved by an ulp).
COMPUTATION_VERSION = 7
# The layout of result.json / results.json records: bump it when their fields change. 3: a seed
# has predictions.npz beside its result.json, and results.json records carry
# `<metric>_interval` and `comparisons`. A seed's result.json of an earlier layout listed in
# `_READABLE_RESULTS_VERSIONS` holds the same figures of the same computation and is still read
# (its comparisons say it has no predictions); any other is refused by name.
RESULTS_VERSION = 3
_READABLE_RESULTS_VERSIONS = (2, 3)
# Every JSON file of DIR (plan, results) is written atomically, by one writer.
_write_json = plan_cache.write_json
# A study's claims from its merged records and ranking metric (`comparisons.search_claims`, …).
Claims = Callable[[Sequence[Mapping[str, Any]], str], Sequence[comparisons_lib.Claim]]


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


def trial_dir(workdir: str, trial_id: int, seed_index: int = 0) -> str:
  """Where one seed of a trial trains: `trials/K` for seed index 0, else `trials/K-seedS`.

  Seed index 0 keeps the single-seed directory, so raising `config.seeds` in a finished
  single-seed sweep reuses its trials as seed 0 and trains only the new seeds.
  """
  name = str(trial_id) if seed_index == 0 else f'{trial_id}-seed{seed_index}'
  return os.path.join(workdir, 'trials', name)


def config_hash(train_config) -> str:
  """A trial's identity: a short hash of `COMPUTATION_VERSION` and every key its numbers depend on.

  The keys are the schema's RECIPE and RUN keys (`schema.counts_for_identity`) that apply to
  this config (`schema.in_use`): everything but where files are, how often the loop logs,
  evaluates or checkpoints, and the keys of a dataset the trial does not read (so declaring a
  new dataset's keys leaves the other datasets' trials their identities).
  """
  flat = schema.flatten(train_config.to_dict())
  values = {k: v for k, v in flat.items()
            if schema.counts_for_identity(k) and schema.in_use(k, flat)}
  text = json.dumps({'computation_version': COMPUTATION_VERSION, 'config': values},
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def trial_config(trial: Trial, config):
  """The training config a trial trains: the study's, at the trial's point (`points.with_point`)."""
  return points_lib.with_point(config.train, trial.point, config.source_detail)


def planned_record(trial: Trial, config, seed_index: int = 0) -> dict[str, Any]:
  """The deterministic part of a seed's result: identity, size, measured cost, how evaluated.

  `train_config_hash` is the identity of the trial's own training config (`trial_config`; its
  seeds share it); `seed` is the training seed this seed index trains with.
  """
  return {'trial': trial.id, **dataclasses.asdict(trial.point), **trial.record,
          'results_version': RESULTS_VERSION, 'computation_version': COMPUTATION_VERSION,
          'train_config_hash': config_hash(trial_config(trial, config)),
          'recal_batches': int(config.recalibrate_bn_batches),
          'seed_index': seed_index, 'seed': seeds_lib.training_seed(config, seed_index)}


def load_result(workdir: str, trial: Trial, config, seed_index: int = 0) -> dict[str, Any] | None:
  """A finished seed's result, or None; raises if it was trained for another config."""
  path = os.path.join(trial_dir(workdir, trial.id, seed_index), RESULT_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  version = result.get('computation_version')
  if version != COMPUTATION_VERSION:
    raise errors.ConfigError(
        f'{path} was computed by an earlier version of the code (computation version {version}, '
        f'this code computes version {COMPUTATION_VERSION}): its numbers are not what this code '
        'would give; use a new --workdir (or delete that trial directory) to recompute it.')
  layout = result.get('results_version')
  if layout not in _READABLE_RESULTS_VERSIONS:
    raise errors.ConfigError(
        f'{path} has results layout {layout}; this code reads layouts '
        f'{list(_READABLE_RESULTS_VERSIONS)}: use a new --workdir (or delete that trial '
        'directory) to recompute it.')
  expected = planned_record(trial, config, seed_index)
  stale = {k: (result.get(k), v) for k, v in expected.items()
           if k != 'results_version' and result.get(k) != v}
  if stale:
    raise errors.ConfigError(
        f'{path} was trained for another config (field: (stored, planned) = {stale}); use a new '
        '--workdir for a changed experiment.')
  return result


_METRICS = ('top1', 'top5', 'loss', 'ema_top1', 'ema_top5', 'ema_loss')
# The mean logged train loss over a trial's last `_END_FRACTION` of steps: a trial far above the
# others' is still learning when its budget ends (unfinished, not worse; experiments/README.md).
TRAIN_LOSS_END = 'train_loss_end'
_END_FRACTION = 0.1


def train_loss_end(directory: str, total_steps: int) -> float | None:
  """The mean train loss logged after step (1 - `_END_FRACTION`)·total_steps in `directory`.

  Read from the run's metrics.jsonl; a step logged twice (resumed) counts once, its last value.
  None when nothing was logged in that window.
  """
  from efficientnet_jax.training import metric_writers  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, metric_writers.JSONL_NAME)
  if not os.path.exists(path):
    return None
  losses = {}
  with open(path) as f:
    for line in f:
      entry = json.loads(line)
      if 'train_loss' in entry and entry['step'] > (1 - _END_FRACTION) * total_steps:
        losses[entry['step']] = entry['train_loss']
  return round(sum(losses.values()) / len(losses), 4) if losses else None


def run_trial(workdir: str, trial: Trial, config, seed_index: int = 0) -> dict[str, Any]:
  """Trains (or resumes) one seed of a trial, writes predictions.npz and result.json; returns it.

  The figures and the per-example correctness come from one evaluation of the final checkpoint
  (`recalibration.checkpoint_predictions`: raw, then after BN recalibration if the study asks),
  so that each correctness array's mean is its figure exactly; the training loop's last
  evaluation, of the same state, gives the same figures.

  Raises:
    errors.Preempted: training stopped early (a signal); the checkpoint is kept.
  """
  # Imported here: TensorFlow's import is slow, and `--list`/`--merge` never train.
  # pylint: disable=g-import-not-at-top
  import jax
  from efficientnet_jax.studies import recalibration
  from efficientnet_jax.training import checkpointing
  from efficientnet_jax.training import loop
  from efficientnet_jax.training import setup

  directory = trial_dir(workdir, trial.id, seed_index)
  train_config = trial_config(trial, config)
  train_config.seed = seeds_lib.training_seed(config, seed_index)
  start = time.time()
  loop.train_and_evaluate(train_config, directory)
  plan = setup.plan_for_dataset(train_config)
  checkpointer = checkpointing.for_run(train_config, directory, create=False)
  step = checkpointer.latest_step()
  checkpointer.close()
  if step is None or step < plan.total_steps:
    raise errors.Preempted(f'Trial {trial.id} stopped at step {step} of {plan.total_steps}; '
                           'rerun the same command to resume it.')
  result = planned_record(trial, config, seed_index)
  recal_batches = result['recal_batches']
  metrics, predictions = recalibration.checkpoint_predictions(train_config, directory,
                                                              num_batches=recal_batches)
  result.update(steps=plan.total_steps, **{k: metrics.get(k) for k in _METRICS})
  result[TRAIN_LOSS_END] = train_loss_end(directory, plan.total_steps)
  if recal_batches:
    result.update({f'recal_{k}': metrics.get(f'recal_{k}') for k in _METRICS})
  result['train_seconds'] = round(time.time() - start, 1)
  result['environment'] = environment()
  if jax.process_index() == 0:
    write_predictions(directory, predictions)
    _write_json(os.path.join(directory, RESULT_FILE), result)  # Last: it marks the seed done.
  return result


def write_predictions(directory: str, predictions: Mapping[str, Any]) -> None:
  """Writes a seed's predictions.npz atomically (a temporary file, then a rename).

  The arrays, all in the eval split's order: 'labels' (int32), each evaluated figure's
  per-example top-1 correctness under the figure's name ('top1', 'ema_top1', 'recal_top1',
  'recal_ema_top1'; uint8 0/1: its mean is the figure) and, when the source groups its examples
  (several test canvases from one source digit), 'groups'.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top  (`--list` needs no numpy)
  path = os.path.join(directory, PREDICTIONS_FILE)
  temporary = f'{path}.{os.getpid()}.tmp'
  with open(temporary, 'wb') as f:
    np.savez_compressed(f, **predictions)
  os.replace(temporary, path)


def read_predictions(workdir: str, trial_id: int, seed_index: int = 0) -> dict[str, Any] | None:
  """A seed's predictions.npz as {name: numpy array} (`write_predictions`), or None."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  path = os.path.join(trial_dir(workdir, trial_id, seed_index), PREDICTIONS_FILE)
  if not os.path.exists(path):
    return None
  with np.load(path) as data:
    return {name: data[name] for name in data.files}


def environment() -> dict[str, Any]:
  """What else a seed's numbers depend on: JAX and XLA's versions and flags, the device, the CPU.

  XLA compiles for the host CPU (and its flags change the arithmetic), so the same config and
  code give other bits on another machine or under other `XLA_FLAGS`; over a long run those
  differences grow into other final figures. Not part of a trial's identity (a sweep may run its
  trials on several machines), but kept with each result.
  """
  # pylint: disable-next=g-import-not-at-top  (`--list`/`--merge` never import JAX)
  import jax
  import jaxlib
  device = jax.devices()[0]
  return {'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'platform': device.platform,
          'device_kind': device.device_kind, 'devices': jax.device_count(),
          'processes': jax.process_count(), **host_cpu.identity(), 'cpu_count': os.cpu_count(),
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'host_malloc': host_malloc.in_use()}


def items(trials: Sequence[Trial], config) -> list[tuple[Trial, int]]:
  """Every (trial, seed index) to train, trial by trial: the order a sequential run takes."""
  return [(t, s) for t in trials for s in range(seeds_lib.count(config))]


def merge(workdir: str, trials: Sequence[Trial], config,
          claims: Claims | None = None) -> list[dict[str, Any]]:
  """Writes `DIR/results.json`: one record per trial with a finished seed, by trial id.

  Each record combines the trial's finished seeds (`seeds.aggregate`) and has this code's
  `results_version`; with predictions, its `<metric>_interval` for the ranking metric
  (`config.metric`), and `claims(records, metric)` (the study's `comparisons.*_claims`) add each
  claim's comparison to the record it is about (`comparisons.add_to_records`). `unfinished`
  names the seeds still missing. Returns the records.
  """
  by_trial: dict[int, list[dict[str, Any]]] = {}
  for trial, seed_index in items(trials, config):
    result = load_result(workdir, trial, config, seed_index)
    if result is not None:
      by_trial.setdefault(trial.id, []).append(result)
  records = [{**seeds_lib.aggregate(by_trial[k], _metric_fields(by_trial[k]), TIMING_FIELDS),
              'results_version': RESULTS_VERSION} for k in sorted(by_trial)]
  metric = config.metric
  records = comparisons_lib.add_to_records(
      records, metric, lambda trial_id, s: read_predictions(workdir, trial_id, s),
      claims(records, metric) if claims is not None and records else ())
  _write_json(os.path.join(workdir, RESULTS_FILE), records)
  return records


def unfinished(workdir: str, trials: Sequence[Trial], config) -> list[tuple[int, int]]:
  """The (trial id, seed index) pairs without a result.json yet."""
  return [(t.id, s) for t, s in items(trials, config)
          if not os.path.exists(os.path.join(trial_dir(workdir, t.id, s), RESULT_FILE))]


def _metric_fields(results: Sequence[Mapping[str, Any]]) -> list[str]:
  """A trial's per-seed figures: the raw and any recalibrated eval, and the end train loss."""
  return [f for f in (*_METRICS, *(f'recal_{k}' for k in _METRICS), TRAIN_LOSS_END)
          if any(f in r for r in results)]


def without_timing(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Results minus `TIMING_FIELDS`: what must agree between any two runs of the same trials.

  The fields go from each record and from each of its seeds (`per_seed`).
  """
  def strip(record):
    return {k: ([strip(s) for s in v] if k == seeds_lib.PER_SEED else v)
            for k, v in record.items() if k not in TIMING_FIELDS}
  return [strip(r) for r in results]


# ---------------------------------------------------------------------------------------------
# The command line.

Planner = Callable[[Any], Sequence[Trial]]
Reporter = Callable[[Any, Sequence[Mapping[str, Any]], str], None]


def planned_trials(planner: Planner, config, workdir: str) -> list[Trial]:
  """The study's trials: from `DIR/plan.json` when planned for this config, else planned now.

  See `plan_cache.py` for the key and for when a changed config is planned again or refused. The
  trials are the same either way (a fresh plan is normalised as the file reads back).
  """
  script = os.path.splitext(os.path.basename(inspect.getfile(planner)))[0]
  values = plan_cache.key_values(script, config, COMPUTATION_VERSION)

  def plan():
    return [{'id': t.id, 'point': dataclasses.asdict(t.point), 'record': dict(t.record)}
            for t in planner(config)]

  def has_trials():
    directory = os.path.join(workdir, 'trials')
    return os.path.isdir(directory) and bool(os.listdir(directory))

  cached, _ = plan_cache.load_or_plan(workdir, values, plan, has_trials)
  return [Trial(t['id'], points_lib.Point(**t['point']), t['record']) for t in cached]


def define_flags() -> None:
  """The flags of an experiment script (called from its `__main__` only: flags are global).

  The script then adopts them as its key flags (`flags.adopt_module_key_flags(sweep)`), so that
  its `--help` lists them: absl's `--help` shows only the main module's key flags.
  """
  config_flags.DEFINE_config_file('config', None, 'Experiment config file '
                                  '(experiments/configs/NAME.py[:arg]).', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Experiment directory (plan.json, trials/, results.*).')
  flags.DEFINE_bool('list', False, 'Print one shell command per (trial, seed) item and exit.')
  flags.DEFINE_bool('count', False, 'Print the number of (trial, seed) items (the lines of '
                    '--list) and exit: a job array is --array=0-$((count-1)).')
  flags.DEFINE_integer('item', None, 'Run only the (trial, seed) item of --list\'s line N '
                       '(0-based; no merge): a job array task\'s --item=$SLURM_ARRAY_TASK_ID. '
                       f'Exit {locks.ITEM_LOCKED_EXIT_CODE} if another process trains it.')
  flags.DEFINE_integer('trial', None, 'Run only this trial, every seed of it (no merge).')
  flags.DEFINE_integer('seed', None, 'With --trial: run only this seed index '
                       '(0..config.seeds - 1; it trains with train.seed + index).')
  flags.DEFINE_bool('merge', False, 'Only merge the finished trials into results.* (no training).')
  cli.define_distributed_flags()
  # cli's flags become this module's key flags too, so a script that adopts these lists them.
  flags.adopt_module_key_flags(cli)
  flags.mark_flags_as_required(['config', 'workdir'])


def apply_runtime_settings(config, workdir: str) -> None:
  """Process-wide settings; must run before JAX compiles anything.

  * A failed checkpoint write is reported once, as for `main` (`training.quiet_orbax`).
  * `config.train.xla_backend_optimization_level` and `.xla_cpu_opt_preset`
    (`training.xla_options`): XLA reads XLA_FLAGS when its backend starts (the first
    computation), not at `import jax`, so setting them here still applies.
  * A persistent compilation cache, `config.train.compilation_cache_dir` or else DIR/xla_cache:
    the programs a trial compiles again after training (evaluating its checkpoint) load from it,
    and so does every step of a resumed trial, on any host that shares DIR.
  """
  # pylint: disable=g-import-not-at-top
  from efficientnet_jax.training import checkpointing
  from efficientnet_jax.training import compile_cache
  from efficientnet_jax.training import quiet_orbax
  from efficientnet_jax.training import xla_options
  quiet_orbax.install(checkpointing.is_write_failure)
  xla_options.apply(backend_optimization_level=config.train.xla_backend_optimization_level,
                    cpu_opt_preset=config.train.xla_cpu_opt_preset)
  compile_cache.enable(config.train.compilation_cache_dir or
                       os.path.join(workdir, 'xla_cache'))


# The flags that choose what a command does; `trial_commands` drops them from the command it
# repeats, and `--seed` goes with `--trial` only.
_MODE_FLAGS = ('list', 'count', 'merge', 'trial', 'item')


def trial_commands(trials: Sequence[Trial], argv: Sequence[str],
                   seed_count: int = 1) -> list[str]:
  """One shell command per (trial, seed): this script, the same config flags, `--trial=K`.

  With several seeds each command also names its seed index (`--seed=S`); with one it does not,
  so a single-seed sweep's commands are what they always were. Line N is item N (`--item=N`).
  """
  kept, args = [], list(argv[1:])
  while args:
    arg = args.pop(0)
    name = arg.lstrip('-').split('=', 1)[0]
    if name in (*_MODE_FLAGS, 'seed', 'nolist', 'nocount', 'nomerge'):
      if name in ('trial', 'seed', 'item') and '=' not in arg and args:
        args.pop(0)  # `--trial K`
      continue
    kept.append(arg)
  commands = []
  for trial in trials:
    for seed_index in range(seed_count):
      selected = [f'--trial={trial.id}'] + ([f'--seed={seed_index}'] if seed_count > 1 else [])
      commands.append(shlex.join(['python', argv[0], *kept, *selected]))
  return commands


def main(planner: Planner, reporter: Reporter,
         claims: Claims | None = None) -> Callable[[list[str]], None]:
  """The absl main of an experiment script: list, count, run one item or trial, run all, merge.

  `claims` are the study's claims (`comparisons.search_claims`, …), tested at the merge. Run it
  as `app.run(sweep.main(plan, report, claims), flags_parser=cli.parse_flags)`: bad input is one
  `error:` line and exit 2, an interrupted (preempted) item exit 75 (rerun to resume it), an item
  that another process is training exit 73 (`locks.ITEM_LOCKED_EXIT_CODE`).
  """
  @cli.run
  def _main(argv):
    if len(argv) > 1:
      raise ValueError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
    _check_modes()
    cli.quiet_libraries()
    config, workdir = FLAGS.config, FLAGS.workdir
    seed_count = seeds_lib.count(config)
    apply_runtime_settings(config, workdir)
    cli.initialize_distributed()
    trials = planned_trials(planner, config, workdir)
    every_item = items(trials, config)
    if FLAGS.count:
      print(len(every_item), flush=True)
      return
    if FLAGS.list:
      print('\n'.join(trial_commands(trials, sys.argv, seed_count)), flush=True)
      return
    if FLAGS.item is not None:
      if not 0 <= FLAGS.item < len(every_item):
        raise ValueError(f'--item={FLAGS.item} is not an item of this config; items are '
                         f'0..{len(every_item) - 1} (the lines of --list; --count).')
      trial, seed_index = every_item[FLAGS.item]
      _run_or_skip(workdir, trial, config, len(trials), seed_index, alone=True)
      return
    if FLAGS.trial is not None:
      selected = _selected(trials, seed_count)
      for trial, seed_index in selected:
        _run_or_skip(workdir, trial, config, len(trials), seed_index, alone=len(selected) == 1)
      return
    if not FLAGS.merge:
      for trial, seed_index in every_item:
        _run_or_skip(workdir, trial, config, len(trials), seed_index)
    results = merge(workdir, trials, config, claims)
    missing = unfinished(workdir, trials, config)
    if missing:
      print(f'not finished yet: {_describe(missing, seed_count)} (run them, then --merge again)',
            flush=True)
    if not results:
      raise ValueError(f'No finished trials in {workdir}; run some first.')
    reporter(config, results, workdir)

  return _main


def _check_modes() -> None:
  """At most one of --list, --count, --merge, --trial, --item; --seed only with --trial."""
  # `is not None` for the integer flags (0 is a trial), truth for the booleans.
  given = [f'--{name}' for name in _MODE_FLAGS
           if FLAGS[name].value is not None and FLAGS[name].value is not False]
  if len(given) > 1:
    raise errors.UsageError(f'{" and ".join(given)} are alternatives; pass one of them.')
  if FLAGS.seed is not None and FLAGS.trial is None:
    raise errors.UsageError('--seed selects a seed of the trial that --trial names; pass both '
                            '(or --item=N for the N-th line of --list).')


def _selected(trials: Sequence[Trial], seed_count: int) -> list[tuple[Trial, int]]:
  """The items `--trial=K [--seed=S]` names: every seed of trial K, or just seed S of it."""
  by_id = {t.id: t for t in trials}
  if FLAGS.trial not in by_id:
    raise ValueError(f'--trial={FLAGS.trial} is not a trial of this config; ids are '
                     f'0..{len(trials) - 1} (see --list).')
  if FLAGS.seed is None:
    return [(by_id[FLAGS.trial], s) for s in range(seed_count)]
  if not 0 <= FLAGS.seed < seed_count:
    raise ValueError(f'--seed={FLAGS.seed} is not a seed index of this config; indices are '
                     f'0..{seed_count - 1} (config.seeds = {seed_count}).')
  return [(by_id[FLAGS.trial], FLAGS.seed)]


def _describe(missing: Sequence[tuple[int, int]], seed_count: int) -> str:
  """'trials [2, 3]', or with several seeds 'trial 2 seed 1, trial 3 seed 0'."""
  if seed_count == 1:
    return f'trials {[k for k, _ in missing]}'
  return ', '.join(f'trial {k} seed {s}' for k, s in missing)


def _run_or_skip(workdir: str, trial: Trial, config, count: int, seed_index: int = 0, *,
                 alone: bool = False) -> None:
  """Trains one item unless it is finished, holding its lock while it trains.

  Args:
    alone: the command runs only this item: if another process holds its lock, `ItemLocked`
      (exit 73) is raised; else the item is skipped with a line and the run goes on.
  """
  label = ', '.join(f'{k}={v}' for k, v in trial.record.items() if k in _LABELS)
  seed_count = seeds_lib.count(config)
  name = f'trial {trial.id}/{count}' + (
      f', seed {seed_index}/{seed_count}' if seed_count > 1 else '')
  if load_result(workdir, trial, config, seed_index) is not None:
    print(f'{name}: finished before, skipped ({label})', flush=True)
    return
  try:
    with _item_lock(trial_dir(workdir, trial.id, seed_index)):
      # Checked again under the lock: the copy that held it until now may have finished it.
      if load_result(workdir, trial, config, seed_index) is not None:
        print(f'{name}: finished by another process, skipped ({label})', flush=True)
        return
      print(f'{name}: training {label} at {trial.point}', flush=True)
      result = run_trial(workdir, trial, config, seed_index)
  except locks.ItemLocked as e:
    if alone:
      raise
    print(f'{name}: skipped, {e}', flush=True)
    return
  scores = ', '.join(f'{k} {result[k]:.4f}' for k in ('top1', 'recal_top1', 'ema_top1')
                     if result.get(k) is not None)
  print(f'{name}: {scores}, {result["train_seconds"]:.0f} s', flush=True)


def _item_lock(directory: str):
  """`locks.item_lock` for this process; with several processes they agree (an all-gather)."""
  import jax  # pylint: disable=g-import-not-at-top  (`--list`/`--merge` never train)
  if jax.process_count() == 1:
    return locks.item_lock(directory)

  def agree(held: bool) -> bool:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(np.all(multihost_utils.process_allgather(np.array(held, np.int32))))

  return locks.item_lock(directory, jax.process_index(), agree)


# Record fields worth a progress line.
_LABELS = ('alpha', 'beta', 'gamma', 'series', 'phi', 'coefficient', 'width_coefficient',
           'depth_coefficient', 'resolution_coefficient')
