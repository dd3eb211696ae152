"""Neural primitives vs Gaussians with SH: quality, parameter counts, render time, pruned-decoder speed.

For each generated scene (seeds 100, 101, ...) it reconstructs the 9-view track with the `fast` preset twice,
``representation="gaussians"`` (SH degree 2) and ``representation="neural"``, scores the hidden test views
(masked PSNR, RegNeRF convention, as benchmarks/reconstruct.py), counts stored floats (Gaussians: every
per-Gaussian row; neural: per-primitive rows + the decoder's non-zero weights), times rendering of a test
view, and times the decoder on one view's visible primitives with its pruned weights run dense
(masked ``F.linear``) vs through ``SparseLinear`` (the layers ``prefer_sparse`` picks, and all prunable ones).
The neural run's primitive count is capped at ``--count-ratio`` x the Gaussian run's final count (its
``max_gaussians``), so the parameter budget is set by the feature width: (11 + F) vs 38 floats per primitive.

    python benchmarks/neural.py                               # the acceptance run (5 scenes)
    python benchmarks/neural.py --scenes 1 --iterations 300   # a quick look
    python benchmarks/neural.py --threads 1                   # on a shared, oversubscribed machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recon.bench.evaluate import score_model
from recon.bench.synth import make_scene
from recon.config import make_config
from recon.io.atomic import atomic_write_text
from recon.io.detect import resize_views
from recon.io.spare import read_spare_scene
from recon.pipeline import load_run_model, reconstruct
from renderers.gaussians import GaussianModel
from renderers.neural import NeuralPrimitives, visible_mask

REPS = ("gaussians", "neural")


def scene_path(cache: Path, seed: int, width: int, height: int) -> Path:
    """Generate (once) and return the scene for ``seed``."""
    path = cache / f"scene_seed{seed}_{width}x{height}"
    if not (path / "scene.json").exists():
        make_scene(path, seed=seed, width=width, height=height)
    return path


def stored_floats(model: Any) -> dict[str, int]:
    """Parameter counts of a trained model (state counts)."""
    if isinstance(model, GaussianModel):
        total = sum(int(p.numel()) for p in model.splats.values())
        return {
            "primitives": model.num_gaussians,
            "per_primitive": total // max(1, model.num_gaussians),
            "total": total,
        }
    return model.parameter_counts()


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up), in ms."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * min(times)


@torch.no_grad()
def render_ms(model: Any, cameras: list, repeats: int) -> float:
    """Mean over ``cameras`` of the best-of-``repeats`` time of one RGB render (ms)."""
    bg = torch.zeros(3)
    return float(
        np.mean([best_time(lambda c=c: model.render(c, background=bg, render_mode="RGB"), repeats) for c in cameras])
    )


def decoder_timings(model: NeuralPrimitives, camera: Any, repeats: int) -> dict[str, Any]:
    """Decoder time on one view's visible primitives: pruned weights dense vs SparseLinear (forward, and
    forward + backward w.r.t. the inputs)."""
    from recon.kernels.projection import camera_centers
    from recon.kernels.sh import sh_basis

    vm = torch.tensor(camera.viewmat, dtype=torch.float32)[None]
    K = torch.tensor(camera.K, dtype=torch.float32)[None]
    with torch.no_grad():
        vis = visible_mask(model.means, model.scales, vm, K, camera.width, camera.height)[0]
        dirs = model.means[vis] - camera_centers(vm)[0]
        x = torch.cat([model.features.detach()[vis], sh_basis(model.dir_degree, dirs)[:, 1:]], dim=-1).contiguous()
    mlp = model.mlp
    mlp.eval()
    out: dict[str, Any] = {"rows": int(x.shape[0]), "sparsity": mlp.sparsity()}
    modes = {"dense": "dense", "auto": "auto", "sparse_all": "sparse"}
    with torch.no_grad():
        out["layers_sparse_auto"] = [i for i in mlp.prunable if _backend(mlp, i, x, "auto") == "sparse"]
        ref = None
        for name, mode in modes.items():
            mlp.sparse_mode = mode  # type: ignore[assignment]
            y = mlp(x)
            ref = y if ref is None else ref
            out[f"max_abs_diff_{name}"] = float((y - ref).abs().max())
        fwd = {name: [] for name in modes}
        for _ in range(repeats):  # interleaved so load spikes hit every mode alike
            for name, mode in modes.items():
                mlp.sparse_mode = mode  # type: ignore[assignment]
                fwd[name].append(best_time(lambda: mlp(x), 1))
    for name in modes:
        out[f"fwd_ms_{name}"] = float(min(fwd[name]))
    # forward + backward (training-style step on fixed weights): masked dense vs SparseLinear layers
    from recon.kernels.sparse import SparseLinear

    sparse_layers = {
        i: SparseLinear.from_mask(mlp.layers[i].weight.detach(), mlp.mask(i), mlp.layers[i].bias.detach())
        for i in mlp.prunable
    }

    def step(use_sparse: bool) -> None:
        h = x.detach().requires_grad_(True)
        z = h
        for i, lin in enumerate(mlp.layers):
            if i in mlp.prunable:
                dense = torch.nn.functional.linear
                z = sparse_layers[i](z) if use_sparse else dense(z, lin.weight * mlp.mask(i), lin.bias)
                z = torch.relu(z)
            else:
                z = lin(z)
        z.sum().backward()

    fb: dict[str, list[float]] = {"dense": [], "sparse_all": []}
    for _ in range(repeats):
        fb["dense"].append(best_time(lambda: step(False), 1))
        fb["sparse_all"].append(best_time(lambda: step(True), 1))
    out["fwd_bwd_ms_dense"] = float(min(fb["dense"]))
    out["fwd_bwd_ms_sparse_all"] = float(min(fb["sparse_all"]))
    mlp.sparse_mode = "auto"
    return out


def _backend(mlp: Any, i: int, x: torch.Tensor, mode: str) -> str:
    mlp.sparse_mode = mode
    return mlp.layer_backend(i, x)


def run_one(scene: Path, rep: str, args: argparse.Namespace, max_primitives: int | None = None) -> dict[str, Any]:
    overrides: dict[str, Any] = {"track": 9, "representation": rep, "seed": 0, "iterations": args.iterations}
    if max_primitives is not None:
        overrides["densify.max_gaussians"] = max_primitives
    if rep == "neural":
        overrides["neural.feature_dim"] = args.feature_dim
        if args.sparsity is not None:
            overrides["neural.sparsity"] = args.sparsity
    cfg = make_config("fast", settings=overrides)
    out = args.work / f"{scene.name}_{rep}"
    if args.reuse and (out / "metrics.json").is_file():  # re-score / re-time an earlier run of this script
        summary = json.loads((out / "metrics.json").read_text())
        wall = float(summary["timings"]["total_s"])
    else:
        t0 = time.perf_counter()
        summary = reconstruct(scene, out, cfg, overwrite=True)
        wall = time.perf_counter() - t0
    model = load_run_model(out)
    test = resize_views(read_spare_scene(scene, track=9, split="test"), max_size=cfg.max_side)
    scores = score_model(model, test)
    row: dict[str, Any] = {
        "scene": scene.name,
        "representation": rep,
        "wall_s": wall,
        "train_s": summary["timings"]["train_s"],
        "train_psnr": summary["train_psnr"],
        **scores.mean,
        "params": stored_floats(model),
        "render_ms": render_ms(model, list(test.cameras)[: args.render_views], args.repeats),
        "max_gaussians": cfg.densify.max_gaussians,
    }
    if isinstance(model, NeuralPrimitives):
        row["decoder"] = decoder_timings(model, test.cameras[0], args.repeats)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=5, help="number of generated scenes (seeds 100, 101, ...)")
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    ap.add_argument("--feature-dim", type=int, default=8)
    ap.add_argument("--sparsity", type=float, default=None, help="decoder target sparsity (default: config's)")
    ap.add_argument(
        "--count-ratio",
        type=float,
        default=0.95,
        help="cap the neural run's primitives at this fraction of the Gaussian run's final count "
        "(the parameter budget); 0 = the preset's cap",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="reuse run folders already in --work (re-score and re-time without retraining)",
    )
    ap.add_argument("--render-views", type=int, default=3, help="test views timed for the render time")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reps", nargs="+", default=list(REPS), choices=REPS)
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--height", type=int, default=300)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/neural-bench/scenes"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/neural-bench/runs"))
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "neural.json")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for s in range(args.scenes):
        scene = scene_path(args.cache, args.first_seed + s, args.width, args.height)
        n_gauss: int | None = None
        for rep in args.reps:
            cap = None
            if rep == "neural" and n_gauss is not None and args.count_ratio > 0:
                cap = max(1, int(args.count_ratio * n_gauss))
            row = run_one(scene, rep, args, cap)
            if rep == "gaussians":
                n_gauss = row["params"]["primitives"]
            rows.append(row)
            print(
                f"{row['scene']:>24} {rep:>9}: masked PSNR {row['masked_psnr']:6.2f} dB  "
                f"params {row['params']['total']:>8}  render {row['render_ms']:7.1f} ms  "
                f"train {row['train_s']:6.1f} s",
                flush=True,
            )
            atomic_write_text(args.work / "rows.partial.json", json.dumps({"rows": rows}, indent=1))

    print("\nper scene (track 9, masked test PSNR, stored floats, render ms/view)")
    print(
        f"{'scene':>24} {'G PSNR':>7} {'N PSNR':>7} {'dPSNR':>6} {'G params':>9} {'N params':>9} {'ratio':>6} "
        f"{'G ms':>6} {'N ms':>6} {'dec dense':>9} {'dec auto':>8} {'dec sparse':>10} {'fb dense':>8} "
        f"{'fb sparse':>9}"
    )
    per_scene = []
    for s in range(args.scenes):
        name = f"scene_seed{args.first_seed + s}_{args.width}x{args.height}"
        g = next((r for r in rows if r["scene"] == name and r["representation"] == "gaussians"), None)
        n = next((r for r in rows if r["scene"] == name and r["representation"] == "neural"), None)
        if g is None or n is None:
            continue
        d = n["decoder"]
        entry = {
            "scene": name,
            "gaussians_psnr": g["masked_psnr"],
            "neural_psnr": n["masked_psnr"],
            "delta_psnr": n["masked_psnr"] - g["masked_psnr"],
            "gaussians_params": g["params"]["total"],
            "neural_params": n["params"]["total"],
            "param_ratio": n["params"]["total"] / g["params"]["total"],
            "gaussians_render_ms": g["render_ms"],
            "neural_render_ms": n["render_ms"],
            "decoder_fwd_ms_dense": d["fwd_ms_dense"],
            "decoder_fwd_ms_auto": d["fwd_ms_auto"],
            "decoder_fwd_ms_sparse_all": d["fwd_ms_sparse_all"],
            "decoder_fwd_bwd_ms_dense": d["fwd_bwd_ms_dense"],
            "decoder_fwd_bwd_ms_sparse_all": d["fwd_bwd_ms_sparse_all"],
            "decoder_rows": d["rows"],
            "decoder_sparsity": d["sparsity"],
        }
        per_scene.append(entry)
        print(
            f"{name:>24} {entry['gaussians_psnr']:>7.2f} {entry['neural_psnr']:>7.2f} {entry['delta_psnr']:>+6.2f} "
            f"{entry['gaussians_params']:>9} {entry['neural_params']:>9} {entry['param_ratio']:>6.3f} "
            f"{entry['gaussians_render_ms']:>6.1f} {entry['neural_render_ms']:>6.1f} "
            f"{d['fwd_ms_dense']:>9.3f} {d['fwd_ms_auto']:>8.3f} {d['fwd_ms_sparse_all']:>10.3f} "
            f"{d['fwd_bwd_ms_dense']:>8.3f} {d['fwd_bwd_ms_sparse_all']:>9.3f}"
        )
    summary: dict[str, Any] = {}
    if per_scene:
        keys = [k for k in per_scene[0] if k != "scene"]
        summary = {k: float(np.mean([e[k] for e in per_scene])) for k in keys}
        summary["max_param_ratio"] = float(max(e["param_ratio"] for e in per_scene))
        summary["min_delta_psnr"] = float(min(e["delta_psnr"] for e in per_scene))
        print(
            f"{'mean':>24} {summary['gaussians_psnr']:>7.2f} {summary['neural_psnr']:>7.2f} "
            f"{summary['delta_psnr']:>+6.2f} {summary['gaussians_params']:>9.0f} {summary['neural_params']:>9.0f} "
            f"{summary['param_ratio']:>6.3f} {summary['gaussians_render_ms']:>6.1f} "
            f"{summary['neural_render_ms']:>6.1f} "
            f"{summary['decoder_fwd_ms_dense']:>9.3f} {summary['decoder_fwd_ms_auto']:>8.3f} "
            f"{summary['decoder_fwd_ms_sparse_all']:>10.3f} {summary['decoder_fwd_bwd_ms_dense']:>8.3f} "
            f"{summary['decoder_fwd_bwd_ms_sparse_all']:>9.3f}"
        )
    result = {
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_avg_1min_at_end": os.getloadavg()[0],
        },
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        "per_scene": per_scene,
        "summary": summary,
    }
    atomic_write_text(args.json, json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
