"""Read and validate a benchmark submission (a folder or a zip) without trusting anything in it.

Format (as SpaRe): one folder per scene holding the rendered test views, named like the ground truth
(``cam_{i+1:03d}_3_0000.png``), RGB(A) 8-bit PNG at the ground-truth resolution. A zip may wrap everything
in one top-level folder. Nothing is extracted to disk.

Every name, the entry count and every declared size are checked from the listing (the zip's central
directory, or the folder's ``lstat``) *before* any entry is read, so a hostile archive costs only its
listing. Entries are then read one at a time with a bounded read (a zip can lie about sizes) and decoded at
once; a PNG's header size is checked before it is decoded (decompression bombs).

Rejected, with a one-line :class:`SubmissionError` naming the entry: missing scenes or views, extra files or
folders, wrong image size, files that are not PNG or do not decode, absolute paths or ``..`` in names,
symlinks (in the zip or in the folder), names that occur twice (also differing only in case), encrypted
entries, more entries than the split needs, a zip larger than ``max_bytes``, an entry larger than a PNG of
the expected size can be, or entries adding up to more than ``max_unpacked_bytes`` (zip bombs).
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from recon.errors import ReconInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 256 * 1024 * 1024  # a submission of 30 scenes x 10 views at 400x300 is ~50 MB
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_ENTRIES = 20000  # ceiling for any zip, whatever the split
PNG_METADATA_BYTES = 1 << 20  # room for text/ICC chunks some tools add
CD_BYTES_PER_ENTRY = 1024  # central directory record (46 bytes) + a generous name and extra field


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


@dataclass
class _Entry:
    """A file of the submission, not read yet: its declared size and a bounded reader."""

    size: int
    read: Callable[[int], bytes]  # read(n): at most n bytes


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def max_png_bytes(size: tuple[int, int]) -> int:
    """The largest file a ``size`` 8-bit PNG needs: twice its raw RGBA rows plus room for metadata."""
    w, h = size
    return 2 * h * (1 + 4 * w) + PNG_METADATA_BYTES


def max_entries(expected: dict[str, list[str]]) -> int:
    """Entries a submission of ``expected`` may hold: its files, a folder per scene and one wrapper folder."""
    return sum(len(v) for v in expected.values()) + len(expected) + 1


def open_zip(path: Path, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES) -> zipfile.ZipFile:
    """Open a zip after checking its size and central directory size (ZipFile parses all of it on open)."""
    size = path.stat().st_size
    if size > max_bytes:
        raise SubmissionError(f"zip is {size} bytes, more than the limit of {max_bytes} bytes", path)
    try:
        with open(path, "rb") as f:
            end = zipfile._EndRecData(f)  # the end record ZipFile itself trusts (private but long-stable)
        if end is None:
            raise zipfile.BadZipFile("no end of central directory record")
        cd_limit = CD_BYTES_PER_ENTRY * max_entries + 65536
        if end[zipfile._ECD_SIZE] > cd_limit:
            raise SubmissionError(
                f"zip's directory is {end[zipfile._ECD_SIZE]} bytes, more than {max_entries} entries need", path
            )
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, struct.error) as exc:
        raise SubmissionError(f"not a readable zip file ({exc})", path) from None
    n = len(zf.infolist())
    if n > max_entries:
        zf.close()
        raise SubmissionError(
            f"zip has {n} entries, more than the {max_entries} a submission of this split holds", path
        )
    return zf


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


def _zip_listing(
    zf: zipfile.ZipFile, path: Path, max_unpacked: int
) -> tuple[dict[tuple[str, ...], _Entry], set[tuple[str, ...]]]:
    """(files, folders) from the central directory alone; nothing is decompressed."""
    infos = zf.infolist()
    declared = sum(i.file_size for i in infos)
    if declared > max_unpacked:
        raise SubmissionError(f"zip unpacks to {declared} bytes, more than the limit of {max_unpacked} bytes", path)
    files: dict[tuple[str, ...], _Entry] = {}
    dirs: set[tuple[str, ...]] = set()
    seen: dict[str, str] = {}
    for info in infos:
        parts = _safe_parts(info.filename, path)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise SubmissionError(f"entry {info.filename!r} is a symbolic link (not allowed)", path)
        key = "/".join(parts).casefold()
        if key in seen:
            raise SubmissionError(f"entry {info.filename!r} occurs twice (also as {seen[key]!r})", path)
        seen[key] = info.filename
        if info.is_dir() or not parts:
            dirs.add(parts)
            continue
        if info.flag_bits & 0x1:
            raise SubmissionError(f"entry {info.filename!r} is encrypted (not allowed)", path)
        files[parts] = _Entry(info.file_size, lambda n, info=info: _read_zip_entry(zf, info, n, path))
    return files, dirs


def _read_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, n: int, path: Path) -> bytes:
    try:
        with zf.open(info) as f:
            return f.read(n)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, ValueError) as exc:
        raise SubmissionError(f"entry {info.filename!r} cannot be read ({exc})", path) from None


def _folder_listing(path: Path, limit: int) -> tuple[dict[tuple[str, ...], _Entry], set[tuple[str, ...]]]:
    """(files, folders) from the folder's names and ``lstat`` sizes; no file is opened."""
    files: dict[tuple[str, ...], _Entry] = {}
    dirs: set[tuple[str, ...]] = set()
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise SubmissionError(f"entry {rel!r} is a symbolic link (not allowed)", path)
            key = rel.casefold()
            if key in seen:
                raise SubmissionError(f"entry {rel!r} occurs twice (also as {seen[key]!r})", path)
            seen[key] = rel
            if len(seen) > limit:
                raise SubmissionError(
                    f"submission holds more than the {limit} entries a submission of this split holds", path
                )
            if name in dirnames:
                dirs.add(tuple(rel.split("/")))
            elif not stat.S_ISREG(st.st_mode):
                raise SubmissionError(f"entry {rel!r} is not a regular file", path)
            else:
                reader = lambda n, full=full, rel=rel: _read_file(full, rel, n, path)
                files[tuple(rel.split("/"))] = _Entry(st.st_size, reader)
    return files, dirs


def _read_file(full: Path, rel: str, n: int, path: Path) -> bytes:
    """At most ``n`` bytes of a regular file (not following a symlink swapped in since the listing)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(full, flags)
    except OSError as exc:
        raise SubmissionError(f"entry {rel!r} cannot be read ({exc.strerror})", path) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SubmissionError(f"entry {rel!r} is not a regular file", path)
        return f.read(n)


def _strip_wrapper(
    files: dict[tuple[str, ...], _Entry], dirs: set[tuple[str, ...]], expected: dict[str, list[str]]
) -> tuple[dict[tuple[str, ...], _Entry], set[tuple[str, ...]]]:
    """Drop one top-level folder that wraps every scene folder (a common way to zip a folder)."""
    tops = {p[0] for p in files}
    if len(tops) == 1 and all(len(p) == 3 for p in files) and next(iter(tops)) not in expected:
        top = next(iter(tops))
        return {p[1:]: e for p, e in files.items()}, {d[1:] for d in dirs if d[:1] == (top,)} | {
            d for d in dirs if d[:1] != (top,)
        }
    return files, dirs


def _check_layout(
    files: dict[tuple[str, ...], _Entry], dirs: set[tuple[str, ...]], expected: dict[str, list[str]], path: Path
) -> None:
    """Every file is an expected view, every folder a scene (or the root), and nothing is missing."""
    for parts in sorted(files):
        label = "/".join(parts)
        if len(parts) != 2:
            raise SubmissionError(f"unexpected file {label!r} (expected <scene>/<view>.png)", path)
        scene, name = parts
        if scene not in expected:
            raise SubmissionError(
                f"unexpected file {label!r}: {scene!r} is not a scene of this split "
                f"(scenes: {', '.join(sorted(expected))})",
                path,
            )
        if name not in expected[scene]:
            raise SubmissionError(f"unexpected file {label!r}: not a test view of scene {scene!r}", path)
    for parts in sorted(dirs):
        if len(parts) > 1 or (parts and parts[0] not in expected):
            raise SubmissionError(f"unexpected folder {'/'.join(parts) + '/'!r} (expected <scene>/<view>.png)", path)
    for scene in sorted(expected):
        if not any(p[0] == scene for p in files):
            raise SubmissionError(f"scene {scene!r} is missing (no folder {scene}/)", path)
        missing = [n for n in expected[scene] if (scene, n) not in files]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise SubmissionError(f"scene {scene!r} is missing views {', '.join(missing[:3])}{more}", path)


def _decode(data: bytes, label: str, size: tuple[int, int], source: Path) -> np.ndarray:
    dims = png_size(data)
    if dims is None:
        raise SubmissionError(f"{label} is not a PNG file", source)
    if dims != size:  # checked before decoding: the header can declare gigapixels in a few bytes
        raise SubmissionError(
            f"{label} is {dims[0]}x{dims[1]}, expected {size[0]}x{size[1]} (the ground-truth size)", source
        )
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
    limit = max_entries(expected)
    per_file = max_png_bytes(size)
    budget = min(max_unpacked_bytes, per_file * sum(len(v) for v in expected.values()))
    if path.is_symlink():
        raise SubmissionError("submission path is a symbolic link (not allowed)", path)
    zf = None
    try:
        if path.is_dir():
            files, dirs = _folder_listing(path, limit)
            total = sum(e.size for e in files.values())
            if total > budget:
                raise SubmissionError(f"submission holds {total} bytes, more than the limit of {budget} bytes", path)
        elif path.is_file():
            zf = open_zip(path, max_bytes, limit)
            files, dirs = _zip_listing(zf, path, budget)
        else:
            raise SubmissionError("submission not found (give a folder or a .zip)", path)
        if not files:
            raise SubmissionError("submission is empty", path)
        files, dirs = _strip_wrapper(files, dirs, expected)
        _check_layout(files, dirs, expected, path)
        for (scene, name), entry in sorted(files.items()):
            if entry.size > per_file:
                raise SubmissionError(
                    f"{scene}/{name} is {entry.size} bytes, more than a {size[0]}x{size[1]} PNG "
                    f"needs ({per_file} bytes)",
                    path,
                )

        images: dict[str, dict[str, np.ndarray]] = {s: {} for s in expected}
        read = 0
        for (scene, name), entry in sorted(files.items()):
            data = entry.read(per_file + 1)  # bounded: the declared size may be a lie
            read += len(data)
            if len(data) > per_file or read > budget:
                raise SubmissionError(
                    f"{scene}/{name} unpacks to more than its declared size allows "
                    f"(limit {per_file} bytes per file, {budget} in all)",
                    path,
                )
            images[scene][name] = _decode(data, f"{scene}/{name}", size, path)
    finally:
        if zf is not None:
            zf.close()
    return Submission(source=path, images=images)
