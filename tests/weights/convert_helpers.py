"""Shared by the converter tests: randomised reference models and the logits comparison."""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-4  # max|ours − reference| / max|reference|, float32, eval mode.


def randomize_torch_batchnorm(model, seed: int = 0) -> None:
  """Random running statistics and affine parameters in every BatchNorm of a torch model.

  Fresh BN layers are the identity (mean 0, var 1, γ 1, β 0), under which a swapped mean/var or
  scale/bias mapping would go unnoticed. The ranges are moderate on purpose: γ above 1 on every
  layer makes the residual stream of B6+ grow until float32 itself loses 1e-4 (PyTorch float32
  against float64 then differs by up to 30%), which would test the arithmetic, not the mapping.
  """
  import torch  # pylint: disable=g-import-not-at-top
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      # pylint: disable-next=protected-access
      if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        n = module.num_features
        module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
        module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
        module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
        module.bias.copy_(torch.randn(n, generator=generator) * 0.2)


def randomize_keras_batchnorm(model, seed: int = 0) -> None:
  """As `randomize_torch_batchnorm`, for a Keras model."""
  import keras  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      n = layer.gamma.shape[0]
      layer.set_weights([rng.rand(n) * 0.5 + 0.5, rng.randn(n) * 0.2, rng.randn(n) * 0.2,
                         rng.rand(n) + 0.5])


def torch_state_dict(model) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def torch_logits(model, images_nhwc: np.ndarray) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    return model.eval()(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def random_images(size: int, batch: int = 2, seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randn(batch, size, size, 3).astype(np.float32)


def relative_error(ours, reference) -> float:
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  assert ours.shape == reference.shape, (ours.shape, reference.shape)
  return float(np.abs(ours - reference).max() / np.abs(reference).max())


def logits(module, variables, images: np.ndarray) -> np.ndarray:
  """`module`'s eval-mode logits, as one jitted program.

  Compiling the whole forward pass once costs a third of running it op by op (each op compiled
  on its own). The jitted function is kept per architecture, and the persistent compilation
  cache (conftest.py) shares the program between test processes: the TF-ported B0 of timm,
  efficientnet_pytorch, Keras and the converted-directory round trip are one program.
  """
  key = repr(module)  # All of the module's fields.
  if key not in _JITTED:
    import jax  # pylint: disable=g-import-not-at-top
    # Variables are an argument, not a closure: captured arrays would be baked into the program.
    _JITTED[key] = jax.jit(lambda v, x: module.apply(v, x, train=False))
  return np.asarray(_JITTED[key](variables, images))


_JITTED = {}


def apply_converted(converted, images: np.ndarray) -> np.ndarray:
  """Logits of our model built from a conversion's metadata (padding, classes, BN epsilon)."""
  from efficientnet_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
  return logits(pretrained.build_module(converted.meta), converted.variables, images)
