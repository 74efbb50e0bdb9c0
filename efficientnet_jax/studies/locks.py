"""One trainer per sweep item: an exclusive lock in the item's directory while it trains.

A sweep's items are run by hand, by job arrays and by `experiments/launch.py`, so two copies of one
item can start (an array resubmitted while its first tasks still run, a requeue racing a manual
rerun). Both would resume from the same checkpoints and write over each other. So an item trains
only while it holds `DIR/trials/K[-seedS]/.lock`: an `fcntl.flock` taken without waiting. The
second copy finds it held and stops (`ItemLocked`, exit `ITEM_LOCKED_EXIT_CODE`), or, in a run of
several items, skips the item and goes on.

* No stale locks: the kernel drops a flock when its process exits, however it exits (SIGKILL
  included), so nothing has to be cleaned up after a kill. (On NFS, the locks of a client that
  died outright are held by the server until that client's lease expires, about 90 s.) The lock file itself stays (empty but for its last holder's host and pid): deleting it
  while a process waits to open it would let two processes lock two different files.
* File systems: flock is local to the host on some network file systems. Linux's NFSv4 client
  maps it to an NFS byte-range lock, which every client sees (NFSv3 needs the lock manager,
  lockd); Lustre shares it only when mounted with `-o flock` (`localflock` makes it per node);
  GPFS shares it. Where it is per node, two copies on two nodes are not stopped: run each item
  once (one job array) there.
* Several processes of one multi-process item: each process locks its own file (`.lock` for
  process 0, `.lock.P` for process P), without waiting, and then they agree (`agree`: an
  all-gather of the outcome) that every one of them holds its lock, or all release and stop
  together. Only process 0 locking would leave the others of a second copy to train on without
  it, and waiting for a lock inside a collective run could deadlock; taking each lock without
  waiting and agreeing once gives every process the same answer, so they train or stop together.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from typing import Callable, Iterator

LOCK_NAME = '.lock'
# sysexits.h EX_CANTCREAT: the item's output cannot be created here, another process is creating
# it. Distinct from 75 (preempted: requeue it) and 2 (bad input): a scheduler must neither
# requeue this copy nor count it as a failure; the item is in the other copy's hands.
ITEM_LOCKED_EXIT_CODE = 73


class ItemLocked(RuntimeError):
  """Another process is training this item (it holds the item's lock); this copy stops.

  The tools print its message as `locked: ...` and exit `ITEM_LOCKED_EXIT_CODE`.
  """

  exit_code = ITEM_LOCKED_EXIT_CODE
  label = 'locked'


def lock_path(directory: str, process_index: int = 0) -> str:
  """The lock file of one process of an item: `.lock` for process 0, `.lock.P` for process P."""
  name = LOCK_NAME if process_index == 0 else f'{LOCK_NAME}.{process_index}'
  return os.path.join(directory, name)


@contextlib.contextmanager
def item_lock(directory: str, process_index: int = 0,
              agree: Callable[[bool], bool] | None = None) -> Iterator[None]:
  """Holds the item's lock for the `with` block (creates `directory` if needed).

  Args:
    directory: the item's directory (`sweep.trial_dir`).
    process_index: this process's index in a multi-process run (0 when alone).
    agree: with several processes, a collective that returns True on every process iff it was
      given True on every process; None when alone.

  Raises:
    ItemLocked: another process holds the lock (on any process of this run, with `agree`).
  """
  path = lock_path(directory, process_index)
  os.makedirs(directory, exist_ok=True)
  fd = _try_lock(path)
  if agree is not None and not agree(fd is not None) and fd is not None:
    os.close(fd)  # Another process of this run found its lock held: all stop.
    fd = None
    holder = 'a process of another copy of this multi-process run'
  else:
    holder = _holder(path)
  if fd is None:
    raise ItemLocked(f'{directory} is being trained by another process ({holder} holds {path}); '
                     'this copy stops instead of training it twice.')
  try:
    yield
  finally:
    os.close(fd)  # Releases the lock; the file stays (see the module docstring).


def _try_lock(path: str) -> int | None:
  """An open descriptor holding `path`'s exclusive flock, or None if another holds it."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return None
  # Who holds it, for the message a second copy prints; only ever read for that.
  os.ftruncate(fd, 0)
  os.pwrite(fd, f'{socket.gethostname()} pid {os.getpid()}\n'.encode(), 0)
  return fd


def _holder(path: str) -> str:
  """'HOST pid N' as the holder wrote it, or 'another process' if it has not yet."""
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError:
    text = ''
  return text or 'another process'
