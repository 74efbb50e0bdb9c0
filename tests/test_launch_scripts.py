"""The launch/ scripts, checked without SLURM or a TPU: syntax, dry runs and stub commands.

No cluster is needed or touched. `tpu_pod.sh --dry_run` must print its gcloud commands and run
none: a fake `gcloud` (and `git`) first on PATH records any call, and the tests require none. The
two sbatch scripts run as plain bash with SLURM_* variables set and stubs for `srun` (records its
options, then runs the command after them), `python` (records its arguments, exits with
STUB_RC) and `scontrol` (records its arguments): main's exit 75 must requeue the job, any other
code must pass through untouched.
"""

import os
import re
import shlex
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'launch')
TPU_POD = os.path.join(LAUNCH, 'tpu_pod.sh')
TRAIN = os.path.join(LAUNCH, 'slurm_train.sbatch')
SWEEP = os.path.join(LAUNCH, 'slurm_sweep.sbatch')
SCRIPTS = sorted(os.path.join(LAUNCH, f) for f in os.listdir(LAUNCH)
                 if f.endswith(('.sh', '.sbatch')))

STUBS = {
    # Records the call; any call fails the dry-run tests through the log they check.
    'gcloud': 'echo "gcloud $*" >> "$STUB_LOG"; exit 1',
    'git': 'echo "git $*" >> "$STUB_LOG"; exit 1',
    # srun: record, drop its own options (all --opt=value here), run the command in its place
    # (exec: the command's parent is then the batch shell, which STUB_TERM_PARENT signals).
    'srun': ('echo "srun $*" >> "$STUB_LOG"\n'
             'while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done\n'
             'exec "$@"'),
    'python': ('echo "python $*" >> "$STUB_LOG"; pwd > "$STUB_LOG.cwd"\n'
               'if [ -n "${STUB_TERM_PARENT:-}" ]; then kill -TERM "$PPID"; fi\n'
               'exit "${STUB_RC:-0}"'),
    'scontrol': 'echo "scontrol $*" >> "$STUB_LOG"; exit "${STUB_SCONTROL_RC:-0}"',
}


@pytest.fixture
def stubs(tmp_path):
  """A bin/ of stub commands and an environment with it first on PATH; returns (env, log)."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name, body in STUBS.items():
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
  log = tmp_path / 'calls.log'
  log.touch()
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('SLURM_', 'TPU_')) and k not in ('CONFIG', 'WORKDIR', 'SCRIPT')}
  env.update(PATH=f'{bin_dir}:{os.environ["PATH"]}', STUB_LOG=str(log))
  return env, log


def _calls(log):
  return [line for line in log.read_text().splitlines() if line]


def _run(args, env, cwd=None):
  return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=30,
                        check=False)


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_every_script_parses_with_bash_n(script):
  result = _run(['bash', '-n', script], env=os.environ)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('script', [TRAIN, SWEEP], ids=os.path.basename)
def test_sbatch_directives_precede_any_command_and_signal_the_job_steps(script):
  """sbatch reads #SBATCH lines only before the first command; --signal must not be B: only."""
  with open(script, encoding='utf-8') as f:
    lines = f.read().splitlines()
  last = max(i for i, line in enumerate(lines) if line.startswith('#SBATCH'))
  assert all(not line.strip() or line.lstrip().startswith('#') for line in lines[:last + 1])
  directives = ' '.join(line for line in lines if line.startswith('#SBATCH'))
  for option in ('--nodes=', '--ntasks-per-node=', '--gpus-per-node=', '--cpus-per-task=',
                 '--time=', '--requeue', '--open-mode=append'):
    assert option in directives
  signal = re.search(r'--signal=(\S+)', directives).group(1)
  assert re.fullmatch(r'TERM@\d+', signal), signal  # no "B:": the srun'd processes get it


# --- tpu_pod.sh -------------------------------------------------------------------------------

POD = ['--name=effnet', '--zone=us-central2-b', '--project=proj', '--dry_run']


def _dry_run(stubs, *args):
  env, log = stubs
  result = _run(['bash', TPU_POD, *args], env=env)
  assert result.returncode == 0, result.stderr
  assert _calls(log) == [], 'a dry run ran a command'
  commands = [shlex.split(line) for line in result.stdout.splitlines()]
  assert commands and all(c[0] in ('gcloud', 'git') for c in commands), result.stdout
  return commands


def _remote(command):
  """The --command= of a `gcloud ... tpu-vm ssh`, checked to be valid shell."""
  remote = next(a for a in command if a.startswith('--command='))[len('--command='):]
  check = _run(['bash', '-n', '-c', remote], env=os.environ)
  assert check.returncode == 0, (remote, check.stderr)
  return remote


def test_tpu_create_prints_tpu_vm_create_with_type_and_default_runtime(stubs):
  (command,) = _dry_run(stubs, 'create', *POD, '--accelerator_type=v4-32')
  assert command[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create']
  assert command[5] == 'effnet'
  for flag in ('--accelerator-type=v4-32', '--version=tpu-ubuntu2204-base',
               '--zone=us-central2-b', '--project=proj'):
    assert flag in command


def test_tpu_create_queued_prints_a_queued_resource_request(stubs):
  (command,) = _dry_run(stubs, 'create', *POD, '--queued', '--spot',
                        '--accelerator_type=v5litepod-32')
  assert command[:5] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'create']
  for flag in ('--node-id=effnet', '--accelerator-type=v5litepod-32',
               '--runtime-version=v2-alpha-tpuv5-lite', '--spot', '--zone=us-central2-b'):
    assert flag in command


def test_tpu_install_copies_head_to_all_workers_and_pip_installs_jax_tpu(stubs):
  archive, scp, ssh = _dry_run(stubs, 'install', *POD)
  assert archive[:2] == ['git', '-C'] and 'archive' in archive and archive[-1] == 'HEAD'
  assert scp[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp'] and '--worker=all' in scp
  assert ssh[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh'] and '--worker=all' in ssh
  remote = _remote(ssh)
  assert re.search(r"pip install (-q )?-e '\.\[gcs\]' 'jax\[tpu\]'", remote), remote
  assert 'tar -xzf ~/efficientnet_jax.tar.gz' in remote


def test_tpu_install_from_a_git_url(stubs):
  (ssh,) = _dry_run(stubs, 'install', *POD, '--repo=https://example.org/efficientnet_jax.git',
                    '--ref=v1')
  remote = _remote(ssh)
  assert 'git clone -q https://example.org/efficientnet_jax.git' in remote
  assert 'checkout -q v1' in remote and "'jax[tpu]'" in remote


def test_tpu_mount_runs_gcsfuse_on_all_workers(stubs):
  (ssh,) = _dry_run(stubs, 'mount', *POD, '--bucket=gs://my-bucket/data')
  assert '--worker=all' in ssh
  assert 'gcsfuse --implicit-dirs my-bucket ~/gcs' in _remote(ssh)


def test_tpu_run_starts_main_on_all_workers_with_a_log_per_worker(stubs):
  (ssh,) = _dry_run(stubs, 'run', *POD, '--config=configs/b7.py',
                    '--workdir=gs://bucket/runs/b7', '--',
                    '--config.data_dir=gs://bucket/tfds', '--config.name=two words')
  assert ssh[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'effnet']
  assert '--worker=all' in ssh
  remote = _remote(ssh)
  assert ("nohup python -m efficientnet_jax.main --config=configs/b7.py "
          "--workdir=gs://bucket/runs/b7 --config.data_dir=gs://bucket/tfds "
          "'--config.name=two words' >> ~/logs/worker-$(hostname).log 2>&1 < /dev/null &"
          in remote), remote
  assert '. ~/venv/bin/activate' in remote and '> ~/logs/main.pid' in remote


def test_tpu_run_a_study_item_with_script(stubs):
  (ssh,) = _dry_run(stubs, 'run', *POD, '--script=experiments/compound_search.py',
                    '--config=experiments/configs/imagenette_search.py',
                    '--workdir=gs://bucket/search', '--', '--item=3')
  assert ('nohup python experiments/compound_search.py '
          '--config=experiments/configs/imagenette_search.py --workdir=gs://bucket/search '
          '--item=3 >> ~/logs/worker-$(hostname).log' in _remote(ssh))


def test_tpu_logs_stop_and_delete(stubs):
  (logs,) = _dry_run(stubs, 'logs', *POD, '--follow', '--lines=20')
  assert '--worker=0' in logs and _remote(logs) == 'tail -n 20 -F ~/logs/worker-*.log'
  (logs_all,) = _dry_run(stubs, 'logs', *POD, '--worker=all')
  assert '--worker=all' in logs_all
  (stop,) = _dry_run(stubs, 'stop', *POD)
  assert '--worker=all' in stop and 'kill -TERM' in _remote(stop)
  (delete,) = _dry_run(stubs, 'delete', *POD)
  assert delete[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete'] and '--quiet' in delete
  (delete_queued,) = _dry_run(stubs, 'delete', *POD, '--queued')
  assert delete_queued[:5] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'delete']
  assert '--force' in delete_queued


def test_tpu_help_prints_usage(stubs):
  env, log = stubs
  for flag in ('-h', '--help'):
    result = _run(['bash', TPU_POD, flag], env=env)
    assert result.returncode == 0 and result.stdout.startswith('Usage: ')
  assert _calls(log) == []


@pytest.mark.parametrize('args', [
    [],
    ['frobnicate'],
    ['create', '--no_such_option'],
    ['create', '--zone'],
    ['create', 'extra'],
    ['create', '--accelerator_type=tpu32'],
    ['create', '--name=Bad_Name'],
    ['create', '--', '--config.x=1'],
    ['run', '--workdir=gs://b/r'],
    ['run', '--config=configs/b0.py'],
    ['mount'],
    ['logs', '--worker=first'],
], ids=lambda a: ' '.join(a) or 'nothing')
def test_tpu_bad_arguments_are_one_error_line_and_exit_2(stubs, args):
  env, log = stubs
  result = _run(['bash', TPU_POD, *args], env=env)  # no --dry_run: nothing may run anyway
  assert result.returncode == 2
  assert result.stdout == ''
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  assert _calls(log) == []


# --- the sbatch scripts with stub srun / python / scontrol --------------------------------------

def _slurm_env(stubs, tmp_path, **extra):
  env, log = stubs
  repo = tmp_path / 'repo'  # REPO: no .venv there, so the stubs stay first on PATH
  repo.mkdir(exist_ok=True)
  env = dict(env, SLURM_JOB_ID='4242', SLURM_SUBMIT_DIR=str(repo), SLURM_CPUS_PER_TASK='16',
             SLURM_JOB_NUM_NODES='2', SLURM_NTASKS_PER_NODE='1')
  env.update(extra)
  return env, log


def test_train_exit_75_requeues_the_job(stubs, tmp_path):
  env, log = _slurm_env(stubs, tmp_path, STUB_RC='75', CONFIG='configs/b4.py',
                        WORKDIR='/shared/runs/b4')
  result = _run(['bash', TRAIN, '--config.data_dir=/data'], env=env, cwd=tmp_path)
  assert result.returncode == 75, result.stderr
  srun, python, scontrol = _calls(log)
  assert srun.startswith('srun --kill-on-bad-exit=0 --cpus-per-task=16 python -m ')
  assert python == ('python -m efficientnet_jax.main --config=configs/b4.py '
                    '--workdir=/shared/runs/b4 --config.data_dir=/data')
  assert scontrol == 'scontrol requeue 4242'
  assert 'requeued job 4242' in result.stdout


@pytest.mark.parametrize('code', [0, 2, 3, 4, 137])
def test_train_other_exit_codes_pass_through_without_requeue(stubs, tmp_path, code):
  env, log = _slurm_env(stubs, tmp_path, STUB_RC=str(code))
  result = _run(['bash', TRAIN], env=env, cwd=tmp_path)
  assert result.returncode == code
  calls = _calls(log)
  assert [c.split()[0] for c in calls] == ['srun', 'python']
  # The defaults: configs/b0.py, a workdir named after it.
  assert calls[1] == 'python -m efficientnet_jax.main --config=configs/b0.py --workdir=runs/b0'


def test_train_srun_args_and_the_repo_it_runs_in(stubs, tmp_path):
  env, log = _slurm_env(stubs, tmp_path, SRUN_ARGS='--gpu-bind=none --mpi=none',
                        CONFIG='configs/b4.py:batch=1024')
  result = _run(['bash', TRAIN], env=env, cwd=tmp_path)
  assert result.returncode == 0
  # main runs in the repository (SLURM_SUBMIT_DIR), not where the batch shell started.
  assert (tmp_path / 'calls.log.cwd').read_text().strip() == env['SLURM_SUBMIT_DIR']
  srun, python = _calls(log)
  assert srun.startswith('srun --kill-on-bad-exit=0 --cpus-per-task=16 --gpu-bind=none '
                         '--mpi=none python')
  assert python.endswith('--config=configs/b4.py:batch=1024 --workdir=runs/b4')


def test_train_cancelled_job_is_not_requeued(stubs, tmp_path):
  """scancel / a preemption also signals the batch shell: main's 75 must not undo a cancel."""
  env, log = _slurm_env(stubs, tmp_path, STUB_RC='75', STUB_TERM_PARENT='1')
  result = _run(['bash', TRAIN], env=env, cwd=tmp_path)
  assert result.returncode == 75
  assert [c.split()[0] for c in _calls(log)] == ['srun', 'python']
  assert 'not requeued' in result.stdout


def test_train_stops_requeueing_after_max_requeues(stubs, tmp_path):
  env, log = _slurm_env(stubs, tmp_path, STUB_RC='75', SLURM_RESTART_COUNT='3',
                        MAX_REQUEUES='3')
  result = _run(['bash', TRAIN], env=env, cwd=tmp_path)
  assert result.returncode == 75
  assert not any(c.startswith('scontrol') for c in _calls(log))


def test_train_failed_requeue_is_one_error_line_and_keeps_75(stubs, tmp_path):
  env, log = _slurm_env(stubs, tmp_path, STUB_RC='75', STUB_SCONTROL_RC='1')
  result = _run(['bash', TRAIN], env=env, cwd=tmp_path)
  assert result.returncode == 75
  assert _calls(log)[-1] == 'scontrol requeue 4242'
  assert [l for l in result.stderr.splitlines() if l.startswith('error:')] == [
      result.stderr.strip()]


def _sweep_env(stubs, tmp_path, **extra):
  return _slurm_env(stubs, tmp_path, SLURM_JOB_ID='4243', SLURM_ARRAY_JOB_ID='4240',
                    SLURM_ARRAY_TASK_ID='3', SCRIPT='experiments/scaling_curves.py',
                    CONFIG='experiments/configs/imagenette_curves.py',
                    WORKDIR='/shared/runs/curves', **extra)


def test_sweep_passes_the_array_index_as_item_and_requeues_that_task_on_75(stubs, tmp_path):
  env, log = _sweep_env(stubs, tmp_path, STUB_RC='75')
  result = _run(['bash', SWEEP, '--config.seeds=3'], env=env, cwd=tmp_path)
  assert result.returncode == 75, result.stderr
  srun, python, scontrol = _calls(log)
  assert srun.startswith('srun --kill-on-bad-exit=0 --cpus-per-task=16 python ')
  assert python == ('python experiments/scaling_curves.py '
                    '--config=experiments/configs/imagenette_curves.py '
                    '--workdir=/shared/runs/curves --config.seeds=3 --item=3')
  assert scontrol == 'scontrol requeue 4240_3'  # this array task only, not the whole array


@pytest.mark.parametrize('code', [0, 2, 3])
def test_sweep_other_exit_codes_pass_through_without_requeue(stubs, tmp_path, code):
  env, log = _sweep_env(stubs, tmp_path, STUB_RC=str(code))
  result = _run(['bash', SWEEP], env=env, cwd=tmp_path)
  assert result.returncode == code
  calls = _calls(log)
  assert [c.split()[0] for c in calls] == ['srun', 'python']
  assert calls[1].endswith(' --item=3')


@pytest.mark.parametrize('unset', ['SLURM_ARRAY_TASK_ID', 'CONFIG', 'WORKDIR'])
def test_sweep_without_array_index_or_study_is_one_error_line_and_exit_2(stubs, tmp_path, unset):
  env, log = _sweep_env(stubs, tmp_path)
  del env[unset]
  result = _run(['bash', SWEEP], env=env, cwd=tmp_path)
  assert result.returncode == 2
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ')
  assert _calls(log) == []
