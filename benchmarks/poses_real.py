"""Pose estimation on real photos: each estimator on the real development sets, cameras dropped, vs the data's.

Sets (``--data`` holds the dataset folders, e.g. /work/shared/data/real): DTU scan24 and scan37 (RegNeRF
train views: 3 = 25, 22, 28; 9 = + 40, 44, 48, 0, 8, 13), Blender lego (DietNeRF frames: 3 = 26, 86, 2;
8 = + 55, 75, 93, 16, 73; composited on white as the reader does), LLFF fern at 1/8 size (RegNeRF: every 8th
image held out, 3 or 9 inputs by round(linspace) over the rest). The images are read as the protocols read
them (recon.bench.protocols); the cameras are dropped and each method estimates poses from the images alone,
with the true focal given ("true") or not ("none").

Reported per (set, method, focal): views registered, relative rotation error over every pair of registered
views (the angle of R_j R_i^T against the data's; median and max, no alignment needed), rotation error after a
similarity alignment (as benchmarks/poses.py), estimated/true focal, seconds (2 threads by default).

    .venv/bin/python benchmarks/poses_real.py --data /work/shared/data/real
    .venv/bin/python benchmarks/poses_real.py --data ... --methods colmap colmap_sparse --sets dtu/scan24:3
    .venv/bin/python benchmarks/poses_real.py --merge a.json b.json   # one table and --out from several runs
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from recon.bench.protocols import get_protocol, load_scene
from recon.errors import ReconInputError
from recon.io.types import ViewSet
from recon.poses import PoseResult, estimate_poses, pose_errors
from recon.poses import colmap_runner as cr
from recon.poses.view_graph import rotation_angle_deg

SETS = {  # name -> (scene folder under --data, protocol)
    "dtu/scan24:3": ("dtu/scan24", "dtu3"),
    "dtu/scan24:9": ("dtu/scan24", "dtu9"),
    "dtu/scan37:3": ("dtu/scan37", "dtu3"),
    "dtu/scan37:9": ("dtu/scan37", "dtu9"),
    "blender/lego:3": ("blender/lego", "blender3"),
    "blender/lego:8": ("blender/lego", "blender8"),
    "llff/fern:3": ("llff/fern", "llff3"),
    "llff/fern:9": ("llff/fern", "llff9"),
}


def _colmap(settings: cr.ColmapSettings, name: str) -> Callable[[ViewSet, float | None, int], PoseResult]:
    def run(v: ViewSet, focal: float | None, threads: int) -> PoseResult:
        st = dataclasses.replace(settings, num_threads=threads)
        return cr.colmap_poses(v, focal_px=focal, settings=st, method=name)

    return run


def _estimate(method: str) -> Callable[[ViewSet, float | None, int], PoseResult]:
    def run(v: ViewSet, focal: float | None, threads: int) -> PoseResult:
        return estimate_poses(v, method=method, focal_px=focal)

    return run


METHODS: dict[str, Callable[[ViewSet, float | None, int], PoseResult]] = {
    "own": _estimate("own"),
    "colmap": _colmap(cr.DEFAULT, "colmap"),
    "colmap_sparse": _colmap(cr.SPARSE, "colmap_sparse"),
    "colmap_affine": _colmap(cr.SPARSE_AFFINE, "colmap_affine"),
    "colmap_global": lambda v, f, th: cr.global_poses(v, f, dataclasses.replace(cr.SPARSE_GLOBAL, num_threads=th)),
    # one relaxation at a time, to see which matters
    "colmap_init": _colmap(
        dataclasses.replace(cr.DEFAULT, min_num_matches=10, init_min_num_inliers=30, init_min_tri_angle=4.0),
        "colmap_init",
    ),
    "colmap_2view": _colmap(dataclasses.replace(cr.DEFAULT, ignore_two_view_tracks=False), "colmap_2view"),
    "colmap_sparse_nodsp": _colmap(
        dataclasses.replace(cr.SPARSE, domain_size_pooling=False, max_features=8192), "colmap_sparse_nodsp"
    ),
    "colmap_sparse_freef": _colmap(dataclasses.replace(cr.SPARSE, fix_focal=False), "colmap_sparse_freef"),
    "auto": _estimate("auto"),
}


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout


def rel_rotation_errors(est: list, ref: list) -> np.ndarray:
    """Angle (deg) between estimated and true relative rotations R_j R_i^T over every pair of views."""
    out = []
    for i, j in itertools.combinations(range(len(est)), 2):
        Re = est[j].R @ est[i].R.T
        Rg = ref[j].R @ ref[i].R.T
        d = Re @ Rg.T
        out.append(rotation_angle_deg(d))
    return np.array(out)


def run_one(views: ViewSet, method: str, focal_mode: str, threads: int, timeout_s: int) -> dict:
    gt = views.cameras
    assert gt is not None
    u = ViewSet(names=list(views.names), images=list(views.images), cameras=None, source=views.source, meta={})
    focal = float(gt[0].fx) if focal_mode == "true" else None
    t = time.perf_counter()
    signal.alarm(timeout_s)
    try:
        r = METHODS[method](u, focal, threads)
    except _Timeout:
        return {"registered": 0, "views": len(views), "error": f"timeout {timeout_s} s", "seconds": float(timeout_s)}
    except (ReconInputError, Exception) as exc:  # a failed run counts as 0 registered views
        return {"registered": 0, "views": len(views), "error": str(exc)[:200], "seconds": time.perf_counter() - t}
    finally:
        signal.alarm(0)
    sec = time.perf_counter() - t
    ref = [gt[views.names.index(n)] for n in r.registered]
    rel = rel_rotation_errors(r.cameras, ref)
    e = pose_errors(r.cameras, ref)
    return {
        "registered": len(r.registered),
        "views": len(views),
        "failed": r.failed,
        "rel_rot_median_deg": float(np.median(rel)),
        "rel_rot_max_deg": float(np.max(rel)),
        "rot_median_deg": float(np.median(e["rotation_deg"])),
        "rot_max_deg": float(np.max(e["rotation_deg"])),
        "focal_ratio": float(r.cameras[0].fx / gt[0].fx),
        "seconds": sec,
        "used": r.method,
    }


def load_set(data: Path, name: str) -> ViewSet:
    folder, proto = SETS[name]
    return load_scene(get_protocol(proto), data / folder).inputs


def print_table(rows: list[dict]) -> None:
    print(
        f"{'set':15} {'method':20} {'focal':5} {'reg':>5} {'rel med':>8} {'rel max':>8} {'al med':>7} {'al max':>7} "
        f"{'f/f_gt':>6} {'s':>6}"
    )
    g = lambda r, k: f"{r[k]:8.2f}" if k in r else "      - "
    for r in rows:
        print(
            f"{r['set']:15} {r['method']:20} {r['focal']:5} {r['registered']:2d}/{r['views']:<2d} "
            f"{g(r, 'rel_rot_median_deg')} {g(r, 'rel_rot_max_deg')} {g(r, 'rot_median_deg')[1:]} "
            f"{g(r, 'rot_max_deg')[1:]} {g(r, 'focal_ratio')[2:]} {r['seconds']:6.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="folder holding dtu/, blender/, llff/ (the real development data)")
    ap.add_argument("--sets", nargs="*", default=list(SETS), choices=list(SETS))
    ap.add_argument("--methods", nargs="*", default=["own", "colmap", "colmap_sparse", "auto"], choices=list(METHODS))
    ap.add_argument("--focal", nargs="*", default=["none", "true"], choices=["none", "true"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=600, help="seconds before a run counts as failed")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/poses_real.json"))
    ap.add_argument("--merge", type=Path, nargs="*", default=None, help="print and write these result files as one")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.merge:
        seen: dict[tuple, dict] = {}
        for f in args.merge:  # the last result of each (set, method, focal) wins
            for r in json.loads(f.read_text())["runs"]:
                seen[(r["set"], r["method"], r["focal"])] = r
        rows = sorted(seen.values(), key=lambda r: (list(SETS).index(r["set"]), r["method"], r["focal"]))
        args.out.write_text(json.dumps({"threads": rows[0].get("threads"), "runs": rows}, indent=1))
        print_table(rows)
        return
    if args.data is None:
        ap.error("--data is required")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    cv2.setNumThreads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    signal.signal(signal.SIGALRM, _alarm)
    rows = []
    for name in args.sets:
        views = load_set(args.data, name)
        for method in args.methods:
            for focal in args.focal:
                res = run_one(views, method, focal, args.threads, args.timeout)
                res.update({"set": name, "method": method, "focal": focal, "threads": args.threads})
                rows.append(res)
                print(json.dumps(res), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"threads": args.threads, "runs": rows}, indent=1))
    print_table(rows)


if __name__ == "__main__":
    main()
