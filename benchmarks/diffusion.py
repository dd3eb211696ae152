"""Does the diffusion prior help? The same pipeline with prior="diffusion" vs prior="none" on the 3-view track.

Scenes are generated with seeds 100, 101, ... (held out from the repair prior's training seeds 0-7). Each scene
is reconstructed twice with the `fast` preset and the same seed, once per prior, and the 10 hidden test views
are scored (masked PSNR and SSIM-M, RegNeRF convention, plus PSNR-M over mask pixels; see
recon/bench/evaluate.py). Prints per-scene deltas and extra wall time, writes JSON after every scene.

    python benchmarks/diffusion.py                          # the acceptance run: 5 scenes, 3 views
    python benchmarks/diffusion.py --scenes 1 --iterations 300   # a quick look
    python benchmarks/diffusion.py --set prior_weight=0.5 --reuse-baseline   # try a setting, keep the baselines
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

from recon.bench.evaluate import score_run
from recon.bench.synth import make_scene
from recon.config import make_config
from recon.io.atomic import atomic_write_text
from recon.pipeline import reconstruct

METRICS = ("masked_psnr", "masked_ssim", "psnr_in_mask")


def scene_path(cache: Path, seed: int, width: int, height: int) -> Path:
    """Generate (once) and return the scene for ``seed``."""
    path = cache / f"scene_seed{seed}_{width}x{height}"
    if not (path / "scene.json").exists():
        make_scene(path, seed=seed, width=width, height=height)
    return path


def parse_sets(items: list[str]) -> dict:
    """``path=value`` config overrides by dotted path, e.g. ``diffusion.weight=0.3`` (values parsed as JSON when
    possible, else kept as strings)."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def run_one(scene: Path, prior: str, args: argparse.Namespace, overrides: dict) -> dict:
    """Reconstruct ``scene`` with ``prior`` (or reuse a finished baseline run) and score its test views."""
    extra = overrides if prior == "diffusion" else {}
    weights = {"diffusion.weights": args.prior_weights} if prior == "diffusion" and args.prior_weights else {}
    cfg = make_config(
        args.preset, track=3, seed=args.seed, iterations=args.iterations, prior=prior, settings={**weights, **extra}
    )
    out = args.work / f"{scene.name}_t3_{prior}{'' if prior == 'none' else args.tag}"
    metrics_file = out / "metrics.json"
    reused = False
    if prior == "none" and args.reuse_baseline and metrics_file.exists():
        summary = json.loads(metrics_file.read_text())
        reused = summary.get("iterations") == cfg.iterations
    if not reused:
        t0 = time.perf_counter()
        summary = reconstruct(scene, out, cfg, overwrite=True)
        summary["timings"]["bench_wall_s"] = time.perf_counter() - t0
    scores = score_run(out, scene, 3, max_side=cfg.max_side)
    return {
        "scene": scene.name,
        "prior": prior,
        "run": str(out),
        "reused": reused,
        "wall_s": summary["timings"].get("bench_wall_s", summary["timings"]["total_s"]),
        "train_s": summary["timings"]["train_s"],
        "gaussians": summary["num_gaussians"],
        "prior_report": summary.get("prior"),
        **scores.mean,
    }


def wait_for_baseline(metrics_file: Path, timeout_s: float = 3600.0) -> None:
    """Poll until another benchmark process has finished the baseline run (its metrics.json exists)."""
    start = time.perf_counter()
    while not metrics_file.exists():
        if time.perf_counter() - start > timeout_s:
            raise SystemExit(f"gave up waiting for {metrics_file}")
        time.sleep(10)


def summarise(rows: list[dict]) -> dict:
    """Per-scene deltas (diffusion - none) and their means."""
    scenes = sorted({r["scene"] for r in rows})
    per_scene = {}
    for s in scenes:
        a = next((r for r in rows if r["scene"] == s and r["prior"] == "diffusion"), None)
        b = next((r for r in rows if r["scene"] == s and r["prior"] == "none"), None)
        if a is None or b is None:
            continue
        per_scene[s] = {
            **{f"none_{m}": b[m] for m in METRICS},
            **{f"diffusion_{m}": a[m] for m in METRICS},
            **{f"delta_{m}": a[m] - b[m] for m in METRICS},
            "none_wall_s": b["wall_s"],
            "diffusion_wall_s": a["wall_s"],
            "extra_wall_s": a["wall_s"] - b["wall_s"],
            "extra_train_s": a["train_s"] - b["train_s"],
            "prior_finetune_s": (a["prior_report"] or {}).get("finetune_s"),
            "prior_repair_s": (a["prior_report"] or {}).get("repair_s"),
            "prior_loss_s": (a["prior_report"] or {}).get("loss_s"),
        }
    mean = {}
    if per_scene:
        keys = next(iter(per_scene.values())).keys()
        mean = {
            k: float(np.mean([v[k] for v in per_scene.values() if v[k] is not None]))
            for k in keys
            if any(v[k] is not None for v in per_scene.values())
        }
        mean["scenes_improved_psnr"] = sum(v["delta_masked_psnr"] > 0 for v in per_scene.values())
        mean["scenes_improved_ssim"] = sum(v["delta_masked_ssim"] > 0 for v in per_scene.values())
    return {"per_scene": per_scene, "mean": mean}


def print_table(summary: dict) -> None:
    print(
        f"\n{'scene':>24} {'PSNR none':>9} {'PSNR diff':>9} {'dPSNR':>7} {'SSIM none':>9} {'SSIM diff':>9} "
        f"{'dSSIM':>7} {'dPSNR-M':>7} {'wall none':>9} {'extra s':>8}"
    )
    for s, v in summary["per_scene"].items():
        print(
            f"{s:>24} {v['none_masked_psnr']:9.2f} {v['diffusion_masked_psnr']:9.2f} {v['delta_masked_psnr']:+7.2f} "
            f"{v['none_masked_ssim']:9.4f} {v['diffusion_masked_ssim']:9.4f} {v['delta_masked_ssim']:+7.4f} "
            f"{v['delta_psnr_in_mask']:+7.2f} {v['none_wall_s']:9.1f} {v['extra_wall_s']:+8.1f}"
        )
    m = summary["mean"]
    if m:
        print(
            f"{'mean':>24} {m['none_masked_psnr']:9.2f} {m['diffusion_masked_psnr']:9.2f} "
            f"{m['delta_masked_psnr']:+7.2f} {m['none_masked_ssim']:9.4f} {m['diffusion_masked_ssim']:9.4f} "
            f"{m['delta_masked_ssim']:+7.4f} {m['delta_psnr_in_mask']:+7.2f} {m['none_wall_s']:9.1f} "
            f"{m['extra_wall_s']:+8.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=5, help="number of generated scenes (seeds first-seed, ...)")
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--seed", type=int, default=0, help="reconstruction seed (the same for both priors)")
    ap.add_argument("--iterations", type=int, default=None, help="override the preset's iterations")
    ap.add_argument("--prior-weights", default=None, help="repair model folder (default: the bundled one)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for the prior run")
    ap.add_argument("--tag", default="", help="suffix of the prior runs' folder names")
    ap.add_argument("--reuse-baseline", action="store_true", help="score finished prior=none runs instead of rerunning")
    ap.add_argument("--only-baseline", action="store_true", help="run only prior=none (for a parallel --only-prior)")
    ap.add_argument(
        "--only-prior",
        action="store_true",
        help="run only prior=diffusion; baselines are scored from finished runs in --work (waits for them)",
    )
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--height", type=int, default=300)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/diffusion-bench/scenes"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/diffusion-bench/runs"))
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "diffusion.json")
    args = ap.parse_args()
    overrides = parse_sets(args.set)
    args.cache.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for s in range(args.scenes):
        scene = scene_path(args.cache, args.first_seed + s, args.width, args.height)
        priors = (
            ("none",) if args.only_baseline else ("diffusion", "none") if args.only_prior else ("none", "diffusion")
        )
        for prior in priors:
            if prior == "none" and args.only_prior:
                wait_for_baseline(args.work / f"{scene.name}_t3_none" / "metrics.json")
                args.reuse_baseline = True
            row = run_one(scene, prior, args, overrides)
            rows.append(row)
            print(
                f"{row['scene']:>24} prior {prior:>9}: masked PSNR {row['masked_psnr']:6.2f} dB "
                f"SSIM-M {row['masked_ssim']:.4f} PSNR-M {row['psnr_in_mask']:6.2f}  wall {row['wall_s']:6.1f} s"
                f"{' (reused)' if row['reused'] else ''}",
                flush=True,
            )
        summary = summarise(rows)
        result = {
            "machine": {
                "platform": platform.platform(),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "note": "2 CPU cores shared with other jobs: timings under load",
            },
            "args": {k: str(v) for k, v in vars(args).items()},
            "prior_overrides": overrides,
            "rows": rows,
            "summary": summary,
        }
        atomic_write_text(args.json, json.dumps(result, indent=2))
    print_table(summarise(rows))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
