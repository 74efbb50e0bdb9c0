"""Every depthwise convolution of a variant, timed alone: XLA's grouped convolution vs k·k shifts.

  python benchmarks/depthwise_shapes.py --model=b0 [--batch=256] [--resolution=224] [--json]

Depthwise convolutions take about a quarter of the B0 train step on a GPU (docs/benchmarks.md,
"H200"). This script measures, for each depthwise layer of the network (shapes read from the
model itself), the forward pass and the forward + backward pass (gradients of the input
and of the kernel, as training needs) with both `layers.DepthwiseConv` implementations: 'conv'
(`lax.conv_general_dilated` with feature groups: cuDNN on a GPU) and 'shift' (k·k shifted
multiply-adds that XLA fuses). Each is jitted alone, run `--warmup` times, then timed `--steps`
times with a wait after each; the median is reported. Identical layers are timed once.

No TensorFlow; runs on the GPU image. On a CPU, use a small batch and resolution.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.models import efficientnet
from efficientnet_jax.models import layers
from efficientnet_jax.models import scaling

IMPLEMENTATIONS = ('conv', 'shift')


def depthwise_layers(model: str, batch: int, resolution: int) -> list[dict[str, object]]:
  """Each distinct depthwise layer: input shape, kernel size, strides, and the blocks using it."""
  net = efficientnet.create_model(model)
  seen: dict[tuple, dict[str, object]] = {}

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, layers.DepthwiseConv) and context.method_name == '__call__':
      x = args[0]
      key = (tuple(x.shape), module.kernel_size, tuple(module.strides), module.padding)
      entry = seen.setdefault(key, {'input_shape': list(x.shape), 'kernel_size':
                                    module.kernel_size, 'strides': list(module.strides),
                                    'padding': module.padding, 'blocks': []})
      entry['blocks'].append('/'.join(module.path[:-1]) or module.name)
    return next_fun(*args, **kwargs)

  images = jax.ShapeDtypeStruct((batch, resolution, resolution, 3), jnp.bfloat16)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda x: net.init({'params': jax.random.key(0), 'dropout': jax.random.key(0)},
                                      x, train=False), images)
  return list(seen.values())


def _median_ms(fn, args, steps: int, warmup: int) -> float:
  out = None
  for _ in range(warmup):
    out = fn(*args)
  jax.block_until_ready(out)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def time_layer(layer: dict[str, object], impl: str, dtype, steps: int, warmup: int
               ) -> dict[str, float]:
  """Forward and forward + backward milliseconds of one layer with one implementation."""
  module = layers.DepthwiseConv(layer['kernel_size'], tuple(layer['strides']), layer['padding'],
                                impl, dtype)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(layer['input_shape'], np.float32), dtype)
  params = module.init(jax.random.key(0), x)
  forward = jax.jit(module.apply)

  def loss(params, x):
    return jnp.sum(module.apply(params, x).astype(jnp.float32))

  backward = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return {'forward_ms': _median_ms(forward, (params, x), steps, warmup),
          'forward_backward_ms': _median_ms(backward, (params, x), steps, warmup)}


def run(model: str, batch: int, resolution: int, dtype: str, steps: int, warmup: int
        ) -> dict[str, object]:
  table = depthwise_layers(model, batch, resolution)
  for layer in table:
    for impl in IMPLEMENTATIONS:
      layer[impl] = time_layer(layer, impl, jnp.dtype(dtype), steps, warmup)
  totals = {impl: sum(len(l['blocks']) * l[impl]['forward_backward_ms'] for l in table)
            for impl in IMPLEMENTATIONS}
  best = sum(len(l['blocks']) * min(l[i]['forward_backward_ms'] for i in IMPLEMENTATIONS)
             for l in table)
  return {'model': model, 'batch': batch, 'resolution': resolution, 'dtype': dtype,
          'device_kind': jax.devices()[0].device_kind, 'jax_version': jax.__version__,
          'layers': table, 'total_forward_backward_ms': totals,
          'total_forward_backward_ms_best_per_layer': best}


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', default='b0')
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--resolution', type=int, default=None, help='Default: the native one.')
  p.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'))
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--json', action='store_true', help='Also print the result as one JSON line.')
  args = p.parse_args(argv)
  if args.model not in scaling.MODEL_NAMES:
    print(f'error: unknown --model {args.model!r}; valid: {", ".join(scaling.MODEL_NAMES)}.',
          file=sys.stderr)
    return 2
  if args.batch < 1 or args.steps < 1 or args.warmup < 0:
    print('error: --batch and --steps must be ≥ 1, --warmup ≥ 0.', file=sys.stderr)
    return 2
  resolution = args.resolution or scaling.get_variant(args.model).resolution
  r = run(args.model, args.batch, resolution, args.dtype, args.steps, args.warmup)
  print(f'{r["model"]} depthwise layers, batch {r["batch"]} @ {r["resolution"]} px '
        f'{r["dtype"]} on {r["device_kind"]} (ms, median; fwd+bwd = both gradients)')
  print(f'{"input":>20} {"k":>2} {"s":>2} {"uses":>4} | {"conv fwd":>9} {"fwd+bwd":>9} | '
        f'{"shift fwd":>9} {"fwd+bwd":>9}')
  for l in r['layers']:
    print(f'{"x".join(map(str, l["input_shape"])):>20} {l["kernel_size"]:>2} '
          f'{l["strides"][0]:>2} {len(l["blocks"]):>4} | {l["conv"]["forward_ms"]:>9.3f} '
          f'{l["conv"]["forward_backward_ms"]:>9.3f} | {l["shift"]["forward_ms"]:>9.3f} '
          f'{l["shift"]["forward_backward_ms"]:>9.3f}')
  t = r['total_forward_backward_ms']
  print(f'network total fwd+bwd: conv {t["conv"]:.2f} ms, shift {t["shift"]:.2f} ms, best per '
        f'layer {r["total_forward_backward_ms_best_per_layer"]:.2f} ms')
  if args.json:
    print(json.dumps(r), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
