"""The device augmentation ops on the accelerator against the same ops on XLA:CPU.

  python benchmarks/device_augment_parity.py [--size=224] [--json]

On XLA:CPU, `input/device_augment.py` equals augment.py's TF ops bit for bit (its tests). This
script asks whether the accelerator computes the same pixels: every one of the 16 ops, at TF's
RandAugment magnitudes (0, 5, 10, 17, 28; a few small ones for translations and cutouts) and with
keys that draw both signs of the signed ops, then both policies (RandAugment N=2 M=10 and
AutoAugment v0) on one batch with the same per-example keys, each run once on the CPU and once on
the default device, from the same uint8 images and the same keys. Per op: bit-exact or not, how
many values differ and by how much.

Images (uint8, SIZE × SIZE): scikit-learn's two sample photos when it is installed (cropped and
subsampled), smooth colour fields with edges and grain as the input benchmark makes, uniform noise,
and the edge cases of the op tests (one low-contrast image, two levels, constant, black, white).
No TensorFlow: runs on the GPU image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.input import augment_policies as policies
from efficientnet_jax.input import device_augment

LEVELS = (0, 5, 10, 17, 28)
SMALL_LEVELS = (0.5, 1, 2)  # From 5 up, translations and cutouts cover most of an image.
KEYS_PER_ARGUMENT = 4  # Signed ops: a key draws the sign, so 4 keys give both signs (p ≈ 7/8).


def images(size: int, seed: int = 0) -> np.ndarray:
  """uint8 [N, size, size, 3]: photos (if scikit-learn is there), synthetic scenes, edge cases."""
  rng = np.random.default_rng(seed)
  shape = (size, size, 3)
  out = []
  try:
    from sklearn.datasets import load_sample_image  # pylint: disable=g-import-not-at-top
    for name in ('china.jpg', 'flower.jpg'):
      photo = load_sample_image(name)  # 427 × 640: crop the centre square, subsample to size.
      side = min(photo.shape[:2])
      top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
      index = np.linspace(0, side - 1, size).round().astype(int)
      out.append(photo[top:top + side, left:left + side][index][:, index])
  except ImportError:
    pass
  y, x = np.mgrid[0:size, 0:size] / size
  for _ in range(2):  # Smooth colour fields with a hard edge and grain.
    base = np.stack([np.sin(6 * x * rng.uniform(0.5, 2) + c) * np.cos(4 * y + 2 * c)
                     for c in rng.uniform(0, 3, 3)], -1)
    base = 127.5 + 100 * base + 20 * (x[..., None] > rng.uniform(0.3, 0.7))
    out.append(np.clip(base + rng.normal(0, 6, shape), 0, 255).astype(np.uint8))
  out.append(rng.integers(0, 256, shape, dtype=np.uint8))
  low_contrast = np.empty(shape, np.uint8)
  low_contrast[..., 0] = rng.integers(99, 125, shape[:2])
  low_contrast[..., 1] = 77
  low_contrast[..., 2] = 200
  low_contrast.reshape(-1, 3)[:40, 2] = 201
  two_levels = np.full(shape, 100, np.uint8)
  two_levels[:size // 2] = 120
  out += [low_contrast, two_levels, np.full(shape, 77, np.uint8), np.zeros(shape, np.uint8),
          np.full(shape, 255, np.uint8)]
  return np.stack(out)


def op_arguments(name: str) -> list[float]:
  """The op's distinct float32 arguments over the levels (and AutoAugment's constants)."""
  levels = (0,) if name in policies.UNLEVELLED_OPS else LEVELS
  constants = [{}]
  if name in ('TranslateX', 'TranslateY', 'Cutout'):
    levels = levels + SMALL_LEVELS
    constants.append({'translate_const': policies.AUTOAUGMENT_TRANSLATE_CONST,
                      'cutout_const': policies.AUTOAUGMENT_CUTOUT_CONST})
  arguments = []
  for c in constants:
    for level in levels:
      args = policies.level_to_arg(name, level, **c)
      arguments.append(float(np.float32(args[0] if args else 0.0)))
  return sorted(set(arguments))


def compare(cpu: np.ndarray, device: np.ndarray) -> dict[str, object]:
  """Bit-exactness and the size of the differences of two uint8 arrays."""
  diff = np.abs(cpu.astype(np.int16) - device.astype(np.int16))
  differing = int(np.count_nonzero(diff))
  return {'bit_exact': differing == 0, 'values': int(diff.size), 'differing_values': differing,
          'differing_fraction': differing / diff.size, 'max_abs_diff': int(diff.max()),
          'differing_images': int(np.count_nonzero(diff.reshape(len(diff), -1).max(1)))}


def on_both(fn, *args) -> tuple[np.ndarray, np.ndarray]:
  """`fn(*args)` jitted on the CPU and on the default device (its inputs committed to each)."""
  cpu, device = jax.devices('cpu')[0], jax.devices()[0]
  results = []
  for where in (cpu, device):
    placed = jax.device_put(args, where)
    results.append(np.asarray(jax.jit(fn)(*placed)))
  return results[0], results[1]


def op_batch(name: str, base: np.ndarray, seed: int = 1):
  """Every image × argument × key for one op: images, op ids, arguments, keys."""
  arguments = op_arguments(name)
  n_keys = KEYS_PER_ARGUMENT if name in policies.SIGNED_OPS or name == 'Cutout' else 1
  reps = len(arguments) * n_keys
  batch = np.repeat(base, reps, axis=0)
  args = np.tile(np.repeat(np.asarray(arguments, np.float32), n_keys), len(base))
  keys = jax.random.key_data(jax.random.split(jax.random.key(seed), len(batch)))
  ops = np.full(len(batch), policies.RANDAUGMENT_OPS.index(name), np.int32)
  return batch, ops, args, np.asarray(keys)


def run(size: int) -> dict[str, object]:
  """Compares every op and both policies; returns the JSON-ready report."""
  base = images(size)
  report = {'device_kind': jax.devices()[0].device_kind, 'platform': jax.default_backend(),
            'jax_version': jax.__version__, 'image_size': size, 'images': len(base), 'ops': {},
            'policies': {}}
  for name in policies.RANDAUGMENT_OPS:
    start = time.perf_counter()
    batch, ops, args, keys = op_batch(name, base)

    def layer(images, ops, args, keys, name=name):
      # The policies' own code path: one stage of the layer the train step runs.
      return device_augment._layer(images, ops, args, jax.random.wrap_key_data(keys),  # pylint: disable=protected-access
                                   names=(name,), replace=policies.REPLACE)

    cpu, device = on_both(layer, batch, ops, args, keys)
    report['ops'][name] = dict(compare(cpu, device), arguments=len(op_arguments(name)),
                               seconds=time.perf_counter() - start)
  seeds = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(7), 4 * len(base))))
  batch = np.tile(base, (4, 1, 1, 1))
  for policy, fn in (
      ('randaugment_n2_m10', lambda im, s: device_augment.randaugment(
          im, jax.random.wrap_key_data(s), num_layers=2, magnitude=10)),
      ('autoaugment_v0', lambda im, s: device_augment.autoaugment(
          im, jax.random.wrap_key_data(s), policy='v0'))):
    cpu, device = on_both(fn, batch, seeds)
    report['policies'][policy] = compare(cpu, device)
  exact = [n for n, r in report['ops'].items() if r['bit_exact']]
  report['summary'] = {
      'ops_bit_exact': len(exact), 'ops': len(report['ops']),
      'not_exact': {n: {'max_abs_diff': r['max_abs_diff'],
                        'differing_fraction': r['differing_fraction']}
                    for n, r in report['ops'].items() if not r['bit_exact']},
      'policies_bit_exact': [p for p, r in report['policies'].items() if r['bit_exact']]}
  return report


def table(report: dict[str, object]) -> str:
  lines = [f'{report["device_kind"]} ({report["platform"]}) vs XLA:CPU, jax '
           f'{report["jax_version"]}, {report["images"]} images of {report["image_size"]} px',
           f'{"op":<20} {"exact":>5} {"differing":>12} {"fraction":>10} {"max |d|":>7}']
  for name, r in list(report['ops'].items()) + list(report['policies'].items()):
    lines.append(f'{name:<20} {"yes" if r["bit_exact"] else "no":>5} '
                 f'{r["differing_values"]:>12,} {r["differing_fraction"]:>10.2e} '
                 f'{r["max_abs_diff"]:>7}')
  s = report['summary']
  lines.append(f'{s["ops_bit_exact"]} of {s["ops"]} ops bit-exact')
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--size', type=int, default=224, help='Image side in pixels.')
  p.add_argument('--json', action='store_true', help='Also print the report as one JSON line.')
  args = p.parse_args(argv)
  if args.size < 16:
    print(f'error: --size={args.size} is too small; use at least 16.', file=sys.stderr)
    return 2
  report = run(args.size)
  print(table(report), flush=True)
  if args.json:
    print(json.dumps(report), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
