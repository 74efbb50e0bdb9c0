"""benchmarks/profile_top.py: a GPU trace's kernel time per step, by class, kernel and source op."""

import gzip
import json

import pytest

profile_top = pytest.importorskip('benchmarks.profile_top')


def _trace(path):
  meta = [
      {'ph': 'M', 'pid': 1, 'name': 'process_name', 'args': {'name': '/device:GPU:0'}},
      {'ph': 'M', 'pid': 1, 'tid': 7, 'name': 'thread_name', 'args': {'name': 'Stream #14'}},
      {'ph': 'M', 'pid': 1, 'tid': 8, 'name': 'thread_name', 'args': {'name': 'XLA Ops'}},
      {'ph': 'M', 'pid': 9, 'name': 'process_name', 'args': {'name': '/host:CPU'}},
  ]
  kernels = [
      {'ph': 'X', 'pid': 1, 'tid': 7, 'dur': 3000.0, 'name': 'conv2d_c1_k1_nhwc_specialized',
       'args': {'name': 'jit(train_step)/jvp(EfficientNet)/blocks_3/depthwise_conv/conv'}},
      {'ph': 'X', 'pid': 1, 'tid': 7, 'dur': 1000.0, 'name': 'input_reduce_fusion_7'},
      {'ph': 'X', 'pid': 1, 'tid': 7, 'dur': 1000.0, 'name': 'input_reduce_fusion_7'},
      {'ph': 'X', 'pid': 1, 'tid': 7, 'dur': 1000.0, 'name': 'nvjet_sm90_tst_gemm'},
      # The same time on the HLO-op line and on the host: not counted again.
      {'ph': 'X', 'pid': 1, 'tid': 8, 'dur': 6000.0, 'name': 'fusion.1'},
      {'ph': 'X', 'pid': 9, 'tid': 3, 'dur': 9000.0, 'name': 'conv2d_c1_k1_nhwc_specialized'},
  ]
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': meta + kernels}, f)


def test_kernel_time_per_step_by_class_kernel_and_op(tmp_path, capsys):
  path = str(tmp_path / 'x.trace.json.gz')
  _trace(path)
  s = profile_top.summarise(path, steps=2)
  assert s['events'] == 4 and s['total_ms_per_step'] == 3.0
  classes = {c: ms for c, ms, _ in s['classes']}
  assert classes == {'convolution (cuDNN)': 1.5, 'reduction fusion': 1.0,
                     'matmul (cuBLAS/cuBLASLt)': 0.5}
  assert s['kernels'][0][:3] == ('conv2d_c1_k1_nhwc_specialized', 1.5, 0.5)
  assert profile_top.main([path, '--steps=2']) == 0
  assert 'of which depthwise convolutions 1.50 ms' in capsys.readouterr().out


def test_a_trace_without_device_kernels_is_a_one_line_error(tmp_path, capsys):
  path = str(tmp_path / 'cpu.json')
  (tmp_path / 'cpu.json').write_text(json.dumps({'traceEvents': []}))
  assert profile_top.main([path]) == 2
  assert profile_top.main([str(tmp_path / 'missing.json.gz')]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 2 and all(line.startswith('error: ') for line in err)
