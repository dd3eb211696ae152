"""The fuzzer's worker process: reads cases from stdin (one JSON line each), runs the reader, answers one line.

Run as ``python -m benchmarks._fuzz.worker MEM_BYTES`` from the repository root. After importing everything the
readers use, it caps its address space at what it holds then plus MEM_BYTES (resource.setrlimit(RLIMIT_AS)), so
a reader that tries to allocate gigabytes fails with MemoryError instead of taking the machine. Per case it
reports the outcome, the time, and the peak resident memory during the case (VmHWM, reset before each case via
/proc/self/clear_refs). A valid result is checked too: a reader must not hand on NaN cameras or images outside [0, 1].
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import resource
import sys
import time
import warnings
from typing import Any

import numpy as np

OUTCOMES = ("valid", "input_error", "exception", "hang", "crash")


def _status_kb(field: str) -> int:
    try:
        text = open("/proc/self/status").read()
    except OSError:
        return 0
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def check_views(views: Any) -> str | None:
    """What is wrong with a ViewSet a reader returned, or None."""
    n = len(views.images)
    if n < 2 or len(views.names) != n:
        return f"{n} images, {len(views.names)} names"
    for i, img in enumerate(views.images):
        if img.dtype != np.float32 or img.ndim != 3 or img.shape[2] != 3:
            return f"image {i} has dtype {img.dtype} shape {img.shape}"
        if not np.all(np.isfinite(img)) or img.min(initial=0) < 0 or img.max(initial=0) > 1:
            return f"image {i} has values outside [0, 1]"
    for i, mask in enumerate(views.masks or []):
        if mask.shape != views.images[i].shape[:2] or not np.all(np.isfinite(mask)):
            return f"mask {i} has shape {mask.shape} or non-finite values"
    for i, cam in enumerate(views.cameras or []):
        h, w = views.images[i].shape[:2]
        if (cam.width, cam.height) != (w, h):
            return f"camera {i} is {cam.width}x{cam.height}, image {w}x{h}"
        if not (np.all(np.isfinite(cam.K)) and np.all(np.isfinite(cam.viewmat)) and cam.fx > 0 and cam.fy > 0):
            return f"camera {i} is not finite or has a non-positive focal"
        if np.abs(cam.R.T @ cam.R - np.eye(3)).max() > 1e-6 or np.linalg.det(cam.R) < 0:
            return f"camera {i} rotation is not a rotation"
    return None


def check_model(model: Any) -> str | None:
    """What is wrong with a GaussianModel read_ply returned, or None."""
    import torch

    for key, value in model.splats.items():
        if not torch.isfinite(value).all():
            return f"{key} is not finite"
    return None


def _selftest(kind: str) -> None:
    """Misbehave on purpose, so that a test can check the harness sees hangs, crashes and memory blow-ups."""
    if kind == "hang":
        time.sleep(3600)
    elif kind == "crash":
        os.abort()
    elif kind == "memory":
        np.ones(4 * 1024**3, dtype=np.uint8)


def run_case(call: str, path: str) -> dict[str, Any]:
    """Run one reader on ``path``; the outcome and a one-line detail."""
    from recon.errors import ReconInputError

    try:
        if call == "selftest":
            _selftest(path)
            problem = None
        elif call == "ply":
            from renderers.gaussians.ply import read_ply

            problem = check_model(read_ply(path))
        elif call == "views":
            from recon.io.detect import read_views

            problem = check_views(read_views(path))
        else:  # "module:function", a reader that returns a ViewSet
            module, _, name = call.partition(":")
            problem = check_views(getattr(importlib.import_module(module), name)(path))
    except ReconInputError as exc:
        msg = str(exc)
        if "\n" in msg or exc.path is None:
            return {
                "outcome": "exception",
                "type": "ReconInputError",
                "detail": "not one line naming a file: " + msg.replace("\n", "\\n")[:300],
            }
        return {"outcome": "input_error", "detail": msg[:300]}
    except BaseException as exc:  # the point is to see every kind
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return {"outcome": "exception", "type": type(exc).__name__, "detail": first}
    if problem:
        return {"outcome": "exception", "type": "BadResult", "detail": problem}
    return {"outcome": "valid", "detail": ""}


def _prepare(mem_bytes: int) -> None:
    """Import what the readers use, quieten them, then cap the address space."""
    import pycolmap  # noqa: F401 - imported here (after cv2) so that the memory cap leaves room for nothing else

    import recon.io.detect  # noqa: F401 - cv2 before pycolmap, as in the app (and every reader it dispatches to)
    import renderers.gaussians.ply  # noqa: F401 - torch

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    if mem_bytes > 0:
        limit = _status_kb("VmSize") * 1024 + mem_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str]) -> None:
    mem_bytes = int(argv[0]) if argv else 2 * 1024**3
    out = os.fdopen(os.dup(1), "w")  # the protocol channel; anything a reader prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _prepare(mem_bytes)
    out.write(json.dumps({"ready": True, "baseline_rss_mb": _status_kb("VmRSS") / 1024}) + "\n")
    out.flush()
    for line in sys.stdin:
        case = json.loads(line)
        can_reset = _reset_peak()
        before = _status_kb("VmRSS")
        t0 = time.perf_counter()
        result = run_case(case["call"], case["path"])
        result["seconds"] = round(time.perf_counter() - t0, 4)
        peak = _status_kb("VmHWM") if can_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result["peak_rss_mb"] = round(peak / 1024, 1)
        result["extra_mb"] = round(max(0, peak - before) / 1024, 1)
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
