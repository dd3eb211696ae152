"""Open the files users hand us without hanging or reading without end.

A FIFO blocks a plain ``open``/``read`` forever and ``/dev/zero`` never ends, so every reader opens input files
through :func:`read_bytes`: non-blocking open, then ``fstat`` on the open descriptor (no race with a swap of the
file), regular files only, and a size cap checked before reading. Problems are one-line ReconInputErrors.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from recon.errors import ReconInputError


def file_kind(path: Path) -> str:
    """What is at ``path``: "file", "folder", "missing", "broken symbolic link", "FIFO", "device", "socket",
    or "unreadable path" (name too long, embedded NUL, no permission on a parent folder)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "missing"
    except (OSError, ValueError):
        return "unreadable path"
    return _mode_kind(st.st_mode)


def _mode_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def not_regular_message(kind: str, what: str) -> str:
    """The one-line problem for a ``what`` (e.g. "image file") that is not a regular file."""
    if kind == "missing":
        return f"{what} not found"
    if kind == "broken symbolic link":
        return f"{what} is a broken symbolic link (its target does not exist)"
    if kind == "unreadable path":
        return f"{what} path cannot be used (too long, bad characters or no permission)"
    article = "an" if kind[0] in "aeiouAEIOU" else "a"
    return f"{what} is {article} {kind}, not a regular file"


def is_regular_file(path: Path) -> bool:
    """True for a regular file (following symbolic links); never raises."""
    return file_kind(path) == "file"


def read_bytes(path: str | Path, what: str = "file", max_bytes: int | None = None) -> bytes:
    """The contents of the regular file ``path``; ReconInputError for anything else or a file over ``max_bytes``."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ReconInputError(not_regular_message(file_kind(path), what), path) from None
    except IsADirectoryError:
        raise ReconInputError(not_regular_message("folder", what), path) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ReconInputError(f"cannot open {what} ({reason})", path) from None
    try:
        st = os.fstat(fd)
        kind = _mode_kind(st.st_mode)
        if kind != "file":
            raise ReconInputError(not_regular_message(kind, what), path)
        if max_bytes is not None and st.st_size > max_bytes:
            raise ReconInputError(f"{what} is too large ({st.st_size} bytes; the limit is {max_bytes})", path)
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            # The size fstat saw, not read(): that would follow a file still being appended to without end.
            return fh.read(st.st_size)
    except OSError as exc:
        raise ReconInputError(f"cannot read {what} ({exc.strerror or exc})", path) from None
    finally:
        if fd >= 0:
            os.close(fd)


def read_text(path: str | Path, what: str = "file", max_bytes: int | None = None) -> str:
    """``read_bytes`` decoded as UTF-8; ReconInputError when it is not UTF-8 text."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ReconInputError(f"{what} is not UTF-8 text", path) from None
