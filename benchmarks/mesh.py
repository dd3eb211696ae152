"""Meshes and the Gaussian + mesh hybrid on generated scenes: geometry (Chamfer, F-score) and test-view quality.

Per scene (seeds 100, 101, ... at 400x300, 9 input views by default) it reconstructs Gaussians with the
pipeline (`fast` preset), then runs the pipeline's mesh stage on those trained Gaussians twice -- representation
"mesh" (TSDF mesh, colours fitted to the inputs) and "hybrid" (mesh + the Gaussians in front of it, fine-tuned)
-- and writes each as a run folder (the same `write_run_folder` as `reconstruct`). That is what
`reconstruct --representation mesh|hybrid` does, minus training the same Gaussians again. Every run is scored
on the scene's 10 hidden test views by `recon.bench.evaluate.score_run` (masked PSNR, RegNeRF convention),
and the mesh against the scene's ground-truth object mesh (`recon.bench.synth.ground_truth_mesh`): Chamfer
distance and F-score at 1% of the GT bounding-box diagonal. Prints a table, writes JSON.

    python benchmarks/mesh.py                                  # the acceptance run (5 scenes, track 9)
    python benchmarks/mesh.py --scenes 1 --iterations 300      # a quick look
    python benchmarks/mesh.py --merge a.json b.json            # one table from runs split over processes

With ``--work DIR --reuse``, run folders already complete in DIR (``<scene>_gaussians|mesh|hybrid``) are
scored and used instead of being made again (so a run split over processes can be scored in one go).
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

import renderers.mesh.extract
import renderers.mesh.hybrid  # noqa: F401
from recon.bench.evaluate import score_run
from recon.bench.geometry import mesh_scores
from recon.bench.synth import ground_truth_mesh, make_scene
from recon.config import make_config
from recon.io.atomic import atomic_output_dir, atomic_write_text
from recon.pipeline import (
    initialise,
    load_inputs,
    mesh_stage,
    object_masks,
    reconstruct,
    require_poses,
    write_run_folder,
)
from renderers.gaussians.ply import read_ply
from renderers.mesh import MeshModel


def scene_path(cache: Path, seed: int, width: int, height: int) -> Path:
    """Generate (once) and return the scene for ``seed``."""
    path = cache / f"scene_seed{seed}_{width}x{height}"
    if not (path / "scene.json").exists():
        make_scene(path, seed=seed, width=width, height=height)
    return path


def derive_run(
    scene: Path, gauss_run: Path, out: Path, representation: str, config_kw: dict, reuse: bool = False
) -> dict:
    """Run folder ``out`` of ``representation`` made by the mesh stage from the Gaussians of ``gauss_run``
    (with ``reuse``, an existing complete ``out`` is taken as it is)."""
    if reuse and (out / "metrics.json").exists():
        done = json.loads((out / "metrics.json").read_text())
        return {
            "info": done["mesh"],
            "stage_s": done["timings"]["mesh_stage_s"],
            "num_gaussians": done["num_gaussians"],
        }
    cfg = make_config("fast", representation=representation, settings=config_kw)
    t0 = time.perf_counter()
    views = load_inputs(scene, cfg)
    cameras = require_poses(views)
    masks = object_masks(views)
    init = initialise(views, cameras, masks, cfg)  # for the hull (floater pruning) and scene scale
    init.model = read_ply(gauss_run / "splats.ply")
    init.model.active_sh_degree = init.model.sh_degree
    model, info = mesh_stage(init.model, init, views, cameras, masks, cfg)
    stage_s = time.perf_counter() - t0
    with atomic_output_dir(out, overwrite=True) as tmp:
        summary = write_run_folder(
            tmp,
            model,
            views,
            cameras,
            masks,
            cfg,
            {"source": str(scene), "mesh": info, "from_gaussians": str(gauss_run)},
        )
        summary["timings"] = {"mesh_stage_s": stage_s}
        atomic_write_text(tmp / "metrics.json", json.dumps(summary, indent=2))
    return {"info": info, "stage_s": stage_s, "num_gaussians": summary["num_gaussians"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=5, help="number of generated scenes (seeds 100, 101, ...)")
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--track", type=int, default=9)
    ap.add_argument("--iterations", type=int, default=None, help="Gaussian training steps (default: preset)")
    ap.add_argument("--hybrid-iterations", type=int, default=None, help="hybrid fine-tuning steps (default: config)")
    ap.add_argument("--mesh-method", default="tsdf", choices=["tsdf", "poisson"])
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--height", type=int, default=300)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recon_mesh_bench_scenes")
    ap.add_argument("--work", type=Path, default=None, help="keep the run folders here (default: a temp folder)")
    ap.add_argument("--reuse", action="store_true", help="reuse Gaussian runs found in --work")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, help="merge the rows of these result files")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "mesh.json")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine load)")
    args = ap.parse_args()
    if args.merge:
        rows = [r for path in args.merge for r in json.loads(path.read_text())["rows"]]
        report(sorted(rows, key=lambda r: r["seed"]), args)
        return

    args.cache.mkdir(parents=True, exist_ok=True)
    kw = {
        "track": args.track,
        "iterations": args.iterations,
        "mesh.hybrid_iterations": args.hybrid_iterations,
        "mesh.method": args.mesh_method,
    }
    rows: list[dict] = []
    tmp_ctx = tempfile.TemporaryDirectory(prefix="recon_mesh_bench_") if args.work is None else None
    work = Path(tmp_ctx.name) if tmp_ctx is not None else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        for s in range(args.scenes):
            seed = args.first_seed + s
            scene = scene_path(args.cache, seed, args.width, args.height)
            row: dict = {"scene": scene.name, "seed": seed, "track": args.track}
            g_run = work / f"{scene.name}_gaussians"
            if args.reuse and (g_run / "metrics.json").exists():
                g_sum = json.loads((g_run / "metrics.json").read_text())
            else:
                g_sum = reconstruct(scene, g_run, make_config("fast", settings=kw), overwrite=True)
            row["gaussians"] = {
                "wall_s": g_sum["timings"]["total_s"],
                "train_s": g_sum["timings"]["train_s"],
                "num_gaussians": g_sum["num_gaussians"],
                **score_run(g_run, scene, args.track, max_side=400).mean,
            }
            for rep in ("mesh", "hybrid"):
                out = work / f"{scene.name}_{rep}"
                d = derive_run(scene, g_run, out, rep, kw, reuse=args.reuse)
                row[rep] = {
                    "stage_s": d["stage_s"],
                    "num_gaussians": d["num_gaussians"],
                    "info": d["info"],
                    **score_run(out, scene, args.track, max_side=400).mean,
                }
                if rep == "mesh":
                    v, f, _ = MeshModel.load(out / "mesh.ply").numpy()
                    row["geometry"] = mesh_scores((v, f), ground_truth_mesh(seed)).to_dict()
            rows.append(row)
            atomic_write_text(args.json.with_suffix(".partial.json"), json.dumps({"rows": rows}, indent=2))
            g, m, h, geo = row["gaussians"], row["mesh"], row["hybrid"], row["geometry"]
            print(
                f"{scene.name}: chamfer {geo['chamfer']:.4f} F@1% {geo['fscore']:.3f} | masked PSNR gaussians "
                f"{g['masked_psnr']:.2f} hybrid {h['masked_psnr']:.2f} mesh {m['masked_psnr']:.2f} | n gaussians "
                f"{g['num_gaussians']} -> hybrid {h['num_gaussians']} | faces {m['info']['faces']} | s: train "
                f"{g['train_s']:.0f} mesh {m['stage_s']:.0f} hybrid {h['stage_s']:.0f}",
                flush=True,
            )
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    report(rows, args)


def report(rows: list[dict], args: argparse.Namespace) -> None:
    """Print the per-scene table and the means; write the JSON."""

    def mean(path: tuple[str, str]) -> float:
        return float(np.mean([r[path[0]][path[1]] for r in rows]))

    summary = {
        "chamfer": mean(("geometry", "chamfer")),
        "fscore_1pct": mean(("geometry", "fscore")),
        "psnr_gaussians": mean(("gaussians", "masked_psnr")),
        "psnr_hybrid": mean(("hybrid", "masked_psnr")),
        "psnr_mesh": mean(("mesh", "masked_psnr")),
        "n_gaussians": mean(("gaussians", "num_gaussians")),
        "n_hybrid": mean(("hybrid", "num_gaussians")),
        "faces": float(np.mean([r["mesh"]["info"]["faces"] for r in rows])),
    }
    summary["hybrid_minus_gaussians_db"] = summary["psnr_hybrid"] - summary["psnr_gaussians"]
    print(
        f"\n{'scene':>24} {'chamfer':>8} {'F@1%':>6} {'PSNR G':>7} {'PSNR H':>7} {'PSNR M':>7} {'#G':>6} "
        f"{'#H':>6} {'faces':>6}"
    )
    for r in rows:
        g, h, m, geo = r["gaussians"], r["hybrid"], r["mesh"], r["geometry"]
        print(
            f"{r['scene']:>24} {geo['chamfer']:>8.4f} {geo['fscore']:>6.3f} {g['masked_psnr']:>7.2f} "
            f"{h['masked_psnr']:>7.2f} {m['masked_psnr']:>7.2f} {g['num_gaussians']:>6d} {h['num_gaussians']:>6d} "
            f"{m['info']['faces']:>6d}"
        )
    print(
        f"{'mean':>24} {summary['chamfer']:>8.4f} {summary['fscore_1pct']:>6.3f} {summary['psnr_gaussians']:>7.2f} "
        f"{summary['psnr_hybrid']:>7.2f} {summary['psnr_mesh']:>7.2f} {summary['n_gaussians']:>6.0f} "
        f"{summary['n_hybrid']:>6.0f} {summary['faces']:>6.0f}"
    )
    print(f"hybrid - gaussians: {summary['hybrid_minus_gaussians_db']:+.2f} dB")
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "args": {k: str(v) for k, v in vars(args).items()},
        "note": getattr(args, "note", ""),
        "rows": rows,
        "summary": summary,
    }
    atomic_write_text(args.json, json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
