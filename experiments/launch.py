r"""Runs a study's unfinished (trial, seed) items as one job array on submitit, then merges them.

  python experiments/launch.py --engine=local --script=experiments/compound_search.py \
      --config=experiments/configs/digits_search.py:short --workdir=runs/digits_search_short
  python experiments/launch.py --engine=slurm --script=experiments/compound_search.py \
      --config=experiments/configs/imagenette_search.py --workdir=/shared/runs/imagenette_search \
      --slurm_partition=gpu --slurm_gpus_per_node=1 --timeout_min=240 --max_parallel=8 \
      --config.train.data_dir=/shared/data --config.seeds=3   # --config.* go to the script

1. Plans once: `SCRIPT --list` makes `DIR/plan.json` (or reads it) and names every item; the
   items without a `result.json` are the ones to run.
2. Submits them as ONE job array (`executor.map_array`): `--engine=slurm` one `sbatch --array`
   (at most `--max_parallel` at a time), `--engine=local` submitit's `LocalExecutor`, processes on
   this machine (`--max_parallel` of them at a time, default 1: each item uses every core or the
   GPU). Array task N runs `SCRIPT ... --item=N` as a subprocess (`ItemTask`) and returns its exit
   code; its output is in the task's submitit log (`DIR/submitit/`, named in the report).
3. Waits. An item that stopped with its checkpoint (exit 75, preempted or out of time), was killed
   by a signal, or whose task died without a result (a node lost, a hard kill) is resubmitted,
   with the others that came back so, as a new array, at most `--max_requeues` times; it resumes
   from its checkpoint. Exit 73 (another process holds the item's lock) is not resubmitted: that
   copy is training it. Any other exit code is a failure: reported with the item's last `error:`
   line and its log, not resubmitted.
4. Merges (`SCRIPT --merge`: results.json, results.md and the plot) from whatever finished, and
   says where the results are.

Exit code: 0 every item finished and merged; 1 some item failed; 75 some item still preempted
after `--max_requeues` (rerun the same command: it resumes them); 73 some item is being trained
by another process (merge again once it is done); 2 bad input (one `error:` line). Interrupting
the launcher (Ctrl-C) stops the local items at their next step with their checkpoints (the
signal reaches every process of the terminal); SLURM jobs keep running (`scancel` them).

Preemption and signals. Training stops cleanly on SIGTERM/SIGINT: it checkpoints at the next
step and exits 75 (`errors.Preempted`). submitit has its own mechanism: `signal_delay_s` before a
job's time limit it sends its preemption signal (SIGUSR2 by default, `SUBMITIT_PREEMPT_SIGNAL`;
on SLURM as `sbatch --signal=USR2@delay`, which reaches every process of the job step; locally
from its controller to the task process) and then requeues a `Checkpointable` function from its
`checkpoint()` state. A USR2 would kill our training outright (its default action), and a
requeue belongs to the launcher here, so:

* the executors send SIGTERM instead (`--signal=TERM@delay`, `SUBMITIT_PREEMPT_SIGNAL=TERM`):
  whichever process gets it, task or training, stops the right way;
* the task (`ItemTask`) is not Checkpointable: it replaces submitit's handlers with one that
  passes SIGTERM, SIGINT and USR2 on to the training subprocess as SIGTERM (the training also
  ignores USR2, in case one is sent to the whole step by hand), waits for it and returns its
  exit code, 75, as an ordinary result;
* the launcher resubmits the item, which resumes from its checkpoint.

One rule thus covers both engines and both causes: a time limit (a `--timeout_min` shorter than
an item splits it over several jobs; `--signal_delay_s` must cover a step and a checkpoint
write) and a scheduler's preemption (SLURM sends SIGTERM to every process of the step, and
SIGKILL after its KillWait: a task killed before it returns leaves no result and is resubmitted
too, resuming from the last checkpoint on disk). No scheduler-side requeue is needed; should a
cluster requeue a job on its own while the launcher resubmits its item, the item lock
(`efficientnet_jax/studies/locks.py`) makes the second copy exit 73 instead of training twice.

Each item runs as one process (one task per job); an item of several processes (srun over
nodes) is launch/slurm_sweep.sbatch's, with the same `--count` / `--item`. Run this launcher
from the repository root (array tasks start in the launcher's directory, with its Python).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags

from efficientnet_jax import cli
from efficientnet_jax.errors import RETRY_EXIT_CODE
from efficientnet_jax.studies import locks
from efficientnet_jax.studies import sweep

FLAGS = flags.FLAGS
ENGINES = ('local', 'slurm')
# Where the array tasks' submitit files (pickles, logs) go, under DIR.
LOGS = 'submitit'
FAILED_EXIT_CODE = 1
# submitit's variable for its preemption signal (a name without SIG; default USR2).
PREEMPT_SIGNAL_ENV = 'SUBMITIT_PREEMPT_SIGNAL'


def _define_flags() -> None:
  """The launcher's flags (from `__main__` only: flags are global)."""
  flags.DEFINE_enum('engine', None, ENGINES, 'Where the items run: "local" (processes on this '
                    'machine, submitit\'s LocalExecutor) or "slurm" (one sbatch job array).')
  flags.DEFINE_string('script', None, 'The study: experiments/compound_search.py, '
                      'scaling_curves.py or width_by_depth_res.py.')
  flags.DEFINE_string('config', None, 'The study config, experiments/configs/NAME.py[:arg]; '
                      '--config.KEY=VALUE overrides go to the script.')
  flags.DEFINE_string('workdir', None, 'The study directory, seen by every task.')
  flags.DEFINE_integer('timeout_min', 240, 'Time limit of one job, minutes; an item still '
                       'training then checkpoints, exits 75 and is resubmitted.', lower_bound=1)
  flags.DEFINE_integer('max_parallel', None, 'Items running at once (slurm: the array\'s %N; '
                       'local: default 1).', lower_bound=1)
  flags.DEFINE_integer('max_requeues', 10, 'Resubmissions per item after exit 75 or a lost '
                       'task.', lower_bound=0)
  flags.DEFINE_integer('signal_delay_s', 120, 'Seconds before the time limit at which submitit '
                       'signals a task (its training checkpoints and stops).', lower_bound=1)
  flags.DEFINE_float('poll_s', 10.0, 'Seconds between looks at the jobs.', lower_bound=0.1)
  flags.DEFINE_string('slurm_partition', None, 'SLURM partition.')
  flags.DEFINE_integer('slurm_gpus_per_node', None, 'GPUs per item (SLURM).', lower_bound=0)
  flags.DEFINE_integer('slurm_cpus_per_task', None, 'CPUs per item (SLURM).', lower_bound=1)
  flags.DEFINE_integer('slurm_mem_gb', None, 'Memory per item, GB (SLURM).', lower_bound=1)
  flags.mark_flags_as_required(['engine', 'script', 'config', 'workdir'])


class ItemTask:
  """One array task: `COMMAND --item=N` in a subprocess; returns its exit code (the job's result).

  Defined with the standard library only: submitit pickles it (by value: this file runs as
  `__main__`) into a task process that imports nothing of this repository. Not Checkpointable:
  submitit's preemption signal, SIGTERM and SIGINT are forwarded to the training subprocess as
  SIGTERM, which checkpoints and exits 75; that 75 is returned like any exit code and the
  launcher resubmits the item (module docstring).

  Args:
    command: the script's command line without `--item`.
    cwd: the directory it runs in (the launcher's).
    env: environment variables to set (a value of None unsets one).
  """

  def __init__(self, command: list[str], cwd: str, env: dict[str, str | None]):
    self.command, self.cwd, self.env = command, cwd, env

  def __call__(self, item: int) -> int:
    """Runs item `item` to its end; its exit code (negative: the signal that killed it)."""
    child = None
    signalled = []

    def forward(signum, frame):  # pylint: disable=unused-argument
      signalled.append(signum)
      if child is not None and child.poll() is None:
        child.send_signal(signal.SIGTERM)

    # Before the child starts, so that no signal finds submitit's handlers (which would requeue
    # or ignore it) in between; one that comes before the child exists is passed on at its start.
    for sig in _stop_signals():
      signal.signal(sig, forward)
    env = {k: v for k, v in os.environ.items() if self.env.get(k, '') is not None}
    env.update({k: v for k, v in self.env.items() if v is not None})
    child = subprocess.Popen([*self.command, f'--item={item}'], cwd=self.cwd, env=env,
                             preexec_fn=_ignore_usr2)
    if signalled:
      child.send_signal(signal.SIGTERM)
    return child.wait()


def _stop_signals() -> set[int]:
  """SIGTERM, SIGINT and submitit's preemption signal (`SUBMITIT_PREEMPT_SIGNAL`, default USR2).

  The launcher's executors use SIGTERM; USR2, submitit's default, is handled too: a signal sent
  to a task by hand (`scancel --signal=USR2`) or by another executor set-up stops it the same way.
  """
  name = 'SIG' + os.environ.get(PREEMPT_SIGNAL_ENV, 'USR2')
  return {signal.SIGTERM, signal.SIGINT, signal.SIGUSR2, getattr(signal, name, signal.SIGUSR2)}


def _ignore_usr2() -> None:
  """In the training subprocess before it starts: SIGUSR2 ignored (ignoring survives `exec`).

  SLURM signals every process of a job step, so a USR2 meant for the task reaches the training
  too, whose default action for it is to die on the spot; the task turns it into SIGTERM.
  """
  signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def make_executor(engine: str, folder: str, *, timeout_min: int, signal_delay_s: int,
                  max_parallel: int | None, partition: str | None = None,
                  gpus_per_node: int | None = None, cpus_per_task: int | None = None,
                  mem_gb: int | None = None):
  """The submitit executor of `engine`, with one task (one process) per item.

  Raises:
    errors.UsageError: `--engine=slurm` where SLURM's commands are not found.
  """
  import submitit  # pylint: disable=g-import-not-at-top  (`--help` needs nothing of it)
  # submitit's preemption signal becomes SIGTERM (module docstring): the local controller and
  # submitit in each task read it from the environment, SLURM from the sbatch line.
  setup = [f'export {PREEMPT_SIGNAL_ENV}=TERM']
  if engine == 'local':
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=timeout_min, signal_delay_s=signal_delay_s,
                               setup=setup)
    return executor
  try:
    executor = submitit.SlurmExecutor(folder=folder)
  except RuntimeError as e:  # No srun on PATH.
    raise cli.UsageError(f'--engine=slurm: {e} (run the launcher on a SLURM login node, or use '
                         '--engine=local).') from None
  parameters = dict(time=timeout_min, signal_delay_s=signal_delay_s, job_name='efficientnet-sweep',
                    nodes=1, ntasks_per_node=1, partition=partition, gpus_per_node=gpus_per_node,
                    cpus_per_task=cpus_per_task, mem=f'{mem_gb}GB' if mem_gb else None,
                    setup=setup, additional_parameters={'signal': f'TERM@{signal_delay_s}'})
  if max_parallel:
    parameters['array_parallelism'] = max_parallel
  executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
  return executor


_ITEM = re.compile(r'--trial=(\d+)(?: --seed=(\d+))?$')


def listed_items(lines: list[str]) -> list[tuple[int, int]]:
  """(trial id, seed index) of each `--list` line: line N is item N."""
  result = []
  for line in lines:
    match = _ITEM.search(line)
    if not match:
      raise RuntimeError(f'Unexpected --list line (no --trial=K at its end): {line!r}')
    result.append((int(match.group(1)), int(match.group(2) or 0)))
  return result


def describe(item: int, trial: int, seed: int, seeded: bool) -> str:
  """'item 3 (trial 1, seed 1)', or without seeds 'item 3 (trial 3)'."""
  return f'item {item} (trial {trial}' + (f', seed {seed})' if seeded else ')')


def last_message(path) -> str:
  """The last `error:` / `preempted:` / `locked:` line of a log, else its last line."""
  try:
    with open(path, errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return f'(no log at {path})'
  tagged = [line for line in lines if re.match(r'(error|preempted|locked): ', line)]
  return (tagged or lines or ['(empty log)'])[-1]


class Launch:
  """The array's items, their attempts and outcomes; `run` submits and waits."""

  def __init__(self, executor, task: ItemTask, items: list[tuple[int, int]], *,
               engine: str, max_parallel: int | None, max_requeues: int, poll_s: float):
    self.executor, self.task, self.items = executor, task, items
    self.engine, self.max_requeues, self.poll_s = engine, max_requeues, poll_s
    # Local items run at most max_parallel at a time, one each by default; SLURM's array has %N.
    self.capacity = (max_parallel or 1) if engine == 'local' else None
    self.seeded = any(seed for _, seed in items)
    self.attempts: dict[int, int] = {}
    self.outcomes: dict[int, tuple[str, str]] = {}  # item → (finished|failed|preempted|locked, why)

  def name(self, n: int) -> str:
    return describe(n, *self.items[n], self.seeded)

  def run(self, pending: list[int]) -> None:
    """Submits `pending`, waits for every item, resubmits the preempted ones."""
    queue, running = list(pending), {}
    while queue or running:
      free = len(queue) if self.capacity is None else self.capacity - len(running)
      if queue and free > 0:
        batch, queue = queue[:free], queue[free:]
        jobs = self.executor.map_array(self.task, batch)
        for n, job in zip(batch, jobs):
          running[n] = job
          self.attempts[n] = self.attempts.get(n, 0) + 1
        array = jobs[0].job_id.split('_')[0] if self.engine == 'slurm' else 'local'
        print(f'submitted items {batch} as a {self.engine} job array ({array}; logs in '
              f'{self.executor.folder})', flush=True)
      time.sleep(self.poll_s)
      for n, job in list(running.items()):
        if job.done():
          del running[n]
          if self._settle(n, job):
            queue.append(n)

  def _settle(self, n: int, job) -> bool:
    """Records how item n's job ended; True if it is to be resubmitted."""
    try:
      code = job.result()
    except Exception as e:  # pylint: disable=broad-except  (submitit: no result was written)
      code, why = None, f'its task ended without a result ({str(e).splitlines()[0]})'
    else:
      why = f'exit {code}'
    log = job.paths.stderr
    if code == 0:
      self.outcomes[n] = ('finished', why)
      print(f'{self.name(n)}: finished', flush=True)
      return False
    if code == locks.ITEM_LOCKED_EXIT_CODE:
      self.outcomes[n] = ('locked', f'{last_message(log)} (log: {log})')
      print(f'{self.name(n)}: another process is training it ({why}), not resubmitted: '
            f'{last_message(log)}', flush=True)
      return False
    if code is None or code == RETRY_EXIT_CODE or code < 0:
      if code is not None and code < 0:
        why = f'killed by {signal.Signals(-code).name}'
      elif code == RETRY_EXIT_CODE:
        why = 'preempted: stopped with its checkpoint, exit 75'
      if self.attempts[n] <= self.max_requeues:
        print(f'{self.name(n)}: {why}; resubmitted (attempt {self.attempts[n] + 1} of '
              f'{self.max_requeues + 1})', flush=True)
        return True
      self.outcomes[n] = ('preempted', f'{why}, {self.attempts[n]} attempts (log: {log})')
      print(f'{self.name(n)}: {why}; not resubmitted after {self.attempts[n]} attempts '
            '(--max_requeues)', flush=True)
      return False
    self.outcomes[n] = ('failed', f'{why}: {last_message(log)} (log: {log})')
    print(f'{self.name(n)}: failed, {why}: {last_message(log)} (log: {log})', flush=True)
    return False


def _script_args(argv: list[str]) -> tuple[list[str], list[str]]:
  """Splits argv into the launcher's flags and the script's (`--config.*`, all after `--`)."""
  own, script, args = [argv[0]], [], list(argv[1:])
  while args:
    arg = args.pop(0)
    if arg == '--':
      script.extend(args)
      break
    if arg.startswith('--config.'):
      script.append(arg)
      if '=' not in arg and args and not args[0].startswith('-'):
        script.append(args.pop(0))  # `--config.KEY VALUE`
    else:
      own.append(arg)
  return own, script


_SCRIPT_ARGS: list[str] = []


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses the launcher's own flags (one `error:` line for a bad one); keeps the script's.

  Not `cli.parse_flags`: that loads `--config` as a config file, which here is a path passed on.
  """
  own, script = _script_args(argv)
  try:
    cli.check_config_overrides(argv)  # A bad --config.KEY value: one line now, not per item.
    return FLAGS(own)
  except SystemExit as e:
    # absl prints the usage for --help and exits 1; asking for help is not a failure.
    if any(arg.lstrip('-') in ('help', 'h', 'helpshort', 'helpfull') for arg in own[1:]):
      raise SystemExit(0) from e
    raise
  except (flags.Error, ValueError) as e:
    cli.fail(cli.flag_error_message(e, own))
  finally:
    _SCRIPT_ARGS[:] = script


@cli.run
def main(argv: list[str]) -> None:
  """Plans, submits the unfinished items, waits and resubmits, merges (module docstring)."""
  if len(argv) > 1:
    raise cli.UsageError(f'Unexpected arguments {argv[1:]}; options are --flag=value '
                         '(and --config.KEY=VALUE for the script).')
  cli.quiet_libraries()
  if not os.path.isfile(FLAGS.script):
    raise cli.UsageError(f'--script={FLAGS.script}: no such file; the studies are '
                         'experiments/compound_search.py, scaling_curves.py, '
                         'width_by_depth_res.py.')
  workdir = os.path.abspath(FLAGS.workdir)
  command = [sys.executable, FLAGS.script, f'--config={FLAGS.config}', f'--workdir={workdir}',
             *_SCRIPT_ARGS]
  # Plans once (DIR/plan.json) and names the items; the script's own error line if it cannot.
  listed = subprocess.run([*command, '--list'], stdout=subprocess.PIPE, text=True, check=False)
  if listed.returncode:
    sys.exit(listed.returncode)
  items = listed_items(listed.stdout.strip().splitlines())
  pending = [n for n, (trial, seed) in enumerate(items) if not os.path.exists(
      os.path.join(sweep.trial_dir(workdir, trial, seed), sweep.RESULT_FILE))]
  print(f'{len(items)} items planned ({os.path.join(workdir, "plan.json")}), '
        f'{len(items) - len(pending)} finished before, {len(pending)} to run', flush=True)
  executor = make_executor(FLAGS.engine, os.path.join(workdir, LOGS),
                           timeout_min=FLAGS.timeout_min, signal_delay_s=FLAGS.signal_delay_s,
                           max_parallel=FLAGS.max_parallel, partition=FLAGS.slurm_partition,
                           gpus_per_node=FLAGS.slurm_gpus_per_node,
                           cpus_per_task=FLAGS.slurm_cpus_per_task, mem_gb=FLAGS.slurm_mem_gb)
  # LocalExecutor hides the GPUs from its tasks (CUDA_VISIBLE_DEVICES=''): local items see what
  # the launcher sees instead.
  env = {'CUDA_VISIBLE_DEVICES': os.environ.get('CUDA_VISIBLE_DEVICES')} \
      if FLAGS.engine == 'local' else {}
  launch = Launch(executor, ItemTask(command, os.getcwd(), env), items, engine=FLAGS.engine,
                  max_parallel=FLAGS.max_parallel, max_requeues=FLAGS.max_requeues,
                  poll_s=FLAGS.poll_s)
  start = time.time()
  try:
    launch.run(pending)
  except KeyboardInterrupt:
    cli.fail('interrupted: local items stop at their next step with their checkpoints; SLURM '
             'jobs keep running. Rerun the same command to resume.', RETRY_EXIT_CODE,
             label='preempted')
  if pending:
    print(f'array done in {time.time() - start:.0f} s', flush=True)
  finished_any = len(pending) < len(items) or any(
      kind == 'finished' for kind, _ in launch.outcomes.values())
  if finished_any:
    print(f'merging: {shlex.join([*command, "--merge"])}', flush=True)
    merged = subprocess.run([*command, '--merge'], check=False)
    if merged.returncode:
      sys.exit(merged.returncode)
    print(f'results: {os.path.join(workdir, sweep.RESULTS_FILE)} and results.md, plot beside '
          f'them; items: {os.path.join(workdir, "trials")}', flush=True)
  _exit_for(launch)


def _exit_for(launch: Launch) -> None:
  """One closing line and the launcher's exit code for items that did not finish."""
  by_kind: dict[str, list[int]] = {}
  for n, (kind, _) in sorted(launch.outcomes.items()):
    by_kind.setdefault(kind, []).append(n)
  if by_kind.get('failed'):
    details = '; '.join(f'{launch.name(n)}: {launch.outcomes[n][1]}' for n in by_kind['failed'])
    cli.fail(f'{len(by_kind["failed"])} items failed: {details}', FAILED_EXIT_CODE)
  if by_kind.get('preempted'):
    cli.fail(f'items {by_kind["preempted"]} still unfinished after --max_requeues='
             f'{launch.max_requeues} resubmissions; rerun the same command to resume them.',
             RETRY_EXIT_CODE, label='preempted')
  if by_kind.get('locked'):
    cli.fail(f'items {by_kind["locked"]} are being trained by other processes (their locks are '
             'held); --merge once they finish.', locks.ITEM_LOCKED_EXIT_CODE, label='locked')


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=_parse_flags)
