"""`config.init_from`: start a run from another run's (or a converted checkpoint's) weights.

Every parameter and BN statistic is copied by name; the classifier may differ in shape (a new
`num_classes`, as in the paper's transfer experiments) and then keeps its fresh initialisation.
Any other difference is an error naming the first mismatching variable. The source may be local
or a `gs://` URI, like a workdir.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from efficientnet_jax.errors import IncompatibleCheckpointError
from efficientnet_jax.training import checkpointing

_HEAD = 'classifier'


def read_variables(path: str) -> dict[str, Any]:
  """{'params', 'batch_stats'} from a converted DIR, a run's workdir, or a checkpoint step dir.

  `path` may be local or a `gs://` URI (`setup` says which kinds and why): it is read through
  etils' `epath.Path` and orbax.
  """
  where = checkpointing.absolute(path)
  if (where / 'meta.json').exists():
    from efficientnet_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
    if '://' not in os.fspath(where):
      return pretrained.read_converted(os.fspath(where))[1]
    # `read_converted` reads with os.path; orbax restores the same variables from a URI.
    state = ocp.StandardCheckpointer().restore(where / pretrained.VARIABLES_DIR)
  else:
    if (where / 'checkpoints').is_dir():
      where = where / 'checkpoints'
    if (where / 'state').is_dir():  # A single step directory.
      state = ocp.StandardCheckpointer().restore(where / 'state')
    else:
      manager = ocp.CheckpointManager(where)
      step = manager.latest_step()
      if step is None:
        raise FileNotFoundError(f'config.init_from={path!r} holds no checkpoint or converted '
                                'weights (meta.json); point it at a run workdir or convert '
                                'output.')
      state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))[
          'state']
      manager.close()
  return {'params': state['params'], 'batch_stats': state['batch_stats']}


def merge(target: dict[str, Any], source: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
  """Copies `source` leaves into `target`'s structure; returns (merged, fresh-head leaves)."""
  source_leaves = dict(jax.tree_util.tree_flatten_with_path(source)[0])
  fresh = []

  def pick(path, leaf):
    name = jax.tree_util.keystr(path)
    value = source_leaves.get(path)
    if value is not None and tuple(value.shape) == tuple(leaf.shape):
      return jnp.asarray(value, leaf.dtype)
    if any(getattr(k, 'key', None) == _HEAD for k in path):
      fresh.append(name)
      return leaf
    mismatch = checkpointing.first_mismatch(source, target) or name
    raise IncompatibleCheckpointError(
        f'config.init_from weights do not fit this model: {mismatch}.')

  return jax.tree_util.tree_map_with_path(pick, target), fresh


def init_from(state, path: str):
  """Returns `state` with params, BN statistics (and EMA) taken from `path`."""
  source = read_variables(path)
  target = {'params': state.params, 'batch_stats': state.batch_stats}
  merged, fresh = merge(target, source)
  if fresh:
    logging.info('init_from: new head (shapes differ from %s): %s', path, ', '.join(fresh))
  # From host values on every process (device_put cannot target another process's devices).
  shard = lambda new, old: jax.make_array_from_callback(
      old.shape, old.sharding, lambda index: np.asarray(new)[index])
  merged = jax.tree.map(shard, merged, target)
  ema = state.ema
  if ema is not None:
    ema = jax.tree.map(jnp.copy, merged)
  return state.replace(params=merged['params'], batch_stats=merged['batch_stats'], ema=ema)
