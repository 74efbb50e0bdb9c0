"""benchmarks/depthwise_shapes.py: every depthwise layer of a variant, read from the model."""

import pytest

shapes = pytest.importorskip('benchmarks.depthwise_shapes')


def test_b0s_depthwise_layers_are_read_from_the_model():
  table = shapes.depthwise_layers('b0', batch=2, resolution=224)
  # B0's 16 blocks (Table 1 of the paper), 12 distinct (input, kernel, stride) layers.
  assert sum(len(layer['blocks']) for layer in table) == 16 and len(table) == 12
  first, = [l for l in table if l['input_shape'] == [2, 112, 112, 32]]
  assert first['kernel_size'] == 3 and first['strides'] == [1, 1]
  # The layer the H200 profile singled out: block 3, 5×5, stride 2, on 56×56×144.
  slow, = [l for l in table if l['input_shape'] == [2, 56, 56, 144] and l['kernel_size'] == 5]
  assert slow['strides'] == [2, 2] and any('blocks_3' in b for b in slow['blocks'])


def test_the_cli_times_both_implementations(capsys, monkeypatch):
  # Two of B0's layers (one stride 1, one stride 2): each layer costs four compiles.
  real = shapes.depthwise_layers
  monkeypatch.setattr(shapes, 'depthwise_layers', lambda *args: real(*args)[:2])
  assert shapes.main(['--model=b0', '--batch=1', '--resolution=32', '--steps=1',
                      '--warmup=0']) == 0
  out = capsys.readouterr().out
  assert 'network total fwd+bwd: conv' in out and 'shift' in out
  assert shapes.main(['--model=b99']) == 2
