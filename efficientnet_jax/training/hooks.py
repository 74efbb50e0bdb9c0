"""The training loop's one extension point: code that runs around every step.

`loop.train_and_evaluate(config, workdir, hooks=[...])` calls each hook's `before_step` with the
batch of the step about to run (the hook returns the batch to use) and its `after_step` once the
step is dispatched, in the order given. Real runs pass none. The tests inject faults through a
hook (tests/fault_injection.py: a NaN batch at step N, a pause after each step), so the loop
itself has no test-only branch; a profiler or an extra logger fits the same way.
"""

from __future__ import annotations

from typing import Any

Batch = dict[str, Any]


class StepHook:
  """Does nothing; subclass it and override either method."""

  def before_step(self, step: int, batch: Batch) -> Batch:
    """Called before step `step` (1-based, as logged) runs; returns the batch it will use."""
    del step
    return batch

  def after_step(self, step: int) -> None:
    """Called after step `step` has been dispatched (it may still run on the device)."""
    del step
