"""Pose-estimation benchmark: recon.poses' methods and pycolmap on generated scenes with known cameras.

For each scene and each view count (3 = the 3-view track, 6 = the 3-view track + the 9-view track's top row,
9 = the 9-view track) it reports registered views, rotation error (deg) and camera-centre error (in the
scene's world units; the rig radius is ~2-3) after similarity alignment (median / max over the registered
views) and time, for both methods in the same run. Writes benchmarks/results/poses.json and prints a table.

    .venv/bin/python benchmarks/poses.py --scenes 10 --focal exif
    .venv/bin/python benchmarks/poses.py --only 0 1 2 3 4 --out /tmp/a.json   # two halves in parallel, then
    .venv/bin/python benchmarks/poses.py --merge /tmp/a.json /tmp/b.json      # one table and poses.json

The end-to-end check (``--psnr 1 2 3``): a plain image folder (no cameras; ``--exif`` gives the photos an EXIF
focal length) of each scene's 9 input views is reconstructed (estimated poses, photometric pose refinement) and
compared with the same run on the ground-truth poses: test-view masked PSNR (a) with the ground-truth test cameras
mapped by a similarity fitted on the input cameras ("est sim"), and (b) as pose-free evaluations do, with the
run's focal scale and each test camera's pose fitted to its image with the reconstruction frozen ("est fit"; the
ground-truth run gets the same fit, "GT fit"). Writes poses_psnr.json / poses_psnr_exif.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from recon.bench.synth import make_scene
from recon.errors import ReconInputError
from recon.io.spare import read_spare_scene
from recon.io.types import ViewSet
from recon.poses import estimate_poses, pose_errors


def views_for(scene: Path, count: int) -> ViewSet:
    v = read_spare_scene(scene, track=3 if count == 3 else 9, split="train")
    return v if count != 6 else v.subset(list(range(6)))


def run_one(v: ViewSet, method: str, focal: str) -> dict:
    gt = v.cameras
    u = ViewSet(names=v.names, images=v.images, cameras=None, source=v.source, meta={})
    fpx = gt[0].fx if focal == "exif" else None
    t = time.perf_counter()
    try:
        if method == "colmap_sparse":
            from recon.poses.colmap_runner import SPARSE, colmap_poses

            r = colmap_poses(u, focal_px=fpx, settings=SPARSE, method=method)
        else:
            r = estimate_poses(u, method=method, focal_px=fpx)
    except (ReconInputError, Exception) as exc:  # a failed run counts as 0 registered views
        return {"registered": 0, "views": len(v), "error": str(exc)[:200], "seconds": time.perf_counter() - t}
    sec = time.perf_counter() - t
    ref = [gt[v.names.index(n)] for n in r.registered]
    e = pose_errors(r.cameras, ref)
    return {
        "registered": len(r.registered),
        "views": len(v),
        "failed": r.failed,
        "rot_median_deg": float(np.median(e["rotation_deg"])),
        "rot_max_deg": float(np.max(e["rotation_deg"])),
        "center_median": float(np.median(e["center"])),
        "center_max": float(np.max(e["center"])),
        "focal_est": float(r.cameras[0].fx),
        "focal_gt": float(gt[0].fx),
        "seconds": sec,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=10)
    ap.add_argument("--only", type=int, nargs="*", default=None, help="run only these scene numbers")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=None,
        help="print the table of these result files (from parallel runs) and write --out",
    )
    ap.add_argument("--root", type=Path, default=Path("/tmp/recon_pose_scenes"))
    ap.add_argument("--counts", type=int, nargs="+", default=[3, 6, 9])
    ap.add_argument(
        "--focal",
        choices=["exif", "none"],
        default="exif",
        help="exif: the true focal is given as an EXIF-like prior; none: default FOV + focal search",
    )
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--height", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/poses.json"))
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["auto", "colmap"],
        choices=["auto", "own", "colmap", "colmap_sparse"],
        help="auto: the default (pycolmap incremental, its global mapper where views are left out); own: the "
        "built-in SfM (the default before issue 17); colmap: pycolmap defaults; colmap_sparse: pycolmap relaxed for "
        "few views",
    )
    ap.add_argument("--no-colmap", action="store_true", help="only the first of --methods")
    ap.add_argument(
        "--psnr",
        type=int,
        nargs="*",
        default=None,
        help="instead: the PSNR check (image folder vs ground-truth poses) on these scene numbers",
    )
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--exif", action="store_true", help="PSNR check: give the photos an EXIF focal length")
    ap.add_argument("--no-raw", action="store_true", help="PSNR check: skip the run without pose refinement")
    ap.add_argument("--max-side", type=int, default=400)
    ap.add_argument("--pose-lr", type=float, default=None, help="PSNR check: override the config's pose_lr")
    ap.add_argument("--work", type=Path, default=Path("/tmp/recon_pose_psnr"), help="PSNR check: work folder")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.psnr is not None:
        work = args.work
        path = args.out.with_name("poses_psnr_exif.json" if args.exif else "poses_psnr.json")
        # results of other scenes with the same settings (an earlier invocation) are kept beside the new ones
        old = json.loads(path.read_text()) if path.exists() else []
        res = [
            r
            for r in old
            if r.get("iterations") == args.iterations
            and r.get("max_side") == args.max_side
            and r["scene"] not in {f"s{s}" for s in args.psnr}
            and "psnr_est_refined_fitted" in r
        ]
        for s in args.psnr:
            scene = args.root / f"s{s}"
            if not (scene / "scene.json").exists():
                make_scene(scene, seed=100 + s, width=args.width, height=args.height, views="splits")
            res.append(
                psnr_check(
                    scene,
                    work,
                    args.iterations,
                    args.max_side,
                    exif=args.exif,
                    raw=not args.no_raw,
                    pose_lr=args.pose_lr,
                )
            )
            print(json.dumps(res[-1]), flush=True)
            res.sort(key=lambda r: int(r["scene"][1:]))
            path.write_text(json.dumps(res, indent=1))
        print_psnr_table(res)
        return
    if args.merge:
        seen: dict[tuple, dict] = {}
        for f in args.merge:  # the first result of each (scene, views, method) wins
            for r in json.loads(f.read_text())["runs"]:
                seen.setdefault((r["scene"], r["count"], r["method"]), r)
        rows = list(seen.values())
        rows.sort(key=lambda r: (int(r["scene"][1:]), r["count"], r["method"]))
        write_results(args, rows)
        print_table(rows)
        return
    rows = []
    for s in args.only if args.only is not None else range(args.scenes):
        scene = args.root / f"s{s}"
        if not (scene / "scene.json").exists():
            make_scene(scene, seed=100 + s, width=args.width, height=args.height, views="splits", overwrite=True)
        for count in args.counts:
            v = views_for(scene, count)
            for method in args.methods[:1] if args.no_colmap else args.methods:
                res = run_one(v, method, args.focal)
                res.update({"scene": scene.name, "count": count, "method": method})
                rows.append(res)
                print(json.dumps(res), flush=True)
                write_results(args, rows)  # after every run, so an interrupted benchmark keeps what it measured
    print_table(rows)


def write_results(args: argparse.Namespace, rows: list[dict]) -> None:
    """The results JSON: the runs and their per-method, per-view-count summary (merged files and plain runs alike)."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"focal_prior": args.focal, "size": [args.width, args.height], "runs": rows, "summary": summarise(rows)}
    args.out.write_text(json.dumps(doc, indent=1))


def _save_with_focal(path: Path, img: np.ndarray, focal_px: float) -> None:
    """PNG carrying an EXIF FocalLengthIn35mmFilm tag (rounded to whole mm, as cameras write it)."""
    from PIL import Image

    h, w = img.shape[:2]
    exif = Image.Exif()
    exif[41989] = int(round(focal_px * 43.2666 / float(np.hypot(w, h))))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path, exif=exif)


def psnr_check(
    scene: Path,
    work: Path,
    iterations: int,
    max_side: int,
    track: int = 9,
    exif: bool = False,
    raw: bool = True,
    fit_steps: int = 150,
    pose_lr: float | None = None,
) -> dict:
    """Test-view masked PSNR of a reconstruction from a plain image folder (estimated + refined poses) vs the
    same run with ground-truth poses. The estimated frame is aligned to the ground truth by a similarity
    fitted on the input cameras; the test cameras are mapped into the estimated frame for rendering."""
    from recon.bench.evaluate import score_model
    from recon.bench.pose_free import fit_test_cameras
    from recon.cameras import Camera
    from recon.config import make_config
    from recon.io.detect import resize_views
    from recon.io.images import save_image
    from recon.pipeline import reconstruct
    from recon.poses import align_cameras, transform_camera
    from renderers.gaussians.ply import read_ply

    train = read_spare_scene(scene, track=track, split="train")
    folder = work / f"{scene.name}_photos"
    for k, (img, m) in enumerate(zip(train.images, train.masks or [None] * len(train))):
        if exif:
            _save_with_focal(folder / f"IMG_{k}.png", img, train.cameras[k].fx)
        else:
            save_image(folder / f"IMG_{k}.png", img)
        if m is not None:
            save_image(folder / "masks" / f"IMG_{k}.png", m)
    out: dict = {
        "scene": scene.name,
        "iterations": iterations,
        "max_side": max_side,
        "track": track,
        "focal_prior": "exif-like FocalLengthIn35mmFilm" if exif else "none",
    }
    cfg = make_config("fast", iterations=iterations, max_side=max_side, track=track)
    gt_run = work / f"{scene.name}_gt"
    done = json.loads((gt_run / "config.json").read_text()) if (gt_run / "config.json").exists() else {}
    if not (
        done.get("iterations") == iterations
        and done.get("max_side") == max_side
        and done.get("track") == track
        and (gt_run / "splats.ply").exists()
    ):  # the ground-truth-pose run does not change: reused
        reconstruct(scene, gt_run, cfg, overwrite=True)
    test_gt = resize_views(read_spare_scene(scene, track=track, split="test"), max_size=max_side)
    gt_model = read_ply(gt_run / "splats.ply")
    out["psnr_gt_poses"] = score_model(gt_model, test_gt).mean["masked_psnr"]
    if fit_steps:
        test_gt.cameras, _ = fit_test_cameras(gt_model, test_gt, steps=fit_steps)
        out["psnr_gt_poses_fitted"] = score_model(gt_model, test_gt).mean["masked_psnr"]
    for refine in (True, False) if raw else (True,):
        run = work / f"{scene.name}_est_{'refined' if refine else 'raw'}"
        cfg = make_config(
            "fast",
            iterations=iterations,
            max_side=max_side,
            settings={"poses.refine": refine, **({"poses.lr": pose_lr} if pose_lr is not None else {})},
        )
        summary = reconstruct(folder, run, cfg, overwrite=True)
        cams = [Camera.from_dict(d) for d in json.loads((run / "cameras.json").read_text())["cameras"]]
        gt_train = resize_views(read_spare_scene(scene, track=track, split="train"), max_size=max_side).cameras
        ref = [gt_train[int(c.name.split("_")[1].split(".")[0])] for c in cams]
        sim = align_cameras(cams, ref).inverse()  # ground truth -> estimated frame
        test = resize_views(read_spare_scene(scene, track=track, split="test"), max_size=max_side)
        test.cameras = [transform_camera(c, sim) for c in test.cameras]
        key = "refined" if refine else "raw"
        model = read_ply(run / "splats.ply")
        out[f"psnr_est_{key}"] = score_model(model, test).mean["masked_psnr"]
        if fit_steps:  # the pose-free protocol: test cameras with the run's focal scale, poses fitted
            scale = float(np.mean([c.fx / r.fx for c, r in zip(cams, ref)]))
            for c in test.cameras:
                c.K = c.K.copy()
                c.K[:2, :2] *= scale
            out[f"psnr_est_{key}_estK"] = score_model(model, test).mean["masked_psnr"]
            test.cameras, rep = fit_test_cameras(model, test, steps=fit_steps)
            out[f"psnr_est_{key}_fitted"] = score_model(model, test).mean["masked_psnr"]
            out[f"test_fit_rot_median_deg_{key}"] = float(np.median(rep["rotation_deg"]))
        e = pose_errors(cams, ref)
        out[f"rot_median_deg_{key}"] = float(np.median(e["rotation_deg"]))
        out[f"registered_{key}"] = len(cams)
        out[f"focal_{key}"] = float(cams[0].fx)
        del summary
    out["focal_gt"] = float(gt_train[0].fx)
    return out


def print_psnr_table(res: list[dict]) -> None:
    """The end-to-end check as a table: test-view masked PSNR (dB), ground-truth vs estimated poses."""
    print(
        f"{'scene':6} {'focal':6} {'GT':>7} {'GT fit':>7} {'est sim':>7} {'est fit':>7} {'gap':>6} {'rot med':>7} "
        f"{'f est/gt':>8}"
    )
    gaps = []
    for r in res:
        fit = r.get("psnr_est_refined_fitted", float("nan"))
        gt = r.get("psnr_gt_poses_fitted", r["psnr_gt_poses"])
        gaps.append(gt - fit)
        print(
            f"{r['scene']:6} {'exif' if r['focal_prior'] != 'none' else 'none':6} {r['psnr_gt_poses']:7.2f} "
            f"{gt:7.2f} {r['psnr_est_refined']:7.2f} {fit:7.2f} {gt - fit:6.2f} "
            f"{r['rot_median_deg_refined']:7.3f} {r['focal_refined'] / r['focal_gt']:8.3f}"
        )
    print(f"gap (GT fit - est fit): mean {np.mean(gaps):.2f} dB, max {np.max(gaps):.2f} dB over {len(res)} scenes")


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for method in sorted({r["method"] for r in rows}):
        for count in sorted({r["count"] for r in rows}):
            sel = [r for r in rows if r["method"] == method and r["count"] == count]
            if not sel:
                continue
            ok = [r for r in sel if r["registered"] >= 2]
            out.append(
                {
                    "method": method,
                    "views": count,
                    "scenes": len(sel),
                    "all_registered": sum(r["registered"] == r["views"] for r in sel),
                    "mean_registered": float(np.mean([r["registered"] for r in sel])),
                    "rot_median_deg": float(np.median([r["rot_median_deg"] for r in ok])) if ok else None,
                    "rot_max_deg": float(np.max([r["rot_max_deg"] for r in ok])) if ok else None,
                    "center_median": float(np.median([r["center_median"] for r in ok])) if ok else None,
                    "seconds_mean": float(np.mean([r["seconds"] for r in sel])),
                }
            )
    return out


def print_table(rows: list[dict]) -> None:
    print(
        f"{'method':8} {'views':>5} {'scenes':>6} {'all reg':>7} {'mean reg':>8} {'rot med':>8} {'rot max':>8} "
        f"{'ctr med':>8} {'s':>6}"
    )
    f = lambda x: "   -    " if x is None else f"{x:8.3f}"
    for r in summarise(rows):
        print(
            f"{r['method']:8} {r['views']:5d} {r['scenes']:6d} {r['all_registered']:7d} {r['mean_registered']:8.2f} "
            f"{f(r['rot_median_deg'])} {f(r['rot_max_deg'])} {f(r['center_median'])} {r['seconds_mean']:6.1f}"
        )


if __name__ == "__main__":
    main()
