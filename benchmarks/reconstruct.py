"""Quality and speed of `recon reconstruct` on generated SpaRe-style scenes, full pipeline vs plain 3DGS.

For each scene seed and track (3 and 9 input views) it runs the pipeline with the chosen preset and with the
`plain` preset (same code, no hull, no masks, no priors) in the same run, renders the 10 hidden test views and
reports masked PSNR / SSIM (RegNeRF's DTU convention: both images masked, error over the whole image), PSNR-M
(error over mask pixels only, as the leaderboard) and wall time. Prints a table, writes JSON.

    python benchmarks/reconstruct.py --scenes 5                 # the acceptance run
    python benchmarks/reconstruct.py --scenes 1 --tracks 3 --iterations 200   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recon.bench.evaluate import score_run
from recon.bench.synth import make_scene
from recon.config import make_config, parse_settings
from recon.io.atomic import atomic_write_text
from recon.pipeline import reconstruct


def scene_path(cache: Path, seed: int, width: int, height: int) -> Path:
    """Generate (once) and return the scene for ``seed``."""
    path = cache / f"scene_seed{seed}_{width}x{height}"
    if not (path / "scene.json").exists():
        make_scene(path, seed=seed, width=width, height=height)
    return path


def run_one(
    scene: Path,
    track: int,
    preset: str,
    iterations: int | None,
    seed: int,
    work: Path,
    settings: dict[str, str] | None = None,
) -> dict:
    cfg = make_config(preset, settings=settings, track=track, seed=seed, iterations=iterations)
    out = work / f"{scene.name}_t{track}_{preset}"
    t0 = time.perf_counter()
    summary = reconstruct(scene, out, cfg, overwrite=True)
    wall = time.perf_counter() - t0
    scores = score_run(out, scene, track, max_side=cfg.max_side)
    return {
        "scene": scene.name,
        "track": track,
        "method": preset,
        "settings": settings or {},
        "wall_s": wall,
        "train_s": summary["timings"]["train_s"],
        "gaussians": summary["num_gaussians"],
        "train_psnr": summary["train_psnr"],
        **scores.mean,
        "per_view": scores.to_dict()["per_view"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=5, help="number of generated scenes (seeds 100, 101, ...)")
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--tracks", type=int, nargs="+", default=[3, 9])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--baseline", default="plain", help="preset to compare against ('' to skip)")
    ap.add_argument(
        "--baseline-tracks",
        type=int,
        nargs="+",
        default=[3],
        help="tracks on which the baseline also runs (the acceptance compares on track 3)",
    )
    ap.add_argument("--iterations", type=int, default=None, help="override the presets' iterations")
    ap.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="a reconstruction setting for the --preset runs (repeatable; `recon settings` lists them)",
    )
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--height", type=int, default=300)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recon_bench_scenes")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "reconstruct.json")
    args = ap.parse_args()

    try:
        settings = parse_settings(args.settings)
    except ValueError as exc:
        ap.error(str(exc))
    args.cache.mkdir(parents=True, exist_ok=True)
    methods = [args.preset] + ([args.baseline] if args.baseline else [])
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="recon_bench_runs_") as work_dir:
        work = Path(work_dir)
        for s in range(args.scenes):
            seed = args.first_seed + s
            scene = scene_path(args.cache, seed, args.width, args.height)
            for track in args.tracks:
                for method in methods:
                    if method == args.baseline and track not in args.baseline_tracks:
                        continue
                    extra = settings if method == args.preset else None
                    row = run_one(scene, track, method, args.iterations, seed=0, work=work, settings=extra)
                    rows.append(row)
                    print(
                        f"{row['scene']:>24} track {track} {method:>8}: masked PSNR {row['masked_psnr']:6.2f} dB "
                        f"SSIM {row['masked_ssim']:.3f}  wall {row['wall_s']:6.1f} s  n={row['gaussians']}",
                        flush=True,
                    )

    summary: dict[str, dict] = {}
    print("\nmean over scenes")
    print(f"{'track':>5} {'method':>8} {'masked PSNR':>12} {'PSNR-M':>7} {'SSIM':>6} {'wall s (max)':>14}")
    for track in args.tracks:
        for method in methods:
            sel = [r for r in rows if r["track"] == track and r["method"] == method]
            if not sel:
                continue
            entry = {
                "masked_psnr": float(np.mean([r["masked_psnr"] for r in sel])),
                "masked_ssim": float(np.mean([r["masked_ssim"] for r in sel])),
                "psnr_in_mask": float(np.mean([r.get("psnr_in_mask", float("nan")) for r in sel])),
                "wall_s_mean": float(np.mean([r["wall_s"] for r in sel])),
                "wall_s_max": float(np.max([r["wall_s"] for r in sel])),
                "per_scene_psnr": {r["scene"]: r["masked_psnr"] for r in sel},
            }
            summary[f"track{track}/{method}"] = entry
            print(
                f"{track:>5} {method:>8} {entry['masked_psnr']:>12.2f} {entry['psnr_in_mask']:>7.2f} "
                f"{entry['masked_ssim']:>6.3f} "
                f"{entry['wall_s_mean']:>7.1f} ({entry['wall_s_max']:.1f})"
            )
    if args.baseline:
        for track in args.tracks:
            a, b = summary.get(f"track{track}/{args.preset}"), summary.get(f"track{track}/{args.baseline}")
            if a and b:
                print(f"track {track}: {args.preset} - {args.baseline} = {a['masked_psnr'] - b['masked_psnr']:+.2f} dB")
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        "summary": summary,
    }
    atomic_write_text(args.json, json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
