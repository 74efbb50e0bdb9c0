"""Shared by the reliability tests: launching the real CLIs, watching, signalling, comparing them.

Every run is `python -m efficientnet_jax.main --config=tests/reliability_config.py` in a subprocess
(or, where a test injects a fault, `python tests/fault_injection.py`: the same main with a
`Faults` hook) with the test suite's XLA flags and persistent compilation cache
(tests/conftest.py), so that compiling the tiny model's steps is paid once per machine.
The uninterrupted run the tests compare against is made once per session in the background
(tests/shared_runs.py; tests take it as the `reliability_reference` fixture).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'tests/reliability_config.py'
FAULT_INJECTION = 'tests/fault_injection.py'
TOTAL_STEPS = 8  # tests/reliability_config.py
CACHE_DIR = os.path.join(tempfile.gettempdir(), 'efficientnet_jax_test_xla_cache')  # conftest.py
TIMEOUT_S = 600  # A hung run fails its test instead of hanging CI.


def environment(devices: int = 4, **extra: str) -> dict[str, str]:
  """The environment of a CLI subprocess: `devices` fake CPU devices, the tests' XLA set-up."""
  env = dict(os.environ)
  env.pop('EFFICIENTNET_JAX_TRACEBACK', None)
  env.update(
      JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='', TF_CPP_MIN_LOG_LEVEL='2',
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                f"{os.environ.get('XLA_FLAGS', '')}".strip(),  # conftest.TEST_XLA_FLAGS
      JAX_COMPILATION_CACHE_DIR=CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  env.update(extra)
  return env


def main_args(workdir, *flags: str, config: str = CONFIG, faults: bool = False) -> list[str]:
  """The command line of `main` (with `faults`, of main with the `--fault_*` flags)."""
  program = [FAULT_INJECTION] if faults else ['-m', 'efficientnet_jax.main']
  return [sys.executable, *program, f'--config={config}', f'--workdir={workdir}', *flags]


class Launch:
  """A CLI subprocess whose stdout/stderr go to files that the test can read while it runs."""

  def __init__(self, args: list[str], log_prefix, env: dict[str, str] | None = None):
    self.stdout_path, self.stderr_path = f'{log_prefix}.out', f'{log_prefix}.err'
    with open(self.stdout_path, 'w') as out, open(self.stderr_path, 'w') as err:
      self.process = subprocess.Popen(args, cwd=REPO, env=env or environment(), stdout=out,
                                      stderr=err, stdin=subprocess.DEVNULL)

  @property
  def stdout(self) -> str:
    with open(self.stdout_path) as f:
      return f.read()

  @property
  def stderr(self) -> str:
    with open(self.stderr_path) as f:
      return f.read()

  def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S,
                 poll_s: float = 0.05) -> None:
    """Polls `condition` until true; fails if the process exits or the time runs out first."""
    deadline = time.time() + timeout
    while not condition():
      if self.process.poll() is not None:
        raise AssertionError(f'exited ({self.process.returncode}) before {what}:\n'
                             f'{self.tail()}')
      if time.time() > deadline:
        self.kill()
        raise AssertionError(f'timed out waiting for {what}:\n{self.tail()}')
      time.sleep(poll_s)

  def wait(self, timeout: float = TIMEOUT_S) -> int:
    try:
      return self.process.wait(timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      raise AssertionError(f'still running after {timeout} s:\n{self.tail()}') from None

  def signal(self, sig: int) -> None:
    os.kill(self.process.pid, sig)

  def kill(self) -> None:
    """SIGKILL (if still running; a reaped pid may belong to someone else by now)."""
    if self.process.poll() is None:
      with contextlib.suppress(ProcessLookupError):
        self.signal(signal.SIGKILL)
    self.process.wait()

  def tail(self, lines: int = 30) -> str:
    return '\n'.join((self.stdout + self.stderr).splitlines()[-lines:])


def run_main(workdir, *flags: str, log_prefix=None, env=None, check: bool = True,
             faults: bool = False) -> Launch:
  """Runs main to the end; fails the test on a non-zero exit when `check`."""
  launch = Launch(main_args(workdir, *flags, faults=faults), log_prefix or f'{workdir}-main', env)
  code = launch.wait()
  if check:
    assert code == 0, launch.tail()
  return launch


def evaluate_args(workdir, *flags: str, config: str = CONFIG) -> list[str]:
  """The command line of the evaluate CLI."""
  return [sys.executable, '-m', 'efficientnet_jax.evaluate', f'--config={config}',
          f'--workdir={workdir}', *flags]


def last_json_line(stdout: str) -> dict:
  return json.loads(stdout.strip().splitlines()[-1])


def evaluate_json(workdir, *flags: str, config: str = CONFIG, env=None) -> dict:
  """The evaluate CLI's last stdout line (by default one process, 4 devices)."""
  result = subprocess.run(evaluate_args(workdir, *flags, config=config), cwd=REPO,
                          env=env or environment(), capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return last_json_line(result.stdout)


def metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def train_losses(workdir) -> dict[int, float]:
  """{step: train_loss}; a step logged twice (not dropped after a resume) fails the test."""
  losses = {}
  for entry in metrics(workdir):
    if 'train_loss' in entry:
      assert entry['step'] not in losses, f'step {entry["step"]} logged twice'
      losses[entry['step']] = entry['train_loss']
  return losses


def final_eval(workdir) -> dict[str, float]:
  evals = [e for e in metrics(workdir) if 'eval_top1' in e]
  return {k: v for k, v in evals[-1].items() if k != 'time'}


def checkpoint_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def unfinished_writes(workdir) -> list[str]:
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(n for n in os.listdir(directory) if '.orbax-checkpoint-tmp' in n)


def snapshot(directory) -> dict[str, tuple[int, int]]:
  """{relative path: (size, mtime_ns)} of everything under `directory`, itself included."""
  entries = {}
  for root, dirs, files in os.walk(directory):
    for name in ['.'] + dirs + files:
      path = os.path.join(root, name)
      stat = os.lstat(path)
      entries[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
  return entries


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def session_dir(tmp_path_factory) -> str:
  """A directory shared by all xdist workers of this session (and by nobody else)."""
  base = tmp_path_factory.getbasetemp()
  return str(base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base)


def hide_modules(*names: str) -> str:
  """Python code that makes packages look uninstalled, for `python -c` before other imports.

  Every meta-path finder answers None for them, so `import` raises ModuleNotFoundError and probes
  such as `importlib.util.find_spec('tensorflow')` (etils, under JAX's compilation cache) return
  None: what a machine without them (the accelerator image has no TensorFlow) looks like.
  """
  return f"""
import sys
class _Hidden:
  NAMES = {set(names)!r}
  def __init__(self, finder):
    self.finder = finder
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in self.NAMES or not hasattr(self.finder, 'find_spec'):
      return None
    return self.finder.find_spec(name, path, target)
  def __getattr__(self, attr):
    return getattr(self.finder, attr)
sys.meta_path[:] = [_Hidden(finder) for finder in sys.meta_path]
"""


def copy_run(source, destination) -> str:
  shutil.copytree(source, destination)
  return str(destination)


def copy_of_reference(reference_dir, destination) -> tuple[str, str]:
  """(a copy of the reference run at `destination`, the copy's checkpoints/)."""
  workdir = copy_run(reference_dir, destination)
  return workdir, os.path.join(workdir, 'checkpoints')


def restore_arrays(workdir, step: int) -> dict[str, bytes]:
  """{leaf path: bytes} of a checkpoint's train state, for bit-for-bit comparisons."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  path = os.path.join(os.path.abspath(workdir), 'checkpoints', str(step), 'state')
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.restore(path)
  return {jax.tree_util.keystr(key): np.asarray(value).tobytes()
          for key, value in jax.tree_util.tree_flatten_with_path(tree)[0]}
