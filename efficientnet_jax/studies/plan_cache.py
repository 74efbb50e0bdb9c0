"""A sweep's plan, made once per study directory and read by every later command: `DIR/plan.json`.

Planning builds every trial's model and measures its FLOPs with JAX: 34–44 s for the imagenette
search on a loaded 2-core CPU (a few seconds for digits), in every process that needs the plan. Every command of a sweep needs the plan
(`--list`, `--count`, `--merge`, each `--trial` / `--item` of a job array), so the first one
plans and writes the trials (id, point, record) to `DIR/plan.json`, atomically, and the others
read it, without JAX.

The file is keyed by `key_values`: the script, `PLAN_VERSION`, the computation version and every
study-config key except those that change no trial: `seeds` (raising it in a finished DIR is how
seeds are added), `metric` (the ranking) and the training keys that do not count for a trial's
identity (paths and intervals, `schema.counts_for_identity`: the same DIR is planned alike from
any machine). `load_or_plan`:

* the key matches: the cached trials;
* no file: plan, write;
* the key differs: plan again. The same trials: the file takes the new key (a changed training
  config is then refused result by result by `sweep.load_result`, as before). Other trials
  (another grid, baseline or model): refused with one error line if DIR already holds trials,
  since trial K would name another model than its directory's checkpoints and result; replaced if
  it holds none.

Planning holds an exclusive lock (`DIR/plan.json.lock`), so that the tasks of a job array that
start together plan once: the first plans, the others wait for it and read its file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from typing import Any, Callable, Iterator, Sequence

from efficientnet_jax import errors
from efficientnet_jax import schema

PLAN_FILE = 'plan.json'
# The layout of plan.json and what a plan holds: bump it when either changes, so that plans
# written before are made again rather than misread.
PLAN_VERSION = 1
# Study-config keys that change no trial (see the module docstring).
_NOT_KEYED = ('seeds', 'metric')
_TRAIN = 'train.'

# A trial as JSON: {'id': K, 'point': {...}, 'record': {...}}.
TrialJson = dict[str, Any]


def key_values(script: str, config, computation_version: int) -> dict[str, Any]:
  """What a plan depends on: the script, the versions and the keyed study-config values."""
  flat = schema.flatten(config.to_dict())
  keyed = {k: v for k, v in flat.items()
           if k not in _NOT_KEYED and not (
               k.startswith(_TRAIN) and not schema.counts_for_identity(k[len(_TRAIN):]))}
  # default=str: a config may hold values JSON has no type for; the key only needs them stable.
  return json.loads(json.dumps({'script': script, 'plan_version': PLAN_VERSION,
                                'computation_version': computation_version, 'config': keyed},
                               sort_keys=True, default=str))


def key_of(values: dict[str, Any]) -> str:
  """A short hash of `key_values`."""
  text = json.dumps(values, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def normalized(value):
  """`value` as it reads back from JSON (tuples become lists), so fresh and cached plans agree."""
  return json.loads(json.dumps(value, sort_keys=True))


def load_or_plan(workdir: str, values: dict[str, Any], plan: Callable[[], Sequence[TrialJson]],
                 has_trials: Callable[[], bool]) -> tuple[list[TrialJson], str]:
  """The trials of `DIR/plan.json` if planned for `values`, else planned now (see the rules above).

  Args:
    workdir: the study directory.
    values: `key_values` of this command.
    plan: makes the trials, as JSON (`TrialJson`); called at most once.
    has_trials: whether DIR already holds work for the cached plan (its trial directories).

  Returns:
    The trials (as `normalized` JSON) and what happened: 'cached', 'planned' or 're-planned'.

  Raises:
    errors.ConfigError: the cached plan has other trials and DIR already holds some.
  """
  key = key_of(values)
  cached = read(workdir)
  if cached is not None and cached.get('key') == key:
    return cached['trials'], 'cached'
  with _planning_lock(workdir):
    cached = read(workdir)  # Another process may have planned while this one waited.
    if cached is not None and cached.get('key') == key:
      return cached['trials'], 'cached'
    trials = normalized(list(plan()))
    path = os.path.join(workdir, PLAN_FILE)
    if cached is not None and cached.get('trials') != trials and has_trials():
      raise errors.ConfigError(
          f'{path} was planned for another config, and this one plans other trials '
          f'({_difference(cached, values, trials)}); {os.path.join(workdir, "trials")} holds '
          'trials of the old plan. Use a new --workdir for a changed experiment.')
    write_json(path, {'plan_version': PLAN_VERSION, 'key': key, 'key_values': values,
                      'trials': trials})
    return trials, 'planned' if cached is None else 're-planned'


def read(workdir: str) -> dict[str, Any] | None:
  """The contents of `DIR/plan.json`, or None if there is none (or of another plan version)."""
  path = os.path.join(workdir, PLAN_FILE)
  try:
    with open(path) as f:
      cached = json.load(f)
  except FileNotFoundError:
    return None
  except json.JSONDecodeError as e:  # Written atomically, so only ever by hand.
    raise errors.ConfigError(f'{path} is not a plan ({e}); delete it to plan again.') from None
  return cached if cached.get('plan_version') == PLAN_VERSION else None


def _difference(cached: dict[str, Any], values: dict[str, Any], trials: list[TrialJson]) -> str:
  """What changed, for the refusal: the keyed config values, and the first differing trial."""
  old = schema.flatten(cached.get('key_values', {}))
  new = schema.flatten(values)
  changed = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)}
  old_trials = cached.get('trials', [])
  first = next((i for i, (a, b) in enumerate(zip(old_trials, trials)) if a != b),
               min(len(old_trials), len(trials)))
  return (f'changed (cached, now): {changed}; {len(old_trials)} trials cached, {len(trials)} '
          f'now, the first differing trial is {first}')


@contextlib.contextmanager
def _planning_lock(workdir: str) -> Iterator[None]:
  """An exclusive flock on `DIR/plan.json.lock` (waits for it): one process plans at a time."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, PLAN_FILE + '.lock'), 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    yield  # Closing the file releases the lock.


def write_json(path: str, value) -> None:
  """Writes via a temporary file and a rename, so that a killed process never leaves half a file.

  Every JSON file of a study directory is written this way (plan.json, result.json, results.json).
  """
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)
