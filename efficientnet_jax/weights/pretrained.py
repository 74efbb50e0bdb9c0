"""Converted pretrained weights: the on-disk format and `load_pretrained`.

A converted directory (what `python -m efficientnet_jax.convert` writes):

  DIR/meta.json     {"format_version": 1, "model": "b0", "source": "timm",
                     "source_model": "tf_efficientnet_b0", "num_classes": 1000,
                     "padding": "same", "bn_epsilon": 0.001,
                     "preprocessing": {"mean": [...], "std": [...], "crop_padding": 32,
                                       "interpolation": "bicubic", "resolution": 224}}
  DIR/variables/    an orbax StandardCheckpointer checkpoint of {'params', 'batch_stats'}

mean/std are per RGB channel on the 0..255 scale: the model sees `(pixels − mean) / std`.
`padding`, `num_classes` and `bn_epsilon` are what the module must be built with to reproduce the
source model; `load_pretrained` does that.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

FORMAT_VERSION = 1
META_FILE = 'meta.json'
VARIABLES_DIR = 'variables'
_REQUIRED_META = ('model', 'source', 'num_classes', 'padding', 'preprocessing')
# Architecture fields the variant name fixes: the weights would not fit other values.
_FIXED_FIELDS = ('width', 'depth', 'lite', 'block_strings')


def save_converted(directory: str, model_name: str, variables: dict[str, Any],
                   meta: dict[str, Any], *, overwrite: bool = False) -> str:
  """Writes a converted directory atomically.

  Everything goes to a temporary directory beside `directory`, renamed into place at the end, so
  a failed or interrupted write leaves nothing behind (and never a half-written DIR).

  Args:
    directory: the DIR to create.
    model_name: our variant name; must match `meta['model']` when that is set.
    variables: {'params', 'batch_stats'} (numpy or jax arrays).
    meta: the metadata (see module docstring); `format_version` is added.
    overwrite: replace an existing non-empty `directory`.

  Returns:
    The absolute path written.

  Raises:
    ValueError: `directory` exists and is not empty (without overwrite), or is a file; or the
      metadata is incomplete.
  """
  directory = os.path.abspath(directory)
  if os.path.isfile(directory):
    raise ValueError(f'Output {directory} is a file; give a directory path.')
  if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
    raise ValueError(f'Output directory {directory} exists and is not empty; choose a new path '
                     'or pass --overwrite (overwrite=True) to replace it.')
  meta = dict(meta, model=meta.get('model', model_name), format_version=FORMAT_VERSION)
  if meta['model'] != model_name:
    raise ValueError(f'model_name {model_name!r} differs from meta["model"] {meta["model"]!r}.')
  missing = [k for k in _REQUIRED_META if k not in meta]
  if missing:
    raise ValueError(f'Converted-weights metadata lacks {missing}.')
  variables = {'params': variables['params'], 'batch_stats': variables['batch_stats']}

  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.tmp-', dir=parent)
  try:
    with open(os.path.join(staging, META_FILE), 'w') as f:
      json.dump(meta, f, indent=2)
      f.write('\n')
    _save_variables(os.path.join(staging, VARIABLES_DIR), variables)
    _move_into_place(staging, directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return directory


def _save_variables(path: str, variables: dict[str, Any]) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  # Host numpy arrays: the checkpoint then restores without any device or sharding assumptions.
  host = jax.tree.map(lambda x: np.asarray(x, np.float32), variables)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, host)


def _move_into_place(staging: str, directory: str) -> None:
  """Renames `staging` to `directory`, replacing what is there only after the new one is whole."""
  if not os.path.exists(directory):
    os.rename(staging, directory)
    return
  retired = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.old-',
                             dir=os.path.dirname(directory))
  os.rmdir(retired)
  os.rename(directory, retired)
  try:
    os.rename(staging, directory)
  except BaseException:
    os.rename(retired, directory)
    raise
  shutil.rmtree(retired, ignore_errors=True)


def read_meta(directory: str) -> dict[str, Any]:
  """Reads and checks `DIR/meta.json`."""
  path = os.path.join(directory, META_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{directory} is not a converted weights directory (no {META_FILE}); '
                            'make one with python -m efficientnet_jax.convert.')
  try:
    with open(path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e}).') from None
  version = meta.get('format_version')
  if not isinstance(version, int) or version > FORMAT_VERSION:
    raise ValueError(f'{path} has format_version {version!r}; this code reads up to '
                     f'{FORMAT_VERSION}: update efficientnet_jax.')
  missing = [k for k in _REQUIRED_META if k not in meta]
  if missing:
    raise ValueError(f'{path} lacks {missing}.')
  return meta


def read_converted(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads a converted directory.

  Args:
    directory: a DIR written by `save_converted` / the convert CLI.

  Returns:
    (meta, variables): the metadata dict and {'params', 'batch_stats'} of numpy arrays.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(directory)
  meta = read_meta(directory)
  path = os.path.join(directory, VARIABLES_DIR)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'{directory} has {META_FILE} but no {VARIABLES_DIR}/ checkpoint; '
                            'convert the weights again.')
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(path)
  variables = {'params': restored['params'], 'batch_stats': restored['batch_stats']}
  return meta, variables


def build_module(meta: dict[str, Any], **model_overrides):
  """The `EfficientNet` the metadata describes (padding, num_classes, BN epsilon as recorded).

  Args:
    meta: converted-weights metadata.
    **model_overrides: other `EfficientNet` fields (dtype, remat, include_top, …). Overriding a
      recorded architecture field with a different value is an error: the weights would not fit.

  Returns:
    An `EfficientNet` module (include_top=False for weights saved without a classifier).
  """
  # pylint: disable-next=g-import-not-at-top  (the model loads JAX: only when needed)
  from efficientnet_jax.models import efficientnet as model_lib
  recorded = {'padding': meta['padding'], 'num_classes': max(int(meta['num_classes']), 1),
              'bn_epsilon': float(meta.get('bn_epsilon', 1e-3))}
  for key, value in model_overrides.items():
    if key in recorded and value != recorded[key]:
      raise ValueError(f'{key}={value!r} conflicts with the converted weights ({key}='
                       f'{recorded[key]!r}); to train a new head start from them with '
                       'config.init_from instead.')
    if key in _FIXED_FIELDS:
      raise ValueError(f'{key} is fixed by the converted {meta["model"]} weights; it cannot be '
                       'overridden.')
  fields = dict(recorded, include_top=int(meta['num_classes']) > 0)
  fields.update(model_overrides)
  return model_lib.create_model(meta['model'], **fields)


def load_pretrained(path: str, model: str | None = None, source: str | None = None,
                    **model_overrides):
  """Loads pretrained weights and the module they fit.

  Args:
    path: a converted DIR, or (with `source`) a foreign weights file converted in memory.
    model: the variant (b0 … b8, l2, lite0 … lite4; a source's own name such as
      'tf_efficientnet_b0' works too). Required with `source`; for a DIR it is checked against
      the recorded model when given.
    source: None for a converted DIR, else the foreign format: 'timm', 'efficientnet_pytorch'
      or 'keras'.
    **model_overrides: `EfficientNet` fields such as dtype or remat (see `build_module`).

  Returns:
    (module, variables): `module.apply(variables, images, train=False)` gives logits for NHWC
    images normalised with the recorded preprocessing (`meta['preprocessing']`).

  Raises:
    ValueError: unknown source (the message lists the supported ones), a model mismatch, a file
      of the wrong format or shape mismatches.
    ImportError: a reader the format needs is missing (the message says what to install).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if source is not None:
    from efficientnet_jax.weights import converters  # pylint: disable=g-import-not-at-top
    if source not in converters.SOURCES:
      raise ValueError(f'Unknown source {source!r}; supported sources: '
                       f'{", ".join(converters.SOURCES)} (or None for a converted directory).')
    if not model:
      raise ValueError(f'load_pretrained(source={source!r}) needs model=, e.g. model="b0".')
    converted = converters.convert_file(source, model, path)
    meta, variables = converted.meta, converted.variables
  else:
    if os.path.isfile(path):
      raise ValueError(f'{path} is a file: pass source= (one of timm, efficientnet_pytorch, '
                       'keras) to convert it, or give a converted directory.')
    meta, variables = read_converted(path)
    check_model(meta, model)
  module = build_module(meta, **model_overrides)
  return module, jax.tree.map(jax.numpy.asarray, variables)


def check_model(meta: dict[str, Any], model: str | None) -> None:
  """Raises if `model` is given and is not the converted directory's model."""
  if model and model not in (meta['model'], meta.get('source_model')):
    raise ValueError(f'The converted weights are for model {meta["model"]!r}, not {model!r}; '
                     f'pass --model={meta["model"]} (model="{meta["model"]}").')

