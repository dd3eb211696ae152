"""Walk COLMAP binary model files record by record before pycolmap reads them.

pycolmap trusts the counts in a binary model: 8 bytes declaring 2^62 points make it allocate without end.
Here every count is checked against the bytes left in the file before anything is skipped, each record's size
follows from its fields (camera model -> number of parameters, NUL-terminated names, track lengths), and the
file must end where its last record ends. Layouts (little-endian) as COLMAP's reconstruction_io_binary.cc.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

from recon.errors import ReconInputError
from recon.io.files import read_bytes

#: Largest binary model file read: sparse-view models are kilobytes; this is a model of thousands of photos.
MAX_MODEL_FILE_BYTES = 1024**3
_MAX_NAME_BYTES = 4096


@lru_cache(maxsize=1)
def camera_model_params() -> dict[int, int]:
    """COLMAP camera model id -> number of parameters, from the installed pycolmap (so the table follows it)."""
    import pycolmap

    out = {}
    for model in pycolmap.CameraModelId.__members__.values():
        if model.name != "INVALID":
            out[int(model)] = len(pycolmap.Camera.create_from_model_id(0, model, 1.0, 1, 1).params)
    return out


class _Reader:
    """Bounds-checked cursor over one file's bytes; every overrun is a ReconInputError naming the record."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.left() < size:
            raise ReconInputError(
                f"truncated COLMAP binary file: {what} ends after the file ({self.pos} bytes)", self.path
            )
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def skip(self, count: int, size: int, what: str) -> None:
        if count * size > self.left():
            raise ReconInputError(
                f"{what}: {count} entries of {size} bytes do not fit in the {self.left()} bytes left in the file",
                self.path,
            )
        self.pos += count * size

    def count(self, min_record: int, what: str) -> int:
        (n,) = self.take("<Q", f"the number of {what}")
        if n * min_record > self.left():
            raise ReconInputError(
                f"declares {n} {what}, but the file has room for at most {self.left() // min_record}", self.path
            )
        return n

    def name(self, what: str) -> None:
        end = self.data.find(b"\0", self.pos, self.pos + _MAX_NAME_BYTES)
        if end < 0:
            raise ReconInputError(f"{what}: image name is not NUL-terminated within {_MAX_NAME_BYTES} bytes", self.path)
        try:  # pycolmap hands names to Python as str: a non-UTF-8 name raises there, long after the read
            self.data[self.pos : end].decode("utf-8")
        except UnicodeDecodeError:
            raise ReconInputError(f"{what}: image name is not UTF-8 text", self.path) from None
        self.pos = end + 1

    def finish(self) -> None:
        if self.left():
            raise ReconInputError(f"{self.left()} unexpected bytes after the last record", self.path)


def _cameras(r: _Reader) -> None:
    params = camera_model_params()
    for k in range(r.count(4 + 4 + 8 + 8 + 8 * min(params.values()), "cameras")):
        camera_id, model_id, _w, _h = r.take("<IiQQ", f"camera record {k}")
        if model_id not in params:
            raise ReconInputError(f"camera {camera_id} has unknown camera model id {model_id}", r.path)
        r.skip(params[model_id], 8, f"camera {camera_id} parameters")


def _images(r: _Reader) -> None:
    for k in range(r.count(4 + 7 * 8 + 4 + 1 + 8, "images")):
        (image_id,) = r.take("<I7dI", f"image record {k}")[:1]
        r.name(f"image {image_id}")
        (n,) = r.take("<Q", f"image {image_id} point count")
        r.skip(n, 24, f"image {image_id} points2D")


def _points(r: _Reader) -> None:
    for k in range(r.count(8 + 24 + 3 + 8 + 8, "points")):
        point_id, *_rest, length = r.take("<Q3d3BdQ", f"point record {k}")
        r.skip(length, 8, f"point {point_id} track")


def _rigs(r: _Reader) -> None:
    for k in range(r.count(8, "rigs")):
        rig_id, n = r.take("<II", f"rig record {k}")
        if n == 0:
            continue
        r.take("<iI", f"rig {rig_id} reference sensor")
        if (n - 1) * 9 > r.left():
            raise ReconInputError(f"rig {rig_id} declares {n} sensors, more than fit in the file", r.path)
        for _ in range(n - 1):
            (has_pose,) = r.take("<iIB", f"rig {rig_id} sensor")[2:]
            if has_pose:
                r.take("<7d", f"rig {rig_id} sensor pose")


def _frames(r: _Reader) -> None:
    for k in range(r.count(4 + 4 + 7 * 8 + 4, "frames")):
        frame_id, *_pose, n = r.take("<II7dI", f"frame record {k}")
        r.skip(n, 16, f"frame {frame_id} data ids")


_WALKERS = {"cameras": _cameras, "images": _images, "points3D": _points, "rigs": _rigs, "frames": _frames}


def check_binary_model(model: Path) -> None:
    """Walk every binary model file present in ``model`` (cameras, images, points3D; rigs and frames of
    COLMAP >= 3.12); ReconInputError naming the first file whose structure does not add up."""
    for name, walk in _WALKERS.items():
        path = model / f"{name}.bin"
        if name in ("rigs", "frames") and not (path.exists() or path.is_symlink()):
            continue
        r = _Reader(read_bytes(path, f"COLMAP {name}.bin", MAX_MODEL_FILE_BYTES), path)
        walk(r)
        r.finish()
