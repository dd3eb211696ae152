"""Build and cache the C++/OpenMP CPU kernels through torch.utils.cpp_extension.

Compiled once per (source hash, torch version) into a user cache folder; later imports load the cached
library in milliseconds. When no compiler is available, or RECON_NO_CPP=1 is set, ``load_cpp_extension``
returns None and callers fall back to the pure-PyTorch reference path.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import warnings
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


def load_cpp_extension(name: str, sources: list[str], extra_cflags: list[str] | None = None) -> ModuleType | None:
    """Compile (first time) and load the extension ``name`` from files in ``csrc/``; None if that fails.

    ``extra_cflags`` are appended after the default flags (so they can override them, e.g. -fno-fast-math).
    The cache key covers the sources, the ``csrc/`` headers they include, the flags and the torch version.
    """
    if cpp_disabled():
        return None
    with _lock:
        if name in _cache:
            return _cache[name]
        paths = [CSRC / s for s in sources]
        digest = hashlib.sha1()
        for p in [*paths, *_local_headers(paths)]:
            digest.update(p.read_bytes())
        digest.update(torch.__version__.encode())
        digest.update(" ".join(extra_cflags or []).encode())
        # a -march=native build must not be reused on another CPU or in portable mode
        digest.update(str(os.environ.get("RECON_PORTABLE_BUILD")).encode())
        digest.update(_cpu_signature().encode())
        tag = digest.hexdigest()[:12]
        build_dir = cache_root() / f"{name}_{tag}"
        build_dir.mkdir(parents=True, exist_ok=True)
        fresh = not any(build_dir.glob("*.so"))
        if fresh:
            print(
                f"[recon] compiling CPU kernel '{name}' (first use only, about a minute)...",
                file=sys.stderr,
                flush=True,
            )
        cflags, ldflags = _openmp_flags()
        try:
            from torch.utils.cpp_extension import load

            module = load(
                name=f"{name}_{tag}",
                sources=[str(p) for p in paths],
                extra_cflags=(
                    ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", *cflags]
                    if os.environ.get("RECON_PORTABLE_BUILD") is None
                    else ["-O3", *cflags]
                )
                + list(extra_cflags or []),
                extra_ldflags=ldflags,
                build_directory=str(build_dir),
                verbose=False,
            )
        except Exception as exc:  # no compiler, missing headers, ...
            warnings.warn(
                f"could not build the C++ kernel '{name}' "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "using the slower PyTorch reference path",
                RuntimeWarning,
                stacklevel=2,
            )
            module = None
        if fresh and module is not None:
            print(f"[recon] kernel '{name}' built and cached in {build_dir}", file=sys.stderr, flush=True)
        _cache[name] = module
        return module
