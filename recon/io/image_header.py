"""Image size from the file's header, before any pixel is decoded: the decompression-bomb guard.

A 70-byte PNG can declare 60000x60000 pixels, and a real 12000x12000 PNG of one colour is a few hundred KB
that decodes to gigabytes. The size is read here from the header and checked against MAX_IMAGE_PIXELS before
the loader decodes. PNG and JPEG headers are parsed here (the common inputs, and the message can then give the
declared size); other formats go through Pillow's lazy ``Image.open``, which reads only the header.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from recon.errors import ReconInputError

#: Largest image (width x height) the loader decodes: 100 megapixels, ~1.5 GB while it becomes float32 RGB.
MAX_IMAGE_PIXELS = 100_000_000
#: Largest image file read: 8 bytes a pixel (uncompressed 16-bit RGBA) at the pixel limit, plus 64 MiB metadata.
MAX_IMAGE_FILE_BYTES = MAX_IMAGE_PIXELS * 8 + 64 * 1024 * 1024

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8 and CC are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD9)])  # TEM, RSTn, SOI: no length field


@dataclass(frozen=True)
class ImageHeader:
    """Stored size of an image (before any EXIF rotation) and its format ("PNG", "JPEG", or Pillow's name)."""

    width: int
    height: int
    format: str


def _png(data: bytes, path: Path) -> ImageHeader:
    if len(data) < 33:
        raise ReconInputError("cannot decode image: truncated PNG header", path)
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        raise ReconInputError("cannot decode image: corrupt PNG header (no IHDR chunk first)", path)
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader(width, height, "PNG")


def _jpeg(data: bytes, path: Path) -> ImageHeader:
    i, n = 2, len(data)
    while True:
        while i < n and data[i] == 0xFF and i + 1 < n and data[i + 1] == 0xFF:
            i += 1  # fill bytes
        if i + 1 >= n:
            raise ReconInputError("cannot decode image: truncated JPEG header (no frame header)", path)
        if data[i] != 0xFF:
            raise ReconInputError(f"cannot decode image: corrupt JPEG header (no marker at byte {i})", path)
        marker = data[i + 1]
        i += 2
        if marker == 0x00:
            raise ReconInputError(f"cannot decode image: corrupt JPEG header (no marker at byte {i - 2})", path)
        if marker in _STANDALONE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            raise ReconInputError("cannot decode image: corrupt JPEG header (no frame header)", path)
        if i + 2 > n:
            raise ReconInputError("cannot decode image: truncated JPEG header", path)
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2:
            raise ReconInputError("cannot decode image: corrupt JPEG header (bad segment length)", path)
        if marker in _SOF_MARKERS:
            if length < 8 or i + 7 > n:
                raise ReconInputError("cannot decode image: truncated JPEG frame header", path)
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return ImageHeader(width, height, "JPEG")
        i += length


def _pillow(data: bytes, path: Path) -> ImageHeader:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                fmt = im.format or "image"
    except Image.DecompressionBombError:
        raise ReconInputError(
            f"image is too large: its header declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels "
            f"(the limit is {MAX_IMAGE_PIXELS})",
            path,
        ) from None
    except Exception:  # Pillow raises many kinds on a corrupt header; any of them means "not an image we read"
        raise ReconInputError("cannot decode image (corrupt file or unsupported format)", path) from None
    return ImageHeader(width, height, fmt)


def parse_header(data: bytes, path: str | Path) -> ImageHeader:
    """The header of the image file whose bytes are ``data``; ReconInputError when it is unreadable or declares
    an empty image. The format is taken from the content, as the decoder does, not from the extension."""
    path = Path(path)
    if data.startswith(_PNG_SIGNATURE):
        header = _png(data, path)
    elif data.startswith(b"\xff\xd8"):
        header = _jpeg(data, path)
    elif not data:
        raise ReconInputError("cannot decode image: the file is empty", path)
    else:
        header = _pillow(data, path)
    if header.width < 1 or header.height < 1:
        raise ReconInputError(f"cannot decode image: header declares a {header.width}x{header.height} image", path)
    return header


def check_pixel_budget(header: ImageHeader, path: str | Path) -> None:
    """ReconInputError when the image is larger than MAX_IMAGE_PIXELS."""
    pixels = header.width * header.height
    if pixels > MAX_IMAGE_PIXELS:
        raise ReconInputError(
            f"image is {header.width}x{header.height} ({pixels / 1e6:.4g} megapixels), over the "
            f"{MAX_IMAGE_PIXELS / 1e6:g}-megapixel limit; downscale it first",
            path,
        )
