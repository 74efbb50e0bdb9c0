"""Reads PyTorch state dicts (.pth/.pt/.bin via torch, .safetensors without torch) as numpy."""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import numpy as np

# Training checkpoints (timm's train script, many others) wrap the weights in a dict.
_WRAPPER_KEYS = ('state_dict', 'model', 'model_state_dict', 'net')
# Terminal colour codes, which torch puts in some messages.
_ANSI = re.compile(r'\x1b\[[0-9;]*m')


def load_state_dict(path: str, source: str) -> dict[str, np.ndarray]:
  """`load_state_dict_and_arch` without the architecture name."""
  return load_state_dict_and_arch(path, source)[0]


def load_state_dict_and_arch(path: str, source: str
                             ) -> tuple[dict[str, np.ndarray], str | None]:
  """Loads the tensors of a PyTorch state dict file, and the architecture it names, if any.

  Args:
    path: a `.safetensors` file, or anything `torch.load` reads (`.pth`, `.pt`, `.bin`).
    source: the converter's name, for error messages.

  Returns:
    (tensor name → float array, architecture): a `module.` prefix (DataParallel) is stripped and
    a training checkpoint's `state_dict` entry is unwrapped; the architecture is the string a
    training checkpoint stores under 'arch' (timm's train script does), else None.

  Raises:
    FileNotFoundError: no such file.
    ImportError: torch (or safetensors) is needed and missing; the message says what to install.
    ValueError: the file is not a state dict (one line).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No such weights file: {path}')
  kind = _sniff(path)
  if kind == 'safetensors':
    state = _load_safetensors(path, source)
  elif kind == 'torch':
    state = _load_torch(path, source)
  else:
    hint = ' It is an HDF5 file: use --source=keras.' if kind == 'hdf5' else ''
    raise ValueError(f'{path} is not a PyTorch state dict for --source={source}: expected a '
                     f'.pth/.bin (zip or pickle) or .safetensors file.{hint}')
  arch = state.get('arch') if isinstance(state, dict) else None
  return _clean(state, path, source), arch if isinstance(arch, str) else None


def _sniff(path: str) -> str | None:
  """The file's format from its first bytes (extensions lie): torch, safetensors or hdf5."""
  with open(path, 'rb') as f:
    head = f.read(9)
  if head.startswith(b'PK\x03\x04') or head.startswith(b'\x80'):  # torch zip / legacy pickle
    return 'torch'
  if len(head) == 9 and head[8:9] == b'{':  # u64 header length, then the JSON header.
    return 'safetensors'
  if head.startswith(b'\x89HDF'):
    return 'hdf5'
  return None


def _load_safetensors(path: str, source: str) -> dict[str, Any]:
  try:
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f'Reading {path} needs safetensors: pip install safetensors') from None
  try:
    return load_file(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{path} is not a readable safetensors file for --source={source} '
                     f'({_first_line(e)}); if it was cut short or damaged, download or copy it '
                     'again.') from None


def _load_torch(path: str, source: str) -> dict[str, Any]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f'Reading the PyTorch file {path} needs PyTorch: pip install torch '
                      '(or convert it to .safetensors elsewhere).') from None
  try:
    # weights_only: a weights file must not be able to run code when unpickled.
    return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    if 'Weights only load failed' not in str(e):
      raise ValueError(f'{path} is not a PyTorch state dict file for --source={source} '
                       f'(torch.load: {_first_line(e)}).') from None
    raise ValueError(
        f'{path} was refused before anything in it ran: unpickling it would {_refused_call(e)}, '
        'not just build tensors (torch.load with weights_only=True); if you trust where it came '
        'from, load it yourself (torch.load(..., weights_only=False)), save only its state dict '
        '(or as .safetensors) and convert that (docs/security.md).') from None
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{path} is not a PyTorch state dict file for --source={source} '
                     f'(torch.load: {_first_line(e)}).') from None


def _refused_call(error: Exception) -> str:
  """What torch's weights-only unpickler refused, from its message ('call io.open', …)."""
  text = _ANSI.sub('', str(error))
  match = re.search(r'Unsupported global: GLOBAL (\S+)', text)
  if match:
    return f'call {match.group(1)}'
  match = re.search(r'WeightsUnpickler error: ([^\n]+)', text)
  return f'do what torch refused ({match.group(1).strip()[:150]})' if match else 'run code'


def _clean(state: Any, path: str, source: str) -> dict[str, np.ndarray]:
  if isinstance(state, dict):
    for key in _WRAPPER_KEYS:
      if isinstance(state.get(key), dict):
        state = state[key]
        break
  if not isinstance(state, dict) or not state:
    raise ValueError(f'{path} holds a {type(state).__name__}, not a state dict (name → tensor) '
                     f'as --source={source} expects.')
  arrays = {}
  for name, value in state.items():
    if not hasattr(value, 'shape'):
      raise ValueError(f'{path} entry {name!r} is a {type(value).__name__}, not a tensor; '
                       f'expected a {source} state dict.')
    if hasattr(value, 'detach'):  # A torch tensor (bfloat16 has no numpy dtype: go via float32).
      value = value.detach().cpu().float().numpy() if value.is_floating_point() else (
          value.detach().cpu().numpy())
    name = name[len('module.'):] if name.startswith('module.') else name
    arrays[name] = np.asarray(value)
  return arrays


def _first_line(error: Exception) -> str:
  text = _ANSI.sub('', str(error)).strip() or type(error).__name__
  return text.splitlines()[0][:200]
