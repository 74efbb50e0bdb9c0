"""Keeps the libraries' duplicate reports of a failed checkpoint write off the console.

When a write fails (a full disk), `checkpointing.Checkpointer` raises it once, as one
`CheckpointWriteError` line. Before that, the libraries print the same failure hundreds of
times, and nothing in orbax or tensorstore turns this off:
* orbax logs the exception with its traceback from each thread it passes through;
* orbax closes its event loop while sibling writes are pending, so tensorstore's completion
  callbacks fail with 'Event loop is closed' and report it through `sys.unraisablehook`;
* asyncio logs the abandoned futures ('exception was never retrieved') when they are collected,
  and `warnings` the write coroutines that never started.
`install` filters exactly these, matched by content: a record or callback that is not about a
failed write still reaches the console. The command lines that train (`main`, the scaling-study
scripts) install it; library users keep the libraries' own output.
"""

from __future__ import annotations

import logging as py_logging
import sys
import warnings
from typing import Callable

from absl import logging

_installed = False


def install(is_write_failure: Callable[[BaseException], bool]) -> None:
  """Installs the filters (once per process); `is_write_failure` recognises the failure."""
  global _installed
  if _installed:
    return
  _installed = True
  record_filter = _DuplicateWriteFailures(is_write_failure)
  logging.get_absl_logger().addFilter(record_filter)  # orbax logs through absl.
  py_logging.getLogger('asyncio').addFilter(record_filter)
  previous_hook = sys.unraisablehook

  def unraisable_hook(unraisable) -> None:
    frame = unraisable.exc_traceback
    while frame is not None and frame.tb_next is not None:
      frame = frame.tb_next
    if (unraisable.object is None and unraisable.exc_type is RuntimeError
        and str(unraisable.exc_value) == 'Event loop is closed' and frame is not None
        and frame.tb_frame.f_code.co_name in ('call_soon_threadsafe', '_check_closed')):
      return  # A tensorstore write finishing after orbax closed the loop of a failed save.
    previous_hook(unraisable)

  sys.unraisablehook = unraisable_hook
  warnings.filterwarnings('ignore', category=RuntimeWarning,
                          message="coroutine 'async_serialize_from_host")


class _DuplicateWriteFailures(py_logging.Filter):
  """Drops orbax's and asyncio's ERROR records whose exception is a failed write."""

  def __init__(self, is_write_failure: Callable[[BaseException], bool]):
    super().__init__()
    self._is_write_failure = is_write_failure

  def filter(self, record: py_logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    if record.levelno < py_logging.ERROR or error is None:
      return True
    from_orbax = '/orbax/checkpoint/' in record.pathname.replace('\\', '/')
    abandoned = record.name == 'asyncio' and 'never retrieved' in record.getMessage()
    return not ((from_orbax or abandoned) and self._is_write_failure(error))
