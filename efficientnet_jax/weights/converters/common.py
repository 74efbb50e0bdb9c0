"""What every weight converter shares: layout transforms, the shape check and the metadata.

A converter turns a foreign file into `Mapped`: our variable path → (the foreign tensor's name,
the array already in our layout). `assemble` then checks it against the variables our model
declares, all of them and only them, and builds `{'params', 'batch_stats'}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np

from efficientnet_jax.input import normalization
from efficientnet_jax.models import scaling

# Our variable path, e.g. ('params', 'blocks_3', 'se', 'reduce', 'kernel').
Path = tuple[str, ...]
# Path → (foreign tensor name, array in our layout).
Mapped = dict[Path, tuple[str, np.ndarray]]

# The eval centre crop of the published EfficientNet numbers (docs/reference.md §5).
DEFAULT_CROP_PADDING = 32

# TF / Flax / Keras BatchNorm epsilon; timm's PyTorch-trained models use PyTorch's 1e-5.
TF_BN_EPSILON = 1e-3
TORCH_BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class Target:
  """What a foreign file converts into.

  Attributes:
    model: our variant name (b0 … b8, l2, lite0 … lite4).
    source: the converter ('timm', 'efficientnet_pytorch', 'keras').
    source_model: the foreign library's own name for the architecture, for the record.
    padding: 'same' (TF-SAME) or 'symmetric' (k//2 per side).
    bn_epsilon: the epsilon the weights were trained with.
  """
  model: str
  source: str
  source_model: str
  padding: str = 'same'
  bn_epsilon: float = TF_BN_EPSILON


@dataclasses.dataclass
class Converted:
  """A conversion result: our variables plus everything `meta.json` records."""
  variables: dict[str, Any]
  meta: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Layout transforms (foreign layout → ours).


def torch_conv(w: np.ndarray) -> np.ndarray:
  """PyTorch conv OIHW → HWIO; a depthwise (C, 1, k, k) becomes (k, k, 1, C), as Flax wants."""
  return np.transpose(w, (2, 3, 1, 0)) if w.ndim == 4 else w


def torch_linear(w: np.ndarray) -> np.ndarray:
  """PyTorch Linear (out, in) → Dense (in, out)."""
  return w.T if w.ndim == 2 else w


def torch_conv1x1_as_dense(w: np.ndarray) -> np.ndarray:
  """A 1×1 conv (out, in, 1, 1) → Dense (in, out): our SE layers are Dense on the pooled vector."""
  if w.ndim == 4 and w.shape[2:] == (1, 1):
    return w[:, :, 0, 0].T
  return w  # Left as is, so the shape check reports it.


def keras_depthwise(w: np.ndarray) -> np.ndarray:
  """Keras depthwise (k, k, C, 1) → Flax grouped conv (k, k, 1, C)."""
  return np.transpose(w, (0, 1, 3, 2)) if w.ndim == 4 else w


def keras_conv1x1_as_dense(w: np.ndarray) -> np.ndarray:
  """Keras 1×1 conv (1, 1, in, out) → Dense (in, out)."""
  if w.ndim == 4 and w.shape[:2] == (1, 1):
    return w[0, 0]
  return w


_TORCH_BN_LEAVES = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
                    'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}


def add_torch_tensor(mapped: Mapped, module: Path, kind: str, name: str, leaf: str,
                     array: np.ndarray, source: str) -> None:
  """Maps one PyTorch tensor of a layer of `kind` ('conv', 'bn', 'linear' or 'se' = a 1×1 conv
  that is Dense here) at our `module` path; `leaf` is the PyTorch parameter name."""
  if kind == 'bn' and leaf in _TORCH_BN_LEAVES:
    collection, ours = _TORCH_BN_LEAVES[leaf]
    mapped[(collection, *module, ours)] = (name, array)
  elif kind == 'conv' and leaf == 'weight':  # Our convolutions have no bias (BN follows).
    mapped[('params', *module, 'kernel')] = (name, torch_conv(array))
  elif kind in ('linear', 'se') and leaf in ('weight', 'bias'):
    transform = torch_linear if kind == 'linear' else torch_conv1x1_as_dense
    mapped[('params', *module, 'kernel' if leaf == 'weight' else 'bias')] = (
        name, transform(array) if leaf == 'weight' else array)
  else:
    raise ValueError(f'Unexpected tensor {name!r} in a {source} EfficientNet state dict.')


def reject_unknown_tensor(name: str, names: Iterable[str], source: str) -> None:
  """Raises the error for a tensor `source` does not know, naming the right source if clear."""
  guess = guess_source(names)
  if guess and guess != source:
    raise ValueError(f'Tensor {name!r} is not {source} EfficientNet naming; this looks like a '
                     f'{guess} state dict: use --source={guess}.')
  raise ValueError(f'Unexpected tensor {name!r} in a {source} EfficientNet state dict.')


# ---------------------------------------------------------------------------------------------
# The shape check.

_TOP_ORDER = ('stem_conv', 'stem_bn', 'blocks', 'head_conv', 'head_bn', 'classifier')
_BLOCK_ORDER = ('expand_conv', 'expand_bn', 'depthwise_conv', 'depthwise_bn', 'se',
                'project_conv', 'project_bn')


def _network_order(path: Path):
  """Sort key putting variables in the order the network runs them (errors name the first)."""
  collection, module, *rest = path
  if module.startswith('blocks_'):
    top = (_TOP_ORDER.index('blocks'), int(module[len('blocks_'):]))
  else:
    top = (_TOP_ORDER.index(module) if module in _TOP_ORDER else len(_TOP_ORDER), 0)
  inner = _BLOCK_ORDER.index(rest[0]) if rest[0] in _BLOCK_ORDER else -1
  return top, inner, tuple(rest), collection


def _flatten(tree: dict[str, Any], prefix: Path = ()) -> dict[Path, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) or hasattr(value, 'items'):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def _unflatten(flat: dict[Path, Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def expected_shapes(model) -> dict[Path, tuple[int, ...]]:
  """The shape of every variable `model` declares, in network order (traced, not computed)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  # Variable shapes do not depend on the input size; 32 px keeps the trace cheap.
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  flat = {p: tuple(v.shape) for p, v in _flatten(shapes).items()}
  return dict(sorted(flat.items(), key=lambda item: _network_order(item[0])))


def _show(path: Path) -> str:
  return '/'.join(path[1:]) if path[0] == 'params' else '/'.join(path)


def assemble(mapped: Mapped, model, target: Target) -> dict[str, Any]:
  """Checks `mapped` against every variable of `model` and returns `{'params', 'batch_stats'}`.

  Args:
    mapped: the converted tensors.
    model: the `EfficientNet` module the weights are for.
    target: names used in error messages.

  Returns:
    Nested dicts of float32 numpy arrays.

  Raises:
    ValueError: one line naming the first (in network order) variable whose shape differs, else
      the first variable the file lacks, else the first tensor the model has no place for.
  """
  expected = expected_shapes(model)
  label = f'{target.source} {target.source_model}'
  hint = 'are these weights for another variant?'
  for path, want in expected.items():
    if path in mapped and tuple(mapped[path][1].shape) != want:
      source_name, array = mapped[path]
      raise ValueError(
          f'Shape mismatch at layer {_show(path)} ({label} tensor {source_name!r}): the file has '
          f'{tuple(array.shape)}, model {target.model!r} expects {want}; {hint}')
  for path, want in expected.items():
    if path not in mapped:
      raise ValueError(f'The {label} weights lack layer {_show(path)} (model {target.model!r} '
                       f'expects shape {want}); {hint}')
  extra = sorted((p for p in mapped if p not in expected), key=_network_order)
  if extra:
    source_name, array = mapped[extra[0]]
    raise ValueError(
        f'The {label} weights hold {len(extra)} tensor(s) model {target.model!r} has no place '
        f'for, the first {source_name!r} with shape {tuple(array.shape)}; {hint}')
  return _unflatten({p: np.asarray(mapped[p][1], np.float32) for p in expected})


# ---------------------------------------------------------------------------------------------
# Metadata.


def default_preprocessing(model: str, *, mean=None, std=None,
                          interpolation: str | None = None) -> dict[str, Any]:
  """The eval preprocessing of TF-origin weights: native resolution, crop_padding 32.

  Lite weights expect `(x − 127) / 128` and bilinear resizing; the others ImageNet mean/std and
  bicubic. Arguments given override those defaults (e.g. Keras files carry their own mean/std).
  """
  variant = scaling.get_variant(model)
  lite = variant.lite
  default_mean, default_std = normalization.NORMALIZATIONS['lite' if lite else 'imagenet']
  return {
      'mean': [float(v) for v in (mean if mean is not None else default_mean)],
      'std': [float(v) for v in (std if std is not None else default_std)],
      'crop_padding': DEFAULT_CROP_PADDING,
      'interpolation': interpolation or ('bilinear' if lite else 'bicubic'),
      'resolution': variant.resolution,
  }


def make_meta(target: Target, num_classes: int, preprocessing: dict[str, Any]) -> dict[str, Any]:
  """Everything `meta.json` records about a conversion except the format version."""
  return {
      'model': target.model,
      'source': target.source,
      'source_model': target.source_model,
      'num_classes': int(num_classes),
      'padding': target.padding,
      'bn_epsilon': float(target.bn_epsilon),
      'preprocessing': preprocessing,
  }


def finish(mapped: Mapped, target: Target,
           preprocessing: dict[str, Any] | None = None) -> Converted:
  """Checks and assembles `mapped` into a `Converted` (classes from the classifier, 0 if none).

  Args:
    mapped: every tensor of the file, in our layout.
    target: the model and source conventions.
    preprocessing: what meta.json records; default: `default_preprocessing(target.model)`.
  """
  classifier = mapped.get(('params', 'classifier', 'bias'))
  num_classes = int(classifier[1].shape[0]) if classifier else 0
  variables = assemble(mapped, model_for(target, num_classes), target)
  if preprocessing is None:
    preprocessing = default_preprocessing(target.model)
  return Converted(variables, make_meta(target, num_classes, preprocessing))


def model_for(target: Target, num_classes: int):
  """Our module for `target` (num_classes 0 means a file without classifier: include_top=False)."""
  # pylint: disable-next=g-import-not-at-top  (the model loads JAX: only when needed)
  from efficientnet_jax.models import efficientnet as model_lib
  return model_lib.create_model(target.model, num_classes=max(num_classes, 1),
                                include_top=num_classes > 0, padding=target.padding,
                                bn_epsilon=target.bn_epsilon)


def guess_source(names: Iterable[str]) -> str | None:
  """Which converter a set of PyTorch tensor names belongs to, if recognisable."""
  names = set(names)
  if '_conv_stem.weight' in names:
    return 'efficientnet_pytorch'
  if 'conv_stem.weight' in names:
    return 'timm'
  return None


def check_variant_name(model: str) -> None:
  """Raises the one-line unknown-model error (listing valid names) for a bad `model`."""
  scaling.get_variant(model)
