"""Cluttered digits: one small handwritten digit on a larger canvas among pieces of other digits.

The "cluttered MNIST" construction (Mnih et al. 2014; Jaderberg et al. 2015, Spatial Transformer
Networks), built offline from scikit-learn's 1,797 embedded 8×8 digits. Each canvas:

  * is `canvas`×`canvas` grey pixels, black (0) where nothing is drawn;
  * holds `clutter` pieces of clutter: for each, another digit of the same split (never the
    placed one), enlarged to a side drawn from [digit_min, digit_max], is cut to a random
    `clutter_size`×`clutter_size` window, and the piece is drawn at a random position;
  * then holds the placed digit, enlarged to a side drawn from [digit_min, digit_max] (1.5–2× its
    8 stored pixels by default), at a random position; its class is the label.

Pieces and digit are drawn with `max` (strokes over strokes stay strokes; nothing saturates), so
the clutter may cross the digit, as in the original. The enlargement is bilinear with half-pixel
centres, computed in integers: the same parameters give the same bytes on any machine.

What the scaling axes meet here: a trial's resolution decides how much of the digit survives the
resize of the whole canvas (a 24-px trial sees the default 32-px canvas at 3/4, the digit at
7.5–10.5 px, the clutter alike; a digit under about 8 px has lost some of its 8×8 detail, and
above the canvas's own 32 px nothing is added but larger feature maps), depth how far a unit's
receptive field reaches over the canvas to find the digit and tell it from pieces, width how
many stroke features it can tell apart.

Splits: the digits are split first, by the digits dataset's fixed stratified split
(`sources._digits_split`: 360 test / 1,437 train digits). A test canvas's digit and all its
clutter come from the test digits, a train canvas's from the train digits, so no test digit is
ever seen in training, not even as clutter. The canvases use the digits evenly (of a split's n
canvases over its d digits, each digit is placed on ⌊n/d⌋ or ⌈n/d⌉); `Canvases.digits` records
which, so an interval over test top-1 can resample digits rather than canvases (the ~14 canvases
of one test digit are not independent).

Randomness: one `np.random.Generator` (PCG64) per split, seeded with (seed, split), drawing in a
fixed order (`make`); nothing else is random.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from efficientnet_jax import errors

SPLITS = ('train', 'test')
_SPLIT_SALT = {'train': 0, 'test': 1}
_SOURCE_SIDE = 8  # The embedded digits are 8×8.


@dataclasses.dataclass(frozen=True)
class Params:
  """How the canvases are made: the `cluttered_digits.*` config keys (`schema.py`)."""
  canvas: int = 32
  digit_min: int = 10
  digit_max: int = 14
  clutter: int = 2
  clutter_size: int = 4
  train_size: int = 10_000
  test_size: int = 5_000
  seed: int = 0

  @classmethod
  def from_config(cls, config) -> 'Params':
    group = config.cluttered_digits
    return cls(**{f.name: group[f.name] for f in dataclasses.fields(cls)}).checked()

  def size(self, split: str) -> int:
    return self.train_size if split == 'train' else self.test_size

  def checked(self) -> 'Params':
    """Itself, or a ConfigError naming the key and its fix."""
    key = 'config.cluttered_digits'
    for name in ('canvas', 'digit_min', 'digit_max', 'clutter_size'):
      if getattr(self, name) < 1:
        raise errors.ConfigError(f'{key}.{name} must be at least 1 pixel, not '
                                 f'{getattr(self, name)!r}.')
    if self.digit_min > self.digit_max:
      raise errors.ConfigError(f'{key}.digit_min ({self.digit_min}) exceeds digit_max '
                               f'({self.digit_max}); set digit_min <= digit_max.')
    if self.digit_max > self.canvas:
      raise errors.ConfigError(f'{key}.canvas ({self.canvas} px) is smaller than the largest '
                               f'digit (digit_max={self.digit_max} px); raise canvas or lower '
                               'digit_max.')
    if self.clutter_size > self.digit_min:
      raise errors.ConfigError(f'{key}.clutter_size ({self.clutter_size} px) exceeds the smallest '
                               f'digit it is cut from (digit_min={self.digit_min} px); lower '
                               'clutter_size or raise digit_min.')
    if self.clutter < 0:
      raise errors.ConfigError(f'{key}.clutter must be 0 or more pieces per canvas, not '
                               f'{self.clutter!r}.')
    for name in ('train_size', 'test_size'):
      if getattr(self, name) < 1:
        raise errors.ConfigError(f'{key}.{name} must be at least 1 canvas, not '
                                 f'{getattr(self, name)!r}.')
    return self


@dataclasses.dataclass(frozen=True)
class Canvases:
  """One split's canvases and how each was drawn (enough to redraw it: `draw`).

  Indices into the digits are into the arrays `make` was given (sources: `load_digits()` order).
  """
  images: np.ndarray  # uint8 [N, canvas, canvas, 1]
  labels: np.ndarray  # int32 [N]: the placed digit's class
  digits: np.ndarray  # int32 [N]: the placed digit's index (the canvas's group)
  digit_boxes: np.ndarray  # int32 [N, 3]: its top, left and side on the canvas
  clutter_digits: np.ndarray  # int32 [N, K]: the digit each piece is cut from (never `digits`)
  clutter_boxes: np.ndarray  # int32 [N, K, 5]: the source's side, the window's top and left in
  #   it, and the piece's top and left on the canvas


def _interpolation_matrix(side: int) -> np.ndarray:
  """int64 [side, 8], rows summing to 2·side: bilinear weights (half-pixel centres), × 2·side."""
  denominator = 2 * side
  matrix = np.zeros((side, _SOURCE_SIDE), np.int64)
  for i in range(side):
    # Source coordinate of output pixel i: ((2i + 1)·8 − side) / (2·side), clamped to the edges.
    numerator = (2 * i + 1) * _SOURCE_SIDE - side
    if numerator <= 0:
      matrix[i, 0] = denominator
      continue
    low, remainder = divmod(numerator, denominator)
    if low >= _SOURCE_SIDE - 1:
      matrix[i, _SOURCE_SIDE - 1] = denominator
      continue
    matrix[i, low] = denominator - remainder
    matrix[i, low + 1] = remainder
  return matrix


def enlarge(images: np.ndarray, side: int) -> np.ndarray:
  """uint8 [N, 8, 8] → uint8 [N, side, side], bilinear, exactly (integer arithmetic)."""
  matrix = _interpolation_matrix(side)
  total = np.einsum('ij,njk,lk->nil', matrix, images.astype(np.int64), matrix)
  scale = (2 * side) ** 2
  return ((2 * total + scale) // (2 * scale)).astype(np.uint8)  # Rounded half up.


def _draws(params: Params, pool: np.ndarray, split: str) -> dict[str, np.ndarray]:
  """Every random choice of a split's canvases, in one fixed order of one generator."""
  n, k, pieces = params.size(split), params.clutter, params.clutter_size
  rng = np.random.default_rng([params.seed, _SPLIT_SALT[split]])
  repeats = -(-n // len(pool))
  position = np.concatenate([rng.permutation(len(pool)) for _ in range(repeats)])[:n]
  sides = rng.integers(params.digit_min, params.digit_max + 1, size=n)
  tops = rng.integers(0, params.canvas - sides + 1)
  lefts = rng.integers(0, params.canvas - sides + 1)
  # Clutter: any other digit of the pool (drawn among len − 1, skipping the placed one).
  other = rng.integers(0, max(len(pool) - 1, 1), size=(n, k))
  other += other >= position[:, None]
  clutter_sides = rng.integers(params.digit_min, params.digit_max + 1, size=(n, k))
  window_tops = rng.integers(0, clutter_sides - pieces + 1)
  window_lefts = rng.integers(0, clutter_sides - pieces + 1)
  piece_tops = rng.integers(0, params.canvas - pieces + 1, size=(n, k))
  piece_lefts = rng.integers(0, params.canvas - pieces + 1, size=(n, k))
  return dict(
      digits=pool[position].astype(np.int32),
      digit_boxes=np.stack([tops, lefts, sides], -1).astype(np.int32),
      clutter_digits=pool[other].astype(np.int32).reshape(n, k),
      clutter_boxes=np.stack([clutter_sides, window_tops, window_lefts, piece_tops, piece_lefts],
                             -1).astype(np.int32).reshape(n, k, 5))


def draw(params: Params, enlarged: dict[int, np.ndarray], digit: int, digit_box, clutter_digits,
         clutter_boxes) -> np.ndarray:
  """One canvas, uint8 [canvas, canvas], from its recorded draws (`Canvases` fields of one row).

  `enlarged[side]` is every digit enlarged to `side` (`enlarge`).
  """
  canvas = np.zeros((params.canvas, params.canvas), np.uint8)
  cut = params.clutter_size
  for source, (side, window_top, window_left, top, left) in zip(clutter_digits, clutter_boxes):
    piece = enlarged[side][source, window_top:window_top + cut, window_left:window_left + cut]
    region = canvas[top:top + cut, left:left + cut]
    np.maximum(region, piece, out=region)
  top, left, side = digit_box
  region = canvas[top:top + side, left:left + side]
  np.maximum(region, enlarged[side][digit], out=region)
  return canvas


def make(params: Params, images: np.ndarray, labels: np.ndarray, is_test: np.ndarray,
         split: str) -> Canvases:
  """A split's canvases from the digits.

  Args:
    params: the construction (`Params.checked()` first).
    images: uint8 [D, 8, 8], all the digits.
    labels: int [D].
    is_test: bool [D], the digits' split: test canvases draw only on test digits, train ones
      only on the others.
    split: 'train' or 'test'.

  Raises:
    ValueError: another split name, or a split with fewer than 2 digits (clutter must come from
      another digit).
  """
  if split not in SPLITS:
    raise ValueError(f"The cluttered_digits dataset has splits 'train' and 'test', not {split!r}.")
  pool = np.flatnonzero(is_test == (split == 'test'))
  if len(pool) < 2:
    raise ValueError(f'The {split!r} split has {len(pool)} digit(s); clutter needs at least 2.')
  drawn = _draws(params, pool, split)
  enlarged = {side: enlarge(images, side)
              for side in range(params.digit_min, params.digit_max + 1)}
  canvases = np.stack([
      draw(params, enlarged, *row) for row in zip(
          drawn['digits'], drawn['digit_boxes'], drawn['clutter_digits'], drawn['clutter_boxes'])])
  return Canvases(images=canvases[..., None], labels=labels[drawn['digits']].astype(np.int32),
                  **drawn)
