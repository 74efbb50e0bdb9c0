"""TF-free: an image file's declared size, read from its header before anything decodes it.

A decoder allocates what the header declares: a PNG of a few hundred bytes can declare
100,000 × 100,000 pixels, 30 GB once decoded (a "decompression bomb"), and the decoder allocates
them before it finds the data missing. `check` reads the header (a few hundred bytes; for a GIF,
the block structure, skipping over the compressed data) and refuses an image over `max_pixels`
before TensorFlow or PIL decodes it. The image folder's scan (`sources.py`) and `predict` both
call it.

What counts is what decoding allocates: width × height, and for a GIF every frame's (giflib
reads all frames even where TensorFlow keeps the first).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import BinaryIO

# PIL's own default (`PIL.Image.MAX_IMAGE_PIXELS`): 89,478,485 pixels, 256 MiB as 24-bit RGB
# (about 9,459 × 9,459). Kept equal to it on purpose: the folder scan also opens every image with
# PIL, which warns above this many pixels and refuses twice as many, so a higher limit there
# would still meet PIL's; at this value every refusal is this module's one-line message.
MAX_IMAGE_PIXELS = 89_478_485
FORMATS = ('JPEG', 'PNG', 'BMP', 'GIF')  # What tf.io.decode_image reads and this module parses.

# JPEG start-of-frame markers (they carry the size): C0–CF except DHT (C4), JPG (C8), DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# JPEG markers without a length field: TEM, RST0–7, SOI, EOI.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xDA)])


@dataclasses.dataclass(frozen=True)
class Header:
  """What an image file declares.

  Attributes:
    format: one of `FORMATS`.
    width: the image's (for a GIF, the canvas's) width in pixels.
    height: its height.
    frames: the number of frames (1 except for an animated GIF).
    pixels: the pixels decoding allocates: width × height, summed over a GIF's frames and its
      canvas.
  """
  format: str
  width: int
  height: int
  frames: int
  pixels: int


class ImageTooLargeError(ValueError):
  """An image declares more pixels than the limit (a decompression bomb, or a huge scan)."""


def read_header(path: str) -> Header:
  """Reads `path`'s declared format and size without decoding any pixels.

  Raises:
    ValueError: not a JPEG, PNG, BMP or GIF file, or a header cut short.
  """
  with open(path, 'rb') as f:
    head = f.read(32)
    if head.startswith(b'\x89PNG\r\n\x1a\n') and head[12:16] == b'IHDR':
      width, height = struct.unpack('>II', head[16:24])
      return _header('PNG', width, height)
    if head.startswith(b'BM') and len(head) >= 26:
      if struct.unpack('<I', head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sides.
        width, height = struct.unpack('<HH', head[18:22])
      else:  # A negative height means rows stored top-down.
        width, height = struct.unpack('<ii', head[18:26])
      return _header('BMP', abs(width), abs(height))
    if head[:6] in (b'GIF87a', b'GIF89a'):
      return _gif(f)
    if head.startswith(b'\xff\xd8'):
      return _jpeg(f)
  raise ValueError(f'not a {"/".join(FORMATS)} image (or its header is cut short)')


def check(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Header:
  """`read_header`, refusing an image that declares more than `max_pixels` pixels.

  Raises:
    ImageTooLargeError: the declared size is over the limit (the message gives both).
    ValueError: not a JPEG, PNG, BMP or GIF file, or a header cut short.
  """
  header = read_header(path)
  if header.pixels > max_pixels:
    frames = f' in {header.frames:,} frames' if header.frames > 1 else ''
    raise ImageTooLargeError(
        f'declares {header.width:,} × {header.height:,} pixels{frames} ({header.pixels:,} to '
        f'decode), more than the limit of {max_pixels:,}: a decompression bomb, or an image to '
        'shrink first')
  return header


def _header(image_format: str, width: int, height: int, frames: int = 1,
            pixels: int | None = None) -> Header:
  return Header(image_format, width, height, frames,
                width * height if pixels is None else pixels)


def _read(f: BinaryIO, size: int) -> bytes:
  data = f.read(size)
  if len(data) < size:
    raise ValueError(f'not a {"/".join(FORMATS)} image (or its header is cut short)')
  return data


def _jpeg(f: BinaryIO) -> Header:
  """The size in a JPEG's start-of-frame segment, walking the segments before it."""
  f.seek(2)
  while True:
    marker = _read(f, 2)
    while marker[1] == 0xFF:  # Fill bytes before a marker.
      marker = marker[1:] + _read(f, 1)
    if marker[0] != 0xFF:
      raise ValueError('a JPEG whose segments are corrupt')
    if marker[1] in _JPEG_STANDALONE:
      continue
    length = struct.unpack('>H', _read(f, 2))[0]
    if marker[1] in _JPEG_SOF:
      height, width = struct.unpack('>xHH', _read(f, 5))
      return _header('JPEG', width, height)
    if marker[1] == 0xDA or length < 2:  # Start of scan before any frame header.
      raise ValueError('a JPEG without a frame header')
    f.seek(length - 2, 1)


def _skip_sub_blocks(f: BinaryIO) -> None:
  """Skips a GIF's data sub-blocks (each a length byte and that many bytes; 0 ends them)."""
  while size := _read(f, 1)[0]:
    f.seek(size, 1)


def _gif(f: BinaryIO) -> Header:
  """The canvas and every frame of a GIF, from its block structure (nothing is decompressed)."""
  f.seek(6)
  width, height, flags = struct.unpack('<HHB', _read(f, 7)[:5])
  if flags & 0x80:  # Global colour table.
    f.seek(3 << ((flags & 7) + 1), 1)
  frames, pixels = 0, width * height
  while True:
    block = f.read(1)
    if block in (b';', b''):  # Trailer (or a file cut short: decoders stop there too).
      break
    if block == b'!':  # Extension: a label, then sub-blocks.
      _read(f, 1)
      _skip_sub_blocks(f)
    elif block == b',':  # Image descriptor: position, size, flags; colour table; LZW data.
      frame_width, frame_height, frame_flags = struct.unpack('<4xHHB', _read(f, 9))
      if frame_flags & 0x80:
        f.seek(3 << ((frame_flags & 7) + 1), 1)
      _read(f, 1)  # LZW minimum code size.
      _skip_sub_blocks(f)
      frames += 1
      pixels += frame_width * frame_height
    else:
      raise ValueError('a GIF whose block structure is corrupt')
  return _header('GIF', width, height, max(frames, 1), pixels)
