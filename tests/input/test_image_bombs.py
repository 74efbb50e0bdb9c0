"""Decompression bombs and other hostile image files: refused from the header, before decoding.

The bombs are files of at most 2 kB whose headers declare up to 10^10 pixels (decoding the largest
would allocate 30 GB); the tests finish in milliseconds because nothing decodes them.
`image_header` reads the declared size; the image folder's scan and `predict` refuse the file
with one line (or, under `bad_image_policy='skip'`, skip and count it).
"""

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import reliability_config
import reliability_helpers as rh
from efficientnet_jax.input import image_header
from efficientnet_jax.input import sources

HUGE = 100_000  # A side: HUGE × HUGE = 10^10 pixels.


def _png(width: int, height: int) -> bytes:
  """A PNG declaring width × height RGB pixels whose data is 64 zero bytes, compressed."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data)))
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0,
                                                            0, 0)) +
          chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))


def _jpeg(width: int, height: int) -> bytes:
  """A JPEG's start, an APP0 segment and a baseline frame header declaring width × height."""
  app0 = b'\xff\xe0' + struct.pack('>H', 16) + b'JFIF\0\x01\x01\0\0\x01\0\x01\0\0'
  sof0 = b'\xff\xc0' + struct.pack('>HBHHB', 11, 8, height, width, 1) + b'\x01\x11\x00'
  return b'\xff\xd8' + app0 + sof0 + b'\xff\xd9'


def _bmp(width: int, height: int) -> bytes:
  """A BMP header (BITMAPINFOHEADER, rows top-down: negative height) without pixel data."""
  info = struct.pack('<IiiHHIIiiII', 40, width, -height, 1, 24, 0, 0, 0, 0, 0, 0)
  return b'BM' + struct.pack('<IHHI', 14 + len(info), 0, 0, 14 + len(info)) + info


def _gif(width: int, height: int, frames: int) -> bytes:
  """A GIF of `frames` frames, each declaring the whole width × height canvas, with no pixels."""
  frame = (b',' + struct.pack('<HHHHB', 0, 0, width, height, 0) + b'\x02' + b'\x02\x4c\x01' +
           b'\x00')
  return (b'GIF89a' + struct.pack('<HHBBB', width, height, 0x80, 0, 0) + b'\0' * 6 +
          frame * frames + b';')


BOMBS = {
    'bomb.png': _png(HUGE, HUGE),
    'bomb.jpg': _jpeg(65_000, 65_000),
    'bomb.bmp': _bmp(HUGE, HUGE),
    # 100 frames of 1,000 × 1,000: each small, together over the limit (giflib reads them all).
    'bomb.gif': _gif(1_000, 1_000, 100),
}


def _real_images(directory, size=(13, 9)):
  """One small real image per format; returns {file name: the image's (width, height)}."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = Image.fromarray(np.random.RandomState(0).randint(0, 256, size[::-1] + (3,), np.uint8))
  for name, kwargs in (('a.png', {}), ('a.jpg', {}), ('p.jpg', {'progressive': True}),
                       ('a.bmp', {}), ('a.gif', {})):
    image.save(directory / name, **kwargs)
  frames = [image.rotate(90 * i) for i in range(3)]
  frames[0].save(directory / 'anim.gif', save_all=True, append_images=frames[1:])
  return directory


# ------------------------------------------------------------------------------------------------
# The header reader.


def test_real_images_read_their_size_and_format(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  _real_images(tmp_path)
  for name in ('a.png', 'a.jpg', 'p.jpg', 'a.bmp', 'a.gif', 'anim.gif'):
    header = image_header.check(str(tmp_path / name))
    with Image.open(tmp_path / name) as image:
      assert (header.format, header.width, header.height) == (image.format, *image.size), name
      assert header.frames == getattr(image, 'n_frames', 1), name
  # A GIF's pixels: its canvas and each frame's.
  assert image_header.read_header(str(tmp_path / 'anim.gif')).pixels == 4 * 13 * 9


@pytest.mark.parametrize('name', sorted(BOMBS))
def test_bombs_are_refused_from_the_header(name, tmp_path):
  path = tmp_path / name
  path.write_bytes(BOMBS[name])
  assert path.stat().st_size < 2000  # Bytes, declaring gigabytes.
  with pytest.raises(image_header.ImageTooLargeError, match='more than the limit of 89,478,485'):
    image_header.check(str(path))
  header = image_header.read_header(str(path))
  assert header.pixels > image_header.MAX_IMAGE_PIXELS
  # The limit is the caller's: the same file passes a higher one.
  assert image_header.check(str(path), max_pixels=header.pixels) == header


def test_gif_frames_count_towards_the_limit(tmp_path):
  path = tmp_path / 'bomb.gif'
  path.write_bytes(BOMBS['bomb.gif'])
  header = image_header.read_header(str(path))
  assert (header.width, header.height, header.frames) == (1_000, 1_000, 100)
  with pytest.raises(image_header.ImageTooLargeError, match=r'in 100 frames \(101,000,000 to'):
    image_header.check(str(path))
  one_frame = tmp_path / 'one.gif'
  one_frame.write_bytes(_gif(1_000, 1_000, 1))
  assert image_header.check(str(one_frame)).pixels == 2_000_000


@pytest.mark.parametrize('content', [b'', b'not an image\n', b'\x89PNG\r\n\x1a\n', b'\xff\xd8',
                                     b'GIF89a\x01', b'RIFF\0\0\0\0WEBPVP8 '])
def test_non_images_and_cut_headers_are_value_errors(content, tmp_path):
  path = tmp_path / 'file'
  path.write_bytes(content)
  with pytest.raises(ValueError, match='not a JPEG/PNG/BMP/GIF image'):
    image_header.read_header(str(path))


# ------------------------------------------------------------------------------------------------
# The image folder.


def _folder(root, extra=None):
  """root/{train,test}/{a,b}/*.png (tiny real images), plus `extra` {relative path: bytes}."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for split in ('train', 'test'):
    for label in ('a', 'b'):
      os.makedirs(root / split / label)
      for i in range(2):
        Image.new('RGB', (8, 8), (40 * i, 80, 120)).save(root / split / label / f'{i}.png')
  for relative, content in (extra or {}).items():
    (root / relative).write_bytes(content)
  return root


def _folder_config(data_dir, policy):
  config = reliability_config.get_config()
  config.update(dataset='folder', data_dir=str(data_dir), num_classes=2, eval_split='test',
                bad_image_policy=policy)
  return config


def test_bomb_in_folder_fails_naming_it_and_the_limit(tmp_path):
  root = _folder(tmp_path / 'images', {'train/b/bomb.png': BOMBS['bomb.png']})
  with pytest.raises(ValueError) as error:
    sources.dataset_info(_folder_config(root, 'fail'))
  message = str(error.value)
  assert '\n' not in message
  assert str(root / 'train' / 'b' / 'bomb.png') in message
  assert '100,000 × 100,000 pixels' in message and 'limit of 89,478,485' in message
  assert "bad_image_policy='skip'" in message


def test_bombs_in_folder_are_skipped_and_counted_by_policy(tmp_path, caplog):
  root = _folder(tmp_path / 'images', {f'train/a/{name}': content
                                       for name, content in BOMBS.items()})
  info = sources.dataset_info(_folder_config(root, 'skip'))
  assert info.num_train_examples == 4 and info.num_eval_examples == 4
  assert any('Skipped 4 unreadable file(s)' in r.getMessage() for r in caplog.records)


def test_bomb_in_folder_through_main_is_one_line_and_leaves_the_workdir(tmp_path):
  root = _folder(tmp_path / 'images', {'train/a/bomb.gif': BOMBS['bomb.gif']})
  workdir = tmp_path / 'workdir'
  workdir.mkdir()
  (workdir / 'notes').write_text('mine\n')
  before = rh.snapshot(workdir)
  result = subprocess.run(
      rh.main_args(workdir, '--config.dataset=folder', f'--config.data_dir={root}',
                   '--config.num_classes=2', '--config.eval_split=test'),
      cwd=rh.REPO, env=rh.environment(), capture_output=True, text=True, timeout=rh.TIMEOUT_S,
      check=False)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert 'bomb.gif' in errors[0] and 'in 100 frames' in errors[0]
  assert rh.snapshot(workdir) == before


def test_symlinks_out_of_the_folder_are_followed_and_checked_as_documented(tmp_path):
  # docs/security.md, "Image folders": links are followed (a folder of links into a master copy
  # is a usual subset), and what they name passes the same checks as any file.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  outside = tmp_path / 'outside'
  outside.mkdir()
  Image.new('RGB', (8, 8)).save(outside / 'photo.png')
  (outside / 'secret.txt').write_text('password\n')
  (outside / 'bomb.png').write_bytes(BOMBS['bomb.png'])
  root = _folder(tmp_path / 'images')
  os.symlink(outside / 'photo.png', root / 'train' / 'a' / 'linked.png')
  assert sources.dataset_info(_folder_config(root, 'fail')).num_train_examples == 5

  for target in ('secret.txt', 'bomb.png'):
    root = _folder(tmp_path / f'images_{target}')  # Its own root: sources caches each folder.
    link = root / 'train' / 'b' / 'linked.png'
    os.symlink(outside / target, link)
    with pytest.raises(ValueError, match=f'Unreadable image file {str(link)!r}'):
      sources.source(_folder_config(root, 'fail'), 'train')


# ------------------------------------------------------------------------------------------------
# predict.


def _weights_dir(directory):
  """A converted directory's meta.json: enough for predict to reach the images."""
  directory.mkdir()
  meta = {'format_version': 1, 'model': 'b0', 'source': 'timm', 'num_classes': 1000,
          'padding': 'same', 'preprocessing': {'mean': [0, 0, 0], 'std': [1, 1, 1],
                                               'crop_padding': 32, 'interpolation': 'bicubic',
                                               'resolution': 64}}
  (directory / 'meta.json').write_text(json.dumps(meta))
  return directory


def _predict(*args):
  return subprocess.run([sys.executable, '-m', 'efficientnet_jax.predict', *args], cwd=rh.REPO,
                        env=rh.environment(devices=1), capture_output=True, text=True,
                        timeout=rh.TIMEOUT_S, check=False)


def test_predict_refuses_a_bomb_with_one_line(tmp_path):
  weights = _weights_dir(tmp_path / 'weights')
  bomb = tmp_path / 'bomb.png'
  bomb.write_bytes(BOMBS['bomb.png'])
  result = _predict('--model=b0', f'--weights={weights}', str(bomb))
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert str(bomb) in errors[0] and '10,000,000,000 to decode' in errors[0]
  assert '--max_image_pixels' in errors[0]


def test_predict_checks_every_image_before_decoding_any(tmp_path):
  from efficientnet_jax import predict  # pylint: disable=g-import-not-at-top
  _real_images(tmp_path)
  bomb = tmp_path / 'bomb.jpg'
  bomb.write_bytes(BOMBS['bomb.jpg'])
  good = [str(tmp_path / name) for name in ('a.png', 'a.jpg', 'a.gif')]
  predict.check_images(good)
  with pytest.raises(image_header.ImageTooLargeError, match=f'{bomb}.*65,000 × 65,000'):
    predict.check_images(good + [str(bomb)])
  # The limit given is the one used: the 13 × 9 PNG and JPEG are exactly at 117 pixels, the GIF
  # (its canvas and its frame) declares 234.
  predict.check_images(good[:2], max_pixels=13 * 9)
  with pytest.raises(image_header.ImageTooLargeError, match='a.gif .*limit of 117'):
    predict.check_images(good, max_pixels=13 * 9)
  with pytest.raises(ValueError, match='is not a readable image'):
    predict.check_images([os.path.join(rh.REPO, 'README.md')])
