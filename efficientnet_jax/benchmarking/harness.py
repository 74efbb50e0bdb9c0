"""Builds, compiles and times the real train step (or the inference forward pass).

What is timed, and why:
* train: `setup.build(config, plan).train_step`, the very step `main` runs (state replicated and
  donated, batch sharded over the ('data',) mesh of all devices), for the config
  `config.get_config(model)` builds: the recipe's optimizer, label smoothing and EMA. There is no
  benchmark-only fast path and no second statement of the recipe.
* infer: a jitted `model.apply(variables, images, train=False)` (logits), variables replicated and
  images sharded. Not the eval step: with EMA that runs the network twice and adds top-k and loss
  reductions, so it measures an evaluation loop, not inference.
* Batches are synthetic (normal noise images, float32 as the input pipeline delivers them, random
  labels), placed on the devices once with `steps.global_batch`, so no host work is timed. With
  `augment_on_device` the config's augmentation runs in the train step (`augment.on_device`) and
  the images are uniform uint8 noise, as the pipeline then delivers them: the step's img/s with
  and without it is the augmentation's cost on the device.
* Compile time is `jitted.lower(...)` plus `.compile()`, timed apart (`lower_s`, `compile_s`); the
  steps then call the compiled object, so no step includes tracing or compilation.
* Each step is followed by `block_until_ready`; `warmup` steps are dropped and the median of the
  other `steps` is reported. `step_ms_pipelined` also times `steps` steps dispatched back to
  back with one wait at the end, as the training loop runs them.
* MFU = the model's own FLOPs (2 × `flops.count_macs`, ×3 for forward + backward in train) × img/s
  over the devices' dense peak for the dtype (`measures.PEAK_FLOPS`); null where the device is
  unknown.
* Peak memory is `peak_bytes_in_use` of `device.memory_stats()` (null where the backend has none,
  e.g. CPU); `memory_analysis` gives XLA's compile-time buffer sizes everywhere.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax import config as config_lib
from efficientnet_jax.benchmarking import measures
from efficientnet_jax.errors import UsageError
from efficientnet_jax.input import augment_policies
from efficientnet_jax.models import efficientnet
from efficientnet_jax.models import flops as flops_lib
from efficientnet_jax.models import scaling
from efficientnet_jax.training import setup as setup_lib
from efficientnet_jax.training import steps as steps_lib

MODES = ('train', 'infer')
DTYPES = ('bfloat16', 'float32')
# The policies --augment_policy may name: every registered one that augments.
AUGMENT_POLICIES = tuple(name for name, policy in augment_policies.AUGMENT_POLICIES.items()
                         if policy.device_op)
IMAGENET_TRAIN_EXAMPLES = 1_281_167


def recipe(model: str, *, batch: int, resolution: int | None = None, dtype: str = 'bfloat16',
           remat: bool = False, depthwise_impl: str = 'auto', augment_on_device: bool = False,
           augment_policy: str | None = None, phi: float | None = None):
  """The config the benchmark runs: the builder's recipe for `model` with these overrides.

  `augment.on_device` is set to `augment_on_device` only where the builder's default (auto)
  means otherwise, so that elsewhere the recipe is the builder's own, unchanged.
  `augment_policy` (None: the recipe's) replaces `augment.policy`. `phi` (None: the variant's
  own) scales the variant with the compound rule, as the quick start's φ = -4 network.
  """
  extra = {} if phi is None else {'phi': phi}
  config = config_lib.get_config(model, batch_size=batch, image_size=resolution, dtype=dtype,
                                 remat=remat, depthwise_impl=depthwise_impl, **extra)
  if augment_policy is not None:
    config.augment.policy = augment_policy
  # pylint: disable-next=g-import-not-at-top  (outside input/, never at module level)
  from efficientnet_jax.input import device_preprocessing
  if device_preprocessing.augment_on_device(config) != augment_on_device:
    config.augment.on_device = augment_on_device
  return config


@dataclasses.dataclass
class Benchmark:
  """A built benchmark: the jitted function that is timed and its on-device arguments.

  Attributes:
    jitted: the `jax.jit` function timed (for train, `setup.Setup.train_step`).
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
  config: Any
  mode: str


def validate(model: str, *, batch: int, resolution: int | None, mode: str, dtype: str,
             steps: int = 1, warmup: int = 0, augment_on_device: bool = False,
             augment_policy: str | None = None) -> None:
  """Raises `UsageError` (one line, with the fix) on an input the benchmark cannot run."""
  if model not in scaling.MODEL_NAMES:
    raise UsageError(f'Unknown --model {model!r}; valid names: {", ".join(scaling.MODEL_NAMES)}.')
  if mode not in MODES:
    raise UsageError(f'Unknown --mode {mode!r}; use one of: {", ".join(MODES)}.')
  if dtype not in DTYPES:
    raise UsageError(f'Unknown --dtype {dtype!r}; use one of: {", ".join(DTYPES)}.')
  if batch <= 0 or batch % jax.device_count():
    raise UsageError(f'--batch={batch} must be a positive multiple of the '
                     f'{jax.device_count()} devices (the batch is split across them).')
  if resolution is not None and resolution < 8:
    raise UsageError(f'--resolution={resolution} is too small; use at least 8 (32 is a '
                     'quick smoke test).')
  if steps < 1 or warmup < 0:
    raise UsageError(f'--steps={steps} must be ≥ 1 and --warmup={warmup} ≥ 0.')
  if augment_on_device and mode != 'train':
    raise UsageError('--augment_on_device times the train step; use it with --mode=train.')
  if augment_policy is not None and augment_policy not in AUGMENT_POLICIES:
    raise UsageError(f'Unknown --augment_policy {augment_policy!r}; use one of: '
                     f'{", ".join(AUGMENT_POLICIES)}.')
  if augment_policy is not None and not augment_on_device:
    raise UsageError('--augment_policy chooses the policy --augment_on_device times; add '
                     '--augment_on_device.')


def synthetic_batch(batch: int, resolution: int, seed: int = 0, uint8: bool = False
                    ) -> dict[str, np.ndarray]:
  """This process's share of a batch shaped like the input pipeline's: images, labels.

  Images are float32 (normalised), or uint8 with `uint8` (for augmentation on the device).
  """
  local = batch // jax.process_count()
  rng = np.random.default_rng(seed + jax.process_index())
  shape = (local, resolution, resolution, 3)
  images = (rng.integers(0, 256, shape, dtype=np.uint8) if uint8
            else rng.standard_normal(shape, dtype=np.float32))
  return {'image': images, 'label': rng.integers(0, 1000, size=(local,), dtype=np.int32)}


def init_variables(net, rng: jax.Array, resolution: int, sharding) -> dict[str, Any]:
  """The model's variables (for infer), initialised on the devices with `sharding`."""
  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
  return jax.jit(lambda r: net.init({'params': r, 'dropout': r}, images, train=False),
                 out_shardings=sharding)(rng)


def build(model: str, *, batch: int, resolution: int | None = None, mode: str = 'train',
          dtype: str = 'bfloat16', remat: bool = False, depthwise_impl: str = 'auto',
          augment_on_device: bool = False, augment_policy: str | None = None,
          phi: float | None = None) -> Benchmark:
  """Builds the model, its state and the jitted step exactly as training does, on synthetic data.

  Args:
    model: a variant name (`scaling.MODEL_NAMES`).
    batch: global batch size (a multiple of the device count).
    resolution: input side; None means the variant's native resolution.
    mode: 'train' (the real train step) or 'infer' (the forward pass, train=False).
    dtype: compute dtype, 'bfloat16' or 'float32' (params and BN statistics stay float32).
    remat: rematerialise each block in the backward pass.
    depthwise_impl: 'auto', 'conv' (XLA's grouped convolution) or 'shift' (k·k multiply-adds).
    augment_on_device: train: the step augments uint8 images with the recipe's policy first.
    augment_policy: with `augment_on_device`, 'autoaugment' or 'randaugment' instead of the
      recipe's policy (None).
    phi: compound-scaling exponent applied to the variant (None: the variant as named).

  Returns:
    The `Benchmark`, with everything already on the devices.
  """
  validate(model, batch=batch, resolution=resolution, mode=mode, dtype=dtype,
           augment_on_device=augment_on_device, augment_policy=augment_policy)
  config = recipe(model, batch=batch, resolution=resolution, dtype=dtype, remat=remat,
                  depthwise_impl=depthwise_impl, augment_on_device=augment_on_device,
                  augment_policy=augment_policy, phi=phi)
  resolution = resolution or scaling.get_variant(model).resolution
  config.image_size = resolution

  if mode == 'infer':
    net = efficientnet.model_from_config(config)
    mesh = steps_lib.data_mesh()
    replicated, batch_sharded = steps_lib.shardings(mesh)
    data = steps_lib.global_batch(synthetic_batch(batch, resolution, config.seed), mesh)
    variables = init_variables(net, jax.random.key(config.seed), resolution, replicated)
    forward = jax.jit(lambda v, images: net.apply(v, images, train=False),
                      in_shardings=(replicated, batch_sharded), out_shardings=batch_sharded)
    return Benchmark(forward, (variables, data['image']), lambda args, _: args, net, mesh,
                     config, mode)

  # The recipe's schedule counts ImageNet epochs; the batches themselves are synthetic.
  plan = setup_lib.make_plan(config, config.num_classes, IMAGENET_TRAIN_EXAMPLES,
                             efficientnet.model_from_config(config))
  s = setup_lib.build(config, plan)
  data = steps_lib.global_batch(
      synthetic_batch(batch, resolution, config.seed, uint8=augment_on_device), s.mesh)
  return Benchmark(s.train_step, (s.state, data, s.step_rng),
                   lambda args, out: (out[0],) + tuple(args[1:]), s.model, s.mesh, config, mode)


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
  limit = measures.bytes_limit(jax.local_devices())
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
      analysis = measures.memory_analysis(compiled.executable)
      needed = measures.bytes_needed(analysis)
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
      if not measures.is_out_of_memory(e) or last:
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
      first_step_s, time_to_first_step_s = elapsed, measures.process_age_s()
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
  peak = measures.peak_flops_per_device(device_kind, bench.config.dtype)
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
      'peak_memory_bytes': measures.peak_memory_bytes(devices),
      'memory_analysis': measures.memory_analysis(executable),
      'hlo_ops': measures.hlo_op_counts_of(executable),
      'flops_per_image': flops_per_image,
      'step_flops_per_image': step_flops_per_image,
      'peak_flops_per_device': peak,
      'mfu': mfu,
      'devices': len(devices),
      'device_kind': device_kind,
      'platform': devices[0].platform,
  }


def benchmark(model: str, *, batch: int | Sequence[int], resolution: int | None = None,
              mode: str = 'train', dtype: str = 'bfloat16', remat: bool = False, steps: int = 20,
              warmup: int = 5, profile_dir: str | None = None, depthwise_impl: str = 'auto',
              augment_on_device: bool = False, augment_policy: str | None = None,
              phi: float | None = None) -> dict[str, Any]:
  """Builds and runs one configuration; returns the JSON-ready result.

  Args:
    model: a variant name.
    batch: the global batch size, or several: the largest that fits in memory is measured
      (`fit`), and the candidates tried are listed under 'batch_search'.
    resolution, mode, dtype, remat, depthwise_impl, augment_on_device, augment_policy, phi: see
      `build`.
    steps: timed steps.
    warmup: untimed steps before them.
    profile_dir: if set, a profiler trace of a few extra steps is written there.
  """
  batches = [batch] if isinstance(batch, int) else list(batch)
  for b in batches:
    validate(model, batch=b, resolution=resolution, mode=mode, dtype=dtype, steps=steps,
             warmup=warmup, augment_on_device=augment_on_device, augment_policy=augment_policy)
  build_kwargs = dict(resolution=resolution, mode=mode, dtype=dtype, remat=remat,
                      depthwise_impl=depthwise_impl, augment_on_device=augment_on_device,
                      augment_policy=augment_policy, phi=phi)
  search = None
  if len(batches) == 1:
    bench, compiled = build(model, batch=batches[0], **build_kwargs), None
  else:
    bench, compiled, search = fit(model, batches, **build_kwargs)
  result = {'model': model, 'mode': mode, 'batch': bench.config.batch_size,
            'resolution': bench.config.image_size, 'dtype': dtype, 'remat': remat,
            'depthwise_impl': depthwise_impl, 'phi': phi, 'augment_on_device': augment_on_device,
            'augment_policy': bench.config.augment.policy if augment_on_device else None,
            'steps': steps, 'warmup': warmup}
  result.update(run(bench, steps=steps, warmup=warmup, profile_dir=profile_dir,
                    compiled=compiled))
  if search is not None:
    result['batch_search'] = search
  result.update(measures.environment())
  return result
