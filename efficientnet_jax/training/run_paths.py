"""Run directories: a local path or a `gs://bucket/path`, checked before anything is written.

Run directories (`--workdir`, `config.init_from`) are local paths or `gs://bucket/path` URIs; the
modules that read and write them (checkpointing, metric_writers, evaluation, warm_start) do so
through etils' `epath.Path`. `gs://` is the one URI scheme every writer of a run can reach:

  * epath opens `gs://` through tf.io.gfile when TensorFlow is installed (unless EPATH_USE_TF
    is false), else through fsspec's gcsfs. gcsfs cannot append: it opens `metrics.jsonl` for
    appending as a new, empty file (with a warning), so a resumed run would lose the lines of
    the runs before it. tf.io.gfile appends (it uploads the grown file whole at each flush), so
    `check_path_kind` asks for TensorFlow, which the input pipeline needs anyway.
  * orbax writes a checkpoint's arrays through tensorstore, which it points at its `gcs` driver
    for a `gs://` path and at its local `file` driver for anything else: an `s3://`, `az://` or
    `hf://` path would become a local directory named `s3:` even where epath could open it
    (s3fs), so those schemes are refused, as is any scheme epath does not know (`ftp://`).
    Listing the steps of a `gs://` directory, orbax (0.12) first asks the bucket whether it has
    a hierarchical namespace, through google-cloud-storage, which it does not depend on.
  * TensorBoard events go through clu's SummaryWriter, i.e. tf.summary and tf.io.gfile, which
    has `gs` built in (and no `s3` since TensorFlow 2.6).

A local path whose absolute form starts with `/gs/` (or `/s3/`, `/az/`, `/hf/`) is refused too:
epath stores `gs://b/x` as `/gs/b/x` and so reads such a local path as a URI.
"""

from __future__ import annotations

import importlib.util
import os
import re

from efficientnet_jax.errors import ConfigError


# A URI ('gs://b', and the typo 'gs:/b'); gs:// is the one scheme supported (module docstring).
_SCHEME = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*:/')
# The roots etils' epath maps URIs to: it reads a local path under one of them as a URI.
_EPATH_URI_ROOTS = ('/gs/', '/s3/', '/az/', '/hf/')


def check_path_kind(path: str, flag: str = '--workdir') -> None:
  """Raises ConfigError unless `path` is a local path or a `gs://` URI this install can open.

  Reads nothing: whether the bucket exists and the credentials may write it shows where the
  checkpointer first opens the directory (before the first step), since asking needs the network.

  Args:
    path: the path as the user gave it.
    flag: how the message names it (`--workdir`, `--config.init_from`).
  """
  if not _SCHEME.match(path):
    if (os.path.abspath(path) + '/').startswith(_EPATH_URI_ROOTS):
      raise ConfigError(f'{flag} {path}: etils\' epath reads a local path under '
                        f'{os.path.abspath(path)[:4]} as a URI; choose a local directory '
                        'elsewhere.')
    return
  if not path.startswith('gs://'):
    raise ConfigError(f'{flag} {path}: only local paths and gs://bucket/path are supported '
                      '(mount another store, e.g. with s3fs-fuse, and give its local path).')
  if not path[len('gs://'):].split('/')[0]:
    raise ConfigError(f'{flag} {path} names no bucket; use gs://bucket/path.')
  if not gs_usable():
    raise ConfigError(f'{flag} {path}: gs:// needs tensorflow (tf.io.gfile, with EPATH_USE_TF '
                      'not false) and google-cloud-storage (pip install -e ".[gcs]"); or use a '
                      'local path.')


def gs_usable() -> bool:
  """Whether the packages a gs:// run directory needs are installed (none is imported).

  TensorFlow, unless EPATH_USE_TF turns it off for epath (epath's own rule): epath and
  TensorBoard write gs:// through tf.io.gfile. google-cloud-storage: orbax lists steps with it.
  """
  def installed(module: str) -> bool:
    try:
      return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # Its parent package (google.cloud) is missing.
      return False
  tf_off = os.environ.get('EPATH_USE_TF', '').lower() in ('false', 'no', 'f', '0')
  return not tf_off and installed('tensorflow') and installed('google.cloud.storage')


def check_workdir(workdir: str) -> None:
  """Raises ConfigError unless `workdir` is, or can be created as, a writable directory.

  Creates nothing, so that a run failing on a later check leaves no trace. For a local path,
  `os.access` is right for root too on what matters here (read-only file systems, a file in the
  path); a permission it cannot see (root-squashed NFS) fails at the first write, also as one
  line. A `gs://` URI is checked for its form only (`check_path_kind`): it has no directories to
  walk up, and os.path would read it as the local path `./gs:/bucket`.
  """
  check_path_kind(workdir)
  if _SCHEME.match(workdir):
    return
  path = os.path.abspath(workdir)
  existing = path
  while not os.path.lexists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f'--workdir {workdir} cannot be a directory: {existing} is a file; choose '
                      'another --workdir.')
  if not os.access(existing, os.W_OK | os.X_OK):
    where = '' if existing == path else f' (it would be created in {existing})'
    raise ConfigError(f'--workdir {workdir} is not writable{where}; choose a directory you can '
                      'write.')
