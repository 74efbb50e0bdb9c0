"""Real-size JPEGs through the real train input into the real train step: does the step wait?

  python benchmarks/end_to_end_input.py                  # tiny network on a CPU, both placements
  python benchmarks/end_to_end_input.py --variant=b0 --image_size=224 --batch_size=256 --json

What runs is what `python -m efficientnet_jax.main` runs on an image folder (`dataset=folder`):
the config is built from the config file (`--config`, default configs/b0.py: the ImageNet recipe,
Inception crop, flip and AutoAugment v0) with its ':arg' string, as `config_flags` builds it,
plus this script's keys (dataset, classes, variant, size, batch, dtype, `augment.on_device`);
`setup.from_config` builds the model, state and jitted train step from it, and
`pipeline.train_iterator` reads `data_dir/train/<class>/<file>.jpg`. Nothing else is built here.

The JPEGs: `input_pipeline_throughput.synthetic_jpegs` (500×375, photo-like, ~95 KB; ImageNet's
train JPEGs average ~110 KB), `--num_jpegs` of them in `--num_classes` class folders, written to
a temporary folder (deleted at the end) or to `--jpeg_dir` (kept; a folder that already holds
`train/` is reused as it is). Nothing is downloaded.

For each `--placements` entry (host: augmentation in tf.data on the CPU; device: the host only
decodes, crops and flips, and the train step augments and normalises, `augment.on_device`),
three measurements in this order, each after `--warmup_steps` untimed steps or batches,
`--steps` timed:
  input alone  a fresh `train_iterator`, batches taken as fast as it gives them, no step;
  step alone   the train step on one fixed batch (the pipeline's first) already on the device,
               repeated; the warm-up compiles it, so the next measurement includes no compile;
  end to end   a fresh `train_iterator` feeding the step as the training loop does
               (`next`, `steps.global_batch`, the step), each step's results waited for.
The step is compiled before the end-to-end run so that its warm-up holds no compilation: during
a compile the pipeline would fill its prefetch buffer, and the timed steps would drain it free.

Reported for each placement: the three rates (images per wall second); the process's
CPU-seconds per image end to end (`time.process_time`, all threads: on a CPU backend this
includes the step's own work); the share of the end-to-end wall time spent in `next(iterator)`
(the step waiting for data) and the verdict, input-bound when that share exceeds
`INPUT_BOUND_WAIT`; efficiency = end-to-end rate / min(input alone, step alone) (the issue's
target: ≥ `EFFICIENCY_TARGET` on CPU); and the host cores that `--target_images_per_sec` needs,
ceil(target / input images per CPU-second of the input-alone run).

On a CPU backend the input and the step share the same cores, so end to end cannot reach the
slower of the two alone unless one of them leaves cores idle; on an accelerator only the input
uses the host. Each step is waited for, end to end as alone, so that the time in `next` is time
the step could not start; the training loop does not wait, and its dispatch of the next step
overlaps the device's work, which can make it a little faster than both on an accelerator.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Iterator, NoReturn

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
import jax

from efficientnet_jax import cli
from efficientnet_jax.benchmarking import measures
from efficientnet_jax.models import scaling
from efficientnet_jax.training import compile_cache
from efficientnet_jax.training import setup as setup_lib
from efficientnet_jax.training import steps as steps_lib
from efficientnet_jax.training import xla_options
# TensorFlow (the pipeline, `input_pipeline_throughput`) is imported inside the functions that
# read data: a bad flag fails in a second, before its ~5 s import.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLACEMENTS = ('host', 'device')
# The step waited for data more than this share of the wall time: a faster input would make
# training faster by more than that.
INPUT_BOUND_WAIT = 0.1
EFFICIENCY_TARGET = 0.9
JPEG_HEIGHT, JPEG_WIDTH = 375, 500
# MODEL[φPHI], as benchmarks/cpu_compare.py spells a network: b0φ-4 is the quick start's.
VARIANT = re.compile(r'^(?P<model>[a-z0-9]+)(?:(?:φ|phi)(?P<phi>-?[0-9]+(?:\.[0-9]*)?))?$')


class _Parser(argparse.ArgumentParser):
  """argparse, with a bad flag reported on one line (`cli.fail`), without the usage block."""

  def error(self, message: str) -> NoReturn:
    cli.fail(message)


def make_parser() -> _Parser:
  p = _Parser(description=__doc__.split('\n\n', maxsplit=1)[0])
  p.add_argument('--config', default=os.path.join(REPO, 'configs', 'b0.py'),
                 help="Config file and optional ':arg' string, as main's --config "
                      '(default configs/b0.py: the ImageNet recipe).')
  p.add_argument('--variant', default='b0φ-4',
                 help='The network: MODEL[φPHI] (or MODELphiPHI); sets config.model and '
                      'config.phi (none without φ). Default b0φ-4, the quick start\'s network.')
  p.add_argument('--image_size', type=int, default=64)
  p.add_argument('--batch_size', type=int, default=64, help='Global batch size.')
  p.add_argument('--dtype', choices=('float32', 'bfloat16'), default=None,
                 help="Compute dtype; default float32 on a CPU backend (XLA:CPU computes bf16 "
                      "convolutions in float32), the config's own elsewhere.")
  p.add_argument('--steps', type=int, default=20, help='Timed steps (or batches) per measurement.')
  p.add_argument('--warmup_steps', type=int, default=3,
                 help='Untimed steps (or batches) before each measurement; the first compiles.')
  p.add_argument('--num_jpegs', type=int, default=256, help='Train JPEGs written (cycled).')
  p.add_argument('--num_classes', type=int, default=4, help='Class folders they are spread over.')
  p.add_argument('--placements', default=','.join(PLACEMENTS),
                 help='Where the augmentation runs: comma list of host, device.')
  p.add_argument('--target_images_per_sec', type=float, default=15_000,
                 help='The step rate whose host cores are reported (B0 on one H200: 15,000).')
  p.add_argument('--jpeg_dir', default=None,
                 help='Write the JPEG folder here and keep it; reused if it holds train/.')
  p.add_argument('--json', action='store_true', help='Print one JSON object (last stdout line).')
  return p


def parse_variant(text: str) -> tuple[str, float | None]:
  """'b0φ-4' → ('b0', -4.0); 'b0' → ('b0', None). ValueError names the valid models."""
  match = VARIANT.match(text)
  if not match or match['model'] not in scaling.MODEL_NAMES:
    raise ValueError(f'--variant={text!r} must be MODEL or MODELφPHI (e.g. b0φ-4) with MODEL one '
                     f'of {", ".join(scaling.MODEL_NAMES)}.')
  return match['model'], float(match['phi']) if match['phi'] else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = make_parser()
  args = p.parse_args(argv)
  placements = [s.strip() for s in args.placements.split(',') if s.strip()]
  unknown = [s for s in placements if s not in PLACEMENTS]
  if unknown or not placements:
    p.error(f'--placements={args.placements!r}: use a comma list of {", ".join(PLACEMENTS)}.')
  args.placements = list(dict.fromkeys(placements))
  try:
    args.model, args.phi = parse_variant(args.variant)
  except ValueError as error:
    p.error(str(error))
  if args.steps < 1 or args.warmup_steps < 1:
    p.error(f'--steps={args.steps} and --warmup_steps={args.warmup_steps} must be ≥ 1 (the '
            'warm-up compiles the step).')
  if args.image_size < 8 or args.batch_size < 1:
    p.error(f'--image_size={args.image_size} must be ≥ 8 and '
            f'--batch_size={args.batch_size} ≥ 1.')
  if args.num_classes < 1 or args.num_jpegs < max(args.batch_size, args.num_classes):
    p.error(f'--num_jpegs={args.num_jpegs} must be at least --batch_size={args.batch_size} (an '
            f'epoch holds whole batches) and --num_classes={args.num_classes} ≥ 1.')
  if args.target_images_per_sec <= 0:
    p.error(f'--target_images_per_sec={args.target_images_per_sec} must be positive.')
  args.config_path, _, args.config_arg = args.config.partition(':')
  if not os.path.isfile(args.config_path):
    p.error(f'--config: no config file {args.config_path!r}.')
  return args


# ------------------------------------------------------------------------------------------------
# The config, as `main` builds it.


def training_config(args: argparse.Namespace, *, data_dir: str, num_classes: int,
                    on_device: bool | None, dtype: str | None):
  """The config file's `get_config(ARG)`, this script's keys appended to ARG, then locked.

  Through the ':arg' string rather than by setting attributes afterwards, so that what the
  builder derives from them (the BN group from the batch) is derived as for `main`.
  """
  keys = {'dataset': 'folder', 'num_classes': num_classes, 'model': args.model,
          'phi': 'none' if args.phi is None else args.phi, 'image_size': args.image_size,
          'batch_size': args.batch_size}
  if dtype is not None:
    keys['dtype'] = dtype
  if on_device is not None:
    keys['augment.on_device'] = str(on_device).lower()
  arg = ','.join(filter(None, [args.config_arg] + [f'{k}={v}' for k, v in keys.items()]))
  spec = importlib.util.spec_from_file_location('benchmarked_config', args.config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.data_dir = data_dir  # As --config.data_dir=...: a path may hold ',' or '='.
  if hasattr(config, 'lock'):
    config.lock()  # As config_flags locks it: a mistyped key raises.
  return config


# ------------------------------------------------------------------------------------------------
# The JPEG folder.


def write_jpeg_folder(root: str, num_jpegs: int, num_classes: int) -> None:
  """`root/train/class_K/NNNNN.jpg` and one JPEG per class under `root/validation/`.

  The validation split is there because the plan reads both splits' sizes; it is never read.
  """
  from input_pipeline_throughput import synthetic_jpegs
  jpegs = synthetic_jpegs(num_jpegs, JPEG_HEIGHT, JPEG_WIDTH, seed=0)
  for index, jpeg in enumerate(jpegs):
    label = index % num_classes
    for split in ('train',) + (('validation',) if index < num_classes else ()):
      directory = os.path.join(root, split, f'class_{label:02d}')
      os.makedirs(directory, exist_ok=True)
      with open(os.path.join(directory, f'{index:05d}.jpg'), 'wb') as f:
        f.write(jpeg)


def describe_jpeg_folder(root: str) -> dict[str, Any]:
  """Classes, count and mean size of the train JPEGs under `root`."""
  train = os.path.join(root, 'train')
  classes = sorted(e.name for e in os.scandir(train) if e.is_dir())
  sizes = [e.stat().st_size for c in classes for e in os.scandir(os.path.join(train, c))
           if e.is_file()]
  return {'classes': len(classes), 'count': len(sizes),
          'bytes_mean': sum(sizes) / max(1, len(sizes)), 'size': [JPEG_WIDTH, JPEG_HEIGHT]}


# ------------------------------------------------------------------------------------------------
# The measurements.


def fresh_iterator(config) -> Iterator[dict[str, Any]]:
  """`pipeline.train_iterator` as the training loop opens it at step 0."""
  from efficientnet_jax.input import pipeline
  return pipeline.train_iterator(config, global_batch_size=config.batch_size,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())


def step_alone(s, state, device_batch, steps: int, warmup: int) -> tuple[dict[str, Any], Any]:
  """The train step repeated on one device batch: (figures, the state it leaves)."""
  train_step, images = s.train_step, s.config.batch_size * steps
  start = time.perf_counter()
  for _ in range(warmup):
    state, metrics = train_step(state, device_batch, s.step_rng)
    jax.block_until_ready((state, metrics))
  warmup_s = time.perf_counter() - start
  times = []
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = train_step(state, device_batch, s.step_rng)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {'images_per_sec': images / wall, 'step_ms_median': 1e3 * statistics.median(times),
          'host_cpu_s_per_image': cpu / images, 'wall_s': wall,
          'warmup_s': warmup_s}, state


def input_alone(config, steps: int, warmup: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """A fresh train iterator drained as fast as it yields: (figures, its first batch)."""
  iterator, images = fresh_iterator(config), config.batch_size * steps
  first = next(iterator)
  # The warm-up also empties what the pipeline buffered while it started (a batch or two).
  for _ in range(warmup - 1):
    next(iterator)
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(steps):
    next(iterator)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  del iterator  # Its tf.data threads stop before the next measurement.
  gc.collect()
  return {'images_per_sec': images / wall, 'images_per_cpu_sec': images / cpu, 'wall_s': wall,
          'cpu_s': cpu}, first


def end_to_end(s, state, steps: int, warmup: int) -> tuple[dict[str, Any], Any]:
  """The loop's `next` → `global_batch` → step, each step waited for; time in `next` apart."""
  iterator, images = fresh_iterator(s.config), s.config.batch_size * steps

  def one_step(state):
    start = time.perf_counter()
    batch = next(iterator)
    waited = time.perf_counter() - start
    state, metrics = s.train_step(state, steps_lib.global_batch(batch, s.mesh), s.step_rng)
    jax.block_until_ready((state, metrics))
    return state, waited, time.perf_counter() - start

  for _ in range(warmup):
    state, _, _ = one_step(state)
  waits, times = [], []
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(steps):
    state, waited, took = one_step(state)
    waits.append(waited)
    times.append(took)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  del iterator
  gc.collect()
  return {'images_per_sec': images / wall,
          'iteration_ms_median': 1e3 * statistics.median(times),  # next + step
          'host_cpu_s_per_image': cpu / images, 'input_wait_s': sum(waits),
          'input_wait_fraction': sum(waits) / wall, 'wall_s': wall}, state


def verdicts(e2e: dict[str, Any], inputs: dict[str, Any], step: dict[str, Any],
             target_images_per_sec: float) -> dict[str, Any]:
  """Efficiency, input- or step-bound, and the host cores the target rate needs."""
  bound = min(inputs['images_per_sec'], step['images_per_sec'])
  input_bound = e2e['input_wait_fraction'] > INPUT_BOUND_WAIT
  return {
      'efficiency': e2e['images_per_sec'] / bound,
      'slower_alone': 'input' if inputs['images_per_sec'] < step['images_per_sec'] else 'step',
      'input_bound': input_bound, 'verdict': 'input-bound' if input_bound else 'step-bound',
      # Per CPU-second, not per wall second: what the host's other load takes does not count.
      'cores_needed_for_target': math.ceil(target_images_per_sec / inputs['images_per_cpu_sec']),
  }


def measure_placement(args: argparse.Namespace, placement: str, data_dir: str, num_classes: int,
                      dtype: str) -> dict[str, Any]:
  """Builds the run as `main` does for this placement and takes the three measurements."""
  config = training_config(args, data_dir=data_dir, num_classes=num_classes,
                           on_device=placement == 'device', dtype=dtype)
  start = time.perf_counter()
  s = setup_lib.from_config(config)
  state = s.state
  build_s = time.perf_counter() - start
  inputs, first_batch = input_alone(s.config, args.steps, args.warmup_steps)
  step, state = step_alone(s, state, steps_lib.global_batch(first_batch, s.mesh), args.steps,
                           args.warmup_steps)
  e2e, state = end_to_end(s, state, args.steps, args.warmup_steps)
  del state
  result = {'augment_on_device': placement == 'device',
            'augment_policy': s.config.augment.policy, 'build_s': build_s,
            'end_to_end': e2e, 'input_alone': inputs, 'step_alone': step}
  result.update(verdicts(e2e, inputs, step, args.target_images_per_sec))
  return result


# ------------------------------------------------------------------------------------------------
# The run.


def machine() -> dict[str, Any]:
  """Host (its CPU included), backend, device and library versions the figures depend on."""
  import tensorflow as tf
  devices = jax.devices()
  info = {'jax_backend': jax.default_backend(), 'devices': len(devices),
          'device_kind': devices[0].device_kind, 'tensorflow_version': tf.__version__,
          'platform': platform.platform(),
          'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  info.update(measures.environment())
  return info


def prepare(args: argparse.Namespace) -> str:
  """Starts the backend with the config's XLA options, as `main.run` does; returns the dtype.

  A config the run cannot use is one `cli.fail` line.
  """
  try:
    config = training_config(args, data_dir='', num_classes=1, on_device=None, dtype=args.dtype)
    xla_options.apply(backend_optimization_level=config.xla_backend_optimization_level,
                      cpu_opt_preset=config.xla_cpu_opt_preset)
  except (ValueError, KeyError, AttributeError) as error:
    cli.fail(f'--config={args.config}: {error.args[0] if error.args else error}')
  # XLA's flags above and the cache here precede the backend's start (the next line).
  if config.compilation_cache_dir:
    compile_cache.enable(config.compilation_cache_dir)
  dtype = args.dtype or ('float32' if jax.default_backend() == 'cpu' else config.dtype)
  try:
    setup_lib.validate(training_config(args, data_dir='', num_classes=1, on_device=None,
                                       dtype=dtype))
  except ValueError as error:  # ConfigError is one: a batch the devices cannot split, ….
    cli.fail(str(error))
  return dtype


def measure(args: argparse.Namespace) -> dict[str, Any]:
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # JAX's backend probing, orbax: not this report.
  dtype = prepare(args)
  load_before = os.getloadavg()
  kept = args.jpeg_dir is not None
  root = args.jpeg_dir if kept else tempfile.mkdtemp(prefix='end_to_end_jpegs_')
  try:
    reused = kept and os.path.isdir(os.path.join(root, 'train'))
    if not reused:
      write_jpeg_folder(root, args.num_jpegs, args.num_classes)
    jpegs = describe_jpeg_folder(root)
    placements = {placement: measure_placement(args, placement, root, jpegs['classes'], dtype)
                  for placement in args.placements}
  finally:
    if not kept:
      shutil.rmtree(root, ignore_errors=True)
  return {
      'config': args.config, 'variant': args.variant, 'model': args.model, 'phi': args.phi,
      'image_size': args.image_size, 'batch_size': args.batch_size, 'dtype': dtype,
      'steps': args.steps, 'warmup_steps': args.warmup_steps,
      'jpegs': dict(jpegs, dir=root if kept else None, reused=reused),
      'target_images_per_sec': args.target_images_per_sec,
      'input_bound_wait': INPUT_BOUND_WAIT, 'efficiency_target': EFFICIENCY_TARGET,
      'placements': placements, 'machine': machine(),
      'load_average_before': load_before, 'load_average_after': os.getloadavg(),
  }


def format_summary(r: dict[str, Any]) -> str:
  m, j = r['machine'], r['jpegs']
  config = os.path.relpath(r['config'], REPO) if r['config'].startswith(REPO) else r['config']
  lines = [f'{r["variant"]} @ {r["image_size"]} px, batch {r["batch_size"]}, {r["dtype"]}, '
           f'{config}; {j["count"]} JPEGs {j["size"][0]}×{j["size"][1]} '
           f'({j["bytes_mean"] / 1e3:.0f} KB) in {j["classes"]} classes',
           f'{m["devices"]}× {m["device_kind"]} ({m["jax_backend"]}) on {m["host_cpus"]}× '
           f'{m["cpu"]}; load {r["load_average_before"][0]:.1f} → '
           f'{r["load_average_after"][0]:.1f}; {r["steps"]} timed steps after '
           f'{r["warmup_steps"]}; img/s unless said']
  for name, p in r['placements'].items():
    e2e, inputs, step = p['end_to_end'], p['input_alone'], p['step_alone']
    lines += [
        f'  augment on {name} ({p["augment_policy"]}): end to end {e2e["images_per_sec"]:.1f} = '
        f'{p["efficiency"]:.2f} × min(input alone {inputs["images_per_sec"]:.1f}, step alone '
        f'{step["images_per_sec"]:.1f}) (target ≥ {r["efficiency_target"]}); waits for data '
        f'{e2e["input_wait_fraction"]:.0%} of the time: {p["verdict"]}',
        f'    CPU ms per image: end to end {1e3 * e2e["host_cpu_s_per_image"]:.2f}, input alone '
        f'{1e3 / inputs["images_per_cpu_sec"]:.2f}, step alone '
        f'{1e3 * step["host_cpu_s_per_image"]:.2f}; cores for '
        f'{r["target_images_per_sec"]:,.0f} img/s: {p["cores_needed_for_target"]} '
        f'({inputs["images_per_cpu_sec"]:.1f} img per CPU-s)']
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  result = measure(args)
  print(json.dumps(result) if args.json else format_summary(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
