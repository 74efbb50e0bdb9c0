"""Training metrics output: TensorBoard events, a JSONL file and a progress line.

`MetricsLogger` writes each call's scalars to TensorBoard (through clu's default writer) and as
one JSON object per line to `workdir/metrics.jsonl`, and prints a progress line
(step/total, loss, learning rate, img/s, ETA). Only the main process writes files; the others
log. The JSONL file is appended to across restarts; `truncate_jsonl` (called by the logger when
given `resume_step`) drops lines a crashed run wrote after its last checkpoint, so the file never
holds a step twice.

The workdir may be local or a `gs://` URI (`setup` says why only these): the JSONL file is written
through etils' `epath.Path` and the TensorBoard events through tf.io.gfile, which both reach GCS.
On GCS an object cannot grow, so each flush of the JSONL file uploads it whole (tf.io.gfile's
appendable file); the file is small (one line per logged step).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
from typing import Any, Mapping

from absl import logging
from etils import epath
import jax
import numpy as np

JSONL_NAME = 'metrics.jsonl'
_LOSS_KEYS = ('train_loss', 'loss')
_LR_KEYS = ('learning_rate', 'lr')
_IMAGES_PER_S_KEY = 'images_per_sec'


def to_json_value(value: Any) -> Any:
  """A JSON-ready Python value from a jax / numpy / Python scalar.

  Non-finite floats become None (JSON null) so that every line stays strict JSON (jq, pandas);
  TensorBoard still receives the NaN itself.

  Args:
    value: a scalar (0-d array, numpy scalar, Python number, bool or str).

  Returns:
    A float, int, bool, str or None.
  """
  if isinstance(value, (str, bool)) or value is None:
    return value
  array = np.asarray(jax.device_get(value))
  if array.dtype == np.bool_:
    return bool(array)
  if np.issubdtype(array.dtype, np.integer):
    return int(array)
  number = float(array)
  return number if math.isfinite(number) else None


def truncate_jsonl(path: str | os.PathLike, max_step: int) -> int:
  """Drops JSONL entries with `step > max_step` (and any partly written line) in place.

  A run that crashed after its last checkpoint left lines for steps it will now repeat; dropping
  them keeps each step once. The file is rewritten to a temporary file and renamed over the
  original, so a crash during truncation never loses the kept lines.

  Args:
    path: the JSONL file; nothing happens if it does not exist.
    max_step: the step the run resumes from (the restored checkpoint's step).

  Returns:
    The number of lines dropped.
  """
  path = epath.Path(path)
  if not path.exists():
    return 0
  kept, dropped = [], 0
  with path.open('r', encoding='utf-8') as f:
    for line in f:
      try:
        entry = json.loads(line)
        keep = line.endswith('\n') and int(entry['step']) <= max_step
      except (ValueError, KeyError, TypeError):
        keep = False  # A line cut short by the crash.
      if keep:
        kept.append(line)
      else:
        dropped += 1
  if dropped:
    tmp = path.parent / f'{path.name}.tmp'
    tmp.write_text(''.join(kept), encoding='utf-8')
    tmp.replace(path)  # Atomic on a local disk; on GCS a copy, the kept lines in tmp until done.
  return dropped


def format_duration(seconds: float) -> str:
  """`h:mm:ss` with unbounded hours (a 350-epoch run takes days)."""
  seconds = max(0, int(round(seconds)))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class _LoggingOnlyWriter:
  """Stand-in for clu's writer where clu's TensorBoard writer cannot load (no TensorFlow)."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    logging.info('[%d] %s', step, ', '.join(f'{k}={v}' for k, v in sorted(scalars.items())))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    logging.info('[hparams] %s', dict(hparams))

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def create_writer(workdir: str | os.PathLike, *, just_logging: bool):
  """clu's default metric writer (logging + TensorBoard), or logging only without TensorFlow.

  clu's TensorBoard writer imports TensorFlow; machines without it (e.g. a GPU box that feeds
  data without tf.data) still get their metrics in the log and the JSONL file.

  Args:
    workdir: where TensorBoard event files go (a local path or a `gs://` URI: clu passes it to
      tf.summary, which writes through tf.io.gfile).
    just_logging: True on non-main processes (no files).

  Returns:
    An object with clu's MetricWriter methods (`write_scalars`, `write_hparams`, `flush`, `close`).
  """
  try:
    metric_writers = importlib.import_module('clu.metric_writers')
  except ImportError as e:
    logging.warning('clu TensorBoard writer unavailable (%s); metrics go to the log and %s only.',
                    e, JSONL_NAME)
    return _LoggingOnlyWriter()
  return metric_writers.create_default_writer(os.fspath(workdir), just_logging=just_logging)


class MetricsLogger:
  """TensorBoard + JSONL scalars and a progress line; use as a context manager or call `close()`.

  Example:
    with MetricsLogger(workdir, total_steps=n, global_batch_size=b, resume_step=s) as metrics:
      ...
      metrics.log_train(step, {'train_loss': loss, 'learning_rate': lr})
      metrics.write_scalars(step, {'eval_top1': top1})
  """

  def __init__(self, workdir: str | os.PathLike, *, total_steps: int, global_batch_size: int,
               is_main_process: bool | None = None, resume_step: int | None = None):
    """Opens the writers.

    Args:
      workdir: output folder (created by the main process if missing); a local path or a
        `gs://` URI.
      total_steps: the run's last step, for the progress fraction and ETA.
      global_batch_size: examples per step over all processes, for img/s.
      is_main_process: whether this process writes files; default `jax.process_index() == 0`.
      resume_step: the step a resumed run restarts from; JSONL entries after it are dropped and
        img/s counts from it. None for a fresh run (counts from step 0).
    """
    if is_main_process is None:
      is_main_process = jax.process_index() == 0
    self.is_main_process = is_main_process
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self.jsonl_path = epath.Path(workdir) / JSONL_NAME
    self._jsonl = None
    if is_main_process:
      epath.Path(workdir).mkdir(parents=True, exist_ok=True)
      if resume_step is not None:
        dropped = truncate_jsonl(self.jsonl_path, resume_step)
        if dropped:
          logging.info('Dropped %d %s lines after resume step %d.', dropped, JSONL_NAME,
                       resume_step)
      # pylint: disable-next=consider-using-with  (closed by `close`)
      self._jsonl = self.jsonl_path.open('a', encoding='utf-8')
    self._writer = create_writer(workdir, just_logging=not is_main_process)
    self._last_step = resume_step or 0
    self._last_time = time.time()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes scalars to TensorBoard and one JSON line `{"step", "time", **scalars}`."""
    step = int(step)
    values = {k: to_json_value(v) for k, v in scalars.items()}
    # clu's writers want numbers; NaN (None here) still goes to TensorBoard as NaN.
    self._writer.write_scalars(step, {k: float('nan') if v is None else v
                                      for k, v in values.items() if not isinstance(v, str)})
    if self._jsonl is not None:
      entry = {'step': step, 'time': time.time(), **values}
      self._jsonl.write(json.dumps(entry) + '\n')
      self._jsonl.flush()  # One whole line per call, so a crash loses at most the current line.

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Writes the run's hyperparameters (e.g. the flattened config) to TensorBoard and the log."""
    self._writer.write_hparams(dict(hparams))

  def progress_line(self, step: int, scalars: Mapping[str, Any] | None = None) -> str:
    """Formats `step/total, loss, lr, img/s, ETA`; rates count from the previous progress line.

    Args:
      step: the current step.
      scalars: may hold the loss ('train_loss' or 'loss'), the LR ('learning_rate' or 'lr') and
        a measured 'images_per_sec' (used instead of the wall-clock rate).

    Returns:
      The line, e.g. `step 1000/218949 (0.5%) | loss 6.1234 | lr 0.0123 | 9876.5 img/s |
      ETA 12:34:56`.
    """
    step = int(step)
    now = time.time()
    steps_done = step - self._last_step
    elapsed = max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    steps_per_s = steps_done / elapsed
    # A caller-measured rate (e.g. one that leaves out evaluation time) wins for img/s; the ETA
    # keeps the wall-clock rate, since evaluations will cost time again.
    scalars = scalars or {}
    images_per_s = to_json_value(scalars.get(_IMAGES_PER_S_KEY))
    if isinstance(images_per_s, bool) or not isinstance(images_per_s, (int, float)):
      images_per_s = steps_per_s * self.global_batch_size
    remaining = max(self.total_steps - step, 0)
    eta = format_duration(remaining / steps_per_s) if steps_per_s > 0 else '?'
    parts = [f'step {step}/{self.total_steps} ({100.0 * step / max(self.total_steps, 1):.1f}%)']
    for label, keys, fmt in (('loss', _LOSS_KEYS, '.4f'), ('lr', _LR_KEYS, '.4g')):
      key = next((k for k in keys if k in scalars), None)
      if key is not None:
        value = to_json_value(scalars[key])
        parts.append(f'{label} {value:{fmt}}' if isinstance(value, float) else f'{label} {value}')
    parts += [f'{images_per_s:.1f} img/s', f'ETA {eta}']
    return ' | '.join(parts)

  def log_train(self, step: int, scalars: Mapping[str, Any]) -> str:
    """Writes training scalars (`write_scalars`) and prints the progress line; returns the line."""
    self.write_scalars(step, scalars)
    line = self.progress_line(step, scalars)
    if self.is_main_process:
      print(line, flush=True)
    else:
      logging.info('%s', line)
    return line

  def flush(self) -> None:
    """Makes everything written so far visible on disk."""
    if self._writer is not None:
      self._writer.flush()
    if self._jsonl is not None:
      self._jsonl.flush()

  def close(self) -> None:
    """Flushes and closes the writers; safe to call twice."""
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
      self._writer = None
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None

  def __enter__(self) -> MetricsLogger:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
