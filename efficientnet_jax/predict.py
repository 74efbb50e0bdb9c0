"""Top-5 ImageNet classes for images, with converted weights and their own preprocessing.

  python -m efficientnet_jax.predict --model=b0 --weights=weights/b0 cat.jpg dog.png
  python -m efficientnet_jax.predict --model=b0 --weights=weights/b0 --json cat.jpg
  → [{"image": "cat.jpg", "top5": [{"class_id": 281, "name": "tabby, tabby cat", "prob": 0.71},
     ...]}]

Each image gets the eval preprocessing recorded in DIR/meta.json (resolution, centre-crop
padding, interpolation, mean/std). A file that is not an image (JPEG/PNG/BMP/GIF) is a one-line
error naming it, and so is one whose header declares more than `--max_image_pixels` pixels
(default `image_header.MAX_IMAGE_PIXELS`, 89,478,485): a decompression bomb is refused before it
is decoded (docs/security.md).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

from absl import app
from absl import flags

from efficientnet_jax import cli
from efficientnet_jax.input import image_header

FLAGS = flags.FLAGS

TOP_K = 5
_CLASS_FILE = os.path.join(os.path.dirname(__file__), 'data', 'imagenet_classes.txt')


def class_names(num_classes: int) -> list[str]:
  """ImageNet class names for 1000-class weights, else 'class_<i>'."""
  if num_classes == 1000:
    with open(_CLASS_FILE) as f:
      names = [line.rstrip('\n') for line in f]
    if len(names) == 1000:
      return names
  return [f'class_{i}' for i in range(num_classes)]


def check_images(paths: Sequence[str], max_pixels: int = image_header.MAX_IMAGE_PIXELS) -> None:
  """Refuses, naming it, the first file that is not an image or declares over `max_pixels` pixels.

  Reads headers only (no TensorFlow, nothing decoded), so that a decompression bomb fails in a
  moment with one line instead of exhausting memory.

  Raises:
    FileNotFoundError: a path that is not a file.
    ValueError: not a JPEG/PNG/BMP/GIF image, or more pixels than `max_pixels` (the message says
      how to raise the limit).
  """
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f'No such image file: {path}')
    try:
      image_header.check(path, max_pixels)
    except image_header.ImageTooLargeError as e:
      raise image_header.ImageTooLargeError(
          f'{path} {e}; if you trust the file, raise --max_image_pixels.') from None
    except ValueError as e:
      raise ValueError(f'{path} is not a readable image (JPEG, PNG, BMP or GIF): {e}') from None


def load_images(paths: Sequence[str], preprocessing: dict[str, Any]):
  """Decodes and preprocesses every image (fails on the first unreadable one, naming it).

  Decodes whatever size a file declares: `check_images` first.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top  (TensorFlow: only the input part imports it)
  from efficientnet_jax.input import preprocessing as preprocessing_lib
  return np.stack([preprocessing_lib.eval_image_file(
      path, int(preprocessing['resolution']), crop_padding=int(preprocessing['crop_padding']),
      interpolation=preprocessing['interpolation'], mean=preprocessing['mean'],
      std=preprocessing['std']) for path in paths])


def top_k(module, variables, images, batch_size: int, k: int = TOP_K):
  """(probabilities, class ids), each [N, k], best first."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  # Variables are an argument, not a closure: captured arrays would be baked into the program.
  @jax.jit
  def predict(model_variables, batch):
    probs = jax.nn.softmax(module.apply(model_variables, batch, train=False), axis=-1)
    return jax.lax.top_k(probs, k)

  probs, ids = [], []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    # Pad the last batch to the same size: one compilation for any number of images.
    pad = min(batch_size, len(images)) - len(batch)
    padded = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
    p, i = predict(variables, padded)
    probs.append(np.asarray(p)[:len(batch)])
    ids.append(np.asarray(i)[:len(batch)])
  return np.concatenate(probs), np.concatenate(ids)


def predict_files(model: str, weights: str, paths: Sequence[str], batch_size: int = 16,
                  max_pixels: int = image_header.MAX_IMAGE_PIXELS) -> list[dict[str, Any]]:
  """Top-5 predictions per image: `[{"image", "top5": [{"class_id", "name", "prob"}]}]`.

  Args:
    model: the variant the weights are for.
    weights: a converted weights directory.
    paths: JPEG/PNG/BMP/GIF files.
    batch_size: images per forward pass.
    max_pixels: the most pixels an image may declare (`check_images`).
  """
  from efficientnet_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
  meta = pretrained.read_meta(os.path.abspath(weights))
  pretrained.check_model(meta, model)
  if int(meta['num_classes']) <= 0:
    raise ValueError(f'{weights} holds a model without classifier; it cannot predict classes.')
  check_images(paths, max_pixels)
  images = load_images(paths, meta['preprocessing'])
  module, variables = pretrained.load_pretrained(weights, model=model)
  names = class_names(int(meta['num_classes']))
  probs, ids = top_k(module, variables, images, max(1, batch_size),
                     min(TOP_K, int(meta['num_classes'])))
  return [{'image': path,
           'top5': [{'class_id': int(c), 'name': names[int(c)], 'prob': float(p)}
                    for c, p in zip(image_ids, image_probs)]}
          for path, image_ids, image_probs in zip(paths, ids, probs)]


def format_text(results: list[dict[str, Any]]) -> str:
  lines = []
  for result in results:
    lines.append(result['image'])
    for entry in result['top5']:
      lines.append(f'  {entry["prob"]:7.2%}  {entry["name"]} ({entry["class_id"]})')
  return '\n'.join(lines)


def _define_flags() -> None:
  # Defined only when run as a program, so importing this module (tests) cannot collide with
  # another tool's flags of the same name.
  flags.DEFINE_string('model', None, 'Variant the weights are for (b0 … b8, l2, lite0 … lite4).')
  flags.DEFINE_string('weights', None, 'A converted weights directory (python -m '
                      'efficientnet_jax.convert).')
  flags.DEFINE_bool('json', False, 'Print one JSON list instead of text.')
  flags.DEFINE_integer('batch_size', 16, 'Images per forward pass.')
  flags.DEFINE_integer('max_image_pixels', image_header.MAX_IMAGE_PIXELS,
                       'Refuse an image whose header declares more pixels (width × height, '
                       'all frames of a GIF) before decoding it: a decompression bomb.',
                       lower_bound=1)


@cli.run
def main(argv):
  paths = argv[1:]
  if not FLAGS.model or not FLAGS.weights or not paths:
    raise cli.UsageError('usage: python -m efficientnet_jax.predict --model=NAME --weights=DIR '
                         '[--json] IMAGE...')
  cli.quiet_libraries()  # Orbax narrates every restore at INFO.
  results = predict_files(FLAGS.model, FLAGS.weights, paths, FLAGS.batch_size,
                          FLAGS.max_image_pixels)
  print(json.dumps(results) if FLAGS.json else format_text(results), flush=True)


if __name__ == '__main__':
  _define_flags()
  sys.exit(app.run(main, flags_parser=cli.parse_flags))
