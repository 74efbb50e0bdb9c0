"""The whole GPU benchmark in one go: ours vs timm + torch.compile, same card, same run.

On a GPU machine (the time estimates are an H200's and add up to about 20 minutes; `--budget_s`
and `--only` split the items over several calls: docs/benchmarks.md):

  python benchmarks/run_gpu_suite.py     # → $OUT/suite.json, suite.log, table.md, profile files

Locally, to test the plumbing on CPU with tiny sizes (no torch.compile):

  SUITE_SMOKE=1 OUT=/tmp/suite python benchmarks/run_gpu_suite.py

Items, in priority order (each a fresh process, so that JAX and PyTorch never share the card and
every JAX run starts with empty device memory):
  ours_b0_train        B0@224 train, batch 256, with an EMPTY compilation cache: its `compile_s`
                       is the cold compile of the train step
  ours_b0_train_warm   the same command again, cache now warm: `time_to_first_step_s` is a
                       restart's time to its first step (process start included)
  timm_b0_train        timm efficientnet_b0, the reference figures' model
  ours_b0_infer / timm_b0_infer
  ours_b0_profile      a profiler trace of a few B0 train steps (warm cache)
  augment_parity       the 16 augmentation ops and both policies on the device against XLA:CPU
                       (benchmarks/device_augment_parity.py)
  gpu_tests            the TF-free tests (models, scaling, FLOPs, optimizer, steps, benchmark) on
                       the device (tests/conftest.py, EFFICIENTNET_JAX_TEST_PLATFORM)
  ours_b0_train_autoaugment / ours_b0_train_randaugment   the B0 train step with that policy on
                       the device (uint8 in): against ours_b0_train, the augmentation's share
  depthwise_shapes     each B0 depthwise layer alone, XLA's grouped convolution vs k·k shifts
  ours_b0_train_shift  the B0 train step with every depthwise convolution as shifts
  ours_b4_train / timm_b4_train   B4@380 (timm tf_efficientnet_b4: TF 'SAME' padding, as ours)
  ours_b7_train / timm_b7_train   B7@600, the largest batch that fits from a list; ours
                       rematerialised (timm without checkpointing, its default)
An item starts only if its time estimate fits in what is left of `--budget_s`; skipped items are
recorded as such, so a second call can run them (`--only=ours_b7_train,timm_b7_train`).
suite.json is rewritten after every item, so a timeout still leaves the earlier results. $OUT
stays a few flat files, easy to bring back from a remote machine: one JSON for all items, one log,
the markdown table, the test report and the profile's trace files copied flat into it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.environ.get('SUITE_SMOKE', '') not in ('', '0')


@dataclasses.dataclass(frozen=True)
class Item:
  """One benchmark process: a name, its command and a time estimate (wall seconds on one H200:
  the item's measured time where it has run there, docs/benchmarks.md "H200")."""
  name: str
  command: tuple[str, ...]
  estimate_s: float
  env: tuple[tuple[str, str], ...] = ()
  # A check (tests, parity), not a benchmark: its record keeps the exit status and the end of its
  # output rather than a JSON result.
  check: bool = False


def ours(model: str, mode: str, batch: str, resolution: int, *, steps: int, warmup: int,
         remat: bool = False, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
  return (sys.executable, '-m', 'efficientnet_jax.benchmark', f'--model={model}',
          f'--mode={mode}', f'--batch={batch}', f'--resolution={resolution}', '--dtype=bfloat16',
          f'--steps={steps}', f'--warmup={warmup}', '--json',
          *(('--remat',) if remat else ()), *extra)


def timm(model: str, mode: str, batch: str, resolution: int, *, steps: int, warmup: int,
         compile_: bool = True) -> tuple[str, ...]:
  return (sys.executable, os.path.join(REPO, 'benchmarks', 'timm_benchmark.py'),
          f'--model={model}', f'--mode={mode}', f'--batch={batch}',
          f'--resolution={resolution}', '--dtype=bfloat16', f'--steps={steps}',
          f'--warmup={warmup}', '--json', '--compile' if compile_ else '--no-compile')


# The TF-free tests: everything the GPU image can import, minus the slow CLI runs (on the CPU).
GPU_TESTS = ('tests/models', 'tests/training/test_optimizer.py',
             'tests/benchmarking/test_benchmark.py', 'tests/benchmarking/test_benchmark_augment.py')


def checks(out: str, platform: str, parity_size: int, test_workers: int) -> list[Item]:
  """The correctness items: augmentation parity and the tests on `platform`."""
  # Several test processes share the card: none may take most of it up front.
  test_env = (('EFFICIENTNET_JAX_TEST_PLATFORM', platform),
              ('XLA_PYTHON_CLIENT_PREALLOCATE', 'false'))
  return [
      Item('augment_parity', (sys.executable, os.path.join(REPO, 'benchmarks',
                                                           'device_augment_parity.py'),
                              f'--size={parity_size}', '--json'), 30),
      Item('gpu_tests', (sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                         '-n', str(test_workers), '-m', 'not expensive and not slow',
                         f'--junitxml={os.path.join(out, "gpu_tests.xml")}', *GPU_TESTS),
           70, env=test_env, check=True),
  ]


def augmented(policy: str) -> tuple[str, ...]:
  return ('--augment_on_device', f'--augment_policy={policy}')


def items(cache: str, profile_dir: str, out: str = '.') -> list[Item]:
  """The suite; SUITE_SMOKE=1 shrinks every size and turns torch.compile off (CPU plumbing)."""
  cached = (f'--cache_dir={cache}',)
  profile = (f'--profile_dir={profile_dir}',)
  if SMOKE:
    # Small enough for a 2-core CPU, big enough that the CPU figures mean something.
    r, b, s, w, compile_ = 64, '16', 5, 2, False
    return [
        Item('ours_b0_train', ours('b0', 'train', b, r, steps=s, warmup=w, extra=cached), 1),
        Item('ours_b0_train_warm', ours('b0', 'train', b, r, steps=s, warmup=0, extra=cached), 1),
        Item('timm_b0_train', timm('efficientnet_b0', 'train', b, r, steps=s, warmup=w,
                                   compile_=compile_), 1),
        Item('ours_b0_infer', ours('b0', 'infer', b, r, steps=s, warmup=w, extra=cached), 1),
        Item('timm_b0_infer', timm('efficientnet_b0', 'infer', b, r, steps=s, warmup=w,
                                   compile_=compile_), 1),
        Item('ours_b0_profile', ours('b0', 'train', b, r, steps=2, warmup=1,
                                     extra=cached + profile), 1),
        *checks(out, 'cpu', parity_size=32, test_workers=2)[:1],
        Item('ours_b0_train_autoaugment', ours('b0', 'train', b, r, steps=s, warmup=w,
                                               extra=cached + augmented('autoaugment')), 1),
        Item('ours_b0_train_randaugment', ours('b0', 'train', b, r, steps=s, warmup=w,
                                               extra=cached + augmented('randaugment')), 1),
        Item('depthwise_shapes', (sys.executable, os.path.join(REPO, 'benchmarks',
                                                               'depthwise_shapes.py'),
                                  '--model=b0', '--batch=2', f'--resolution={r}', '--steps=2',
                                  '--warmup=1', '--json'), 1),
        # The largest-batch search and remat, on B0.
        Item('ours_b7_train', ours('b0', 'train', '32,16', r, steps=s, warmup=w, remat=True,
                                   extra=cached), 1),
        Item('timm_b7_train', timm('efficientnet_b0', 'train', '32,16', r, steps=s, warmup=w,
                                   compile_=compile_), 1),
    ]
  b7_ours, b7_timm = '128,96,64,48,32,16', '48,32,24,16,8'
  return [
      Item('ours_b0_train', ours('b0', 'train', '256', 224, steps=30, warmup=5, extra=cached), 120),
      Item('ours_b0_train_warm', ours('b0', 'train', '256', 224, steps=3, warmup=0,
                                      extra=cached), 25),
      Item('timm_b0_train', timm('efficientnet_b0', 'train', '256', 224, steps=30, warmup=5), 115),
      Item('ours_b0_infer', ours('b0', 'infer', '256', 224, steps=30, warmup=5, extra=cached), 45),
      Item('timm_b0_infer', timm('efficientnet_b0', 'infer', '256', 224, steps=30, warmup=5), 50),
      # 3 steps traced: the trace stays under 16 MiB, small enough to copy off the GPU machine.
      Item('ours_b0_profile', ours('b0', 'train', '256', 224, steps=3, warmup=2,
                                   extra=cached + profile), 30),
      *checks(out, 'cuda', parity_size=224, test_workers=6),
      Item('ours_b0_train_autoaugment', ours('b0', 'train', '256', 224, steps=20, warmup=5,
                                             extra=cached + augmented('autoaugment')), 60),
      Item('ours_b0_train_randaugment', ours('b0', 'train', '256', 224, steps=20, warmup=5,
                                             extra=cached + augmented('randaugment')), 60),
      # Speed work, the profile's first cost: depthwise convolutions as k·k shifts, per layer and
      # in the whole step (against ours_b0_train).
      Item('depthwise_shapes', (sys.executable, os.path.join(REPO, 'benchmarks',
                                                             'depthwise_shapes.py'),
                                '--model=b0', '--batch=256', '--json'), 90),
      Item('ours_b0_train_shift', ours('b0', 'train', '256', 224, steps=20, warmup=5,
                                       extra=cached + ('--depthwise_impl=shift',)), 70),
      Item('ours_b4_train', ours('b4', 'train', '64,48,32', 380, steps=10, warmup=3,
                                 extra=cached), 185),
      Item('timm_b4_train', timm('tf_efficientnet_b4', 'train', '64,48,32', 380, steps=10,
                                 warmup=3), 100),
      Item('ours_b7_train', ours('b7', 'train', b7_ours, 600, steps=5, warmup=2, remat=True,
                                 extra=cached), 180),
      Item('timm_b7_train', timm('tf_efficientnet_b7', 'train', b7_timm, 600, steps=5,
                                 warmup=2), 150),
  ]


def environment() -> dict[str, object]:
  """Card, driver and date, for the table's header."""
  env: dict[str, object] = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec='seconds'), 'smoke': SMOKE}
  try:
    query = subprocess.run(
        ['nvidia-smi', '--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm',
         '--format=csv,noheader'], capture_output=True, text=True, timeout=30, check=True)
    first_gpu = query.stdout.splitlines()[0]
    name, driver, memory, power, clock = [v.strip() for v in first_gpu.split(',')]
    env.update(gpu=name, driver=driver, gpu_memory=memory, power_limit=power, max_sm_clock=clock)
    env['cuda_driver'] = subprocess.run(['nvidia-smi'], capture_output=True, text=True,
                                        timeout=30).stdout.split('CUDA Version:')[1].split()[0]
  except (OSError, subprocess.SubprocessError, IndexError, ValueError):
    env['gpu'] = None
  env['cpus'] = os.cpu_count()
  return env


def run_item(item: Item, timeout_s: float, log) -> dict[str, object]:
  """Runs one item; returns its record (the result is the last JSON line of its stdout)."""
  env = dict(os.environ)
  # JAX preallocates 75% of the card by default; the largest-batch search needs nearly all.
  env.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.95')
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # Scripts run by path (benchmarks/*.py) import the package from the checkout, installed or not
  # (the GPU image has it only as this working tree).
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH')) if p)
  env.update(item.env)
  start, load = time.perf_counter(), os.getloadavg()[0]  # Other work on the host skews figures.
  status = 'ok'
  try:
    proc = subprocess.run(item.command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
  except subprocess.TimeoutExpired as e:
    stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
    stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or '')
    rc, status = None, 'timeout'
  wall = time.perf_counter() - start
  # The tail of each item's stderr: enough for a traceback, small enough to come back.
  log.write(f'===== {item.name} ({status}, {wall:.0f} s)\n$ {" ".join(item.command)}\n'
            f'{stderr[-20_000:]}\n')
  log.flush()
  result = None
  lines = [l for l in stdout.strip().splitlines() if l.startswith('{')]
  if item.check:
    # pytest's summary (-ra lists every failure) or the check's own table.
    result = {'rc': rc, 'stdout_tail': stdout[-8_000:]}
    if status == 'ok' and rc != 0:
      status = f'failed (rc {rc})'
    if lines:
      result['report'] = json.loads(lines[-1])
  elif rc == 0 and lines:
    result = json.loads(lines[-1])
  elif status == 'ok':
    status = f'failed (rc {rc}): ' + (stderr.strip().splitlines() or ['no stderr'])[-1][:300]
  return {'item': item.name, 'status': status, 'wall_s': wall, 'command': list(item.command),
          'load_average': [load, os.getloadavg()[0]], 'result': result}


def copy_profile_flat(profile_dir: str, out: str) -> list[str]:
  """Copies the trace files (deep under plugins/profile/RUN/) to OUT/profile_b0_train.*."""
  copied = []
  for root, _, files in os.walk(profile_dir):
    for name in files:
      kind = next((k for k in ('perfetto_trace.json.gz', 'trace.json.gz', 'xplane.pb')
                   if name.endswith(k)), None)
      if kind:
        target = os.path.join(out, f'profile_b0_train.{kind}')
        shutil.copyfile(os.path.join(root, name), target)
        copied.append(os.path.basename(target))
  return copied


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', default=os.environ.get('OUT') or os.path.join(REPO, 'suite_out'))
  p.add_argument('--budget_s', type=float, default=480.0,
                 help='Start no item whose estimate exceeds what is left of this.')
  p.add_argument('--only', default='', help='Comma list of item names to run.')
  p.add_argument('--cache_dir', default='/tmp/efficientnet_jax_suite_cache',
                 help='Emptied first when ours_b0_train runs (its compile is the cold one).')
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  profile_dir = os.path.join(args.cache_dir + '_profile')

  suite = items(args.cache_dir, profile_dir, args.out)
  if args.only:
    wanted = set(args.only.split(','))
    unknown = wanted - {i.name for i in suite}
    if unknown:
      print(f'error: unknown items {sorted(unknown)}; known: {[i.name for i in suite]}',
            file=sys.stderr)
      return 2
    suite = [i for i in suite if i.name in wanted]
  if any(i.name == 'ours_b0_train' for i in suite):
    shutil.rmtree(args.cache_dir, ignore_errors=True)
  shutil.rmtree(profile_dir, ignore_errors=True)

  report = {'environment': environment(), 'items': []}
  deadline = time.perf_counter() + args.budget_s
  with open(os.path.join(args.out, 'suite.log'), 'w') as log:
    for item in suite:
      left = deadline - time.perf_counter()
      if item.estimate_s > left:
        record = {'item': item.name, 'status': f'skipped: estimate {item.estimate_s:.0f} s > '
                                               f'{left:.0f} s left', 'result': None}
      else:
        # An item may overrun its estimate, not the budget.
        record = run_item(item, timeout_s=left, log=log)
      report['items'].append(record)
      with open(os.path.join(args.out, 'suite.json'), 'w') as f:
        json.dump(report, f, indent=1)
      print(json.dumps({k: record.get(k) for k in ('item', 'status', 'wall_s')}), flush=True)
  report['profile_files'] = copy_profile_flat(profile_dir, args.out)
  with open(os.path.join(args.out, 'suite.json'), 'w') as f:
    json.dump(report, f, indent=1)

  table = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'report.py'),
                          os.path.join(args.out, 'suite.json')], capture_output=True, text=True)
  with open(os.path.join(args.out, 'table.md'), 'w') as f:
    f.write(table.stdout)
  print(table.stdout + table.stderr, flush=True)
  return 0 if all(r['status'] == 'ok' for r in report['items']) else 1


if __name__ == '__main__':
  sys.exit(main())
