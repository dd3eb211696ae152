"""The one image loader: read/write images and masks, resize, and read the EXIF focal length.

Inside the project images are float32 HxWx3 RGB in [0, 1] and masks HxW float32 in [0, 1]; on disk they are
8/16-bit PNG or JPEG. OpenCV does the decoding (it handles 16-bit PNGs and applies the EXIF orientation of
JPEGs); Pillow only reads EXIF tags. Every failure the user can fix raises ReconInputError naming the file.
Files are read through recon.io.files (regular files only) and the size in the header is checked against
recon.io.image_header.MAX_IMAGE_PIXELS before any pixel is decoded.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from recon.errors import ReconInputError
from recon.io import image_header
from recon.io.atomic import atomic_write_bytes
from recon.io.files import file_kind, is_regular_file, read_bytes
from recon.io.image_header import MAX_IMAGE_FILE_BYTES, ImageHeader, check_pixel_budget, parse_header

#: File extensions (lower case) treated as images by the folder readers.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_JPEG_EXTENSIONS = (".jpg", ".jpeg")

# EXIF tag ids (Exif 2.3 / CIPA DC-008).
_TAG_EXIF_IFD = 0x8769
_TAG_FOCAL_LENGTH = 0x920A
_TAG_FOCAL_35MM = 0xA405
_TAG_FOCAL_PLANE_XRES = 0xA20E
_TAG_FOCAL_PLANE_UNIT = 0xA210
_TAG_PIXEL_X_DIM = 0xA002
_TAG_PIXEL_Y_DIM = 0xA003
# FocalPlaneResolutionUnit -> millimetres per unit (2 = inch is the EXIF default).
_UNIT_MM = {1: 25.4, 2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
# Diagonal of a 36x24 mm frame: the 35 mm equivalent focal length is defined by the diagonal field of view.
_DIAG_35MM = math.hypot(36.0, 24.0)


def is_image_file(path: Path) -> bool:
    """True for a regular, non-hidden file with an image extension."""
    return has_image_name(path) and is_regular_file(path)


def has_image_name(path: Path) -> bool:
    """True for a non-hidden name with an image extension, whatever is on disk."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically: IMG_2 < IMG_10."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def find_image(base: Path) -> Path | None:
    """``base`` itself when something is there, else ``base`` with an image extension added (Blender's
    extension-less paths). A FIFO or broken link at ``base`` is returned, for the loader to name it."""
    if file_kind(base) not in ("missing", "folder", "unreadable path"):
        return base
    for ext in IMAGE_EXTENSIONS:
        for cand in (base.with_name(base.name + ext), base.with_name(base.name + ext.upper())):
            if is_regular_file(cand):
                return cand
    return None


def _read_file(path: Path) -> tuple[bytes, ImageHeader]:
    """The file's bytes and its header, checked against the pixel budget (nothing decoded yet)."""
    data = read_bytes(path, "image file", MAX_IMAGE_FILE_BYTES)
    header = parse_header(data, path)
    check_pixel_budget(header, path)
    return data, header


def read_raw(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decode ``path`` with OpenCV (from bytes, so non-ASCII paths work) after the header checks;
    ReconInputError when unreadable. The one place image pixels are decoded."""
    path = Path(path)
    data, _ = _read_file(path)
    try:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:  # OpenCV reports some corrupt files by raising, others by returning None
        lines = str(exc).strip().splitlines()
        raise ReconInputError(f"cannot decode image ({lines[-1] if lines else 'OpenCV error'})", path) from None
    if arr is None or arr.size == 0:
        raise ReconInputError("cannot decode image (corrupt file or unsupported format)", path)
    if arr.shape[0] * arr.shape[1] > image_header.MAX_IMAGE_PIXELS:  # the header understated the size
        raise ReconInputError(f"image decodes to {arr.shape[1]}x{arr.shape[0]}, over the pixel limit", path)
    return arr


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as :func:`load_image` returns it, read from the header only."""
    path = Path(path)
    data, header = _read_file(path)
    w, h = header.width, header.height
    orientation = _exif_orientation(data) if path.suffix.lower() in _JPEG_EXTENSIONS else 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _exif_orientation(data: bytes) -> int:
    """EXIF orientation tag of a JPEG's bytes (1 when absent or unreadable)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                value = im.getexif().get(0x0112, 1)
    except Exception:  # a corrupt EXIF block: OpenCV ignores it too and does not rotate
        return 1
    return value if isinstance(value, int) else 1


def _to_float(arr: np.ndarray) -> np.ndarray:
    """Integer or float image -> contiguous float32 in [0, 1], scaled in place (one float copy of the image)."""
    out = np.empty(arr.shape, dtype=np.float32)
    out[...] = arr
    if arr.dtype == np.uint8:
        out /= 255.0
    elif arr.dtype == np.uint16:
        out /= 65535.0
    else:  # float TIFF/EXR-like data: NaN and infinities would poison every loss downstream
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(out, 0.0, 1.0, out=out)
    return out


def load_image(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image as (HxWx3 float32 RGB in [0, 1], HxW float32 alpha in [0, 1] or None).

    8- and 16-bit files are scaled to [0, 1]; grayscale becomes RGB; a 4th channel is returned as alpha
    (RGB is not composited). JPEGs are rotated according to their EXIF orientation.
    """
    path = Path(path)
    if path.suffix.lower() in _JPEG_EXTENSIONS:
        raw = read_raw(path, cv2.IMREAD_COLOR)  # applies the EXIF orientation
    else:
        raw = read_raw(path, cv2.IMREAD_UNCHANGED)
    alpha = None
    if raw.ndim == 2:
        rgb = np.repeat(raw[:, :, None], 3, axis=2)
    elif raw.shape[2] == 1:
        rgb = np.repeat(raw, 3, axis=2)
    elif raw.shape[2] == 2:  # gray + alpha
        rgb = np.repeat(raw[:, :, :1], 3, axis=2)
        alpha = raw[:, :, 1]
    elif raw.shape[2] == 3:
        rgb = raw[:, :, ::-1]
    elif raw.shape[2] == 4:
        rgb = raw[:, :, 2::-1]
        alpha = raw[:, :, 3]
    else:
        raise ReconInputError(f"unsupported image with {raw.shape[2]} channels", path)
    rgb_f = _to_float(rgb)
    alpha_f = None if alpha is None else _to_float(alpha)
    return rgb_f, alpha_f


def load_mask(path: str | Path) -> np.ndarray:
    """Read a mask as HxW float32 in [0, 1] (1 = object).

    The alpha channel is used when the file has one, else the gray value (mean of the colour channels).
    8-bit masks whose values are only 0 and 1 (a common dataset convention) are taken as 0/1, not 0/255.
    """
    path = Path(path)
    raw = read_raw(path, cv2.IMREAD_UNCHANGED)
    if raw.ndim == 3:
        if raw.shape[2] in (2, 4):
            raw = raw[:, :, -1]
        else:
            raw = raw.mean(axis=2).astype(raw.dtype) if raw.shape[2] > 1 else raw[:, :, 0]
    if raw.dtype == np.uint8 and raw.size and int(raw.max()) == 1:
        return raw.astype(np.float32)
    return _to_float(raw)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0)
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(path: str | Path, array: np.ndarray) -> None:
    """Write an HxW, HxWx3 (RGB) or HxWx4 (RGBA) image atomically as 8-bit (float input in [0, 1]).

    The format follows the suffix (PNG unless it is .jpg/.jpeg).
    """
    path = Path(path)
    img = _to_uint8(array)
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, [2, 1, 0, 3]]
    elif img.ndim != 2 and not (img.ndim == 3 and img.shape[2] == 1):
        raise ValueError(f"save_image: expected HxW, HxWx3 or HxWx4, got shape {img.shape}")
    ext = ".jpg" if path.suffix.lower() in _JPEG_EXTENSIONS else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(img), params)
    if not ok:
        raise OSError(f"{path}: could not encode image")
    atomic_write_bytes(path, buf.tobytes())


def resize_image(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an HxW or HxWxC image to ``width`` x ``height`` (area averaging when shrinking, bilinear when growing)."""
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_LINEAR
    out = cv2.resize(img, (int(width), int(height)), interpolation=interp)
    if img.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing channel axis of size 1
        out = out[:, :, None]
    return out


def target_size(width: int, height: int, downscale: float = 1.0, max_size: int | None = None) -> tuple[int, int]:
    """Size after dividing by ``downscale`` (>= 1) and then capping the longer side at ``max_size``."""
    if not downscale >= 1.0:
        raise ReconInputError(f"downscale must be >= 1, got {downscale}")
    if max_size is not None and max_size < 1:
        raise ReconInputError(f"max_size must be >= 1, got {max_size}")
    factor = 1.0 / downscale
    if max_size is not None and max(width, height) * factor > max_size:
        factor = max_size / max(width, height)
    return max(1, int(round(width * factor))), max(1, int(round(height * factor)))


def _rational(value) -> float | None:
    """EXIF rational/number -> float, None when missing or not a positive finite number."""
    if value is None:
        return None
    try:
        if isinstance(value, tuple) and len(value) == 2:
            f = float(value[0]) / float(value[1])
        else:
            f = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def exif_focal_px(path: str | Path, width: int, height: int) -> float | None:
    """Focal length in pixels from a photo's EXIF tags, or None when the tags are absent.

    ``width`` x ``height`` is the size of the image as loaded (after orientation). Uses
    FocalLengthIn35mmFilm (35 mm equivalent, defined on the frame diagonal) when present, else FocalLength
    with FocalPlaneXResolution/Unit (rescaled when the stored image is smaller than PixelXDimension).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(read_bytes(path, "image file", MAX_IMAGE_FILE_BYTES))) as im:
                exif = im.getexif()
    except Exception:  # unreadable EXIF is no focal, not an error: the pose estimator has a default focal
        return None
    if not exif:
        return None
    try:
        sub = dict(exif.get_ifd(_TAG_EXIF_IFD))
    except (KeyError, ValueError, TypeError):
        sub = {}

    def tag(tag_id: int):
        return sub.get(tag_id, exif.get(tag_id))

    f35 = _rational(tag(_TAG_FOCAL_35MM))
    if f35 is not None:
        return f35 * math.hypot(width, height) / _DIAG_35MM
    f_mm = _rational(tag(_TAG_FOCAL_LENGTH))
    xres = _rational(tag(_TAG_FOCAL_PLANE_XRES))
    if f_mm is None or xres is None:
        return None
    unit = tag(_TAG_FOCAL_PLANE_UNIT)
    mm_per_unit = _UNIT_MM.get(int(unit) if isinstance(unit, (int, float)) else 2)
    if mm_per_unit is None:
        return None
    f_px = f_mm * xres / mm_per_unit
    px_x, px_y = _rational(tag(_TAG_PIXEL_X_DIM)), _rational(tag(_TAG_PIXEL_Y_DIM))
    if px_x is not None and px_y is not None:
        f_px *= max(width, height) / max(px_x, px_y)
    return f_px
