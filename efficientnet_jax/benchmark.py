"""Synthetic-data throughput of the real train step (or the inference forward pass).

  python -m efficientnet_jax.benchmark --model=b0 --batch=256 --mode=train --json
  → {"model": "b0", "mode": "train", "images_per_sec": ..., "step_ms_median": ...}

What is timed, and why:
* train: the function `steps.make_train_step` builds, jitted by `steps.jit_train_step` (state
  replicated and donated, batch sharded over the ('data',) mesh of all devices) — the very step
  `main` runs, with the TF recipe's optimizer (`optim.create_optimizer`), label smoothing and EMA.
  There is no benchmark-only fast path: `build` is the only place the step is made, and a test
  checks it calls those two functions.
* infer: a jitted `model.apply(variables, images, train=False)` (logits), variables replicated and
  images sharded. Not `steps.make_eval_step`: with EMA that runs the network twice and adds
  top-k and loss reductions, so it measures an evaluation loop, not inference.
* Batches are synthetic (normal noise images, float32 as the input pipeline delivers them, random
  labels), placed on the devices once with `steps.global_batch`, so no host work is timed.
* Compile time is `jitted.lower(...)` plus `.compile()`, timed apart (`lower_s`, `compile_s`); the
  steps then call the compiled object, so no step includes tracing or compilation.
* Each step is followed by `block_until_ready`; `--warmup` steps are dropped and the median of the
  other `--steps` is reported. `step_ms_pipelined` also times `--steps` steps dispatched back to
  back with one wait at the end, as the training loop runs them.
* MFU = the model's own FLOPs (2 × `flops.count_macs`, ×3 for forward + backward in train) × img/s
  over the devices' dense peak for the dtype (`PEAK_FLOPS`); null where the device is unknown.
* Peak memory is `peak_bytes_in_use` of `device.memory_stats()` (null where the backend has none,
  e.g. CPU); `memory_analysis` gives XLA's compile-time buffer sizes everywhere.

Importable and runnable without TensorFlow, TFDS or ml_collections.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
import types
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from efficientnet_jax import cli


def _allow_missing_ml_collections() -> None:
  """Lets `optim` import where ml_collections is not installed (e.g. the GPU machine).

  `optim.py` imports ml_collections only for type annotations; until that import moves under
  `typing.TYPE_CHECKING`, an empty stand-in module satisfies it. The benchmark passes its own
  attribute-dict config (`RecipeConfig`), so nothing from ml_collections is ever used.
  """
  try:
    import ml_collections  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    stand_in = types.ModuleType('ml_collections')
    stand_in.ConfigDict = dict
    sys.modules['ml_collections'] = stand_in


_allow_missing_ml_collections()

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax import compile_cache
from efficientnet_jax import flops as flops_lib
from efficientnet_jax import optim
from efficientnet_jax import scaling
from efficientnet_jax import steps as steps_lib
from efficientnet_jax import train_state as state_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

MODES = ('train', 'infer')
DTYPES = ('bfloat16', 'float32')
IMAGENET_TRAIN_EXAMPLES = 1_281_167

# Dense (no sparsity) peak FLOP/s per device: (device_kind substring, bfloat16, float32).
# First match wins, so specific names precede general ones. float32 on NVIDIA is the TF32
# tensor-core peak: XLA's default precision runs float32 convolutions and matmuls as TF32 there.
# TPUs run float32 as several bfloat16 passes, so no float32 peak is claimed for them.
PEAK_FLOPS: tuple[tuple[str, float, float | None], ...] = (
    ('H100 PCIe', 756e12, 378e12),
    ('H100', 989e12, 494e12),     # SXM (device_kind 'NVIDIA H100 80GB HBM3').
    ('H200', 989e12, 494e12),
    ('A100', 312e12, 156e12),
    ('TPU v4', 275e12, None),
    ('TPU v5 lite', 197e12, None),  # v5e.
    ('TPU v5e', 197e12, None),
    ('TPU v5p', 459e12, None),
    ('TPU v5', 459e12, None),       # v5p reports itself as 'TPU v5'.
)


class RecipeConfig(types.SimpleNamespace):
  """An attribute dict with ConfigDict's `.get`: all `optim` and `train_state` read from a config.

  It stands in for `configs/common.get_config` where ml_collections is not installed; a test
  checks that its values equal that builder's for every key it has.
  """

  def get(self, key: str, default: Any = None) -> Any:
    return getattr(self, key, default)


def recipe_config(model: str, *, batch: int, resolution: int, dtype: str = 'bfloat16',
                  remat: bool = False, depthwise_impl: str = 'auto') -> RecipeConfig:
  """The TF reference recipe (REFERENCE §4) for `model`, as `configs/common.py` sets it."""
  variant = scaling.get_variant(model)
  return RecipeConfig(
      model=model, width=None, depth=None, phi=None, dropout_rate=variant.dropout,
      drop_path_rate=scaling.DEFAULT_DROP_PATH_RATE, dtype=dtype, remat=remat, padding='same',
      bn_group_size=0, bn_momentum=0.99, depthwise_impl=depthwise_impl, num_classes=1000,
      image_size=resolution,
      batch_size=batch, grad_accum_steps=1, optimizer='rmsprop', learning_rate=0.016,
      lr_base_batch_size=256, lr_schedule='exponential', warmup_epochs=5.0,
      lr_decay_epochs=2.4, lr_decay_factor=0.97, weight_decay=1e-5, rmsprop_decay=0.9,
      rmsprop_momentum=0.9, rmsprop_epsilon=1e-3, grad_clip_norm=None, label_smoothing=0.1,
      ema_decay=0.9999, seed=0)


@dataclasses.dataclass
class Benchmark:
  """A built benchmark: the jitted function that is timed and its on-device arguments.

  Attributes:
    jitted: the `jax.jit` function timed (for train, `steps.jit_train_step`'s result).
    args: its arguments: (state, batch, rng) for train, (variables, images) for infer.
    advance: next step's arguments from this step's (args, outputs): train threads the
      donated state through, infer reuses the same arguments.
    model: the EfficientNet module.
    mesh: the ('data',) mesh of all devices.
    config: the recipe config it was built from.
    mode: 'train' or 'infer'.
  """
  jitted: Any
  args: tuple
  advance: Callable[[tuple, Any], tuple]
  model: Any
  mesh: Any
  config: RecipeConfig
  mode: str


def validate(model: str, *, batch: int, resolution: int | None, mode: str, dtype: str,
             steps: int = 1, warmup: int = 0) -> None:
  """Raises `cli.UsageError` (one line, with the fix) on an input the benchmark cannot run."""
  if model not in scaling.MODEL_NAMES:
    raise cli.UsageError(
        f'Unknown --model {model!r}; valid names: {", ".join(scaling.MODEL_NAMES)}.')
  if mode not in MODES:
    raise cli.UsageError(f'Unknown --mode {mode!r}; use one of: {", ".join(MODES)}.')
  if dtype not in DTYPES:
    raise cli.UsageError(f'Unknown --dtype {dtype!r}; use one of: {", ".join(DTYPES)}.')
  if batch <= 0 or batch % jax.device_count():
    raise cli.UsageError(f'--batch={batch} must be a positive multiple of the '
                         f'{jax.device_count()} devices (the batch is split across them).')
  if resolution is not None and resolution < 8:
    raise cli.UsageError(f'--resolution={resolution} is too small; use at least 8 (32 is a '
                         'quick smoke test).')
  if steps < 1 or warmup < 0:
    raise cli.UsageError(f'--steps={steps} must be ≥ 1 and --warmup={warmup} ≥ 0.')


def synthetic_batch(batch: int, resolution: int, seed: int = 0) -> dict[str, np.ndarray]:
  """This process's share of a batch shaped like the input pipeline's: float32 images, labels."""
  local = batch // jax.process_count()
  rng = np.random.default_rng(seed + jax.process_index())
  return {'image': rng.standard_normal((local, resolution, resolution, 3), dtype=np.float32),
          'label': rng.integers(0, 1000, size=(local,), dtype=np.int32)}


def init_variables(net, rng: jax.Array, resolution: int, sharding) -> dict[str, Any]:
  """The model's variables (for infer), initialised on the devices with `sharding`."""
  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
  return jax.jit(lambda r: net.init({'params': r, 'dropout': r}, images, train=False),
                 out_shardings=sharding)(rng)


def init_train_state(net, tx, rng: jax.Array, resolution: int, use_ema: bool, sharding
                     ) -> state_lib.TrainState:
  """The train state, initialised on the devices as `train.setup` does it."""
  return jax.jit(lambda r: state_lib.create_train_state(net, tx, r, resolution, use_ema=use_ema),
                 out_shardings=sharding)(rng)


def build(model: str, *, batch: int, resolution: int | None = None, mode: str = 'train',
          dtype: str = 'bfloat16', remat: bool = False, depthwise_impl: str = 'auto'
          ) -> Benchmark:
  """Builds the model, its state and the jitted step exactly as `train` does, on synthetic data.

  Args:
    model: a variant name (`scaling.MODEL_NAMES`).
    batch: global batch size (a multiple of the device count).
    resolution: input side; None means the variant's native resolution.
    mode: 'train' (the real train step) or 'infer' (the forward pass, train=False).
    dtype: compute dtype, 'bfloat16' or 'float32' (params and BN statistics stay float32).
    remat: rematerialise each block in the backward pass.
    depthwise_impl: 'auto', 'conv' (XLA's grouped convolution) or 'shift' (k·k multiply-adds).

  Returns:
    The `Benchmark`, with everything already on the devices.
  """
  validate(model, batch=batch, resolution=resolution, mode=mode, dtype=dtype)
  resolution = resolution or scaling.get_variant(model).resolution
  config = recipe_config(model, batch=batch, resolution=resolution, dtype=dtype, remat=remat,
                         depthwise_impl=depthwise_impl)
  net = state_lib.model_from_config(config)
  mesh = steps_lib.data_mesh()
  replicated, batch_sharded = steps_lib.shardings(mesh)
  data = steps_lib.global_batch(synthetic_batch(batch, resolution, config.seed), mesh)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))

  if mode == 'infer':
    variables = init_variables(net, init_rng, resolution, replicated)
    forward = jax.jit(lambda v, images: net.apply(v, images, train=False),
                      in_shardings=(replicated, batch_sharded), out_shardings=batch_sharded)
    return Benchmark(forward, (variables, data['image']), lambda args, _: args, net, mesh,
                     config, mode)

  # As `train.setup` and `train.train_and_evaluate` build them.
  tx = optim.create_optimizer(config, IMAGENET_TRAIN_EXAMPLES // batch)
  state = init_train_state(net, tx, init_rng, resolution, config.ema_decay > 0, replicated)
  train_step = steps_lib.jit_train_step(steps_lib.make_train_step(
      net, tx, label_smoothing=config.label_smoothing, ema_decay=config.ema_decay,
      grad_accum_steps=config.grad_accum_steps), mesh)
  step_rng = jax.device_put(step_rng, replicated)
  return Benchmark(train_step, (state, data, step_rng),
                   lambda args, out: (out[0],) + tuple(args[1:]), net, mesh, config, mode)


def _process_age_s() -> float | None:
  """Seconds since this process started (interpreter start-up and imports included); Linux."""
  try:
    with open('/proc/self/stat') as f:
      # Field 22 (starttime, clock ticks after boot); the command name (field 2) may hold spaces.
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return None


def peak_flops_per_device(device_kind: str, dtype: str) -> float | None:
  """The dense peak FLOP/s of one device for the dtype, or None where unknown (CPU)."""
  for name, bf16, f32 in PEAK_FLOPS:
    if name.lower() in device_kind.lower():
      return bf16 if dtype == 'bfloat16' else f32
  return None


def peak_memory_bytes(devices) -> int | None:
  """The largest `peak_bytes_in_use` over the devices, or None where the backend has no stats."""
  peaks = []
  for device in devices:
    try:
      stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except  # Some backends raise instead of None.
      stats = None
    if stats and 'peak_bytes_in_use' in stats:
      peaks.append(int(stats['peak_bytes_in_use']))
  return max(peaks) if peaks else None


def _memory_analysis(compiled) -> dict[str, int] | None:
  """XLA's compile-time buffer sizes per device (arguments, outputs, temporaries, code)."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # Not every backend implements it.
    return None
  if analysis is None:
    return None
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes',
            'alias_size_in_bytes', 'generated_code_size_in_bytes')
  return {f.replace('_size_in_bytes', '_bytes'): int(getattr(analysis, f))
          for f in fields if hasattr(analysis, f)}


# An instruction of optimised HLO text: `%name = SHAPE op(operands)`.
_HLO_OP = re.compile(r'=\s*(?P<shape>\(?[a-z0-9]+\[[^=]*?)\s'
                     r'(?P<op>convolution|custom-call|transpose|copy|fusion)\(')


def hlo_op_counts(hlo_text: str) -> dict[str, int]:
  """What the optimised HLO spends passes on: convolutions by result dtype, transposes, copies.

  A bfloat16 step should show only `convolution_bf16` (cuDNN custom calls count as
  convolutions); `convolution_f32` means a convolution runs in float32 (XLA:CPU does that for
  every bf16 convolution). `transpose` and `copy` count both standalone and fused instructions,
  so they bound the layout changes from above; `fusion` is about the number of kernels.
  """
  counts: dict[str, int] = {}
  for line in hlo_text.splitlines():
    match = _HLO_OP.search(line)
    if not match:
      continue
    op = match.group('op')
    if op == 'custom-call':
      if 'conv' not in line.partition('custom_call_target=')[2][:40]:
        continue
      op = 'convolution'
    if op == 'convolution':
      dtype = re.search(r'([a-z0-9]+)\[', match.group('shape'))
      op = f'convolution_{dtype.group(1) if dtype else "unknown"}'
    counts[op] = counts.get(op, 0) + 1
  return dict(sorted(counts.items()))


def _hlo_op_counts(executable) -> dict[str, int] | None:
  try:
    return hlo_op_counts(executable.as_text())
  except Exception:  # pylint: disable=broad-except  # as_text is unavailable on some backends.
    return None


@dataclasses.dataclass
class Compiled:
  """A compiled step and what compiling it took (wall seconds; CPU seconds of this process)."""
  executable: Any
  lower_s: float
  compile_s: float
  compile_cpu_s: float | None = None


def compile_step(bench: Benchmark) -> Compiled:
  """`jitted.lower(...)` and `.compile()`, timed apart (tracing vs XLA, or the cache load)."""
  t0 = time.perf_counter()
  lowered = bench.jitted.lower(*bench.args)
  t1, cpu = time.perf_counter(), time.process_time()
  executable = lowered.compile()
  return Compiled(executable, t1 - t0, time.perf_counter() - t1, time.process_time() - cpu)


def is_out_of_memory(error: BaseException) -> bool:
  return 'RESOURCE_EXHAUSTED' in str(error) or 'out of memory' in str(error).lower()


def _bytes_needed(analysis: dict[str, int] | None) -> int | None:
  """Device bytes a step needs at its peak: live arguments, new outputs, temporaries."""
  if not analysis or 'temp_bytes' not in analysis:
    return None
  return (analysis['argument_bytes'] + analysis['output_bytes'] - analysis.get('alias_bytes', 0)
          + analysis['temp_bytes'])


def _bytes_limit(devices) -> int | None:
  """The device allocator's limit (None where the backend has no memory stats, e.g. CPU)."""
  try:
    stats = devices[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  return int(stats['bytes_limit']) if stats and 'bytes_limit' in stats else None


def fit(model: str, batches: Sequence[int], *, headroom: float = 0.95, **build_kwargs
        ) -> tuple[Benchmark, Compiled, list[dict[str, Any]]]:
  """Builds and compiles the largest of `batches` that fits in device memory.

  A candidate is rejected without running it when XLA's buffer assignment says it needs more
  than `headroom` × the allocator's limit, or when its first step runs out of memory. After a
  rejection by the analysis, candidates that it predicts (bytes per image × batch) to be too big
  are skipped without compiling, since each compile of a large model costs a minute.

  Returns:
    The benchmark (one step already taken: the fit check), its compiled step, and the log of
    candidates tried.
  """
  log: list[dict[str, Any]] = []
  limit = _bytes_limit(jax.local_devices())
  fixed = per_image = None  # From a rejected compile: state bytes, and bytes per image on top.
  candidates = sorted(set(batches), reverse=True)
  for batch in candidates:
    last = batch == candidates[-1]
    if per_image and not last and fixed + per_image * batch > headroom * limit:
      log.append({'batch': batch, 'fits': False, 'reason': 'predicted'})
      continue
    bench = compiled = out = None
    gc.collect()  # The rejected candidate's state and batch leave the device first.
    try:
      bench = build(model, batch=batch, **build_kwargs)
      compiled = compile_step(bench)
      analysis = _memory_analysis(compiled.executable)
      needed = _bytes_needed(analysis)
      if needed and limit and not last and needed > headroom * limit:
        # The donated state (aliased) is what does not grow with the batch.
        fixed = analysis.get('alias_bytes', 0)
        per_image = (needed - fixed) / batch
        log.append({'batch': batch, 'fits': False, 'reason': 'memory_analysis',
                    'bytes_needed': needed, 'bytes_limit': limit})
        continue
      out = compiled.executable(*bench.args)
      jax.block_until_ready(out)
      bench.args = bench.advance(bench.args, out)
      log.append({'batch': batch, 'fits': True, 'bytes_needed': needed, 'bytes_limit': limit})
      return bench, compiled, log
    except jax.errors.JaxRuntimeError as e:
      if not is_out_of_memory(e) or last:
        raise
      log.append({'batch': batch, 'fits': False, 'reason': 'out_of_memory'})
  raise AssertionError('unreachable: the last candidate either fits or raises')


def run(bench: Benchmark, *, steps: int, warmup: int, profile_dir: str | None = None,
        compiled: Compiled | None = None) -> dict[str, Any]:
  """Times `bench` (compiling it first unless `compiled` is given); see the module docstring."""
  compiled = compiled or compile_step(bench)
  executable = compiled.executable

  args, times, first_step_s, time_to_first_step_s = bench.args, [], None, None
  for i in range(warmup + steps):
    if i == warmup:
      cpu_start = time.process_time()
    start = time.perf_counter()
    out = executable(*args)
    jax.block_until_ready(out)
    elapsed = time.perf_counter() - start
    if i == 0:
      first_step_s, time_to_first_step_s = elapsed, _process_age_s()
      # All CPU time the process spent so far: on a busy host, the restart's own cost.
      cpu_to_first_step_s = time.process_time()
    if i >= warmup:
      times.append(elapsed)
    args = bench.advance(args, out)
  # CPU time of this process (all its threads) per timed step: on a CPU backend, the work a step
  # costs, whatever else the host runs; on an accelerator, the host's dispatch overhead.
  host_cpu_s = (time.process_time() - cpu_start) / steps

  # As the training loop runs: no wait between steps, so host dispatch overlaps device work.
  start = time.perf_counter()
  for _ in range(steps):
    out = executable(*args)
    args = bench.advance(args, out)
  jax.block_until_ready(out)
  pipelined_s = (time.perf_counter() - start) / steps

  if profile_dir:
    # Separate from the timed steps: tracing slows dispatch and would bias the figures.
    with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
      for _ in range(min(steps, 5)):
        out = executable(*args)
        args = bench.advance(args, out)
      jax.block_until_ready(out)

  batch = bench.config.batch_size
  median_s = statistics.median(times)
  images_per_sec = batch / median_s
  devices = bench.mesh.devices.flatten().tolist()
  device_kind = devices[0].device_kind
  flops_per_image = 2 * flops_lib.count_macs(bench.model, bench.config.image_size)
  step_flops_per_image = flops_per_image * (3 if bench.mode == 'train' else 1)
  peak = peak_flops_per_device(device_kind, bench.config.dtype)
  mfu = step_flops_per_image * images_per_sec / (peak * len(devices)) if peak else None
  return {
      'images_per_sec': images_per_sec,
      'step_ms_median': median_s * 1e3,
      'step_ms_min': min(times) * 1e3,
      'step_ms_max': max(times) * 1e3,
      'step_ms_pipelined': pipelined_s * 1e3,
      'host_cpu_ms_per_step': host_cpu_s * 1e3,
      'images_per_sec_pipelined': batch / pipelined_s,
      'lower_s': compiled.lower_s,
      'compile_s': compiled.compile_s,
      'compile_cpu_s': compiled.compile_cpu_s,
      'first_step_s': first_step_s,
      'time_to_first_step_s': time_to_first_step_s,
      'cpu_to_first_step_s': cpu_to_first_step_s,
      'peak_memory_bytes': peak_memory_bytes(devices),
      'memory_analysis': _memory_analysis(executable),
      'hlo_ops': _hlo_op_counts(executable),
      'flops_per_image': flops_per_image,
      'step_flops_per_image': step_flops_per_image,
      'peak_flops_per_device': peak,
      'mfu': mfu,
      'devices': len(devices),
      'device_kind': device_kind,
      'platform': devices[0].platform,
  }


def environment() -> dict[str, Any]:
  """Library and host versions that a figure depends on."""
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return {'jax_version': jax.__version__, 'jaxlib_version': jaxlib.__version__,
          'flax_version': flax.__version__, 'optax_version': optax.__version__,
          'python_version': platform.python_version(), 'host': platform.machine(),
          'host_cpus': os.cpu_count()}


def benchmark(model: str, *, batch: int | Sequence[int], resolution: int | None = None,
              mode: str = 'train', dtype: str = 'bfloat16', remat: bool = False, steps: int = 20,
              warmup: int = 5, profile_dir: str | None = None, depthwise_impl: str = 'auto'
              ) -> dict[str, Any]:
  """Builds and runs one configuration; returns the JSON-ready result.

  Args:
    model: a variant name.
    batch: the global batch size, or several: the largest that fits in memory is measured
      (`fit`), and the candidates tried are listed under 'batch_search'.
    resolution, mode, dtype, remat, depthwise_impl: see `build`.
    steps: timed steps.
    warmup: untimed steps before them.
    profile_dir: if set, a profiler trace of a few extra steps is written there.
  """
  batches = [batch] if isinstance(batch, int) else list(batch)
  for b in batches:
    validate(model, batch=b, resolution=resolution, mode=mode, dtype=dtype, steps=steps,
             warmup=warmup)
  build_kwargs = dict(resolution=resolution, mode=mode, dtype=dtype, remat=remat,
                      depthwise_impl=depthwise_impl)
  search = None
  if len(batches) == 1:
    bench, compiled = build(model, batch=batches[0], **build_kwargs), None
  else:
    bench, compiled, search = fit(model, batches, **build_kwargs)
  result = {'model': model, 'mode': mode, 'batch': bench.config.batch_size,
            'resolution': bench.config.image_size, 'dtype': dtype, 'remat': remat,
            'depthwise_impl': depthwise_impl,
            'steps': steps, 'warmup': warmup}
  result.update(run(bench, steps=steps, warmup=warmup, profile_dir=profile_dir,
                    compiled=compiled))
  if search is not None:
    result['batch_search'] = search
  result.update(environment())
  return result


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
  return (f'{r["model"]} {r["mode"]} batch {r["batch"]} @ {r["resolution"]} px {r["dtype"]}'
          f'{" remat" if r["remat"] else ""} on {r["devices"]}× {r["device_kind"]}\n'
          f'  {r["images_per_sec"]:,.1f} img/s, step {r["step_ms_median"]:.2f} ms median '
          f'({r["step_ms_pipelined"]:.2f} ms pipelined), MFU {mfu}\n'
          f'  compile {r["compile_s"]:.2f} s (+ lower {r["lower_s"]:.2f} s){cache}, '
          f'peak memory {memory}, {r["flops_per_image"] / 1e9:.3f} GFLOPs/img forward')


def _define_flags() -> None:
  # Defined only when run as a program, so importing this module (tests, the GPU suite) cannot
  # collide with another CLI's flags of the same name.
  flags.DEFINE_string('model', None, f'Variant: {", ".join(scaling.MODEL_NAMES)}.')
  flags.DEFINE_string('batch', '256', 'Global batch size (a multiple of the device count), or a '
                      'comma list: the largest that fits in device memory is measured.')
  flags.DEFINE_integer('resolution', None, 'Input side in pixels (default: the native one).')
  flags.DEFINE_string('mode', 'train', 'train: the real train step; infer: the forward pass.')
  flags.DEFINE_string('dtype', 'bfloat16', 'Compute dtype: bfloat16 or float32.')
  flags.DEFINE_integer('steps', 20, 'Timed steps (after warm-up).')
  flags.DEFINE_integer('warmup', 5, 'Untimed steps first.')
  flags.DEFINE_bool('remat', False, 'Rematerialise each block in the backward pass.')
  flags.DEFINE_enum('depthwise_impl', 'auto', ['auto', 'conv', 'shift'],
                    'Depthwise convolution: XLA grouped conv, k·k multiply-adds, or auto '
                    '(shift on CPU, conv elsewhere).')
  flags.DEFINE_bool('json', False, 'Print one JSON object (the last stdout line).')
  flags.DEFINE_string('profile_dir', None, 'Also write a profiler trace of a few extra steps.')
  flags.DEFINE_string('cache_dir', compile_cache.default_dir(),
                      f'Persistent compilation cache (default ${compile_cache.ENV_VAR} or '
                      '~/.cache/efficientnet_jax/xla); empty turns it off.')


@cli.run
def main(argv):
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if not FLAGS['verbosity'].present:
    # JAX logs backend probing ("Unable to initialize backend 'tpu'") at INFO; keep stderr for
    # warnings and the one-line errors.
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value.')
  if not FLAGS.model:
    raise cli.UsageError(f'--model is required; valid names: {", ".join(scaling.MODEL_NAMES)}.')
  batches = parse_batches(FLAGS.batch)
  for batch in batches:
    validate(FLAGS.model, batch=batch, resolution=FLAGS.resolution, mode=FLAGS.mode,
             dtype=FLAGS.dtype, steps=FLAGS.steps, warmup=FLAGS.warmup)
  cache_dir = compile_cache.enable(FLAGS.cache_dir) if FLAGS.cache_dir else None
  cache_counts = compile_cache.count_hits_and_misses()
  result = benchmark(FLAGS.model, batch=batches, resolution=FLAGS.resolution,
                     mode=FLAGS.mode, dtype=FLAGS.dtype, remat=FLAGS.remat, steps=FLAGS.steps,
                     warmup=FLAGS.warmup, profile_dir=FLAGS.profile_dir,
                     depthwise_impl=FLAGS.depthwise_impl)
  result.update(compile_cache_dir=cache_dir, compile_cache_hits=cache_counts['hits'],
                compile_cache_misses=cache_counts['misses'])
  if FLAGS.json:
    print(json.dumps(result), flush=True)
  else:
    print(format_summary(result), flush=True)


if __name__ == '__main__':
  _define_flags()
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
