"""timm's EfficientNet measured the way `python -m efficientnet_jax.benchmark` measures ours.

  python benchmarks/timm_benchmark.py --model=efficientnet_b0 --batch=256 --mode=train --json

Same protocol, so that a figure and its ratio come from one run on one card:
* synthetic data already on the device (normal-noise images, channels-last; random labels);
* bfloat16 autocast (float32 parameters and optimizer state, as ours), channels-last memory
  format, `torch.compile(model)` (inductor, static shapes; the optimizer step runs eagerly, as
  in timm's own `train.py --torchcompile`);
* train = forward + label-smoothed cross-entropy + backward + optimizer step + EMA update, the
  work of our step: `timm.optim.RMSpropTF` with the TF recipe (lr 0.016·batch/256, decay 0.9,
  momentum 0.9, eps 1e-3, weight decay 1e-5) and `timm.utils.ModelEmaV3(0.9999)`;
  infer = `torch.no_grad()` forward in eval mode;
* warm-up steps excluded, a device synchronise after every step, the median step time.
  `compile_s` is the first call's time (torch.compile compiles lazily, on the first call; for
  train that also compiles the backward), so it includes one step.

`--batch` takes a list (e.g. 64,48,32): the largest batch whose eager forward+backward fits in
device memory is chosen first (eager, because a compiled probe per candidate would cost minutes),
then measured; an out-of-memory error there falls back to the next smaller batch.

On CPU (for testing) use `--no-compile`: inductor needs a C++ toolchain and minutes of compile.
If `--compile` fails to compile, the run falls back to eager and says so (`compiled: false`,
`compile_error`).
"""

from __future__ import annotations

import argparse
import difflib
import gc
import json
import platform
import statistics
import sys
import time
from typing import Any

import torch
import timm
from timm.optim import RMSpropTF
from timm.utils import ModelEmaV3


# timm's B0 builders, which `--phi` rescales with the paper's width and depth bases.
B0_MODELS = ('efficientnet_b0', 'tf_efficientnet_b0')


def create_model(args: argparse.Namespace) -> torch.nn.Module:
  """The timm model of `args.model`, compound-scaled by `args.phi` when given."""
  kwargs = dict(pretrained=False, num_classes=1000, drop_rate=args.drop_rate,
                drop_path_rate=args.drop_path_rate)
  if args.phi is None:
    return timm.create_model(args.model, **kwargs)
  # timm registers no φ-scaled B0; its generator takes the multipliers (a private helper, so
  # the parameter count is checked against ours in docs/benchmarks.md).
  # pylint: disable-next=g-import-not-at-top,protected-access
  from timm.models import efficientnet as timm_efficientnet
  if args.model == 'tf_efficientnet_b0':
    kwargs.update(bn_eps=1e-3, pad_type='same')
  return timm_efficientnet._gen_efficientnet(  # pylint: disable=protected-access
      args.model, channel_multiplier=1.1 ** args.phi, depth_multiplier=1.2 ** args.phi, **kwargs)


class UsageError(ValueError):
  """A bad command-line input; printed as one line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--model', default='efficientnet_b0', help='timm model name.')
  p.add_argument('--batch', default='256',
                 help='Batch size, or a comma list to take the largest that fits.')
  p.add_argument('--resolution', type=int, default=224)
  p.add_argument('--phi', type=float, default=None,
                 help='Compound scaling of a B0 model: width 1.1^phi, depth 1.2^phi (-4: the '
                      'quick start network, the same 2,056,282 parameters as ours).')
  p.add_argument('--mode', default='train', help='train or infer.')
  p.add_argument('--dtype', default='bfloat16', help='Autocast dtype: bfloat16 or float32.')
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--warmup', type=int, default=5)
  p.add_argument('--compile', action=argparse.BooleanOptionalAction, default=True,
                 help='torch.compile the model (default on).')
  p.add_argument('--channels_last', action=argparse.BooleanOptionalAction, default=True)
  p.add_argument('--ema', action=argparse.BooleanOptionalAction, default=True,
                 help='EMA update in the train step (ours has it).')
  p.add_argument('--grad_checkpointing', action='store_true',
                 help="timm's per-stage activation checkpointing.")
  p.add_argument('--drop_rate', type=float, default=0.2)
  p.add_argument('--drop_path_rate', type=float, default=0.2)
  p.add_argument('--device', default='auto', help='auto (cuda if present), cuda or cpu.')
  p.add_argument('--json', action='store_true', help='Print one JSON object (last line).')
  return p.parse_args(argv)


def batches_of(text: str) -> list[int]:
  try:
    sizes = sorted({int(b) for b in text.split(',') if b.strip()}, reverse=True)
  except ValueError:
    raise UsageError(f'--batch={text!r} must be an integer or a comma list of integers.') from None
  if not sizes or min(sizes) <= 0:
    raise UsageError(f'--batch={text!r} must hold positive integers.')
  return sizes


def validate(args: argparse.Namespace) -> None:
  if args.model not in timm.list_models():
    close = difflib.get_close_matches(args.model, timm.list_models(), n=5, cutoff=0.5)
    raise UsageError(f'Unknown timm --model {args.model!r}; closest: '
                     f'{", ".join(close) or "none (see timm.list_models())"}.')
  if args.phi is not None and args.model not in B0_MODELS:
    raise UsageError(f'--phi scales a B0 model ({", ".join(B0_MODELS)}), not {args.model!r}.')
  if args.mode not in ('train', 'infer'):
    raise UsageError(f"Unknown --mode {args.mode!r}; use 'train' or 'infer'.")
  if args.dtype not in ('bfloat16', 'float32'):
    raise UsageError(f"Unknown --dtype {args.dtype!r}; use 'bfloat16' or 'float32'.")
  if args.device == 'cuda' and not torch.cuda.is_available():
    raise UsageError('--device=cuda but no CUDA device is visible.')
  if args.steps < 1 or args.warmup < 0:
    raise UsageError('--steps must be ≥ 1 and --warmup ≥ 0.')


def is_oom(error: BaseException) -> bool:
  return isinstance(error, torch.cuda.OutOfMemoryError) or 'out of memory' in str(error).lower()


class Runner:
  """One model, optimizer and synthetic batch on the device; `step()` runs one step."""

  def __init__(self, args: argparse.Namespace, batch: int, device: torch.device,
               compiled: bool):
    self.args, self.batch, self.device = args, batch, device
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = create_model(args)
    if args.grad_checkpointing:
      model.set_grad_checkpointing(True)
    self.model = model.to(device, memory_format=memory_format)
    self.images = torch.randn(batch, 3, args.resolution, args.resolution, device=device
                              ).contiguous(memory_format=memory_format)
    self.labels = torch.randint(0, 1000, (batch,), device=device)
    self.autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                   enabled=args.dtype == 'bfloat16')
    if args.mode == 'train':
      self.model.train()
      self.optimizer = RMSpropTF(self.model.parameters(), lr=0.016 * batch / 256, alpha=0.9,
                                 eps=1e-3, momentum=0.9, weight_decay=1e-5)
      self.ema = ModelEmaV3(self.model, decay=0.9999) if args.ema else None
      self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    else:
      self.model.eval()
    self.forward = torch.compile(self.model, dynamic=False) if compiled else self.model

  def step(self) -> None:
    if self.args.mode == 'infer':
      with torch.no_grad(), self.autocast:
        self.forward(self.images)
      return
    with self.autocast:
      loss = self.loss_fn(self.forward(self.images), self.labels)
    loss.backward()
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    if self.ema is not None:
      self.ema.update(self.model)


def synchronize(device: torch.device) -> None:
  if device.type == 'cuda':
    torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
  gc.collect()
  if device.type == 'cuda':
    torch.cuda.empty_cache()


def largest_fitting_batch(args: argparse.Namespace, sizes: list[int], device: torch.device
                          ) -> tuple[int, list[dict[str, Any]]]:
  """The largest size whose eager step fits (the last one if none is tried successfully)."""
  tried = []
  for batch in sizes[:-1]:
    runner = None
    try:
      runner = Runner(args, batch, device, compiled=False)
      runner.step()
      synchronize(device)
      tried.append({'batch': batch, 'fits': True})
      return batch, tried
    except RuntimeError as e:
      if not is_oom(e):
        raise
      tried.append({'batch': batch, 'fits': False})
    finally:
      del runner
      release(device)
  return sizes[-1], tried


def measure(args: argparse.Namespace, batch: int, device: torch.device) -> dict[str, Any]:
  """Times one batch size; falls back to eager if compilation fails."""
  result: dict[str, Any] = {'compiled': args.compile}
  if device.type == 'cuda':
    torch.cuda.reset_peak_memory_stats(device)
  runner = Runner(args, batch, device, compiled=args.compile)
  start = time.perf_counter()
  try:
    runner.step()
  except Exception as e:  # pylint: disable=broad-except
    if not args.compile or is_oom(e):
      raise
    # Inductor failed (e.g. no C++ toolchain on a CPU box): measure eager, and say so.
    result.update(compiled=False, compile_error=f'{type(e).__name__}: {e}'.splitlines()[0][:300])
    runner = Runner(args, batch, device, compiled=False)
    start = time.perf_counter()
    runner.step()
  synchronize(device)
  result['compile_s'] = time.perf_counter() - start

  times = []
  for i in range(args.warmup + args.steps):
    if i == args.warmup:
      cpu_start = time.process_time()
    start = time.perf_counter()
    runner.step()
    synchronize(device)
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  # CPU time of this process per step: the work on a CPU device, the dispatch cost on a GPU.
  host_cpu_ms = (time.process_time() - cpu_start) / args.steps * 1e3
  median = statistics.median(times)
  result.update(
      batch=batch, images_per_sec=batch / median, step_ms_median=median * 1e3,
      step_ms_min=min(times) * 1e3, step_ms_max=max(times) * 1e3, host_cpu_ms_per_step=host_cpu_ms,
      peak_memory_bytes=(torch.cuda.max_memory_allocated(device) if device.type == 'cuda'
                         else None))
  return result


def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.machine()


def host_malloc() -> str:
  """The malloc mapped into this process (tcmalloc when preloaded), as our side records it."""
  try:
    with open('/proc/self/maps', encoding='utf-8', errors='replace') as f:
      maps = f.read()
  except OSError:
    return 'unknown'
  return next((n for n in ('tcmalloc', 'jemalloc') if f'lib{n}' in maps), 'system')


def environment(device: torch.device) -> dict[str, Any]:
  env = {'framework': 'timm', 'torch_version': torch.__version__,
         'timm_version': timm.__version__, 'python_version': platform.python_version(),
         'cuda_version': torch.version.cuda, 'cudnn_version': torch.backends.cudnn.version(),
         'device_kind': (torch.cuda.get_device_name(device) if device.type == 'cuda'
                         else cpu_name()),
         'platform': device.type, 'devices': 1, 'torch_threads': torch.get_num_threads(),
         'host_malloc': host_malloc()}
  return env


def run(args: argparse.Namespace) -> dict[str, Any]:
  validate(args)
  sizes = batches_of(args.batch)
  device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available()
                        else 'cpu' if args.device == 'auto' else args.device)
  if device.type == 'cuda':
    # Fixed shapes: let cuDNN pick its fastest kernels. TF32 for float32, as XLA's default.
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  torch.manual_seed(0)

  batch, tried = largest_fitting_batch(args, sizes, device) if len(sizes) > 1 else (sizes[0], [])
  remaining = [b for b in sizes if b <= batch]
  result = None
  while result is None:
    try:
      result = measure(args, remaining[0], device)
    except RuntimeError as e:
      if not is_oom(e) or len(remaining) == 1:
        raise
      tried.append({'batch': remaining[0], 'fits': False, 'compiled': args.compile})
      remaining = remaining[1:]
    # Outside the except clause: its traceback holds the failed Runner's tensors until it ends.
    release(device)

  out = {'model': args.model, 'phi': args.phi, 'mode': args.mode, 'resolution': args.resolution,
         'dtype': args.dtype, 'channels_last': args.channels_last,
         'grad_checkpointing': args.grad_checkpointing, 'ema': args.ema and args.mode == 'train',
         'steps': args.steps, 'warmup': args.warmup}
  out.update(result)
  if tried:
    out['batch_search'] = tried
  out.update(environment(device))
  return out


def format_summary(r: dict[str, Any]) -> str:
  memory = (f'{r["peak_memory_bytes"] / 2**30:.2f} GiB' if r['peak_memory_bytes'] is not None
            else 'n/a')
  return (f'timm {r["model"]} {r["mode"]} batch {r["batch"]} @ {r["resolution"]} px '
          f'{r["dtype"]} {"compiled" if r["compiled"] else "eager"} on {r["device_kind"]}\n'
          f'  {r["images_per_sec"]:,.1f} img/s, step {r["step_ms_median"]:.2f} ms median, '
          f'first call {r["compile_s"]:.2f} s, peak memory {memory}')


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    result = run(args)
  except UsageError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(result) if args.json else format_summary(result), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
