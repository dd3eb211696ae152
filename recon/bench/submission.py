"""Read and validate a benchmark submission (a folder or a zip) without trusting anything in it.

Format (as SpaRe): one folder per scene holding the rendered test views, named like the ground truth
(``cam_{i+1:03d}_3_0000.png``), RGB(A) 8-bit PNG at the ground-truth resolution. A zip may wrap everything
in one top-level folder. Nothing is extracted to disk: zip members are read into memory with size limits.

Rejected, with a one-line :class:`SubmissionError` naming the entry: missing scenes or views, extra files,
wrong image size, files that are not PNG or do not decode, absolute paths or ``..`` in names, symlinks (in
the zip or in the folder), names that occur twice (also differing only in case), a zip larger than
``max_bytes`` or whose members add up to more than ``max_unpacked_bytes`` (zip bombs).
"""
from __future__ import annotations

import os
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from recon.errors import ReconInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 256 * 1024 * 1024  # a submission of 30 scenes x 10 views at 400x300 is ~50 MB
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_ENTRIES = 20000


class SubmissionError(ReconInputError):
    """A submission that does not follow the format; nothing was stored."""


@dataclass
class Submission:
    """Decoded views: ``images[scene][file name]`` is an HxWx3 uint8 RGB array."""

    source: Path
    images: dict[str, dict[str, np.ndarray]]

    @property
    def scenes(self) -> list[str]:
        return sorted(self.images)


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _safe_parts(name: str, source: Path) -> tuple[str, ...]:
    """Path parts of an archive/folder entry; SubmissionError for absolute paths, drive letters, '..'."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise SubmissionError(f"entry {name!r} has an absolute or Windows-style path", source)
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise SubmissionError(f"entry {name!r} points outside the submission ('..')", source)
    if "\x00" in name:
        raise SubmissionError(f"entry {name!r} has a NUL character", source)
    return parts


def _zip_entries(path: Path, max_bytes: int, max_unpacked: int) -> dict[tuple[str, ...], bytes]:
    size = path.stat().st_size
    if size > max_bytes:
        raise SubmissionError(f"zip is {size} bytes, more than the limit of {max_bytes} bytes", path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SubmissionError(f"not a readable zip file ({exc})", path) from None
    out: dict[tuple[str, ...], bytes] = {}
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise SubmissionError(f"zip has {len(infos)} entries, more than {MAX_ENTRIES}", path)
        declared = sum(i.file_size for i in infos)
        if declared > max_unpacked:
            raise SubmissionError(f"zip unpacks to {declared} bytes, more than the limit of {max_unpacked} bytes", path)
        seen: dict[str, str] = {}
        total = 0
        for info in infos:
            parts = _safe_parts(info.filename, path)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise SubmissionError(f"entry {info.filename!r} is a symbolic link (not allowed)", path)
            key = "/".join(parts).casefold()
            if key in seen:
                raise SubmissionError(f"entry {info.filename!r} occurs twice (also as {seen[key]!r})", path)
            seen[key] = info.filename
            if info.is_dir() or not parts:
                continue
            try:
                with zf.open(info) as f:
                    data = f.read(max_unpacked - total + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as exc:
                raise SubmissionError(f"entry {info.filename!r} cannot be read ({exc})", path) from None
            total += len(data)
            if total > max_unpacked:
                raise SubmissionError(f"zip unpacks to more than the limit of {max_unpacked} bytes", path)
            out[parts] = data
    return out


def _folder_entries(path: Path, max_unpacked: int) -> dict[tuple[str, ...], bytes]:
    out: dict[tuple[str, ...], bytes] = {}
    seen: dict[str, str] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            if full.is_symlink():
                raise SubmissionError(f"entry {rel!r} is a symbolic link (not allowed)", path)
            key = rel.casefold()
            if key in seen:
                raise SubmissionError(f"entry {rel!r} occurs twice (also as {seen[key]!r})", path)
            seen[key] = rel
            if name in dirnames:
                continue
            if not full.is_file():
                raise SubmissionError(f"entry {rel!r} is not a regular file", path)
            total += full.stat().st_size
            if total > max_unpacked:
                raise SubmissionError(f"submission holds more than the limit of {max_unpacked} bytes", path)
            out[tuple(rel.split("/"))] = full.read_bytes()
    return out


def _strip_wrapper(entries: dict[tuple[str, ...], bytes], expected: dict[str, list[str]]) -> dict[tuple[str, ...], bytes]:
    """Drop one top-level folder that wraps every scene folder (a common way to zip a folder)."""
    tops = {p[0] for p in entries}
    if len(tops) == 1 and all(len(p) == 3 for p in entries) and next(iter(tops)) not in expected:
        return {p[1:]: d for p, d in entries.items()}
    return entries


def _decode(data: bytes, label: str, size: tuple[int, int], source: Path) -> np.ndarray:
    dims = png_size(data)
    if dims is None:
        raise SubmissionError(f"{label} is not a PNG file", source)
    if dims != size:
        raise SubmissionError(f"{label} is {dims[0]}x{dims[1]}, expected {size[0]}x{size[1]} (the ground-truth size)",
                              source)
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise SubmissionError(f"{label} is a corrupt PNG (cannot decode)", source)
    if arr.dtype != np.uint8:
        raise SubmissionError(f"{label} must be an 8-bit PNG, found {arr.dtype}", source)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] != 3:
        raise SubmissionError(f"{label} has {arr.shape[2]} channels, expected RGB", source)
    return np.ascontiguousarray(arr[:, :, ::-1])


def read_submission(
    path: str | Path,
    expected: dict[str, list[str]],
    size: tuple[int, int],
    max_bytes: int = MAX_BYTES,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
) -> Submission:
    """Read and fully validate a submission folder or zip.

    ``expected`` maps each scene to the file names of its test views; ``size`` is (width, height). Every
    problem raises :class:`SubmissionError` before anything is returned.
    """
    path = Path(path)
    if path.is_symlink():
        raise SubmissionError("submission path is a symbolic link (not allowed)", path)
    if path.is_dir():
        entries = _folder_entries(path, max_unpacked_bytes)
    elif path.is_file():
        entries = _zip_entries(path, max_bytes, max_unpacked_bytes)
    else:
        raise SubmissionError("submission not found (give a folder or a .zip)", path)
    if not entries:
        raise SubmissionError("submission is empty", path)
    entries = _strip_wrapper(entries, expected)

    for parts in sorted(entries):
        label = "/".join(parts)
        if len(parts) != 2:
            raise SubmissionError(f"unexpected file {label!r} (expected <scene>/<view>.png)", path)
        scene, name = parts
        if scene not in expected:
            raise SubmissionError(f"unexpected file {label!r}: {scene!r} is not a scene of this split "
                                  f"(scenes: {', '.join(sorted(expected))})", path)
        if name not in expected[scene]:
            raise SubmissionError(f"unexpected file {label!r}: not a test view of scene {scene!r}", path)
    for scene in sorted(expected):
        if not any(p[0] == scene for p in entries):
            raise SubmissionError(f"scene {scene!r} is missing (no folder {scene}/)", path)
        missing = [n for n in expected[scene] if (scene, n) not in entries]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise SubmissionError(f"scene {scene!r} is missing views {', '.join(missing[:3])}{more}", path)

    images: dict[str, dict[str, np.ndarray]] = {s: {} for s in expected}
    for (scene, name), data in sorted(entries.items()):
        images[scene][name] = _decode(data, f"{scene}/{name}", size, path)
    return Submission(source=path, images=images)
