"""Several training seeds per trial: which seeds, and how their figures combine.

An experiment config's `seeds` (default 1) is how many times each trial is trained. Seed index
S = 0, 1, …, seeds − 1 trains with `config.train.seed + S`, so seed index 0 is exactly the
single-seed trial (and its saved results stay valid), and seed index S of any run is the run one
would get with `--config.train.seed=<train.seed + S>`.

A trial's merged record holds every seed's figures (`per_seed`, in seed-index order) and, for each
metric, the mean over its seeds under the metric's own name (so code that reads `top1` reads the
mean) and the sample standard deviation (ddof = 1) as `<metric>_std`; with one seed there is no
spread to measure and `<metric>_std` is None, not 0.

Whether one trial beats another is not read from these stds (a difference within or beyond some
multiple of a std is no test at 3 seeds): `comparisons.py` tests each study's claims with an
interval over seeds and test images (`statistics.py`).
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

STD_SUFFIX = '_std'
PER_SEED = 'per_seed'
# A seed's own fields besides its metrics: which seed it was, and its wall-clock.
_SEED_IDENTITY = ('seed_index', 'seed')


def count(config) -> int:
  """`config.seeds`, checked to be a whole number ≥ 1."""
  value = config.seeds
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'config.seeds must be a whole number ≥ 1, got {value!r}.')
  return value


def training_seed(config, seed_index: int) -> int:
  """The `train.seed` that seed index `seed_index` trains with: `config.train.seed + index`."""
  return int(config.train.seed) + seed_index


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
  """(mean, sample standard deviation) of the values; std is None for fewer than two values.

  A None among the values (a metric a seed did not produce) makes both None.
  """
  if not values or any(v is None for v in values):
    return None, None
  mean = statistics.fmean(values)
  return mean, (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(results: Sequence[Mapping[str, Any]], metrics: Sequence[str],
              timing: Sequence[str]) -> dict[str, Any]:
  """One trial's record from its seeds' results (any order; at least one).

  Args:
    results: the per-seed results of one trial (each with `seed_index`).
    metrics: the metric fields to average (those absent from every result are skipped).
    timing: fields of the process that ran a seed (wall-clock, the environment): kept per seed;
      the numeric ones also averaged (a seed's typical time), no std.

  Returns:
    The shared fields of the results, each metric's mean and `<metric>_std`, `seeds` (the
    training seeds) and `per_seed` (each seed's identity, metrics and timing).
  """
  results = sorted(results, key=lambda r: r['seed_index'])
  own = set(_SEED_IDENTITY) | set(metrics) | set(timing)
  record = {k: v for k, v in results[0].items() if k not in own}
  for metric in (m for m in metrics if any(m in r for r in results)):
    record[metric], record[metric + STD_SUFFIX] = mean_std([r.get(metric) for r in results])
  for field in (f for f in timing
                if all(isinstance(r.get(f), (int, float)) for r in results)):
    record[field] = round(statistics.fmean(r[field] for r in results), 1)
  record['seeds'] = [r['seed'] for r in results]
  record[PER_SEED] = [{k: r[k] for k in r if k in own} for r in results]
  return record


def std(record: Mapping[str, Any], metric: str) -> float | None:
  """The sample standard deviation of `metric` over the record's seeds (None: one seed)."""
  return record.get(metric + STD_SUFFIX)


def per_seed(record: Mapping[str, Any], metric: str) -> list[float | None]:
  """The record's values of `metric`, one per seed (a record without seeds: its one value)."""
  if PER_SEED in record:
    return [s.get(metric) for s in record[PER_SEED]]
  return [record.get(metric)]


def seed_count(record: Mapping[str, Any]) -> int:
  """How many seeds a record's figures come from."""
  return len(record.get(PER_SEED) or [None])
