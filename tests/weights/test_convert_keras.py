"""Converted keras.applications weight files: the Keras model's logits, or its structure.

Logits (numerically, B0): the Keras model is built with weights=None, its BN statistics and input
Normalization randomised, saved as a Keras 3 `.weights.h5`, a `.keras` archive and a legacy `.h5`
(full-model `model.save`, plus Keras 3's legacy weights-only writer), and reloaded by Keras
itself, so the reference is what Keras computes for that file. It takes raw 0..255 pixels (its
Rescaling/Normalization layers normalise them); ours takes `(pixels − mean) / std` with the
mean/std the converter recorded. This runs every per-layer rule of the converter (the Keras 3 and
legacy readers, BN leaves, depthwise and SE kernels) and the normalisation it records.

Structure (`structure_check.py`), B1–B7: the layout (blocks per stage, widths) is all that
differs between variants, and the converter's mapping must match it exactly: the variables our
model's `init` declares, names and shapes, each holding the weight of the Keras layer in the same
place of the network, in our layout, every Keras weight used once. The Keras models are Keras's
own, built in a `StatelessScope` (their layers, weight names and shapes without initialising a
66M-parameter model), with fabricated values in the layer → weights form the file readers
return; reading files is variant-independent and checked on B0's files above.
"""

import os

import numpy as np
import pytest

import structure_check
from convert_helpers import TOLERANCE, apply_converted, randomize_keras_batchnorm, relative_error
from efficientnet_jax.weights.converters import keras as keras_converter

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
keras = pytest.importorskip('keras')
# Keras's TF backend trips numpy 2's __array__(copy=) deprecation on every call.
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning')

SIZE = 64


def build_keras_files(variant: str, directory, *, legacy: bool = False, seed: int = 0):
  """Saves a randomised Keras EfficientNet{variant}; returns (files, model)."""
  keras.utils.set_random_seed(seed)
  model = getattr(keras.applications, f'EfficientNet{variant.upper()}')(
      weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
  randomize_keras_batchnorm(model, seed)
  normalization = next(layer for layer in model.layers
                       if isinstance(layer, keras.layers.Normalization))
  count = normalization.get_weights()[2]
  normalization.set_weights([np.array([0.40, 0.50, 0.60]), np.array([0.05, 0.06, 0.07]), count])
  files = {'keras3': str(directory / f'{variant}.weights.h5')}
  model.save_weights(files['keras3'])
  # Keras applies a Normalization's weights only once loaded (finalize_state): reload them, so
  # the reference computes exactly what the file says.
  model.load_weights(files['keras3'])
  if legacy:
    files['keras_archive'] = str(directory / f'{variant}.keras')
    model.save(files['keras_archive'])
    files['legacy_full_model'] = str(directory / f'{variant}_model.h5')
    model.save(files['legacy_full_model'])  # Keras 3 still writes the legacy HDF5 model format.
    try:
      import h5py  # pylint: disable=g-import-not-at-top
      from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
      files['legacy_weights'] = str(directory / f'{variant}_weights.h5')
      with h5py.File(files['legacy_weights'], 'w') as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    except ImportError:
      files.pop('legacy_weights', None)  # Keras-private writer gone: the full-model file remains.
  return files, model


def keras_logits(model, seed: int = 0):
  """(raw pixels, the Keras model's logits for them)."""
  pixels = np.random.RandomState(seed).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
  return pixels, np.asarray(model(pixels, training=False))


def check_keras_file(path: str, variant: str, pixels, reference) -> float:
  converted = keras_converter.convert(path, variant)
  preprocessing = converted.meta['preprocessing']
  images = (pixels - np.float32(preprocessing['mean'])) / np.float32(preprocessing['std'])
  error = relative_error(apply_converted(converted, images.astype(np.float32)), reference)
  print(f'keras {os.path.basename(path)}: relative error {error:.2e}')  # Shown with pytest -s.
  assert error < TOLERANCE, f'{path}: relative error {error:.2e}'
  return error


@pytest.fixture(scope='module')
def keras_b0(tmp_path_factory):
  """(files, pixels, the Keras model's logits)."""
  files, model = build_keras_files('b0', tmp_path_factory.mktemp('keras_b0'), legacy=True)
  return (files, *keras_logits(model))


def test_keras_b0_all_file_formats_match(keras_b0):
  files, pixels, reference = keras_b0
  assert {'keras3', 'keras_archive', 'legacy_full_model'} <= set(files)
  for path in files.values():
    check_keras_file(path, 'b0', pixels, reference)


def test_keras_b0_records_normalization_as_mean_std(keras_b0):
  files, _, _ = keras_b0
  meta = keras_converter.convert(files['keras3'], 'EfficientNetB0').meta
  np.testing.assert_allclose(meta['preprocessing']['mean'], [102.0, 127.5, 153.0], rtol=1e-6)
  np.testing.assert_allclose(meta['preprocessing']['std'],
                             255 * np.sqrt([0.05, 0.06, 0.07]), rtol=1e-6)
  assert (meta['model'], meta['padding'], meta['num_classes']) == ('b0', 'same', 1000)


def stateless_keras_layers(variant: str):
  """(the reference of Keras's EfficientNet{variant}, what `read_weights` returns for a file of it).

  The model is built in a `StatelessScope` with initialize_variables=False: its variables get
  their names and shapes but are never initialised (not even on leaving the scope), which is all
  the structural check needs; their values are `fabricated`.
  """
  with keras.StatelessScope(initialize_variables=False):
    model = getattr(keras.applications, f'EfficientNet{variant.upper()}')(
        weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
  reference = structure_check.keras_reference(model)
  layers = {layer: dict(weights) for layer, weights in reference.layers}  # layer → {weight → array}
  normalization = next(layer for layer in model.layers
                       if isinstance(layer, keras.layers.Normalization))
  layers[normalization.name] = {'mean': np.zeros(3), 'variance': np.ones(3), 'count': np.zeros(())}
  return reference, layers


@pytest.fixture(scope='module')
def keras_b1():
  """B1's reference and layers: its structure test and the wrong-variant error share them."""
  return stateless_keras_layers('b1')


@pytest.mark.parametrize('variant', ['b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7'])
def test_keras_variant_structure(variant, keras_b1):
  reference, layers = keras_b1 if variant == 'b1' else stateless_keras_layers(variant)
  mapped, _ = keras_converter.map_layers(layers)
  assert keras_converter.resolve_target(f'EfficientNet{variant.upper()}').model == variant
  structure_check.check_mapping(mapped, variant, reference)


def test_keras_imagenet_normalization_quirk():
  """Keras's ImageNet files hold the std as the variance; the model it builds for them adds
  Rescaling(1/sqrt(std)). The recorded mean/std must reproduce that whole chain."""
  imagenet_mean, imagenet_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
  chain = keras.Sequential([
      keras.Input((4, 4, 3)),
      keras.layers.Rescaling(1.0 / 255.0),
      keras.layers.Normalization(mean=imagenet_mean, variance=imagenet_std),
      keras.layers.Rescaling([1.0 / np.sqrt(s) for s in imagenet_std]),
  ])
  pixels = np.random.RandomState(0).uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
  mean, std = keras_converter.preprocessing_from_normalization(np.array(imagenet_mean),
                                                               np.array(imagenet_std))
  np.testing.assert_allclose((pixels - np.float32(mean)) / np.float32(std),
                             np.asarray(chain(pixels)), rtol=1e-5, atol=1e-5)
  # The net effect is the usual ImageNet normalisation.
  np.testing.assert_allclose(std, 255 * np.array(imagenet_std), rtol=1e-6)


def test_keras_b1_weights_into_b0_names_layer_and_shapes(keras_b1):
  _, layers = keras_b1
  with pytest.raises(ValueError) as error:
    keras_converter.convert_layers(layers, keras_converter.resolve_target('b0'))
  message = str(error.value)
  assert '\n' not in message
  assert 'blocks_1/depthwise_conv/kernel' in message and 'block1b_dwconv' in message
  assert '(3, 3, 1, 16)' in message and '(3, 3, 1, 96)' in message
