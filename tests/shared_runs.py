"""Runs that several tests read, made once per session by a background process.

The reliability tests compare against one uninterrupted run of tests/reliability_config.py and
its `evaluate` JSON; the studies' tests read one sequential run of the tiny search. Each costs a
few minutes of compiling on a 2-core machine. When the session starts, conftest starts the ones
that the selected tests use, each as a process beside the pytest-xdist workers: the workers go on
with other tests meanwhile, instead of one worker making the run while the other blocks on it. A
test that needs a run waits for it (`SharedRun.wait`) and, if it failed, fails with its log.

  python tests/shared_runs.py SPEC.json   what the background process runs (see `_main`)

The two runs are defined here (`reliability_reference`, `tiny_search`); conftest.py has the
fixtures that tests take them by.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time

import reliability_helpers as rh

WAIT_S = 1200  # Start → done, with the workers competing for the cores; a hung run fails.


class SharedRun:
  """One background run: its commands, run one after the other, and the files it leaves.

  Files in `root`: NAME.log (every command's stdout and stderr), NAME.out (the last command's
  stdout), NAME.status (the exit code: written last, it marks the run as finished).
  """

  def __init__(self, root: str, name: str, commands: list[list[str]], env: dict[str, str],
               workdir: str):
    self.root, self.name, self.commands, self.env = root, name, commands, env
    self.workdir = workdir  # What the run writes; tests read it and must not modify it.

  def _path(self, suffix: str) -> str:
    return os.path.join(self.root, f'{self.name}.{suffix}')

  def start(self) -> None:
    """Starts the run unless this session started it already (from any worker)."""
    with open(self._path('lock'), 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if os.path.exists(self._path('spec.json')):
        return
      spec = {'commands': self.commands, 'cwd': rh.REPO, 'log': self._path('log'),
              'out': self._path('out'), 'status': self._path('status')}
      with open(self._path('spec.json'), 'w') as f:
        json.dump(spec, f)
      # Its own session: a Ctrl-C of pytest does not cut a run that another worker reads.
      subprocess.Popen([sys.executable, os.path.abspath(__file__), self._path('spec.json')],
                       env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, start_new_session=True)

  def wait(self, timeout: float = WAIT_S) -> str:
    """Starts the run if needed, waits for it; returns its last command's stdout."""
    self.start()
    deadline = time.time() + timeout
    while not os.path.exists(self._path('status')):
      if time.time() > deadline:
        raise AssertionError(f'{self.name} not finished after {timeout} s:\n{self._log_tail()}')
      time.sleep(0.2)
    with open(self._path('status')) as f:
      code = int(f.read())
    if code:
      raise AssertionError(f'{self.name} failed (exit {code}):\n{self._log_tail()}')
    with open(self._path('out')) as f:
      return f.read()

  def _log_tail(self, lines: int = 40) -> str:
    with contextlib.suppress(FileNotFoundError), open(self._path('log')) as f:
      return ''.join(f.readlines()[-lines:])
    return '(no log)'


def reliability_reference(root: str) -> SharedRun:
  """One uninterrupted run of tests/reliability_config.py, then `evaluate` of its last step."""
  workdir = os.path.join(root, 'reliability-reference')
  return SharedRun(root, 'reliability-reference',
                   [rh.main_args(workdir), rh.evaluate_args(workdir)], rh.environment(), workdir)


SEARCH = 'experiments/compound_search.py'
TINY_SEARCH = 'experiments/configs/digits_search.py:tiny'


def search_cache_dir(root: str) -> str:
  """The persistent compilation cache of every trial process of the session."""
  return os.path.join(root, 'experiments_xla_cache')


def search_args(*args: str, root: str) -> list[str]:
  """The command line of compound_search.py on the tiny search, with the session's cache."""
  return [sys.executable, SEARCH, f'--config={TINY_SEARCH}', *args,
          f'--config.train.compilation_cache_dir={search_cache_dir(root)}']


def search_environment() -> dict[str, str]:
  return {**os.environ, 'JAX_PLATFORMS': 'cpu'}  # With conftest's XLA_FLAGS.


def tiny_search(root: str) -> SharedRun:
  """The tiny compound search run end to end in one process, as a user runs it."""
  workdir = os.path.join(root, 'experiments_sequential')
  os.makedirs(search_cache_dir(root), exist_ok=True)
  return SharedRun(root, 'experiments-sequential',
                   [search_args(f'--workdir={workdir}', root=root)], search_environment(),
                   workdir)


def _main(spec_path: str) -> None:
  """Runs the spec's commands in order until one fails; writes the status file last."""
  with open(spec_path) as f:
    spec = json.load(f)
  code = 0
  with open(spec['log'], 'w') as log:
    for command in spec['commands']:
      log.write(f'$ {" ".join(command)}\n')
      log.flush()
      with open(spec['out'], 'w') as out:
        code = subprocess.run(command, cwd=spec['cwd'], stdout=out, stderr=log,
                              stdin=subprocess.DEVNULL, check=False).returncode
      if code:
        with open(spec['out']) as out:
          log.write(out.read())
        break
  with open(spec['status'] + '.tmp', 'w') as f:
    f.write(str(code))
  os.replace(spec['status'] + '.tmp', spec['status'])


if __name__ == '__main__':
  _main(sys.argv[1])
