"""The structural check of a conversion: every reference tensor lands where it belongs.

A converter's per-layer rules (which foreign tensor is a BN scale, how a kernel is transposed)
are the same for every variant; the logits comparisons of representative models check them. What
differs between variants is the network's layout: how many blocks each stage has (B6+ pass 10
blocks in a stage, where a block numbering sorted as text would go wrong), their widths, the Lite
stages left unscaled, L2's size. For a variant, `check_mapping` compares a converter's mapping
(`Mapped`: our variable path → (reference tensor name, array in our layout)) with

* our model: exactly the variables, names and shapes, that its `init` declares (traced with
  `jax.eval_shape`: nothing computed or compiled);
* the reference model: its parameter-owning layers in the order its network runs them, paired
  one to one with ours in the order our forward pass calls them. Each of our variables must hold
  the tensor of its paired reference layer, by name (so every reference tensor is used exactly
  once) and by value in our layout (the transposition is derived here from the two shapes'
  ranks, not taken from the converter).

Two same-shaped blocks swapped, a BN mean taken for its variance, a kernel transposed wrongly, a
tensor used twice, a block dropped: each fails (`test_convert.py::test_structure_check_catches`).

The reference tensors' values need not be the library's initialisation, only distinct:
`fabricated` makes them for a reference model built on torch's 'meta' device or inside a Keras
`StatelessScope`, whose names, shapes and layer order are the library's own but which holds no
memory and runs no initialiser, so even L2's 480M parameters cost nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

Path = tuple[str, ...]

# Distinct per-axis steps (in elements) of `fabricated` arrays: swapping two axes longer than 1
# moves values.
_AXIS_STEPS = (1, 3, 7, 13)


def fabricated(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
  """A float32 array of `shape` whose values identify it and each position's axes.

  Element (i0, …, ik) is buffer[Σ i_a · step_a], the buffer drawn from `rng` and the steps
  distinct per axis: a read-only strided view of a few thousand floats, so the largest tensor
  costs no memory, yet another tensor, or this one transposed, does not compare equal.
  """
  steps = _AXIS_STEPS[:len(shape)][::-1]
  buffer = rng.standard_normal(1 + sum((n - 1) * s for n, s in zip(shape, steps)),
                               dtype=np.float32)
  return np.lib.stride_tricks.as_strided(
      buffer, shape, tuple(s * buffer.itemsize for s in steps), writeable=False)


# ---------------------------------------------------------------------------------------------
# Our model.


@functools.lru_cache(maxsize=None)
def our_layers(variant: str) -> tuple[tuple[Path, dict[str, tuple[str, tuple[int, ...]]]], ...]:
  """Our layers of `variant` in the order its forward pass calls them.

  Returns:
    ((module path, {leaf: (collection, shape)}), …) for every module owning variables. Traced
    with `jax.eval_shape` of `init`; the grouped-convolution depthwise form traces in half the
    time of the CPU default and declares the same variables. Padding, BN epsilon and the compute
    path do not change the variables, so one trace serves every source of a variant.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from efficientnet_jax.models import efficientnet  # pylint: disable=g-import-not-at-top
  model = efficientnet.create_model(variant, depthwise_impl='conv')
  call_order: dict[Path, int] = {}

  def record(next_fun, args, kwargs, context):
    if context.method_name == '__call__':
      call_order.setdefault(tuple(context.module.path), len(call_order))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  modules: dict[Path, dict[str, tuple[str, tuple[int, ...]]]] = {}
  for (collection, *module, leaf), value in flatten(shapes).items():
    modules.setdefault(tuple(module), {})[leaf] = (collection, tuple(value.shape))
  uncalled = [m for m in modules if m not in call_order]
  assert not uncalled, f'variables of modules never called: {uncalled}'
  return tuple(sorted(modules.items(), key=lambda item: call_order[item[0]]))


def flatten(tree: Any, prefix: Path = ()) -> dict[Path, Any]:
  if not hasattr(tree, 'items'):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(flatten(value, prefix + (key,)))
  return flat


# ---------------------------------------------------------------------------------------------
# Reference models.


@dataclasses.dataclass
class Reference:
  """A reference model's parameter-owning layers, in its forward order, and its conventions.

  Attributes:
    layers: [(layer name, {tensor leaf name: array in the reference's layout})].
    separator: between layer and leaf in the converter's tensor names ('.' torch, '/' Keras).
    leaf_names: our module's leaves → {our leaf: the reference's leaf name}.
    to_ours: (reference array, our shape) → the array in our layout.
  """
  layers: list[tuple[str, dict[str, np.ndarray]]]
  separator: str
  leaf_names: Callable[[Any], dict[str, str]]
  to_ours: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]

  def tensors(self) -> dict[str, np.ndarray]:
    """Full tensor name → array: a torch state dict, or Keras `layer/variable` names."""
    return {f'{layer}{self.separator}{leaf}': array
            for layer, tensors in self.layers for leaf, array in tensors.items()}


_TORCH_LEAVES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
                 'var': 'running_var'}
_KERAS_BN_LEAVES = {'scale': 'gamma', 'bias': 'beta', 'mean': 'moving_mean',
                    'var': 'moving_variance'}


def torch_to_ours(array: np.ndarray, our_shape: tuple[int, ...]) -> np.ndarray:
  """Conv OIHW → HWIO (a depthwise (C, 1, k, k) becomes (k, k, 1, C) alike), a 1×1 conv that is
  a Dense here (SE) → (in, out), Linear (out, in) → (in, out), vectors as they are."""
  if array.ndim == 4 and len(our_shape) == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 4 and len(our_shape) == 2:
    return array[:, :, 0, 0].T
  if array.ndim == 2:
    return array.T
  return array


def keras_to_ours(array: np.ndarray, our_shape: tuple[int, ...]) -> np.ndarray:
  """Conv HWIO as it is, depthwise (k, k, C, 1) → (k, k, 1, C) (our depthwise kernels, and only
  they, have one input feature), a 1×1 conv that is a Dense here (SE) → (in, out)."""
  if array.ndim == 4 and len(our_shape) == 4:
    return array.transpose(0, 1, 3, 2) if our_shape[2] == 1 else array
  if array.ndim == 4 and len(our_shape) == 2:
    return array[0, 0]
  return array


def torch_layers_in_forward_order(model, size: int = 64) -> list[str]:
  """The names of a torch model's parameter-owning layers in the order its forward pass calls
  them (run on the model's device: on 'meta' it computes nothing)."""
  import torch  # pylint: disable=g-import-not-at-top
  owners = {name: module for name, module in model.named_modules() if _owns_tensors(module)}
  order: list[str] = []

  def hook(name):
    return lambda *_: None if name in order else order.append(name)

  hooks = [module.register_forward_pre_hook(hook(name)) for name, module in owners.items()]
  try:
    with torch.no_grad():
      model.eval()(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
  finally:
    for handle in hooks:
      handle.remove()
  return order


def _owns_tensors(module) -> bool:
  return (any(True for _ in module.parameters(recurse=False))
          or any(True for _ in module.buffers(recurse=False)))


def torch_reference(model) -> Reference:
  """A torch model's parameter-owning layers, in registration order, with `fabricated` tensors.

  The model may live on the 'meta' device (no memory, no initialisation). Registration order is
  the forward order for these networks (their blocks are `nn.Sequential` / `nn.ModuleList`,
  their layers created in the order they run); `test_convert.py` checks it by running B0 and
  Lite0. BN counters (`num_batches_tracked`, which converters drop) are left out.
  """
  rng = np.random.default_rng(0)
  layers = []
  for name, module in model.named_modules():
    if _owns_tensors(module):
      tensors = dict(module.named_parameters(recurse=False))
      tensors.update(module.named_buffers(recurse=False))
      layers.append((name, {leaf: fabricated(tuple(t.shape), rng)
                            for leaf, t in tensors.items() if leaf != 'num_batches_tracked'}))
  return Reference(layers, '.', lambda leaves: {leaf: _TORCH_LEAVES[leaf] for leaf in leaves},
                   torch_to_ours)


def state_dict_of(model, reference: Reference) -> dict[str, np.ndarray]:
  """What a saved state dict of the torch `model` holds, in its order, with `reference`'s
  tensors (BN counters: 0, as a fresh model's)."""
  tensors = reference.tensors()
  state = {name: tensors.get(name, np.zeros((), np.int64)) for name in model.state_dict()}
  assert set(tensors) <= set(state), sorted(set(tensors) - set(state))[:5]
  return state


def keras_reference(model) -> Reference:
  """A Keras model's weight-owning layers in graph order, with `fabricated` values (the model
  may come from a `StatelessScope`: its variables then have names and shapes but no value).

  The input Normalization layer is left out: its statistics become the recorded preprocessing,
  which the Keras B0 tests check.
  """
  import keras  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  layers = [(layer.name, {v.name: fabricated(tuple(v.shape), rng) for v in layer.weights})
            for layer in model.layers
            if layer.weights and not isinstance(layer, keras.layers.Normalization)]

  def leaf_names(leaves):
    return dict(_KERAS_BN_LEAVES) if 'scale' in leaves else {leaf: leaf for leaf in leaves}

  return Reference(layers, '/', leaf_names, keras_to_ours)


# ---------------------------------------------------------------------------------------------
# The check.


def check_mapping(mapped: dict[Path, tuple[str, np.ndarray]], variant: str,
                  reference: Reference) -> None:
  """Asserts that `mapped` is `reference` laid out as our `variant`'s variables (module doc)."""
  ours = our_layers(variant)
  want = {(collection, *module, leaf): shape
          for module, leaves in ours for leaf, (collection, shape) in leaves.items()}
  missing, extra = sorted(set(want) - set(mapped)), sorted(set(mapped) - set(want))
  assert not missing and not extra, f'missing {missing[:5]}, unexpected {extra[:5]}'
  wrong_shapes = [(path, tuple(mapped[path][1].shape), shape) for path, shape in want.items()
                  if tuple(mapped[path][1].shape) != shape]
  assert not wrong_shapes, f'(path, converted, declared) shapes: {wrong_shapes[:5]}'

  assert len(reference.layers) == len(ours), (
      f'the reference has {len(reference.layers)} layers with tensors, our model {len(ours)}')
  expected_sources = []
  for (layer, tensors), (module, leaves) in zip(reference.layers, ours):
    names = reference.leaf_names(leaves)
    assert sorted(names.values()) == sorted(tensors), (
        f'reference layer {layer!r} holds {sorted(tensors)}; our {"/".join(module)} takes '
        f'{sorted(names.values())}')
    for leaf, (collection, shape) in leaves.items():
      path = (collection, *module, leaf)
      source = f'{layer}{reference.separator}{names[leaf]}'
      expected_sources.append(source)
      assert mapped[path][0] == source, (
          f'{"/".join(path)} holds {mapped[path][0]!r}, the reference has {source!r} there')
      assert np.array_equal(mapped[path][1], reference.to_ours(tensors[names[leaf]], shape)), (
          f'{"/".join(path)} is not {source} in our layout')
  # Every reference tensor used, once.
  assert sorted(expected_sources) == sorted(reference.tensors())
