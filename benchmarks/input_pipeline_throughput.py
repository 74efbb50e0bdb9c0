"""Training input pipeline throughput per CPU core, on synthetic ImageNet-style JPEGs.

  python benchmarks/input_pipeline_throughput.py --json [--target_images_per_sec=12000]

Measures `preprocessing.preprocess_for_train` — the function the train pipeline maps over each
example: JPEG decode of the crop window, TF's Inception crop, bicubic resize, random flip and
RandAugment (N=2, M=10, B0's) — in three stages so that the cost of each part shows:
  decode       `tf.io.decode_jpeg` of the whole image (the floor);
  crop_flip    preprocess_for_train with augment='none';
  randaugment  preprocess_for_train with augment='randaugment' (what B0 training runs).
Each stage runs in tf.data twice: `num_parallel_calls=1` on a one-thread private pool with
intra-op parallelism 1 (images/s per core), and AUTOTUNE over all cores (how it scales here).

The JPEGs are made in memory: 500×375 (ImageNet's most common size) smooth colour fields with
edges and fine grain, encoded at quality 90 with `tf.io.encode_jpeg`, so that they decode like
photos (about 95 KB each; ImageNet's train JPEGs average ~110 KB) rather than like noise (slow)
or flat colour (fast).

Rates are given per wall second and per CPU second of this process (`time.process_time`): on a
busy host the thread does not get a whole core, so the per-CPU-second rate of the one-thread run
is the per-core figure, and the cores needed to feed a step rate (`--target_images_per_sec`,
e.g. the 12,000 img/s B0 target on one H100) come from it. The load average at start and end is
recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any, Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from efficientnet_jax.input import preprocessing  # pylint: disable=g-import-not-at-top


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--image_size', type=int, default=224)
  p.add_argument('--num_jpegs', type=int, default=64, help='Distinct synthetic JPEGs (cycled).')
  p.add_argument('--images', type=int, default=600, help='Images timed per measurement.')
  p.add_argument('--warmup_images', type=int, default=64)
  p.add_argument('--randaugment_layers', type=int, default=2)
  p.add_argument('--randaugment_magnitude', type=float, default=10)
  p.add_argument('--target_images_per_sec', type=float, default=12_000)
  p.add_argument('--stages', default='decode,crop_flip,randaugment')
  p.add_argument('--json', action='store_true', help='Print one JSON object (last line).')
  return p.parse_args(argv)


def synthetic_jpegs(count: int, height: int = 375, width: int = 500, seed: int = 0
                    ) -> list[bytes]:
  """Photo-like JPEGs: low-frequency colour fields, a few hard edges, and sensor-like grain."""
  rng = np.random.default_rng(seed)
  images = []
  for _ in range(count):
    coarse = rng.uniform(0, 255, size=(1, 6, 8, 3)).astype(np.float32)
    field = tf.image.resize(coarse, (height, width), method='bicubic')[0].numpy()
    mid = tf.image.resize(rng.normal(0, 25, size=(1, 96, 128, 3)).astype(np.float32),
                          (height, width), method='bilinear')[0].numpy()
    # Hard-edged rectangles: JPEG spends bits on edges, as on object boundaries in photos.
    for _ in range(6):
      y0, x0 = rng.integers(0, height - 20), rng.integers(0, width - 20)
      y1, x1 = y0 + rng.integers(20, height // 2), x0 + rng.integers(20, width // 2)
      field[y0:y1, x0:x1] = rng.uniform(0, 255, size=3)
    grain = rng.normal(0, 14, size=(height, width, 3))
    pixels = np.clip(field + mid + grain, 0, 255).astype(np.uint8)
    images.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
  return images


def stage_fn(stage: str, args: argparse.Namespace) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """`(jpeg bytes, seed) -> image` for one stage."""
  if stage == 'decode':
    return lambda jpeg, seed: tf.io.decode_jpeg(jpeg, channels=3)
  augment = {'crop_flip': 'none', 'randaugment': 'randaugment'}[stage]
  return lambda jpeg, seed: preprocessing.preprocess_for_train(
      jpeg, args.image_size, seed, augment=augment,
      randaugment_layers=args.randaugment_layers,
      randaugment_magnitude=args.randaugment_magnitude)


def dataset(jpegs: list[bytes], fn, parallel: int | None, single_core: bool) -> tf.data.Dataset:
  """The JPEGs cycled forever, each with its own seed, mapped by `fn`."""
  table, count = tf.constant(jpegs), len(jpegs)
  ds = tf.data.Dataset.range(2**62).map(
      lambda i: (tf.gather(table, i % count), tf.stack([i, tf.constant(0, tf.int64)])))
  ds = ds.map(fn, num_parallel_calls=parallel if parallel else tf.data.AUTOTUNE)
  # Drain every image through one cheap reduction so the element is really produced.
  ds = ds.map(lambda image: tf.reduce_sum(tf.cast(image, tf.float32)))
  options = tf.data.Options()
  if single_core:
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


def throughput(ds: tf.data.Dataset, images: int, warmup: int) -> tuple[float, float]:
  """(images per wall second, images per CPU second of this process)."""
  iterator = iter(ds)
  for _ in range(warmup):
    next(iterator)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(images):
    next(iterator)
  return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def measure(args: argparse.Namespace) -> dict[str, Any]:
  load_before = os.getloadavg()
  jpegs = synthetic_jpegs(args.num_jpegs)
  results: dict[str, Any] = {}
  for stage in args.stages.split(','):
    fn = stage_fn(stage, args)
    one, one_cpu = throughput(dataset(jpegs, fn, 1, single_core=True), args.images,
                              args.warmup_images)
    auto, auto_cpu = throughput(dataset(jpegs, fn, None, single_core=False), args.images,
                                args.warmup_images)
    results[stage] = {'images_per_sec_per_core': one, 'images_per_cpu_sec': one_cpu,
                      'ms_per_image_per_core': 1e3 / one, 'images_per_sec_autotune': auto,
                      'images_per_cpu_sec_autotune': auto_cpu}
  # Per CPU second, not per wall second: other processes on the host then do not lower it.
  per_core = results[args.stages.split(',')[-1]]['images_per_cpu_sec']
  return {
      'image_size': args.image_size, 'jpeg_size': [500, 375],
      'jpeg_bytes_mean': float(np.mean([len(j) for j in jpegs])),
      'randaugment': [args.randaugment_layers, args.randaugment_magnitude],
      'stages': results,
      'target_images_per_sec': args.target_images_per_sec,
      'cores_needed_for_target': math.ceil(args.target_images_per_sec / per_core),
      'host_cpus': os.cpu_count(), 'cpu': _cpu_name(), 'load_average_before': load_before,
      'load_average_after': os.getloadavg(), 'tensorflow_version': tf.__version__,
      'python_version': platform.python_version(),
  }


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.machine()


def format_summary(r: dict[str, Any]) -> str:
  lines = [f'{r["image_size"]} px train preprocessing, {r["jpeg_size"][0]}×{r["jpeg_size"][1]} '
           f'JPEGs ({r["jpeg_bytes_mean"] / 1e3:.0f} KB) on {r["host_cpus"]}× {r["cpu"]}']
  for stage, s in r['stages'].items():
    lines.append(f'  {stage:12s} one thread {s["images_per_sec_per_core"]:7.1f} img/s '
                 f'({s["images_per_cpu_sec"]:7.1f} per CPU-s); AUTOTUNE '
                 f'{s["images_per_sec_autotune"]:7.1f} img/s '
                 f'({s["images_per_cpu_sec_autotune"]:7.1f} per CPU-s)')
  lines.append(f'  cores for {r["target_images_per_sec"]:,.0f} img/s: '
               f'{r["cores_needed_for_target"]}  (load average {r["load_average_before"][0]:.1f}'
               f' → {r["load_average_after"][0]:.1f})')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  result = measure(args)
  print(json.dumps(result) if args.json else format_summary(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
