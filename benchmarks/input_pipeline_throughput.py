"""Training input pipeline throughput per CPU core, on synthetic ImageNet-style JPEGs.

  python benchmarks/input_pipeline_throughput.py --json [--target_images_per_sec=12000]

Measures the host side of the train pipeline (`preprocessing.preprocess_for_train`, mapped over
each example, batched as the pipeline batches) in stages, so that the cost of each part shows:
  decode       `tf.io.decode_jpeg` of the whole image (the floor);
  crop_flip    decode of the crop window, TF's Inception crop, bicubic resize, random flip, uint8
               out: the whole host work with the augmentation on the device (`augment.on_device`);
  randaugment  + RandAugment (N=2, M=10, B0's) on the host, uint8, normalised per batch, as the
               pipeline does with the augmentation on the CPU;
  autoaugment  + AutoAugment policy v0 (the published B0–B7 recipe) instead.
Each stage runs in tf.data twice: `num_parallel_calls=1` on a one-thread private pool with
intra-op parallelism 1 (images/s per core), and AUTOTUNE over all cores (how it scales here).
`--dct_scaling` decodes crops of at least twice the output size at reduced JPEG scale
(`preprocessing.dct_ratio`; never for 224 px crops of these 500×375 JPEGs).

The JPEGs are made in memory: 500×375 (ImageNet's most common size) smooth colour fields with
edges and fine grain, encoded at quality 90 with `tf.io.encode_jpeg`, so that they decode like
photos (about 95 KB each; ImageNet's train JPEGs average ~110 KB) rather than like noise (slow)
or flat colour (fast).

Rates are given per wall second and per CPU second of this process (`time.process_time`): on a
busy host the thread does not get a whole core, so the per-CPU-second rate of the one-thread run
is the per-core figure, and the cores needed to feed a step rate (`--target_images_per_sec`,
e.g. the 12,000 img/s B0 target on one H100) come from it. The load average at start and end is
recorded with the figures.

timm's reference, measured by the same command: the `--stages` values
  timm_decode       PIL `Image.open(...).convert('RGB')` (a full decode, as timm's ImageDataset);
  timm_crop_flip    + timm's `create_transform(is_training=True, interpolation='bicubic',
                    hflip=0.5, use_prefetcher=True)` without auto-augment or colour jitter:
                    RandomResizedCropAndInterpolation, flip, uint8 out (timm's default train
                    loader normalises on the GPU, as our on-device path does);
  timm_randaugment  the same with `auto_augment='rand-mM-nN-p1.0'` (M, N from the flags above;
                    p1.0 because timm applies each op with probability 0.5 by default, ours always);
  timm_autoaugment  the same with `auto_augment='v0'` (timm's port of TF's policy v0)
run in a child process (`benchmarks/timm_input_pipeline.py`: TensorFlow and torch crash in one
process, so this one never imports torch and the child never imports TensorFlow) on the same
JPEG bytes, passed through a temporary directory, on one thread, with the same `--images` and
`--warmup_images`. Each timm stage is paired with ours of the same name without `timm_`, and
the ratio ours/timm of images per CPU second is reported for each pair. The child runs first,
before this process has run any tf.data pipeline, and this process only waits meanwhile: its
CPU-seconds over the child's wall time are recorded (`parent_busy_share`) as the check that timm
had the machine to itself. `--timm_after_ours` times the child once more after our stages, the
placement earlier versions used, to show what that costs timm. The default `--stages`
has all eight; without timm or torch installed the timm stages are skipped with one line.

Every measurement runs `--repeats` times (default 3): the figures are the medians, with the
minimum and maximum under `range`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from efficientnet_jax.input import preprocessing  # pylint: disable=g-import-not-at-top
from efficientnet_jax.training import host_cpu  # pylint: disable=g-import-not-at-top


OUR_STAGES = ('decode', 'crop_flip', 'randaugment', 'autoaugment')
TIMM_STAGES = tuple(f'timm_{stage}' for stage in OUR_STAGES)
TIMM_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'timm_input_pipeline.py')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--image_size', type=int, default=224)
  p.add_argument('--num_jpegs', type=int, default=64, help='Distinct synthetic JPEGs (cycled).')
  p.add_argument('--images', type=int, default=640, help='Images timed per measurement.')
  p.add_argument('--warmup_images', type=int, default=64)
  p.add_argument('--randaugment_layers', type=int, default=2)
  p.add_argument('--randaugment_magnitude', type=float, default=10)
  p.add_argument('--target_images_per_sec', type=float, default=12_000)
  p.add_argument('--stages', default=','.join(OUR_STAGES + TIMM_STAGES),
                 help=f'Comma list of {OUR_STAGES + TIMM_STAGES}.')
  p.add_argument('--repeats', type=int, default=3,
                 help='Runs of each measurement; median, min and max are reported.')
  p.add_argument('--batch_size', type=int, default=32,
                 help='Images per batch (the per-batch normalisation runs once per batch).')
  p.add_argument('--dct_scaling', action='store_true',
                 help='Decode large crops at reduced JPEG scale (preprocessing.dct_ratio).')
  p.add_argument('--timm_after_ours', action='store_true',
                 help='Also time the timm child again after our stages (the old placement), to '
                      'show what a busy parent costs it; the ratios use the first run.')
  p.add_argument('--json', action='store_true', help='Print one JSON object (last line).')
  args = p.parse_args(argv)
  unknown = set(args.stages.split(',')) - set(OUR_STAGES + TIMM_STAGES)
  if unknown:
    p.error(f'unknown --stages {sorted(unknown)}; choose from {OUR_STAGES + TIMM_STAGES}')
  if args.repeats < 1:
    p.error('--repeats must be at least 1')
  if args.batch_size < 1 or args.images % args.batch_size or args.warmup_images % args.batch_size:
    p.error(f'--images and --warmup_images must be multiples of --batch_size={args.batch_size}')
  return args


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


Stage = tuple[Callable[[tf.Tensor, tf.Tensor], tf.Tensor], Callable[[tf.Tensor], tf.Tensor]]


def stage_fns(stage: str, args: argparse.Namespace) -> Stage:
  """(`(jpeg bytes, seed) -> image`, `batch -> batch`) of one stage, as the train pipeline maps."""
  if stage == 'decode':
    return (lambda jpeg, seed: tf.io.decode_jpeg(jpeg, channels=3)), (lambda batch: batch)
  augment = {'crop_flip': 'none', 'randaugment': 'randaugment',
             'autoaugment': 'autoaugment'}[stage]
  # uint8 per image; the host normalises whole batches when it augments (pipeline.py).
  image_fn = lambda jpeg, seed: preprocessing.preprocess_for_train(
      jpeg, args.image_size, seed, augment=augment, randaugment_layers=args.randaugment_layers,
      randaugment_magnitude=args.randaugment_magnitude, output_uint8=True,
      dct_scaling=args.dct_scaling)
  batch_fn = (lambda batch: batch) if stage == 'crop_flip' else preprocessing.normalize
  return image_fn, batch_fn


def dataset(jpegs: list[bytes], fns: Stage, parallel: int | None, single_core: bool,
            batch_size: int) -> tf.data.Dataset:
  """The JPEGs cycled forever, each with its own seed, mapped and batched by `fns`."""
  image_fn, batch_fn = fns
  table, count = tf.constant(jpegs), len(jpegs)
  ds = tf.data.Dataset.range(2**62).map(
      lambda i: (tf.gather(table, i % count), tf.stack([i, tf.constant(0, tf.int64)])))
  ds = ds.map(image_fn, num_parallel_calls=parallel if parallel else tf.data.AUTOTUNE)
  if batch_size > 1:
    ds = ds.batch(batch_size).map(batch_fn)
  # Every element is produced in full by the maps; a one-pixel slice hands it over cheaply.
  ds = ds.map(lambda images: tf.reshape(images, [-1])[:1])
  options = tf.data.Options()
  if single_core:
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


def throughput(ds: tf.data.Dataset, images: int, warmup: int, batch_size: int
               ) -> tuple[float, float]:
  """(images per wall second, images per CPU second of this process)."""
  iterator = iter(ds)
  for _ in range(warmup // batch_size):
    next(iterator)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(images // batch_size):
    next(iterator)
  return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def summarise(runs: dict[str, list[float]]) -> dict[str, Any]:
  """Each metric's median over the repeats, and its [min, max] under 'range'."""
  summary: dict[str, Any] = {metric: statistics.median(values) for metric, values in runs.items()}
  summary['range'] = {metric: [min(values), max(values)] for metric, values in runs.items()}
  summary['ms_per_image_per_core'] = 1e3 / summary['images_per_sec_per_core']
  return summary


def measure_ours(stage: str, jpegs: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
  """One of our stages, one thread and AUTOTUNE, `args.repeats` times each."""
  fns = stage_fns(stage, args)
  runs: dict[str, list[float]] = {
      'images_per_sec_per_core': [], 'images_per_cpu_sec': [], 'images_per_sec_autotune': [],
      'images_per_cpu_sec_autotune': []}
  for _ in range(args.repeats):
    one, one_cpu = throughput(dataset(jpegs, fns, 1, True, args.batch_size), args.images,
                              args.warmup_images, args.batch_size)
    auto, auto_cpu = throughput(dataset(jpegs, fns, None, False, args.batch_size), args.images,
                                args.warmup_images, args.batch_size)
    runs['images_per_sec_per_core'].append(one)
    runs['images_per_cpu_sec'].append(one_cpu)
    runs['images_per_sec_autotune'].append(auto)
    runs['images_per_cpu_sec_autotune'].append(auto_cpu)
  return summarise(runs)


def timm_missing() -> str | None:
  """Why the timm stages cannot run here (None if they can); looks without importing torch."""
  missing = [name for name in ('torch', 'timm') if importlib.util.find_spec(name) is None]
  return f'timm stages skipped: {" and ".join(missing)} not installed' if missing else None


def timm_auto_augment(args: argparse.Namespace) -> str:
  """timm's RandAugment string for our N and M; p1.0 applies every op, as ours does."""
  return f'rand-m{round(args.randaugment_magnitude)}-n{args.randaugment_layers}-p1.0'


def measure_timm(stages: list[str], jpegs: list[bytes], args: argparse.Namespace
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
  """(timm stages' summaries, the child's versions and settings), from a child process.

  The parent only waits while the child runs; its own CPU-seconds over that time are recorded
  (`parent_cpu_seconds`, and as a share of the child's wall time `parent_busy_share`) as the
  check that the child had the machine to itself.
  """
  with tempfile.TemporaryDirectory(prefix='input_pipeline_jpegs_') as directory:
    for index, jpeg in enumerate(jpegs):
      with open(os.path.join(directory, f'{index:05d}.jpg'), 'wb') as f:
        f.write(jpeg)
    command = [sys.executable, TIMM_SCRIPT, f'--jpeg_dir={directory}',
               f'--image_size={args.image_size}', f'--images={args.images}',
               f'--warmup_images={args.warmup_images}', f'--repeats={args.repeats}',
               f'--stages={",".join(stages)}', f'--auto_augment={timm_auto_augment(args)}',
               '--json']
    # One OpenMP/MKL thread from the start: set_num_threads(1) alone leaves pools made at import.
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    wall, parent_cpu = time.perf_counter(), time.process_time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall, parent_cpu = time.perf_counter() - wall, time.process_time() - parent_cpu
  if done.returncode != 0:
    raise RuntimeError(f'{TIMM_SCRIPT} failed (exit {done.returncode}):\n{done.stderr[-3000:]}')
  child = json.loads(done.stdout.strip().splitlines()[-1])
  summaries = {stage: summarise(runs) for stage, runs in child.pop('stages').items()}
  child.update(child_wall_seconds=wall, parent_cpu_seconds=parent_cpu,
               parent_busy_share=parent_cpu / wall)
  return summaries, child


def ratios_to_timm(stages: dict[str, Any]) -> dict[str, Any]:
  """For each of our stages measured with its timm counterpart: ours/timm per CPU second."""
  ratios = {}
  for ours, timm in zip(OUR_STAGES, TIMM_STAGES):
    if ours in stages and timm in stages:
      ours_rate = stages[ours]['images_per_cpu_sec']
      timm_rate = stages[timm]['images_per_cpu_sec']
      ratios[ours] = {'timm_stage': timm, 'ours_images_per_cpu_sec': ours_rate,
                      'timm_images_per_cpu_sec': timm_rate,
                      'ratio_per_cpu_sec': ours_rate / timm_rate}
  return ratios


def cores_needed(stages: dict[str, Any], target_images_per_sec: float) -> dict[str, int]:
  """Cores each of our measured stages needs for the target rate."""
  # Per CPU second, not per wall second: other processes on the host then do not lower it.
  return {stage: math.ceil(target_images_per_sec / stages[stage]['images_per_cpu_sec'])
          for stage in OUR_STAGES if stage in stages}


def measure(args: argparse.Namespace) -> dict[str, Any]:
  load_before = os.getloadavg()
  requested = args.stages.split(',')
  jpegs = synthetic_jpegs(args.num_jpegs)
  timm: dict[str, Any] = {}
  stages: dict[str, Any] = {}
  timm_stages = [stage for stage in requested if stage in TIMM_STAGES]
  skipped = timm_missing() if timm_stages else None
  if skipped:
    print(skipped, file=sys.stderr, flush=True)
    timm['skipped'] = skipped
  elif timm_stages:
    # timm first, while this process has run no tf.data pipeline and only waits: nothing of ours
    # can share the cores with it (`parent_busy_share` checks; `--timm_after_ours` compares).
    stages, timm = measure_timm(timm_stages, jpegs, args)
  stages.update({stage: measure_ours(stage, jpegs, args) for stage in requested
                 if stage in OUR_STAGES})
  if timm_stages and not skipped and args.timm_after_ours:
    after, child = measure_timm(timm_stages, jpegs, args)
    timm['after_ours'] = {
        'parent_busy_share': child['parent_busy_share'],
        'images_per_cpu_sec': {s: after[s]['images_per_cpu_sec'] for s in after},
        'rate_vs_first': {s: after[s]['images_per_cpu_sec'] / stages[s]['images_per_cpu_sec']
                          for s in after}}
  return {
      'image_size': args.image_size, 'jpeg_size': [500, 375],
      'jpeg_bytes_mean': float(np.mean([len(j) for j in jpegs])),
      'randaugment': [args.randaugment_layers, args.randaugment_magnitude],
      'batch_size': args.batch_size, 'dct_scaling': args.dct_scaling,
      'repeats': args.repeats, 'images': args.images, 'warmup_images': args.warmup_images,
      'stages': stages, 'vs_timm': ratios_to_timm(stages), 'timm': timm,
      'target_images_per_sec': args.target_images_per_sec,
      'cores_needed_for_target': cores_needed(stages, args.target_images_per_sec),
      'host_cpus': os.cpu_count(), **host_cpu.identity(), 'load_average_before': load_before,
      'load_average_after': os.getloadavg(), 'tensorflow_version': tf.__version__,
      'python_version': platform.python_version(),
  }


def _rate(summary: dict[str, Any], metric: str) -> str:
  """'median' or 'median (min–max)' when there were repeats."""
  low, high = summary['range'][metric]
  spread = f' ({low:.1f}–{high:.1f})' if high > low else ''
  return f'{summary[metric]:7.1f}{spread}'


def format_summary(r: dict[str, Any]) -> str:
  lines = [f'{r["image_size"]} px train preprocessing, {r["jpeg_size"][0]}×{r["jpeg_size"][1]} '
           f'JPEGs ({r["jpeg_bytes_mean"] / 1e3:.0f} KB) on {r["host_cpus"]}× {r["cpu"]}'
           + (f'; median of {r["repeats"]} runs (min–max)' if r['repeats'] > 1 else '')]
  for stage, s in r['stages'].items():
    line = (f'  {stage:16s} one thread {_rate(s, "images_per_sec_per_core")} img/s, '
            f'{_rate(s, "images_per_cpu_sec")} per CPU-s')
    if stage in OUR_STAGES:
      line += (f'; AUTOTUNE {_rate(s, "images_per_sec_autotune")} img/s, '
               f'{_rate(s, "images_per_cpu_sec_autotune")} per CPU-s')
    lines.append(line)
  if r['vs_timm']:
    lines.append(f'  {"per CPU-s, one thread":30s} {"ours":>8s} {"timm":>8s}  ours/timm')
    for ours, v in r['vs_timm'].items():
      lines.append(f'  {ours + " / " + v["timm_stage"]:30s} {v["ours_images_per_cpu_sec"]:8.1f} '
                   f'{v["timm_images_per_cpu_sec"]:8.1f}  {v["ratio_per_cpu_sec"]:.2f}×')
  if 'parent_busy_share' in r['timm']:
    busy = 100 * r['timm']['parent_busy_share']
    lines.append(f'  timm child timed first: this process busy {busy:.1f}% of its wall time')
  if 'after_ours' in r['timm']:
    after = r['timm']['after_ours']
    rates = ', '.join(f'{stage} {rate:.1f} per CPU-s ({after["rate_vs_first"][stage]:.2f}× '
                      'the first run)' for stage, rate in after['images_per_cpu_sec'].items())
    lines.append(f'  timm child again after ours (busy share '
                 f'{100 * after["parent_busy_share"]:.1f}%): {rates}')
  if r['cores_needed_for_target']:
    lines.append(f'  cores for {r["target_images_per_sec"]:,.0f} img/s: ' + ', '.join(
        f'{stage} {cores}' for stage, cores in r['cores_needed_for_target'].items()))
  lines.append(f'  load average {r["load_average_before"][0]:.1f} → '
               f'{r["load_average_after"][0]:.1f}')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  result = measure(args)
  print(json.dumps(result) if args.json else format_summary(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
