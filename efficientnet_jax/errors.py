"""The errors a user can cause, each with the exit code the command-line tools give it.

`cli.run` prints any of these as one `error: ...` line on stderr (the message says how to fix
it) and exits with the error's `exit_code`; the README's exit-code table lists the same codes.
Python's own input errors (ValueError, KeyError, a missing or unwritable path) are taken as bad
input too: one line, exit 2. Anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

USAGE_EXIT_CODE = 2
DIVERGED_EXIT_CODE = 3
CHECKPOINT_WRITE_EXIT_CODE = 4
# sysexits.h EX_TEMPFAIL, "try again": stopped early with the work so far on disk; the same
# command resumes. What a scheduler's requeue rule keys on.
RETRY_EXIT_CODE = 75


class UsageError(ValueError):
  """A bad command-line input (a flag, a path, a model name)."""

  exit_code = USAGE_EXIT_CODE


class ConfigError(ValueError):
  """A config value that cannot work, with the fix in the message."""

  exit_code = USAGE_EXIT_CODE


class IncompatibleCheckpointError(ValueError):
  """The checkpoint holds another model (variant, num_classes, …) than the config builds."""

  exit_code = USAGE_EXIT_CODE


class DivergenceError(RuntimeError):
  """The loss or the gradients became NaN/Inf and `config.skip_nonfinite_steps` is off."""

  exit_code = DIVERGED_EXIT_CODE


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (a full disk, a lost mount); earlier ones are intact."""

  exit_code = CHECKPOINT_WRITE_EXIT_CODE
  # Orbax's background threads may wait minutes for a step directory that was never created;
  # the process exits without waiting for them (the last complete checkpoint is on disk).
  exit_immediately = True


class Preempted(RuntimeError):
  """Training stopped early on SIGTERM/SIGINT with its checkpoint on disk; rerunning resumes it.

  Not a failure: the tools print its message as `preempted: ...` and exit 75, so that SLURM's
  requeue or a Kubernetes JobSet's restart rule can tell it from finished (0) and failed.
  """

  exit_code = RETRY_EXIT_CODE
  label = 'preempted'
