#!/usr/bin/env bash
# Create a Cloud TPU VM slice (a pod slice: several hosts, "workers"), install this repository on
# every worker, run `python -m efficientnet_jax.main` on all of them at once, read their logs,
# stop and delete. Every step is one or two gcloud commands; --dry_run prints them instead.
# Checked with bash -n and --dry_run only (no TPU was available when it was written):
# tests/test_launch_scripts.py. See launch/README.md.
set -euo pipefail

PROG=launch/tpu_pod.sh

usage() {
  cat <<'USAGE'
Usage: launch/tpu_pod.sh COMMAND [options] [-- flags for main]

Commands:
  create   create the TPU VM slice (gcloud compute tpus tpu-vm create; with --queued a queued
           resource, gcloud compute tpus queued-resources create, which waits for capacity)
  install  put this repository on every worker (a copy of this checkout's HEAD, or --repo=URL)
           and pip install it (with its gcs extra) and jax[tpu] in ~/venv
  mount    optional: mount a GCS bucket with gcsfuse on every worker (--bucket=B); a gs://
           workdir and a gs:// data_dir need no mount
  run      start main on every worker in the background (nohup); each worker's output goes to
           ~/logs/worker-$(hostname).log on that worker. Needs --config and --workdir; with
           --script=experiments/NAME.py a study (or one item: -- --item=N) instead of main
  logs     print the end of a worker's log (--worker=N|all, --lines=N, --follow)
  stop     SIGTERM to main on every worker: it finishes its step, writes that step's checkpoint
           and exits 75; `run` again (same flags) resumes
  delete   delete the TPU VM (with --queued: the queued resource and its TPU VM)

Options (the environment variable in brackets gives the default):
  --name=NAME              TPU VM name (and queued resource id)   [TPU_NAME; efficientnet]
  --zone=ZONE              zone                 [TPU_ZONE; unset: gcloud's compute/zone]
  --project=PROJECT        project              [TPU_PROJECT; unset: gcloud's core/project]
  --accelerator_type=TYPE  v5litepod-32, v4-32, v5p-32, v6e-32, ...   [TPU_TYPE; v5litepod-32]
  --version=VERSION        TPU software (runtime) version  [TPU_VERSION; from the type:
                           v6e: v2-alpha-tpuv6e, v5p: v2-alpha-tpuv5, v5litepod/v5e:
                           v2-alpha-tpuv5-lite, v2/v3/v4: tpu-ubuntu2204-base]
  --queued                 create/delete through a queued resource
  --spot                   create Spot TPUs (cheaper; preemptible at any time)
  --repo=URL [--ref=REF]   install: git clone URL (checkout REF) instead of copying HEAD
  --python=PYTHON          install: interpreter for ~/venv (>= 3.11)     [python3.11]
  --bucket=BUCKET          mount: the bucket; --mount_point=DIR  [~/gcs]
  --config=CONFIG          run: configs/NAME.py[:arg]
  --workdir=DIR            run: gs://BUCKET/path (or a directory every worker sees)
  --script=PATH            run: python PATH instead of python -m efficientnet_jax.main
  --worker=N|all           logs: which worker                          [0]
  --lines=N --follow       logs: how many lines; keep following
  --dry_run                print every gcloud command instead of running it
  -h, --help               this text

Example (a v4-32: 4 workers x 4 chips = one 16-device data mesh):
  launch/tpu_pod.sh create  --name=effnet --zone=us-central2-b --accelerator_type=v4-32
  launch/tpu_pod.sh install --name=effnet --zone=us-central2-b
  launch/tpu_pod.sh run     --name=effnet --zone=us-central2-b --config=configs/b7.py \
      --workdir=gs://BUCKET/runs/b7 -- --config.data_dir=gs://BUCKET/tensorflow_datasets
  launch/tpu_pod.sh logs    --name=effnet --zone=us-central2-b --follow
USAGE
}

die() {  # one error line, exit 2
  echo "error: $*; see $PROG --help" >&2
  exit 2
}

# Shell-quotes one word for printing and for the remote --command (single quotes where needed).
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_all() {
  local out='' word
  for word in "$@"; do out+="${out:+ }$(quote "$word")"; done
  printf '%s' "$out"
}

# Runs a command, or with --dry_run prints it (quoted, one line) and runs nothing.
run_cmd() {
  if [[ $DRY_RUN -eq 1 ]]; then
    quote_all "$@"
    echo
  else
    "$@"
  fi
}

# --- arguments ------------------------------------------------------------------------------
COMMAND=''
NAME=${TPU_NAME:-efficientnet}
ZONE=${TPU_ZONE:-}
PROJECT=${TPU_PROJECT:-}
ACCELERATOR_TYPE=${TPU_TYPE:-v5litepod-32}
VERSION=${TPU_VERSION:-}
QUEUED=0
SPOT=0
REPO_URL=''
REF=''
PYTHON_BIN=python3.11
BUCKET=''
MOUNT_POINT='~/gcs'
CONFIG=''
WORKDIR=''
SCRIPT=''
WORKER=0
LINES=100
FOLLOW=0
DRY_RUN=0
EXTRA=()

if [[ $# -eq 0 ]]; then
  die 'no command given (create, install, mount, run, logs, stop, delete)'
fi
while [[ $# -gt 0 ]]; do
  arg=$1
  shift
  case $arg in
    -h|--help) usage; exit 0 ;;
    --) EXTRA=("$@"); break ;;
    --name=*) NAME=${arg#*=} ;;
    --zone=*) ZONE=${arg#*=} ;;
    --project=*) PROJECT=${arg#*=} ;;
    --accelerator_type=*) ACCELERATOR_TYPE=${arg#*=} ;;
    --version=*) VERSION=${arg#*=} ;;
    --queued) QUEUED=1 ;;
    --spot) SPOT=1 ;;
    --repo=*) REPO_URL=${arg#*=} ;;
    --ref=*) REF=${arg#*=} ;;
    --python=*) PYTHON_BIN=${arg#*=} ;;
    --bucket=*) BUCKET=${arg#*=} ;;
    --mount_point=*) MOUNT_POINT=${arg#*=} ;;
    --config=*) CONFIG=${arg#*=} ;;
    --workdir=*) WORKDIR=${arg#*=} ;;
    --script=*) SCRIPT=${arg#*=} ;;
    --worker=*) WORKER=${arg#*=} ;;
    --lines=*) LINES=${arg#*=} ;;
    --follow) FOLLOW=1 ;;
    --dry_run) DRY_RUN=1 ;;
    --name|--zone|--project|--accelerator_type|--version|--repo|--ref|--python|--bucket|\
    --mount_point|--config|--workdir|--script|--worker|--lines)
      die "$arg needs a value: $arg=VALUE" ;;
    -*) die "unknown option '$arg'" ;;
    *)
      if [[ -n $COMMAND ]]; then
        die "unexpected argument '$arg' (the command is already '$COMMAND'; flags for main go after --)"
      fi
      COMMAND=$arg ;;
  esac
done

case $COMMAND in
  create|install|mount|run|logs|stop|delete) ;;
  '') die 'no command given (create, install, mount, run, logs, stop, delete)' ;;
  *) die "unknown command '$COMMAND' (create, install, mount, run, logs, stop, delete)" ;;
esac
if [[ ${#EXTRA[@]} -gt 0 && $COMMAND != run ]]; then
  die "flags after -- are for main, given to 'run' only"
fi
[[ $NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
  || die "--name='$NAME' is not a valid TPU name (lowercase letters, digits, hyphens)"
[[ $ACCELERATOR_TYPE =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]] \
  || die "--accelerator_type='$ACCELERATOR_TYPE' is not a TPU type like v5litepod-32 or v4-32"
[[ $WORKER == all || $WORKER =~ ^[0-9]+$ ]] || die "--worker='$WORKER' must be a number or all"
[[ $LINES =~ ^[0-9]+$ ]] || die "--lines='$LINES' must be a number"

if [[ -z $VERSION ]]; then
  case $ACCELERATOR_TYPE in
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v2-*|v3-*|v4-*) VERSION=tpu-ubuntu2204-base ;;
    *) die "no default software version for $ACCELERATOR_TYPE: give --version" ;;
  esac
fi

# gcloud's location flags, after each command's own.
LOCATION=()
[[ -n $ZONE ]] && LOCATION+=("--zone=$ZONE")
[[ -n $PROJECT ]] && LOCATION+=("--project=$PROJECT")

# Runs a shell command on the workers (`--worker=all`: every host of the slice, concurrently).
on_workers() {  # WORKER REMOTE_COMMAND
  run_cmd gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" "--worker=$1" "--command=$2"
}

REMOTE_DIR='~/efficientnet_jax'
ACTIVATE="cd $REMOTE_DIR && . ~/venv/bin/activate"

# --- commands -------------------------------------------------------------------------------
case $COMMAND in
  create)
    spot=()
    [[ $SPOT -eq 1 ]] && spot=(--spot)
    if [[ $QUEUED -eq 1 ]]; then
      # The queued resource gets the TPU's name as its id; `delete --queued` removes both.
      run_cmd gcloud compute tpus queued-resources create "$NAME" "--node-id=$NAME" \
          "--accelerator-type=$ACCELERATOR_TYPE" "--runtime-version=$VERSION" "${spot[@]}" \
          "${LOCATION[@]}"
      if [[ $DRY_RUN -eq 0 ]]; then
        echo "Queued. Wait for state ACTIVE before install:" \
             "gcloud compute tpus queued-resources describe $NAME ${LOCATION[*]}"
      fi
    else
      run_cmd gcloud compute tpus tpu-vm create "$NAME" "--accelerator-type=$ACCELERATOR_TYPE" \
          "--version=$VERSION" "${spot[@]}" "${LOCATION[@]}"
    fi
    ;;

  install)
    # Python >= 3.11 (pyproject's requires-python): the TPU images are Ubuntu 22.04, whose
    # python3 is 3.10, so a 3.11 comes from apt if missing. jax[tpu] adds libtpu to the jax
    # that `pip install -e .` resolves; one pip command keeps the two consistent.
    setup="set -e; command -v $PYTHON_BIN >/dev/null || { sudo apt-get update -q && sudo apt-get install -y -q $PYTHON_BIN $PYTHON_BIN-venv; }; [ -d ~/venv ] || $PYTHON_BIN -m venv ~/venv; . ~/venv/bin/activate; pip install -q -U pip"
    if [[ -n $REPO_URL ]]; then
      fetch="if [ -d $REMOTE_DIR/.git ]; then git -C $REMOTE_DIR fetch -q origin; else git clone -q $(quote "$REPO_URL") $REMOTE_DIR; fi"
      if [[ -n $REF ]]; then
        fetch+="; git -C $REMOTE_DIR checkout -q $(quote "$REF")"
      else
        fetch+="; git -C $REMOTE_DIR pull -q --ff-only"
      fi
    else
      # This checkout's committed HEAD (uncommitted changes are not copied), the same on every
      # worker; the archive holds no .venv, runs or caches.
      repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
      archive=${TMPDIR:-/tmp}/efficientnet_jax-$NAME.tar.gz
      run_cmd git -C "$repo_root" archive --format=tar.gz "--output=$archive" HEAD
      run_cmd gcloud compute tpus tpu-vm scp "$archive" "$NAME:efficientnet_jax.tar.gz" \
          "${LOCATION[@]}" --worker=all
      fetch="rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf ~/efficientnet_jax.tar.gz -C $REMOTE_DIR"
    fi
    on_workers all "$setup; $fetch; cd $REMOTE_DIR && pip install -q -e '.[gcs]' 'jax[tpu]' && python -c 'import jax, efficientnet_jax; print(\"jax\", jax.__version__)'"
    ;;

  mount)
    [[ -n $BUCKET ]] || die 'mount needs --bucket=BUCKET (or use a gs:// --workdir, which needs no mount)'
    bucket=${BUCKET#gs://}
    bucket=${bucket%%/*}
    install_gcsfuse="command -v gcsfuse >/dev/null || { echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }"
    on_workers all "set -e; $install_gcsfuse; mkdir -p $MOUNT_POINT; mountpoint -q $MOUNT_POINT || gcsfuse --implicit-dirs $(quote "$bucket") $MOUNT_POINT; echo \"\$(hostname): gs://$bucket on $MOUNT_POINT\""
    ;;

  run)
    [[ -n $CONFIG ]] || die 'run needs --config=configs/NAME.py'
    [[ -n $WORKDIR ]] || die 'run needs --workdir=gs://BUCKET/path'
    if [[ $WORKDIR != gs://* ]]; then
      echo "note: --workdir=$WORKDIR is not gs://: it must be one directory every worker sees" \
           "(a gcsfuse mount, NFS/Filestore), or the workers write separate checkpoints" >&2
    fi
    entry=(-m efficientnet_jax.main)
    [[ -n $SCRIPT ]] && entry=("$SCRIPT")
    main_cmd=$(quote_all python "${entry[@]}" "--config=$CONFIG" "--workdir=$WORKDIR" \
               "${EXTRA[@]}")
    # Every worker starts the same command; jax.distributed.initialize() finds the slice from the
    # TPU metadata. nohup + </dev/null lets the ssh session end while training goes on; the pid
    # file is what `stop` signals. A rerun appends to the same log.
    log='~/logs/worker-$(hostname).log'
    on_workers all "set -e; $ACTIVATE; mkdir -p ~/logs; { date -Is; echo $(quote "$main_cmd"); } >> $log; nohup $main_cmd >> $log 2>&1 < /dev/null & echo \$! > ~/logs/main.pid; echo \"\$(hostname): started (pid \$!), log $log\""
    ;;

  logs)
    follow=''
    [[ $FOLLOW -eq 1 ]] && follow=' -F'
    on_workers "$WORKER" "tail -n $LINES$follow ~/logs/worker-*.log"
    ;;

  stop)
    on_workers all "pid=\$(cat ~/logs/main.pid 2>/dev/null || true); if [ -n \"\$pid\" ] && ps -p \"\$pid\" -o args= | grep -q -e efficientnet_jax.main -e experiments/; then kill -TERM \"\$pid\" && echo \"\$(hostname): SIGTERM sent (pid \$pid)\"; else echo \"\$(hostname): nothing running\"; fi"
    ;;

  delete)
    if [[ $QUEUED -eq 1 ]]; then
      # --force deletes the TPU VM the queued resource created, then the resource.
      run_cmd gcloud compute tpus queued-resources delete "$NAME" "${LOCATION[@]}" --force --quiet
    else
      run_cmd gcloud compute tpus tpu-vm delete "$NAME" "${LOCATION[@]}" --quiet
    fi
    ;;
esac
