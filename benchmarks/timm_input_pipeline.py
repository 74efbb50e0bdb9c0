"""timm's training input pipeline (PIL) timed on one thread, the reference for ours.

  python benchmarks/timm_input_pipeline.py --jpeg_dir=DIR --json

The child process of `input_pipeline_throughput.py`, which writes its synthetic JPEGs to DIR and
runs this script, so that TensorFlow (ours) and torch (timm) never share a process: the two
crash together. This script must not import TensorFlow; run as a script it blocks the import.

Stages, each the counterpart of one of ours:
  timm_decode       `Image.open(...).convert('RGB')`, a full decode (as timm's ImageDataset);
  timm_crop_flip    + timm's train transform without augmentation, as its default train loader
                    builds it (`use_prefetcher=True`): RandomResizedCropAndInterpolation
                    (bicubic) + flip + uint8 array out; the loader normalises on the GPU;
  timm_randaugment  the same transform with RandAugment (`--auto_augment`, e.g. 'rand-m10-n2-p1.0');
  timm_autoaugment  the same transform with AutoAugment policy v0 (`auto_augment='v0'`; its
                    0-bit Posterize as Pillow < 11 computed it, see allow_zero_bit_posterize).
Everything runs on one thread (`torch.set_num_threads(1)`; PIL's decode and resize are
single-threaded). The JPEGs are read into memory first and cycled; warm-up images are not timed.
Each stage is measured `--repeats` times; the output holds every run's images per wall second
and per CPU second of this process (`time.process_time`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import sys
import time
from typing import Any, Callable

if __name__ == '__main__':
  # A library that imports TensorFlow when it is installed would put TF and torch in one process.
  sys.modules.setdefault('tensorflow', None)

from PIL import Image  # pylint: disable=g-import-not-at-top
from PIL import ImageOps  # pylint: disable=g-import-not-at-top
import PIL  # pylint: disable=g-import-not-at-top
import timm  # pylint: disable=g-import-not-at-top
from timm.data import create_transform  # pylint: disable=g-import-not-at-top
import torch  # pylint: disable=g-import-not-at-top

STAGES = ('timm_decode', 'timm_crop_flip', 'timm_randaugment', 'timm_autoaugment')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--jpeg_dir', required=True, help='Directory of the JPEGs (all *.jpg, sorted).')
  p.add_argument('--image_size', type=int, default=224)
  p.add_argument('--images', type=int, default=600, help='Images timed per measurement.')
  p.add_argument('--warmup_images', type=int, default=64)
  p.add_argument('--repeats', type=int, default=3, help='Measurements per stage.')
  p.add_argument('--stages', default=','.join(STAGES))
  p.add_argument('--auto_augment', default='rand-m10-n2-p1.0',
                 help="timm's RandAugment string for timm_randaugment.")
  p.add_argument('--json', action='store_true', help='Print one JSON object (last line).')
  return p.parse_args(argv)


def read_jpegs(directory: str) -> list[bytes]:
  names = sorted(name for name in os.listdir(directory) if name.endswith('.jpg'))
  jpegs = []
  for name in names:
    with open(os.path.join(directory, name), 'rb') as f:
      jpegs.append(f.read())
  return jpegs


def decode(jpeg: bytes) -> Image.Image:
  """As timm's ImageDataset reads an image; `convert` loads (decodes) all of it."""
  return Image.open(io.BytesIO(jpeg)).convert('RGB')


def allow_zero_bit_posterize() -> None:
  """Lets timm's AutoAugment v0 run on Pillow >= 11, as it runs on the Pillow it was written for.

  v0 has Posterize at level 0, which timm maps to 0 bits; Pillow before 11 made that a black
  image (its mask `~(2**8 - 1)` keeps no bit), Pillow 11 and later raise ValueError. Giving 0
  bits the old result keeps the cost of the stage (one lookup table per image).
  """
  posterize = ImageOps.posterize
  if getattr(posterize, 'allows_zero_bits', False):
    return

  def patched(image: Image.Image, bits: int) -> Image.Image:
    if bits == 0:
      return image.point([0] * 256 * len(image.getbands()))
    return posterize(image, bits)

  patched.allows_zero_bits = True
  ImageOps.posterize = patched


def stage_fn(stage: str, args: argparse.Namespace) -> Callable[[bytes], Any]:
  """`jpeg bytes -> image` for one stage."""
  if stage == 'timm_decode':
    return decode
  if stage == 'timm_autoaugment':
    allow_zero_bit_posterize()
  auto_augment = {'timm_crop_flip': None, 'timm_randaugment': args.auto_augment,
                  'timm_autoaugment': 'v0'}[stage]
  # color_jitter=None: timm adds ColorJitter(0.4) when there is no auto-augment; ours has none.
  transform = create_transform(input_size=args.image_size, is_training=True,
                               interpolation='bicubic', hflip=0.5, color_jitter=None,
                               auto_augment=auto_augment, use_prefetcher=True)
  return lambda jpeg: transform(decode(jpeg))


def throughput(fn: Callable[[bytes], Any], jpegs: list[bytes], images: int,
               warmup: int) -> tuple[float, float]:
  """(images per wall second, images per CPU second of this process)."""
  for i in range(warmup):
    fn(jpegs[i % len(jpegs)])
  wall, cpu = time.perf_counter(), time.process_time()
  for i in range(warmup, warmup + images):
    fn(jpegs[i % len(jpegs)])
  return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def measure(args: argparse.Namespace) -> dict[str, Any]:
  torch.set_num_threads(1)
  # timm's random transforms draw from Python's and torch's generators.
  random.seed(0)
  torch.manual_seed(0)
  jpegs = read_jpegs(args.jpeg_dir)
  stages: dict[str, Any] = {}
  for stage in args.stages.split(','):
    fn = stage_fn(stage, args)
    runs = [throughput(fn, jpegs, args.images, args.warmup_images) for _ in range(args.repeats)]
    stages[stage] = {'images_per_sec_per_core': [wall for wall, _ in runs],
                     'images_per_cpu_sec': [cpu for _, cpu in runs]}
  return {'stages': stages, 'auto_augment': args.auto_augment, 'num_jpegs': len(jpegs),
          'timm_version': timm.__version__, 'torch_version': torch.__version__,
          'pillow_version': PIL.__version__, 'torch_threads': torch.get_num_threads(),
          'python_version': platform.python_version()}


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  result = measure(args)
  if args.json:
    print(json.dumps(result), flush=True)
  else:
    for stage, runs in result['stages'].items():
      print(f'{stage:17s} ' + ', '.join(f'{cpu:.1f}' for cpu in runs['images_per_cpu_sec'])
            + ' img/CPU-s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
