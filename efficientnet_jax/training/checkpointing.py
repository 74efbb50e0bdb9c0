"""Checkpoints: one orbax CheckpointManager behind restore / save.

Orbax writes each step into a temporary directory (`<step>.orbax-checkpoint-tmp`) and renames it
when complete, so a killed write never looks finished; a training run removes such leftovers when
it starts. On GCS, which cannot rename a directory atomically, orbax writes `<step>/` in place and
`<step>/commit_success.txt` last: there a step directory without that file is the leftover. A
finished checkpoint that is later damaged (a truncated or missing file) is detected at restore:
the previous complete one is used, with a warning naming both, and training moves the damaged
one aside (`<step>.damaged`) so that the step can be saved again.

Writes are asynchronous, so a failed write (a full disk, a file-size limit, a lost mount) surfaces
at the next `save`, `wait` or `close`; each of them raises it as one `CheckpointWriteError` that
names the step that failed and the last complete checkpoint, which is intact.

The directory may be local or a `gs://` URI (`setup` says why only these): every file operation
here goes through etils' `epath.Path`, as orbax's own do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from efficientnet_jax.errors import CheckpointWriteError, IncompatibleCheckpointError

_TMP_SUFFIX = '.orbax-checkpoint-tmp'  # Orbax's name for a step directory still being written.
_COMMIT_FILE = 'commit_success.txt'  # What orbax writes last into a step directory.
# How a failed write shows: an OSError (Python-side writes), or tensorstore's status as a
# ValueError text ('RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']').
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO)
_WRITE_FAILURE = re.compile(r"RESOURCE_EXHAUSTED|OUT_OF_RANGE|PERMISSION_DENIED|os_error_code|"
                            r"No space left|File too large|Read-only file system")
DAMAGED_SUFFIX = '.damaged'  # Orbax lists only all-digit names, so '<step>.damaged' is ignored.


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


def absolute(path: str | os.PathLike) -> epath.Path:
  """`path` as an absolute `epath.Path`; a URI (`gs://…`) is left as it is.

  os.path.abspath would turn `gs://b/run` into the local `./gs:/b/run`.
  """
  return epath.Path(path if '://' in os.fspath(path) else os.path.abspath(path))


def for_run(config, workdir: str | os.PathLike, create: bool = True) -> Checkpointer:
  """A run's checkpoints: `workdir/checkpoints`, the config's interval and retention."""
  return Checkpointer(epath.Path(workdir) / 'checkpoints',
                      save_every=config.checkpoint_every_steps, keep=config.keep_checkpoints,
                      create=create)


class Checkpointer:
  """Saves every `save_every` steps (asynchronously), keeps the last `keep`, restores the latest.

  Args:
    directory: where checkpoints go (created if missing): a local path or a `gs://` URI.
    save_every: interval in steps for `maybe_save`.
    keep: how many recent checkpoints to keep.
    create: create the directory (False for read-only use such as `evaluate`).
  """

  def __init__(self, directory: str | os.PathLike, *, save_every: int = 1, keep: int = 3,
               create: bool = True):
    self.directory = absolute(directory)
    self.damaged_steps: list[int] = []  # Set by `restore`: damaged checkpoints it skipped.
    self._writing: int | None = None  # The step of a save that may still be in flight.
    self._failed = False  # A write failure was raised: later waits only log what they see.
    if not create and not self.directory.is_dir():
      raise FileNotFoundError(f'No checkpoints in {self.directory}; check --workdir.')
    if create:
      for name in unfinished_writes(self.directory):
        logging.warning('Found an unfinished checkpoint write %s (the previous run stopped while '
                        'saving); it is not a checkpoint and is removed.',
                        self.directory / name)
    self._manager = ocp.CheckpointManager(
        self.directory,
        # Handlers up front, so that `item_metadata` can describe a checkpoint before any restore
        # (without them it returns None until one has run, and the shape check is skipped).
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every, create=create,
            enable_async_checkpointing=True,
            # Orbax reuses the name '<step>.orbax-checkpoint-tmp', so a leftover would otherwise
            # sit there until that step is saved again; read-only users must not delete.
            cleanup_tmp_directories=create))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
    """Saves `state` and a JSON `meta` at `step` (on the interval, or always when forced).

    Raises:
      CheckpointWriteError: this write, or the previous one still in flight, failed.
    """
    # Orbax waits for the previous write before starting this one; waiting here first names the
    # step that failed if it did.
    self.wait()
    with self._write_errors(step):
      saved = self._manager.save(
          step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                        meta=ocp.args.JsonSave(meta)), force=force)
    if saved:
      self._writing = step
    return saved

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict[str, Any], int]:
    """Restores into the structure/shardings of `target` (a state or its abstract form).

    Without `step`, tries the latest checkpoint and falls back to older ones if it is damaged,
    recording the damaged steps in `damaged_steps`.

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
        if restored['meta'] is None or restored['state'] is None:
          raise ValueError('an item of the checkpoint is missing')
      except IncompatibleCheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (any read error means damage)
        failures.append((candidate, _one_line(e)))
        continue
      self.damaged_steps = [s for s, _ in failures]
      if failures:
        damaged = ', '.join(f'{self.path(s)} ({reason})' for s, reason in failures)
        logging.warning('Checkpoint %s is damaged or incomplete; using the previous complete '
                        'checkpoint %s instead.', damaged, self.path(candidate))
      return restored['state'], dict(restored['meta']), candidate
    raise FileNotFoundError(
        f'No readable checkpoint in {self.directory}: '
        + '; '.join(f'step {s}: {reason}' for s, reason in failures)
        + '. Move the damaged step directories away to start afresh.')

  def path(self, step: int) -> str:
    return os.fspath(self.directory / str(step))

  def set_aside_damaged(self) -> list[str]:
    """Renames the checkpoints `restore` found damaged to `<step>.damaged`; returns new paths.

    Training does this after falling back, so that it can save those steps again (orbax refuses
    to overwrite a step) while the damaged files stay available for inspection.
    """
    moved = []
    if self.damaged_steps and jax.process_index() == 0:
      for step in self.damaged_steps:
        target = self.path(step) + DAMAGED_SUFFIX
        if epath.Path(target).exists():
          target += f'-{time.strftime("%Y%m%d-%H%M%S")}'
        epath.Path(self.path(step)).rename(target)
        moved.append(target)
        logging.warning('Moved the damaged checkpoint %s to %s.', self.path(step), target)
    if self.damaged_steps:
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('efficientnet_jax_set_aside_damaged')
      self._manager.reload()
    self.damaged_steps = []
    return moved

  def _check_compatible(self, step: int, abstract: Any) -> None:
    """Raises IncompatibleCheckpointError naming the first parameter whose shape differs.

    Only the model's variables are compared (they decide the optimizer and EMA shapes too), as
    plain dicts on both sides: the saved tree comes back as dicts and lists, the target is a
    TrainState of named tuples, whose paths would never match.
    """
    try:
      saved = self._manager.item_metadata(step)['state']
      saved = {part: _as_shapes(dict(saved[part])) for part in ('params', 'batch_stats')}
    except Exception:  # pylint: disable=broad-except
      return  # Unreadable metadata: restore will fail and trigger the fallback.
    mismatch = None
    for part in ('params', 'batch_stats'):  # Parameters first: they name the layer best.
      mismatch = mismatch or first_mismatch({part: saved[part]},
                                            {part: getattr(abstract, part)})
    if mismatch:
      raise IncompatibleCheckpointError(
          f'Checkpoint {self.path(step)} does not fit this model: {mismatch}. Use a new '
          '--workdir (or config.init_from to start from its weights).')

  def wait(self) -> None:
    """Blocks until the last save is on disk; CheckpointWriteError if it failed."""
    with self._write_errors(self._writing):
      self._manager.wait_until_finished()
    self._writing = None

  def close(self) -> None:
    """Waits for the last save and releases orbax's threads; CheckpointWriteError as `wait`."""
    with self._write_errors(self._writing):
      self._manager.close()

  def last_complete_step(self) -> int | None:
    """The newest finished checkpoint on disk (read from the directory: a write just failed)."""
    if not self.directory.is_dir():
      return None
    unfinished = unfinished_writes(self.directory)
    steps = [int(p.name) for p in self.directory.iterdir()
             if p.name.isdigit() and p.name not in unfinished]
    return max(steps, default=None)

  @contextlib.contextmanager
  def _write_errors(self, step: int | None) -> Iterator[None]:
    """Turns a failed write into one CheckpointWriteError; after one, later ones are logged."""
    try:
      yield
    except Exception as error:  # pylint: disable=broad-except
      if not is_write_failure(error):
        raise
      if self._failed:
        logging.warning('Checkpoint writing failed again: %s', _one_line(error))
        return
      self._failed = True
      last = self.last_complete_step()
      intact = (f'the last complete checkpoint, {self.path(last)}, is intact'
                if last is not None else 'no complete checkpoint was written yet')
      where = self.path(step) if step is not None else self.directory
      raise CheckpointWriteError(
          f'Writing checkpoint {where} failed ({_one_line(error)}); {intact}. Free space (or '
          'fix the file system) and rerun the same command to resume.') from error


def unfinished_writes(directory: str | os.PathLike) -> list[str]:
  """Names of the step directories orbax began to write in `directory` but never finalised.

  Locally those are `<step>.orbax-checkpoint-tmp`; on GCS, `<step>` without commit_success.txt
  (a local step directory has the file too, but its name alone says it is finished).
  """
  directory = epath.Path(directory)
  if not directory.is_dir():
    return []
  in_place = '://' in os.fspath(directory)
  return sorted(p.name for p in directory.iterdir() if _TMP_SUFFIX in p.name or (
      in_place and p.name.isdigit() and not (p / _COMMIT_FILE).exists()))


def is_write_failure(error: BaseException) -> bool:
  """Whether an exception from orbax is the file system refusing a write (not a bug)."""
  if isinstance(error, OSError):
    return error.errno in _WRITE_ERRNOS
  return isinstance(error, (ValueError, RuntimeError)) and bool(_WRITE_FAILURE.search(str(error)))


def _one_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return f'{type(error).__name__}: {lines[0]}' if lines else type(error).__name__


def _as_shapes(tree: Any) -> Any:
  """Orbax metadata leaves expose .shape; keep only leaves that do."""
  return jax.tree.map(lambda m: np.empty(0) if not hasattr(m, 'shape') else m, tree,
                      is_leaf=lambda m: hasattr(m, 'shape'))
