"""Turns `run_gpu_suite.py`'s suite.json into the markdown for docs/benchmarks.md.

  python benchmarks/report.py OUT/suite.json > table.md     (or the OUT directory)

Pairs `ours_X` with `timm_X` (same workload, same run, same card) and states each of the
project's performance targets (docs/benchmarks.md) with whether the measured figure meets it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# workload -> (label, min ours img/s, min ratio ours/timm); None: no such target. The project's
# targets for one H200 (docs/benchmarks.md).
TARGETS: dict[str, tuple[str, float | None, float | None]] = {
    'b0_train': ('B0 train', 15_000, 1.9),
    'b0_infer': ('B0 infer', 50_000, 1.5),
    'b4_train': ('B4 train', None, 1.5),
    'b7_train': ('B7 train (ours remat)', None, 1.5),
}
COLD_COMPILE_MAX_S, WARM_FIRST_STEP_MAX_S = 60.0, 10.0
AUGMENT_MAX_SHARE = 0.05  # Of the B0 train step.
AUGMENT_ITEMS = {'ours_b0_train_autoaugment': 'AutoAugment v0',
                 'ours_b0_train_randaugment': 'RandAugment N=2 M=10'}


def load(path: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
  """(environment, {item name: record}) from suite.json, or from the directory holding it."""
  if os.path.isdir(path):
    path = os.path.join(path, 'suite.json')
  with open(path) as f:
    suite = json.load(f)
  return suite.get('environment', {}), {r['item']: r for r in suite.get('items', [])}


def _result(records: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
  """An item's result, or {} where it did not run, failed or was skipped."""
  return (records.get(name) or {}).get('result') or {}


def _num(value: float | None, digits: int = 0) -> str:
  return '—' if value is None else f'{value:,.{digits}f}'


def _gib(value: int | None) -> str:
  return '—' if value is None else f'{value / 2**30:.1f}'


def _check(ok: bool | None) -> str:
  return '—' if ok is None else ('yes' if ok else '**no**')


def _status(record: dict[str, Any] | None) -> str:
  return 'not run' if record is None else record['status']


def workload_rows(records: dict[str, dict[str, Any]]) -> list[str]:
  rows = ['| workload | res | dtype | batch ours / timm | ours img/s | timm compiled img/s | '
          'ratio | ours MFU | ours step ms | ours peak GiB | timm peak GiB | targets | met |',
          '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for key, (label, min_rate, min_ratio) in TARGETS.items():
    o_rec, t_rec = records.get(f'ours_{key}'), records.get(f'timm_{key}')
    o = (o_rec or {}).get('result') or {}
    t = (t_rec or {}).get('result') or {}
    if not o and not t:
      rows.append(f'| {label} | | | | {_status(o_rec)} | {_status(t_rec)} | | | | | | | |')
      continue
    rate, timm_rate = o.get('images_per_sec'), t.get('images_per_sec')
    ratio = rate / timm_rate if rate and timm_rate else None
    targets, met = [], []
    if min_rate:
      targets.append(f'≥ {min_rate:,.0f} img/s')
      met.append(None if rate is None else rate >= min_rate)
    if min_ratio:
      targets.append(f'≥ {min_ratio}× timm')
      met.append(None if ratio is None else ratio >= min_ratio)
    if o.get('model') and o['model'].upper() != label.split()[0]:
      label = f'{label} (ran {o["model"].upper()})'  # SUITE_SMOKE runs B0 in every slot.
    mfu = o.get('mfu')
    timm_name = t.get('model', '')
    timm_cell = (f'{_num(timm_rate)} ({timm_name}{"" if t.get("compiled", True) else ", eager"})'
                 if t else _status(t_rec))
    rows.append(
        f'| {label} | {o.get("resolution", t.get("resolution", ""))} | '
        f'{o.get("dtype", t.get("dtype", ""))} | '
        f'{o.get("batch", "—")} / {t.get("batch", "—")} | '
        f'{_num(rate) if o else _status(o_rec)} | {timm_cell} | '
        f'{_num(ratio, 2) + "×" if ratio else "—"} | '
        f'{"—" if mfu is None else f"{100 * mfu:.1f}%"} | {_num(o.get("step_ms_median"), 1)} | '
        f'{_gib(o.get("peak_memory_bytes"))} | {_gib(t.get("peak_memory_bytes"))} | '
        f'{", ".join(targets)} | {" / ".join(_check(m) for m in met)} |')
  return rows


def compile_rows(records: dict[str, dict[str, Any]]) -> list[str]:
  cold = _result(records, 'ours_b0_train')
  warm = _result(records, 'ours_b0_train_warm')
  cold_s = cold.get('compile_s')
  warm_s = warm.get('time_to_first_step_s')
  return [
      f'| B0 train step, {cold.get("resolution", "—")} px | value | target | met |',
      '|---|---|---|---|',
      f'| cold compile (empty cache), s | {_num(cold_s, 1)} (+ trace/lower '
      f'{_num(cold.get("lower_s"), 1)}) | ≤ {COLD_COMPILE_MAX_S:.0f} | '
      f'{_check(None if cold_s is None else cold_s <= COLD_COMPILE_MAX_S)} |',
      f'| restart with warm cache: process start → first step done, s | {_num(warm_s, 1)} '
      f'(compile {_num(warm.get("compile_s"), 1)}, cache hits '
      f'{warm.get("compile_cache_hits", "—")}) | ≤ {WARM_FIRST_STEP_MAX_S:.0f} | '
      f'{_check(None if warm_s is None else warm_s <= WARM_FIRST_STEP_MAX_S)} |',
  ]


def augment_rows(records: dict[str, dict[str, Any]]) -> list[str]:
  """The augmentation's share of the B0 train step: 1 − (img/s with it) / (img/s without)."""
  plain = _result(records, 'ours_b0_train')
  rows = ['| B0 train step, augmentation on the device | img/s | step ms | share of the step | '
          f'target | met |', '|---|---|---|---|---|---|',
          f'| none (float32 images in) | {_num(plain.get("images_per_sec"))} | '
          f'{_num(plain.get("step_ms_median"), 2)} | | | |']
  for name, label in AUGMENT_ITEMS.items():
    record = records.get(name)
    r = (record or {}).get('result') or {}
    if not r:
      rows.append(f'| {label} | {_status(record)} | | | | |')
      continue
    share = (1 - r['images_per_sec'] / plain['images_per_sec']
             if plain.get('images_per_sec') else None)
    rows.append(f'| {label} (uint8 in) | {_num(r["images_per_sec"])} | '
                f'{_num(r["step_ms_median"], 2)} | '
                f'{"—" if share is None else f"{100 * share:.1f}%"} | '
                f'≤ {100 * AUGMENT_MAX_SHARE:.0f}% | '
                f'{_check(None if share is None else share <= AUGMENT_MAX_SHARE)} |')
  return rows


def speed_rows(records: dict[str, dict[str, Any]]) -> list[str]:
  """Speed-work variants of the B0 train step against the step as built, same run."""
  plain = _result(records, 'ours_b0_train')
  rows = []
  shift = _result(records, 'ours_b0_train_shift')
  if shift and plain.get('images_per_sec'):
    rows.append(f'- B0 train step with depthwise convolutions as k·k shifts: '
                f'{_num(shift["images_per_sec"])} img/s against {_num(plain["images_per_sec"])} '
                f'({shift["images_per_sec"] / plain["images_per_sec"]:.3f}×)')
  layers = _result(records, 'depthwise_shapes')
  if layers.get('total_forward_backward_ms'):
    t = layers['total_forward_backward_ms']
    rows.append(f'- B0 depthwise layers alone, forward + backward, batch {layers["batch"]}: '
                f'grouped convolution {t["conv"]:.2f} ms, shifts {t["shift"]:.2f} ms, the faster '
                f'per layer {layers["total_forward_backward_ms_best_per_layer"]:.2f} ms')
  return rows


def check_rows(records: dict[str, dict[str, Any]]) -> list[str]:
  """The correctness items: augmentation parity with XLA:CPU, the tests on the device."""
  rows = []
  parity = _result(records, 'augment_parity')
  if parity.get('summary'):
    s = parity['summary']
    worst = ', '.join(f'{n} (max {d["max_abs_diff"]}, {100 * d["differing_fraction"]:.3f}% of '
                      'values)' for n, d in s['not_exact'].items()) or 'none'
    rows.append(f'- Augmentation ops on the device vs XLA:CPU ({parity["images"]} images, '
                f'{parity["image_size"]} px): {s["ops_bit_exact"]} of {s["ops"]} bit-exact; '
                f'not exact: {worst}; policies bit-exact: '
                f'{", ".join(s["policies_bit_exact"]) or "none"}')
  elif 'augment_parity' in records:
    rows.append(f'- Augmentation parity: {_status(records["augment_parity"])}')
  tests = records.get('gpu_tests')
  if tests:
    tail = ((tests.get('result') or {}).get('stdout_tail') or '').strip().splitlines()
    rows.append(f'- TF-free tests on the device: {tests["status"]}; '
                f'{tail[-1] if tail else "no output"}')
  return rows


def header(env: dict[str, Any], records: dict[str, dict[str, Any]]) -> list[str]:
  ours = next((r['result'] for r in records.values()
               if r.get('result') and 'jax_version' in r['result']), {})
  timm = next((r['result'] for r in records.values()
               if r.get('result') and 'torch_version' in r['result']), {})
  card = env.get('gpu') or ours.get('device_kind') or timm.get('device_kind') or 'unknown'
  lines = [
      f'- Date: {env.get("date", "unknown")}'
      f'{"  (SUITE_SMOKE: CPU plumbing test)" if env.get("smoke") else ""}',
      f'- Card: {card}; driver {env.get("driver", "—")}, CUDA (driver) '
      f'{env.get("cuda_driver", "—")}, memory {env.get("gpu_memory", "—")}, power limit '
      f'{env.get("power_limit", "—")}; host CPUs {env.get("cpus", "—")}',
      f'- Ours: jax {ours.get("jax_version", "—")} (jaxlib {ours.get("jaxlib_version", "—")}), '
      f'flax {ours.get("flax_version", "—")}, optax {ours.get("optax_version", "—")}, '
      f'Python {ours.get("python_version", "—")}',
      f'- timm: timm {timm.get("timm_version", "—")}, torch {timm.get("torch_version", "—")}, '
      f'CUDA {timm.get("cuda_version", "—")}, cuDNN {timm.get("cudnn_version", "—")}; '
      'torch.compile (inductor), bf16 autocast, channels-last',
      '- Synthetic data on device; median step after warm-up; img/s = batch / median step.',
  ]
  return lines


def render(path: str) -> str:
  env, records = load(path)
  skipped = [f'{name}: {r["status"]}' for name, r in records.items() if r['status'] != 'ok']
  parts = header(env, records) + [''] + workload_rows(records) + [''] + compile_rows(records)
  if any(name in records for name in AUGMENT_ITEMS):
    parts += [''] + augment_rows(records)
  speed = speed_rows(records)
  if speed:
    parts += [''] + speed
  checks = check_rows(records)
  if checks:
    parts += [''] + checks
  if skipped:
    parts += ['', 'Not measured in this run:'] + [f'- {s}' for s in skipped]
  return '\n'.join(parts) + '\n'


def main(argv: list[str]) -> int:
  if len(argv) != 2 or not os.path.exists(argv[1]):
    print('error: usage: report.py SUITE_JSON (or the $OUT directory run_gpu_suite.py wrote)',
          file=sys.stderr)
    return 2
  sys.stdout.write(render(argv[1]))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
