"""The metric writers: JSONL lines, main-process-only files, resume truncation, TensorBoard,
the progress line and the no-TensorFlow fallback."""

import json
import os
import re
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from efficientnet_jax.training import metric_writers as metrics


class FakeClock:
  """Stands in for the `time` module inside metric_writers.py only."""

  def __init__(self, now=1000.0):
    self.now = now

  def time(self):
    return self.now


def read_jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def test_jsonl_lines_parse_with_converted_values(tmp_path):
  with metrics.MetricsLogger(tmp_path, total_steps=10, global_batch_size=8,
                             is_main_process=True) as logger:
    logger.write_scalars(1, {'train_loss': jnp.float32(2.5), 'learning_rate': np.float64(0.1),
                             'seen': np.int64(8), 'bad': float('nan')})
    logger.write_scalars(jnp.int32(2), {'eval_top1': jnp.asarray(0.75, jnp.bfloat16)})
  entries = read_jsonl(tmp_path / metrics.JSONL_NAME)
  assert [e['step'] for e in entries] == [1, 2]
  assert entries[0]['train_loss'] == 2.5 and entries[0]['learning_rate'] == 0.1
  assert entries[0]['seen'] == 8 and entries[0]['bad'] is None
  assert entries[1]['eval_top1'] == 0.75
  assert all(isinstance(e['time'], float) for e in entries)
  for line in (tmp_path / metrics.JSONL_NAME).read_text().splitlines():
    json.loads(line, parse_constant=pytest.fail)  # Strict JSON: no NaN / Infinity tokens.


def test_tensorboard_event_file_appears(tmp_path):
  with metrics.MetricsLogger(tmp_path, total_steps=10, global_batch_size=8,
                             is_main_process=True) as logger:
    logger.write_scalars(1, {'train_loss': 1.0})
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(tmp_path))


def test_only_main_process_writes_files(tmp_path):
  workdir = tmp_path / 'run'
  with metrics.MetricsLogger(workdir, total_steps=10, global_batch_size=8,
                             is_main_process=False) as logger:
    line = logger.log_train(1, {'train_loss': 1.0, 'learning_rate': 0.1})
    logger.write_scalars(2, {'eval_top1': 0.5})
  assert 'img/s' in line
  assert not workdir.exists()


def test_resume_truncates_entries_beyond_step(tmp_path):
  with metrics.MetricsLogger(tmp_path, total_steps=10, global_batch_size=8,
                             is_main_process=True) as logger:
    for step in range(1, 7):
      logger.write_scalars(step, {'train_loss': float(step)})
  with open(tmp_path / metrics.JSONL_NAME, 'a', encoding='utf-8') as f:
    f.write('{"step": 7, "train_lo')  # The crash cut this line short.
  # The run crashed after step 7; the last checkpoint was step 4.
  with metrics.MetricsLogger(tmp_path, total_steps=10, global_batch_size=8,
                             is_main_process=True, resume_step=4) as logger:
    for step in range(5, 8):
      logger.write_scalars(step, {'train_loss': 10.0 + step})
  entries = read_jsonl(tmp_path / metrics.JSONL_NAME)
  assert [e['step'] for e in entries] == [1, 2, 3, 4, 5, 6, 7]
  assert [e['train_loss'] for e in entries[4:]] == [15.0, 16.0, 17.0]


def test_truncate_jsonl_helper(tmp_path):
  path = tmp_path / 'm.jsonl'
  assert metrics.truncate_jsonl(path, 3) == 0  # No file yet: nothing to do.
  path.write_text(''.join(json.dumps({'step': s}) + '\n' for s in (1, 2, 3, 4, 5)))
  assert metrics.truncate_jsonl(path, 3) == 2
  assert [e['step'] for e in read_jsonl(path)] == [1, 2, 3]
  assert metrics.truncate_jsonl(path, 3) == 0


def test_progress_line_has_img_per_s_and_eta(tmp_path, monkeypatch, capsys):
  clock = FakeClock()
  monkeypatch.setattr(metrics, 'time', clock)
  with metrics.MetricsLogger(tmp_path, total_steps=1000, global_batch_size=64,
                             is_main_process=True) as logger:
    clock.now += 10.0
    line = logger.log_train(100, {'train_loss': jnp.float32(1.23456), 'learning_rate': 0.0256})
    # 100 steps · 64 images in 10 s; 900 steps left at 10 steps/s.
    assert line == ('step 100/1000 (10.0%) | loss 1.2346 | lr 0.0256 | 640.0 img/s | '
                    'ETA 0:01:30')
    assert line in capsys.readouterr().out
    clock.now += 100.0  # The rate covers only the interval since the previous line.
    line = logger.log_train(200, {'loss': 1.0})
    assert '64.0 img/s' in line and 'ETA 0:13:20' in line
  assert re.search(r'ETA \d+:\d\d:\d\d$', line)


def test_progress_line_prefers_measured_images_per_sec(tmp_path, monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(metrics, 'time', clock)
  with metrics.MetricsLogger(tmp_path, total_steps=1000, global_batch_size=64,
                             is_main_process=True) as logger:
    clock.now += 10.0
    line = logger.progress_line(100, {'images_per_sec': np.float32(800.0)})
  assert '800.0 img/s' in line and 'ETA 0:01:30' in line  # ETA stays on the wall clock.


def test_resumed_rate_counts_from_resume_step(tmp_path, monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(metrics, 'time', clock)
  with metrics.MetricsLogger(tmp_path, total_steps=1000, global_batch_size=10,
                             is_main_process=True, resume_step=500) as logger:
    clock.now += 5.0
    assert '20.0 img/s' in logger.progress_line(510)


def test_format_duration():
  assert metrics.format_duration(0) == '0:00:00'
  assert metrics.format_duration(3661) == '1:01:01'
  assert metrics.format_duration(90061) == '25:01:01'


def test_falls_back_to_logging_without_tensorflow(tmp_path, monkeypatch):
  # A None entry makes `import clu.metric_writers` raise ImportError, as a missing TF does.
  monkeypatch.setitem(sys.modules, 'clu.metric_writers', None)
  with metrics.MetricsLogger(tmp_path, total_steps=10, global_batch_size=8,
                             is_main_process=True) as logger:
    logger.log_train(1, {'train_loss': 1.0, 'learning_rate': 0.1})
    logger.write_hparams({'batch_size': 8})
  assert [e['step'] for e in read_jsonl(tmp_path / metrics.JSONL_NAME)] == [1]
  assert not any(name.startswith('events.out') for name in os.listdir(tmp_path))
