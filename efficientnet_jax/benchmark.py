"""Synthetic-data throughput of the real train step (or the inference forward pass).

  python -m efficientnet_jax.benchmark --model=b0 --batch=256 --mode=train --json
  → {"model": "b0", "mode": "train", "images_per_sec": ..., "step_ms_median": ...}
  python -m efficientnet_jax.benchmark --model=b0 --batch=256 --augment_on_device
  → the same step with the recipe's augmentation on the device (its cost: the img/s difference)
  ... --augment_on_device --augment_policy=randaugment    (another policy than the recipe's)

What is timed and how: `benchmarking/harness.py`. Runs without TensorFlow, TFDS or
ml_collections.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from absl import app
from absl import flags

from efficientnet_jax import cli
from efficientnet_jax.benchmarking import harness
from efficientnet_jax.models import scaling
from efficientnet_jax.training import compile_cache
from efficientnet_jax.training import xla_options


def parse_batches(text: str) -> list[int]:
  """'256' or '128,96,64' → the batch sizes; a one-line UsageError otherwise."""
  try:
    batches = [int(b) for b in str(text).split(',') if b.strip()]
  except ValueError:
    batches = []
  if not batches:
    raise cli.UsageError(f'--batch={text!r} must be an integer or a comma list of integers.')
  return batches


def format_summary(r: dict[str, Any]) -> str:
  """The human-readable report."""
  mfu = f'{100 * r["mfu"]:.1f}%' if r['mfu'] is not None else 'n/a'
  memory = (f'{r["peak_memory_bytes"] / 2**30:.2f} GiB' if r['peak_memory_bytes'] is not None
            else 'n/a')
  cache = (f'; cache {r["compile_cache_hits"]} hits, {r["compile_cache_misses"]} misses'
           if r.get('compile_cache_dir') else '')
  augment = (f' + {r["augment_policy"]} on the device' if r.get('augment_on_device') else '')
  phi = f' φ={r["phi"]:g}' if r.get('phi') is not None else ''
  return (f'{r["model"]}{phi} {r["mode"]} batch {r["batch"]} @ {r["resolution"]} px {r["dtype"]}'
          f'{" remat" if r["remat"] else ""}{augment} on {r["devices"]}× {r["device_kind"]}\n'
          f'  {r["images_per_sec"]:,.1f} img/s, step {r["step_ms_median"]:.2f} ms median '
          f'({r["step_ms_pipelined"]:.2f} ms pipelined), MFU {mfu}\n'
          f'  compile {r["compile_s"]:.2f} s (+ lower {r["lower_s"]:.2f} s){cache}, '
          f'peak memory {memory}, {r["flops_per_image"] / 1e9:.3f} GFLOPs/img forward'
          + (f'\n  XLA_FLAGS={r["xla_flags"]}' if r.get('xla_flags') else ''))


def _define_flags() -> None:
  # Defined only when run as a program, so importing this module (tests, the GPU suite) cannot
  # collide with another CLI's flags of the same name.
  flags.DEFINE_string('model', None, f'Variant: {", ".join(scaling.MODEL_NAMES)}.')
  flags.DEFINE_string('batch', '256', 'Global batch size (a multiple of the device count), or a '
                      'comma list: the largest that fits in device memory is measured.')
  flags.DEFINE_float('phi', None, 'Compound-scaling exponent applied to the variant (e.g. -4 '
                     'with b0: the quick start network); default: the variant as named.')
  flags.DEFINE_integer('resolution', None, 'Input side in pixels (default: the native one).')
  flags.DEFINE_string('mode', 'train', 'train: the real train step; infer: the forward pass.')
  flags.DEFINE_string('dtype', 'bfloat16', 'Compute dtype: bfloat16 or float32.')
  flags.DEFINE_integer('steps', 20, 'Timed steps (after warm-up).')
  flags.DEFINE_integer('warmup', 5, 'Untimed steps first.')
  flags.DEFINE_bool('remat', False, 'Rematerialise each block in the backward pass.')
  flags.DEFINE_enum('depthwise_impl', 'auto', ['auto', 'conv', 'shift'],
                    'Depthwise convolution: XLA grouped conv, k·k multiply-adds, or auto '
                    '(shift on CPU, conv elsewhere).')
  flags.DEFINE_bool('augment_on_device', False,
                    "train: time the step with the recipe's augmentation on the device "
                    '(augment.on_device) on uint8 images; without it, no augmentation.')
  flags.DEFINE_enum('augment_policy', None, list(harness.AUGMENT_POLICIES),
                    "With --augment_on_device: this policy instead of the recipe's.")
  flags.DEFINE_bool('json', False, 'Print one JSON object (the last stdout line).')
  flags.DEFINE_string('profile_dir', None, 'Also write a profiler trace of a few extra steps.')
  flags.DEFINE_enum('xla_cpu_opt_preset', xla_options.DEFAULT_CPU_OPT_PRESET,
                    list(xla_options.CPU_OPT_PRESETS),
                    "XLA:CPU's preset, as training uses it (config.xla_cpu_opt_preset); a "
                    '--xla_cpu_opt_preset in XLA_FLAGS wins.')
  flags.DEFINE_string('cache_dir', compile_cache.default_dir(),
                      f'Persistent compilation cache (default ${compile_cache.ENV_VAR} or '
                      '~/.cache/efficientnet_jax/xla); empty turns it off.')


@cli.run
def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  cli.quiet_libraries()  # JAX logs backend probing ("Unable to initialize backend 'tpu'").
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
  if not FLAGS.model:
    raise cli.UsageError(f'--model is required; valid names: {", ".join(scaling.MODEL_NAMES)}.')
  xla_options.apply(cpu_opt_preset=FLAGS.xla_cpu_opt_preset)  # Before the backend starts.
  batches = parse_batches(FLAGS.batch)
  for batch in batches:
    harness.validate(FLAGS.model, batch=batch, resolution=FLAGS.resolution, mode=FLAGS.mode,
                     dtype=FLAGS.dtype, steps=FLAGS.steps, warmup=FLAGS.warmup,
                     augment_on_device=FLAGS.augment_on_device,
                     augment_policy=FLAGS.augment_policy)
  cache_dir = compile_cache.enable(FLAGS.cache_dir) if FLAGS.cache_dir else None
  cache_counts = compile_cache.count_hits_and_misses()
  result = harness.benchmark(FLAGS.model, batch=batches, resolution=FLAGS.resolution,
                             mode=FLAGS.mode, dtype=FLAGS.dtype, remat=FLAGS.remat,
                             steps=FLAGS.steps, warmup=FLAGS.warmup,
                             profile_dir=FLAGS.profile_dir, depthwise_impl=FLAGS.depthwise_impl,
                             augment_on_device=FLAGS.augment_on_device,
                             augment_policy=FLAGS.augment_policy, phi=FLAGS.phi)
  result.update(xla_flags=os.environ.get('XLA_FLAGS', ''), compile_cache_dir=cache_dir,
                compile_cache_hits=cache_counts['hits'],
                compile_cache_misses=cache_counts['misses'])
  if FLAGS.json:
    print(json.dumps(result), flush=True)
  else:
    print(format_summary(result), flush=True)


if __name__ == '__main__':
  _define_flags()
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
