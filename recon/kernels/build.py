"""Build and cache the C++/OpenMP CPU kernels through torch.utils.cpp_extension.

Compiled once per key into a user cache folder; later imports load the cached library in milliseconds. The
key covers the sources and the headers they include, the flags, the CPU, the interpreter (``sys.executable``,
``sys.prefix``, Python version) and the torch install (its path, version and C++ ABI), so two virtual
environments never share, and so never rebuild, each other's kernel. A build goes to a private temporary
folder that is renamed into place when complete (under a file lock so concurrent processes compile once):
a library a running job has loaded is never overwritten. When no compiler is available, or RECON_NO_CPP=1 is
set, ``load_cpp_extension`` returns None and callers fall back to the pure-PyTorch reference path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).parent / "csrc"
_cache: dict[str, ModuleType | None] = {}
_lock = threading.Lock()


def cache_root() -> Path:
    """Where built extensions live (RECON_CACHE_DIR, else ~/.cache/recon)."""
    root = os.environ.get("RECON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "recon")
    return Path(root) / "torch_extensions"


def cpp_disabled() -> bool:
    """True when the user asked for the PyTorch reference path only."""
    return os.environ.get("RECON_NO_CPP", "").strip() not in ("", "0", "false", "False")


def _openmp_flags() -> tuple[list[str], list[str]]:
    if sys.platform == "darwin":
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


def _cpu_signature() -> str:
    """Machine type plus the CPU model and flags (Linux), so builds tuned for one CPU stay with it."""
    import platform

    sig = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("model name", "flags", "Features")):
                sig += "|" + line.split(":", 1)[-1].strip()
            if sig.count("|") >= 2:
                break
    except OSError:
        pass
    return hashlib.sha1(sig.encode()).hexdigest()


def _local_headers(sources: list[Path]) -> list[Path]:
    """Headers from ``csrc/`` that the sources include (``#include "x.h"``), recursively, sorted."""
    found: set[Path] = set()
    todo = list(sources)
    while todo:
        text = todo.pop().read_text(errors="replace")
        for name in re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, flags=re.MULTILINE):
            h = CSRC / name
            if h.is_file() and h not in found:
                found.add(h)
                todo.append(h)
    return sorted(found)


def _default_cflags() -> list[str]:
    cflags, _ = _openmp_flags()
    if os.environ.get("RECON_PORTABLE_BUILD") is None:
        return ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", *cflags]
    return ["-O3", *cflags]


def key_parts(paths: list[Path], extra_cflags: list[str] | None = None) -> dict[str, str]:
    """Everything a built kernel depends on, by name (written next to the library as key.json)."""
    sources = hashlib.sha1()
    for p in [*paths, *_local_headers(paths)]:
        sources.update(p.name.encode() + b"\0" + p.read_bytes())
    return {
        "sources": sources.hexdigest(),
        "cflags": " ".join([*_default_cflags(), *(extra_cflags or [])]),
        "cxx": os.environ.get("CXX", ""),
        "portable": str(os.environ.get("RECON_PORTABLE_BUILD")),  # a -march=native build stays on its CPU
        "cpu": _cpu_signature(),
        "python": sys.version,
        "executable": os.path.realpath(sys.executable),
        "prefix": os.path.realpath(sys.prefix),
        "torch": torch.__version__,
        "torch_path": os.path.realpath(os.path.dirname(torch.__file__)),
        "cxx11_abi": str(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True))),
    }


def cache_key(parts: dict[str, str]) -> str:
    """12 hex digits of the hash of ``key_parts``."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` between processes (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _built_library(folder: Path, module_name: str) -> Path | None:
    for suffix in (".so", ".pyd"):
        lib = folder / f"{module_name}{suffix}"
        if lib.is_file():
            return lib
    return None


def _import_library(module_name: str, lib: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, lib)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {lib}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_into_place(final: Path, module_name: str, compile_fn: Callable[[Path], ModuleType]) -> ModuleType:
    """Load ``final/<module_name>.so``, building it first with ``compile_fn(tmp_dir)`` if it is missing.

    The build runs in a fresh temporary folder beside ``final`` and is renamed to ``final`` once it holds the
    library; a lock file serialises builders, so a finished ``final`` is never written to again.
    """
    lib = _built_library(final, module_name)
    if lib is not None:
        return _import_library(module_name, lib)
    with _file_lock(final.parent / f"{final.name}.lock"):
        lib = _built_library(final, module_name)
        if lib is not None:  # another process finished it while we waited
            return _import_library(module_name, lib)
        tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.build-", dir=final.parent))
        try:
            module = compile_fn(tmp)
            if _built_library(tmp, module_name) is None:
                raise RuntimeError(f"the build left no {module_name} library in {tmp}")
            if final.exists():  # an incomplete folder (e.g. from an interrupted older build): no library in it
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return module


def load_cpp_extension(name: str, sources: list[str], extra_cflags: list[str] | None = None) -> ModuleType | None:
    """Compile (first time) and load the extension ``name`` from files in ``csrc/``; None if that fails.

    ``extra_cflags`` are appended after the default flags (so they can override them, e.g. -fno-fast-math).
    The cache key is ``key_parts`` (sources, headers, flags, CPU, interpreter, torch install).
    """
    if cpp_disabled():
        return None
    with _lock:
        if name in _cache:
            return _cache[name]
        paths = [CSRC / s for s in sources]
        parts = key_parts(paths, extra_cflags)
        module_name = f"{name}_{cache_key(parts)}"
        final = cache_root() / module_name
        _, ldflags = _openmp_flags()

        def compile_fn(build_dir: Path) -> ModuleType:
            from torch.utils.cpp_extension import load

            print(
                f"[recon] compiling CPU kernel '{name}' (first use only, about a minute)...",
                file=sys.stderr,
                flush=True,
            )
            module = load(
                name=module_name,
                sources=[str(p) for p in paths],
                extra_cflags=_default_cflags() + list(extra_cflags or []),
                extra_ldflags=ldflags,
                build_directory=str(build_dir),
                verbose=False,
            )
            (build_dir / "key.json").write_text(json.dumps(parts, indent=1, sort_keys=True) + "\n")
            print(f"[recon] kernel '{name}' built and cached in {final}", file=sys.stderr, flush=True)
            return module

        try:
            module: ModuleType | None = build_into_place(final, module_name, compile_fn)
        except Exception as exc:  # no compiler, missing headers, ...
            warnings.warn(
                f"could not build the C++ kernel '{name}' "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "using the slower PyTorch reference path",
                RuntimeWarning,
                stacklevel=2,
            )
            module = None
        _cache[name] = module
        return module
