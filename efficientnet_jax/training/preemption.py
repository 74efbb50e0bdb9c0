"""Preemption: SIGTERM/SIGINT become a stop at a step boundary that every process agrees on.

One process: a Python handler sets a flag that the loop reads before each step.

Several processes: every process must stop at the same step, or the last checkpoint (written
collectively) and the collectives of the steps between would hang. The agreement is jax's
preemption service, started by `jax.distributed.initialize`: its notifier catches SIGTERM in C++,
tells the coordinator, and the processes agree in the background on the first step that none of
them has passed; `reached_preemption_sync_point(step)` is a local lookup (≈0.2 µs per call on the
2-process CPU test) that turns true at that step, on every process. Nothing blocks per step, unlike
an all-gather of the flags. The agreed step comes about a second after the signal (the notifier
polls once a second), so a scheduler's grace period must cover that second, the remaining steps'
time and the checkpoint write. SIGINT (Ctrl-C in one process's terminal) is re-sent as SIGTERM so
that it takes the same route. This is the mechanism orbax's `CheckpointManager.reached_preemption`
uses too.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

from efficientnet_jax.errors import ConfigError

# The preemption service wants one increasing counter per process, the same on every process: a
# sweep trains its trials one after another in one process, each from step 1 again, so the loop's
# step cannot serve. Every process calls `should_stop` equally often, so a count of calls does.
_calls = itertools.count(1)


class PreemptionGuard:
  """Turns SIGTERM/SIGINT into a request to checkpoint and stop at the next agreed step boundary.

  Create it before set-up (a signal during set-up counts), call `should_stop()` once before each
  step on every process, and `restore_handlers()` at the end.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}
    self._multi_process = jax.process_count() > 1
    self.received: str | None = None  # The first signal this process received.
    if threading.current_thread() is not threading.main_thread():
      return  # Python delivers signals to the main thread only; the caller handles them.
    # With several processes SIGTERM stays with jax's notifier (a Python handler would replace it).
    signals = (signal.SIGINT,) if self._multi_process else (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    name = signal.Signals(signum).name
    self.received = self.received or name
    logging.warning('Received %s: saving a checkpoint at the next step boundary.', name)
    self._event.set()
    if self._multi_process:
      os.kill(os.getpid(), signal.SIGTERM)  # To jax's notifier, which tells the other processes.

  def should_stop(self) -> bool:
    """True, on every process at the same step, once any process has been signalled."""
    if not self._multi_process:
      return self._event.is_set()
    try:
      agreed = multihost_utils.reached_preemption_sync_point(next(_calls))
    except RuntimeError as e:  # The service is off: nothing could agree on a stop step.
      raise ConfigError('A multi-process run needs jax\'s preemption service to agree on a stop '
                        'step; leave jax_enable_preemption_service on.') from e
    if not agreed:
      return False
    self.received = self.received or 'SIGTERM (on this or another process)'
    return True

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

