"""End-to-end check for unposed real photos: a protocol's input views saved as a plain image folder (no cameras,
no masks, no EXIF) and reconstructed with estimated poses, against the same run on the dataset's cameras.

    python benchmarks/poses_real_psnr.py --protocol dtu9 --data ../shared/data/real/dtu --scenes scan24

Both runs use the default method at the protocol's resolution. Test views are scored with the protocol's metric
(DTU: masked PSNR) after the pose-free fit that pose-free methods are scored with (recon.bench.pose_free: the
test cameras mapped into the run's frame by the similarity of the input cameras, focal scaled to the run's,
then each test pose fitted to its image with the reconstruction frozen); the dataset-pose run gets the same fit,
so the difference is what the estimated poses cost. Prints a table, writes benchmarks/results/poses_real_psnr.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recon.bench.pose_free import fit_test_cameras
from recon.bench.protocols import Protocol, ProtocolScene, find_scenes, get_protocol, load_scene, score_view
from recon.cameras import Camera
from recon.config import make_config
from recon.io.atomic import atomic_write_text
from recon.io.images import save_image
from recon.io.types import ViewSet
from recon.pipeline import load_run_model, reconstruct, render_views
from recon.poses import align_cameras, pose_errors, transform_camera
from recon.poses.estimate import hfov_from_focal


def mean_psnr(protocol: Protocol, scene: ProtocolScene, model: object, cameras: list[Camera]) -> float:
    """The protocol's mean test PSNR of ``model`` rendered from ``cameras``."""
    renders = render_views(model, cameras, background=scene.background)  # type: ignore[arg-type]
    masks = scene.test.masks or [None] * len(renders)
    return float(np.mean([score_view(protocol, r, g, m)["psnr"] for r, g, m in zip(renders, scene.test.images, masks)]))


def fitted(model: object, test: ViewSet, cameras: list[Camera], steps: int) -> list[Camera]:
    """Test cameras with poses fitted to the test images under the frozen model (the pose-free protocol)."""
    views = ViewSet(images=test.images, cameras=cameras, masks=test.masks, names=test.names, meta=dict(test.meta))
    cams, _ = fit_test_cameras(model, views, steps=steps)
    return cams


def check_scene(
    protocol: Protocol, scene_dir: Path, work: Path, fit_steps: int, iterations: int | None, give_hfov: bool = False
) -> dict:
    scene = load_scene(protocol, scene_dir)
    h, w = scene.inputs.images[0].shape[:2]
    config = make_config("fast", max_side=max(h, w), iterations=iterations)
    row: dict = {"scene": scene.name, "protocol": protocol.name, "views": len(scene.inputs)}

    t = time.perf_counter()
    gt_run = work / f"{scene.name}_dataset_poses"
    reconstruct(scene.inputs, gt_run, config, overwrite=True)
    row["dataset_poses_wall_s"] = time.perf_counter() - t
    gt_model = load_run_model(gt_run)
    test_cams = list(scene.test.cameras or [])
    row["psnr_dataset_poses"] = mean_psnr(protocol, scene, gt_model, test_cams)
    row["psnr_dataset_poses_fitted"] = mean_psnr(
        protocol, scene, gt_model, fitted(gt_model, scene.test, test_cams, fit_steps)
    )

    folder = work / f"{scene.name}_photos"
    for k, img in enumerate(scene.inputs.images):  # a plain folder: pixels only
        save_image(folder / f"IMG_{k:02d}.png", img)
    t = time.perf_counter()
    est_run = work / f"{scene.name}_estimated_poses"
    est_config = config
    if give_hfov:  # what a user types for photos without EXIF: the field of view, here the dataset's own
        c0 = scene.inputs.cameras[0]  # type: ignore[index]
        row["hfov_given_deg"] = hfov_from_focal(c0.width, c0.fx)
        est_config = make_config(
            "fast", max_side=max(h, w), iterations=iterations, settings={"poses.hfov_deg": row["hfov_given_deg"]}
        )
    summary = reconstruct(folder, est_run, est_config, overwrite=True)
    row["estimated_poses_wall_s"] = time.perf_counter() - t
    row["black_renders"] = summary.get("black_renders", [])
    cams = [Camera.from_dict(d) for d in json.loads((est_run / "cameras.json").read_text())["cameras"]]
    ref = [scene.inputs.cameras[int(Path(c.name).stem.split("_")[1])] for c in cams]  # type: ignore[index]
    row["registered"] = f"{len(cams)}/{len(scene.inputs)}"
    errors = pose_errors(cams, ref)
    row["rotation_error_deg_median"] = float(np.median(errors["rotation_deg"]))
    row["rotation_error_deg_max"] = float(np.max(errors["rotation_deg"]))
    sim = align_cameras(cams, ref).inverse()  # dataset frame -> the run's frame
    scale = float(np.mean([c.fx / r.fx for c, r in zip(cams, ref)]))
    mapped = []
    for c in test_cams:
        m = transform_camera(c, sim)
        m.K = m.K.copy()
        m.K[:2, :2] *= scale
        mapped.append(m)
    model = load_run_model(est_run)
    row["psnr_estimated_poses_aligned"] = mean_psnr(protocol, scene, model, mapped)
    row["psnr_estimated_poses_fitted"] = mean_psnr(protocol, scene, model, fitted(model, scene.test, mapped, fit_steps))
    row["difference_db"] = row["psnr_dataset_poses_fitted"] - row["psnr_estimated_poses_fitted"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="dtu9")
    ap.add_argument("--data", type=Path, required=True, help="the dataset folder in its own layout")
    ap.add_argument("--scenes", default=None, help="comma-separated scene names (default: all found)")
    ap.add_argument("--work", type=Path, default=Path("bench_runs/poses_real_psnr"))
    ap.add_argument("--iterations", type=int, default=None, help="override the preset's steps (quick checks)")
    ap.add_argument("--fit-steps", type=int, default=150, help="steps of the test-pose fit")
    ap.add_argument(
        "--give-hfov",
        action="store_true",
        help="the estimated-pose run gets the dataset's field of view (--set poses.hfov_deg), as a user would type it",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "poses_real_psnr.json")
    args = ap.parse_args()
    protocol = get_protocol(args.protocol)
    only = args.scenes.split(",") if args.scenes else None
    rows = [
        check_scene(protocol, d, args.work, args.fit_steps, args.iterations, args.give_hfov)
        for d in find_scenes(protocol, args.data, only)
    ]
    print("\n| scene | registered | rot. err. median / max (deg) | dataset poses dB | estimated poses dB | diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scene']} | {r['registered']} "
            f"| {r['rotation_error_deg_median']:.2f} / {r['rotation_error_deg_max']:.2f} "
            f"| {r['psnr_dataset_poses_fitted']:.2f} | {r['psnr_estimated_poses_fitted']:.2f} "
            f"| {r['difference_db']:.2f} |"
        )
    result = {
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
    }
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
