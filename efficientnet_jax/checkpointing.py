"""Checkpoints: one orbax CheckpointManager behind restore / save, and preemption signals.

Orbax writes each step into a temporary directory and renames it when complete, so a killed
write never looks finished. A finished checkpoint that is later damaged (a truncated file) is
detected at restore: the previous complete one is used, with a warning naming both.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils


class IncompatibleCheckpointError(ValueError):
  """The checkpoint holds another model (variant, num_classes, …) than the config builds."""


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) describing `tree`, the target orbax restores into."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
      tree)


def first_mismatch(saved: Any, target: Any) -> str | None:
  """Names the first leaf whose path or shape differs between two trees, or None."""
  saved_leaves = dict(jax.tree_util.tree_flatten_with_path(saved)[0])
  for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
    name = jax.tree_util.keystr(path)
    if path not in saved_leaves:
      return f'{name} is missing from the checkpoint'
    saved_shape = tuple(saved_leaves[path].shape)
    if saved_shape != tuple(leaf.shape):
      return f'{name} has shape {saved_shape} in the checkpoint but {tuple(leaf.shape)} here'
  return None


class Checkpointer:
  """Saves every `save_every` steps (asynchronously), keeps the last `keep`, restores the latest.

  Args:
    directory: where checkpoints go (created if missing).
    save_every: interval in steps for `maybe_save`.
    keep: how many recent checkpoints to keep.
    create: create the directory (False for read-only use such as `evaluate`).
  """

  def __init__(self, directory: str, *, save_every: int = 1, keep: int = 3,
               create: bool = True):
    self.directory = os.path.abspath(directory)
    if not create and not os.path.isdir(self.directory):
      raise FileNotFoundError(f'No checkpoints in {self.directory}; check --workdir.')
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every, create=create,
            enable_async_checkpointing=True))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
    """Saves `state` and a JSON `meta` at `step` (on the interval, or always when forced)."""
    return self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(meta)), force=force)

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any], int]:
    """Restores into the structure/shardings of `target` (a state or its abstract form).

    Without `step`, tries the latest checkpoint and falls back to older ones if it is damaged.

    Returns:
      (state, meta, step).

    Raises:
      FileNotFoundError: no (readable) checkpoint.
      IncompatibleCheckpointError: the checkpoint holds a different model.
    """
    steps = [step] if step is not None else self.all_steps()[::-1]
    if not steps:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    if step is not None and step not in self.all_steps():
      raise FileNotFoundError(f'No checkpoint for step {step} in {self.directory}; '
                              f'available: {self.all_steps()}.')
    abstract = abstract_like(target)
    failures = []
    for candidate in steps:
      try:
        self._check_compatible(candidate, abstract)
        restored = self._manager.restore(candidate, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except IncompatibleCheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        failures.append((candidate, e))
        logging.warning('Checkpoint %s/%d is unreadable (%s: %s).', self.directory, candidate,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else '')
        continue
      if failures:
        logging.warning('Latest checkpoint (step %d) is damaged; resuming from step %d instead.',
                        failures[0][0], candidate)
      return restored['state'], dict(restored['meta']), candidate
    raise FileNotFoundError(f'No readable checkpoint in {self.directory}: steps '
                            f'{[s for s, _ in failures]} are all damaged.')

  def _check_compatible(self, step: int, abstract: Any) -> None:
    try:
      saved = self._manager.item_metadata(step)['state']
    except Exception:  # pylint: disable=broad-except
      return  # Unreadable metadata: restore will fail and trigger the fallback.
    if saved is None:
      return
    mismatch = first_mismatch(_as_shapes(saved), abstract)
    if mismatch:
      raise IncompatibleCheckpointError(
          f'Checkpoint {self.directory}/{step} does not fit this model: {mismatch}. Use a new '
          '--workdir (or config.init_from to start from its weights).')

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _as_shapes(tree: Any) -> Any:
  """Orbax metadata leaves expose .shape; keep only leaves that do."""
  return jax.tree.map(lambda m: np.empty(0) if not hasattr(m, 'shape') else m, tree,
                      is_leaf=lambda m: hasattr(m, 'shape'))


class PreemptionGuard:
  """Turns SIGTERM/SIGINT into a request to checkpoint and stop at the next step boundary.

  On several processes the decision is agreed (any process signalled → all stop at the same
  step), so the final checkpoint is written collectively.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._event = threading.Event()
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning('Received %s: saving a checkpoint at the next step boundary.',
                    signal.Signals(signum).name)
    self._event.set()

  def should_stop(self) -> bool:
    """True on every process once any process has been signalled."""
    local = self._event.is_set()
    if jax.process_count() == 1:
      return local
    flags = multihost_utils.process_allgather(np.array([int(local)]))
    return bool(np.any(flags))

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
