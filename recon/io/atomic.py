"""Atomic file and folder writes: a reader never sees half a file, and a run never loses anybody's files.

An output folder is built in a hidden sibling (``.NAME.pidPID.XXXX.partial``) and moved into place at the end.
The move never replaces what this process did not see at the start: a folder that appeared at the output path
during the run (another run, the user) is kept, and the new result goes to a free sibling name instead. An
``overwrite`` never removes the input being read, the working folder or one of their ancestors. Partial folders
whose process has died (killed with SIGKILL, a crashed machine) are swept by the next write to the same place.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from recon.errors import ReconInputError

# Legacy partial folders (no pid in the name) are swept when older than this.
_STALE_LEGACY_S = 24 * 3600.0
# Fingerprints of a folder being replaced look at no more than this many entries.
_FINGERPRINT_LIMIT = 20000
_RENAME_NOREPLACE = 1  # linux/fs.h


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)  # mkstemp makes 0600 files; give outputs the usual permissions
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def resolve_output_path(path: str | Path) -> Path:
    """The absolute output path with symlinks resolved; ReconInputError when it can never be a folder."""
    raw = Path(path)
    try:
        return _resolve_output_path(raw)
    except OSError as exc:  # anything the checks below did not foresee (ELOOP, EACCES on a parent, ...)
        raise ReconInputError(f"unusable output path ({exc.strerror or exc})", raw) from None


def _resolve_output_path(raw: Path) -> Path:
    # The hidden partial folder adds about 30 characters to the name; 255 bytes is every common file system's cap.
    too_long = [part for part in raw.parts if len(os.fsencode(part)) > 255 - 32]
    if too_long:
        raise ReconInputError(f"output folder name is too long ({len(too_long[0])} characters)", raw)
    if raw.is_symlink() and not raw.exists():
        raise ReconInputError("output path is a dangling symbolic link", raw)
    try:
        out = raw.resolve()
    except RuntimeError as exc:  # symlink loop
        raise ReconInputError(f"cannot resolve output path ({exc})", raw) from None
    if out.parent == out:
        raise ReconInputError("output cannot be the file-system root", raw)
    if out.exists() and not out.is_dir():
        raise ReconInputError("output path exists and is not a folder", raw)
    for anc in out.parents:
        if anc.exists():
            if not anc.is_dir():
                raise ReconInputError(f"output path lies under {anc}, which is a file, not a folder", raw)
            break
    return out


def check_output_dir(path: str | Path, overwrite: bool = False, protect: Iterable[str | Path] = ()) -> Path:
    """Validate an output folder before any work: ReconInputError for every way the final move could fail or
    destroy something. ``protect`` are paths being read (inputs): the output must not be them or hold them.
    Returns the resolved output path."""
    out = resolve_output_path(path)
    guarded = [(Path(p).resolve(), "the input") for p in protect]
    guarded += [(Path.cwd().resolve(), "the working folder"), (Path.home().resolve(), "the home folder")]
    for p, what in guarded:
        if _is_within(p, out):
            where = "is" if p == out else "holds"
            raise ReconInputError(f"refusing to write there: the output folder {where} {what} ({p})", path)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ReconInputError("output folder exists and is not empty (pass --overwrite to replace it)", path)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_partials(out: Path) -> list[Path]:
    """Remove hidden partial/old folders of ``out`` left by processes that no longer run; returns them."""
    removed = []
    pattern = re.compile(re.escape(f".{out.name}.") + r"(?:pid(\d+)\.)?[A-Za-z0-9_]+\.(?:partial|old)$")
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        m = pattern.match(p.name)
        if not m or not p.is_dir() or p.is_symlink():
            continue
        if m.group(1) is not None:
            stale = int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1)))
        else:
            try:
                stale = time.time() - p.stat().st_mtime > _STALE_LEGACY_S
            except OSError:
                stale = False
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _fingerprint(path: Path) -> tuple | None:
    """What is at ``path`` now (None = nothing): enough to notice that someone else changed it."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    entries = []
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in sorted(dirs + files):
                try:
                    s = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                entries.append((os.path.relpath(os.path.join(root, name), path), s.st_ino, s.st_size, s.st_mtime_ns))
            if len(entries) > _FINGERPRINT_LIMIT:
                break
    return (st.st_dev, st.st_ino, st.st_mode, tuple(sorted(entries)))


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` failing with FileExistsError when ``dst`` exists (even an empty folder)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd = -100
        rc = renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST or err == errno.ENOTEMPTY:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL/ENOSYS: the file system cannot; fall back
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "File exists", str(dst))
    os.rename(src, dst)


def _free_sibling(out: Path) -> Path:
    """A name next to ``out`` that nothing uses yet: NAME-2, NAME-3, ..."""
    for k in range(2, 10000):
        cand = out.with_name(f"{out.name}-{k}")
        if not os.path.lexists(cand):
            return cand
    raise ReconInputError("no free folder name next to the output", out)


@contextmanager
def atomic_output_dir(path: str | Path, overwrite: bool = False, protect: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Build a whole output folder in a hidden sibling temporary folder, then move it into place.

    Yields the temporary folder to write into. If the block fails (or the process is told to stop), the
    temporary folder is removed and ``path`` is untouched. An existing non-empty ``path`` is only replaced
    when ``overwrite`` is true, and only if it is unchanged since the start; a folder that appeared during the
    block is never replaced: the result goes to a free sibling name and ReconInputError says where.
    """
    protect = list(protect)
    out = check_output_dir(path, overwrite=overwrite, protect=protect)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_partials(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.pid{os.getpid()}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise ReconInputError(f"cannot create the output folder ({exc.strerror or exc})", path) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    before = _fingerprint(out)
    try:
        yield tmp
        _move_into_place(tmp, out, before, Path(path))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, out: Path, before: tuple | None, shown: Path) -> None:
    """Final step of :func:`atomic_output_dir`: replace only what was there at the start, unchanged."""
    now = _fingerprint(out)
    if now is not None and now != before:
        alt = _free_sibling(out)
        _rename_noreplace(tmp, alt)
        raise ReconInputError(
            f"the output folder was created or changed by someone else during this run and was "
            f"left as it is; this run's result is in {alt}",
            shown,
        )
    if now is None:
        try:
            _rename_noreplace(tmp, out)
        except FileExistsError:  # appeared in the last instant
            alt = _free_sibling(out)
            _rename_noreplace(tmp, alt)
            raise ReconInputError(
                f"the output folder appeared during this run and was left as it is; this run's result is in {alt}",
                shown,
            ) from None
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.pid{os.getpid()}.", suffix=".old", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        _rename_noreplace(tmp, out)
    except BaseException:
        os.rename(old, out)  # put the old folder back
        raise
    shutil.rmtree(old, ignore_errors=True)
