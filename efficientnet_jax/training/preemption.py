"""Preemption: SIGTERM/SIGINT become a stop at a step boundary that every process agrees on."""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class PreemptionGuard:
  """Turns SIGTERM/SIGINT into a request to checkpoint and stop at the next step boundary.

  On several processes the decision is agreed (any process signalled → all stop at the same
  step), so the final checkpoint is written collectively.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._event = threading.Event()
    self._previous = {}
    self.received: str | None = None  # The name of the first signal received.
    if threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    name = signal.Signals(signum).name
    self.received = self.received or name
    logging.warning('Received %s: saving a checkpoint at the next step boundary.', name)
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
