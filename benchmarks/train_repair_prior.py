"""Pre-train the generic repair prior (priors/diffusion) on generated scenes, seeds disjoint from the benchmark's.

Data (GaussianObject-style, self-generated): for each training seed a scene is synthesised at 200x150 (all 49
rig cameras), Gaussians are reconstructed from its 3-view track with the `fast` pipeline (short run), and
  * renders at every view the reconstruction did not see are paired with the true image (object on black);
  * renders of noise-perturbed copies of the Gaussians at the 3 input views are paired with those views.
Pairs are cached per seed (``--data``); the model (0.64 M parameters, 2.5 MB) trains on random 48 px crops.

    python benchmarks/train_repair_prior.py --seeds 0 1 2 3 4 5 6 7 --data-only       # the pairs (~1.5 min/seed)
    python benchmarks/train_repair_prior.py --seeds 0 1 2 3 4 5 6 7 --out /tmp/w1      # 400 steps, lr 2e-3
    python benchmarks/train_repair_prior.py --seeds 0 1 2 3 4 5 6 7 --init /tmp/w1 --lr 1e-3 --out /tmp/w2
    python benchmarks/train_repair_prior.py --seeds 0 1 2 3 4 5 6 7 --init /tmp/w2 --lr 1e-3 --steps 300 \
        --object-weight 4 --out data/priors/repair-small                                # the bundled weights
    python benchmarks/train_repair_prior.py --seeds 7 --evaluate data/priors/repair-small   # held-out PSNR

Seed 7 is held out by default (``--val-seeds``) to measure the repair. Training runs with one torch thread
(RECON_PRIOR_THREADS, see priors/diffusion/model.py); about 8 min per 400 steps here under load.

The benchmark seeds (100-104) must not be among the training seeds; the script refuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from priors.diffusion.data import PairSet, perturb_gaussians
from priors.diffusion.model import BUNDLED_WEIGHTS, RepairModel
from priors.diffusion.train import train_repair

BENCH_SEEDS = range(100, 105)


def cache_root() -> Path:
    return Path(os.environ.get("RECON_CACHE_DIR") or Path.home() / ".cache" / "recon") / "repair_pairs"


def scene_pairs(seed: int, width: int, height: int, iterations: int, noisy: int = 2) -> PairSet:
    """Repair pairs of one generated scene (see the module docstring)."""
    from recon.bench.synth import synthesize
    from recon.config import make_config
    from recon.io.types import ViewSet
    from recon.pipeline import initialise, train
    from renderers.gaussians.render import render_cameras

    sc = synthesize(seed, width, height)
    idx = sc.splits["track3"]["input_views"]
    views = ViewSet(
        names=[str(i) for i in idx],
        images=[sc.images[i] for i in idx],
        cameras=[sc.cameras[i] for i in idx],
        masks=[sc.masks[i].astype(np.float32) for i in idx],
    )
    cfg = make_config("fast", iterations=iterations, max_side=max(width, height), seed=seed)
    init = initialise(views, views.cameras, views.masks, cfg)
    train(init, views, views.cameras, views.masks, cfg)
    model = init.model
    pairs = PairSet()
    others = [i for i in range(len(sc.cameras)) if i not in idx]
    outs = render_cameras(model, [sc.cameras[i] for i in others], background=[0.0, 0.0, 0.0], render_mode="RGB")
    for i, o in zip(others, outs):
        clean = sc.images[i] * sc.masks[i][..., None]
        pairs.add(o.rgb.clamp(0, 1).numpy(), o.alpha.numpy(), clean)
    gen = torch.Generator().manual_seed(seed)
    for k in range(noisy):
        noisy_model = perturb_gaussians(model, strength=0.3 + 0.4 * k, generator=gen, scene_scale=init.scene_scale)
        outs = render_cameras(noisy_model, views.cameras, background=[0.0, 0.0, 0.0], render_mode="RGB")
        for j, o in enumerate(outs):
            pairs.add(o.rgb.clamp(0, 1).numpy(), o.alpha.numpy(), views.images[j] * views.masks[j][..., None])
    return pairs


def load_or_make(seed: int, data: Path, width: int, height: int, iterations: int) -> PairSet:
    path = data / f"pairs_seed{seed}_{width}x{height}_it{iterations}.npz"
    if path.exists():
        return PairSet.load(path)
    t = time.perf_counter()
    pairs = scene_pairs(seed, width, height, iterations)
    pairs.save(path)
    print(f"seed {seed}: {len(pairs)} pairs in {time.perf_counter() - t:.1f} s -> {path}", flush=True)
    return pairs


def evaluate_repair(model: RepairModel, pairs: PairSet, steps: tuple[int, ...] = (1, 4)) -> dict:
    """PSNR to the clean images before and after repair, over two regions: ``area`` (pixels where the render or
    the clean image shows anything: floaters count) and ``object`` (the true object only, what masked test
    metrics see)."""
    sums: dict[str, list[float]] = {}
    gen = torch.Generator().manual_seed(0)
    for r, a, c in zip(pairs.renders, pairs.alphas, pairs.cleans):
        obj = c.max(axis=2) > 0.02
        area = (a > 0.05) | obj
        if not obj.any():
            continue
        rt = torch.from_numpy(r).permute(2, 0, 1)[None]
        at = torch.from_numpy(a)[None, None]
        outs = {"render": r}
        for k in steps:
            outs[f"repair_{k}step"] = model.repair(rt, at, steps=k, generator=gen)[0].permute(1, 2, 0).numpy()
        for name, img in outs.items():
            err = (img - c) ** 2
            sums.setdefault(f"{name}_area", []).append(float(err[area].mean()))
            sums.setdefault(f"{name}_object", []).append(float(err[obj].mean()))
    out: dict = {f"{k}_psnr": float(-10 * np.log10(max(float(np.mean(v)), 1e-10))) for k, v in sums.items()}
    out["pairs"] = len(sums.get("render_area", []))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(12)))
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--height", type=int, default=150)
    ap.add_argument("--recon-iterations", type=int, default=300)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--object-weight", type=float, default=0.0, help="extra loss weight on object pixels")
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--val-seeds", type=int, nargs="*", default=[7], help="seeds held out to measure the repair")
    ap.add_argument("--time-budget", type=float, default=660.0, help="seconds of training at most")
    ap.add_argument("--data", type=Path, default=None, help="pair cache folder (default RECON_CACHE_DIR/repair_pairs)")
    ap.add_argument("--data-only", action="store_true", help="only generate the pairs")
    ap.add_argument("--evaluate", type=Path, default=None, help="only measure this saved model on the held-out seeds")
    ap.add_argument("--out", type=Path, default=BUNDLED_WEIGHTS)
    ap.add_argument("--init", type=Path, default=None, help="continue training this saved model")
    args = ap.parse_args()
    bad = sorted((set(args.seeds) | set(args.val_seeds)) & set(BENCH_SEEDS))
    if bad:
        sys.exit(f"train_repair_prior: seeds {bad} are benchmark seeds; pick others")
    data = args.data or cache_root()
    train_seeds = [s for s in args.seeds if s not in args.val_seeds]
    pairs, val = PairSet(), PairSet()
    for seed in args.seeds + [s for s in args.val_seeds if s not in args.seeds]:
        got = load_or_make(seed, data, args.width, args.height, args.recon_iterations)
        (val if seed in args.val_seeds else pairs).extend(got)
    print(f"{len(pairs)} training pairs from seeds {train_seeds}, {len(val)} held-out pairs", flush=True)
    if args.data_only:
        return
    if args.evaluate is not None:
        print(
            json.dumps(
                {
                    "model": str(args.evaluate),
                    "seeds": args.val_seeds,
                    **evaluate_repair(RepairModel.load(args.evaluate), val),
                }
            ),
            flush=True,
        )
        return
    model = RepairModel.load(args.init) if args.init else RepairModel.build(channels=tuple(args.channels))
    previous = model.meta.get("training")
    t = time.perf_counter()
    losses = train_repair(
        model,
        pairs,
        args.steps,
        batch_size=args.batch,
        crop=args.crop,
        lr=args.lr,
        time_budget_s=args.time_budget,
        progress=True,
        object_weight=args.object_weight,
    )
    seconds = time.perf_counter() - t
    model.meta.update(
        {
            "trained_on": {
                "generator": "recon.bench.synth",
                "seeds": train_seeds,
                "size": [args.width, args.height],
                "recon_iterations": args.recon_iterations,
                "pairs": len(pairs),
            },
            "training": {
                "steps": len(losses),
                "batch": args.batch,
                "crop": args.crop,
                "lr": args.lr,
                "object_weight": args.object_weight,
                "seconds": round(seconds, 1),
                "loss_first20": float(np.mean(losses[:20])),
                "loss_last20": float(np.mean(losses[-20:])),
                "continued_from": previous,
            },
        }
    )
    if len(val):
        model.meta["held_out"] = {"seeds": args.val_seeds, **evaluate_repair(model, val)}
    model.save(args.out)
    print(json.dumps({k: model.meta[k] for k in ("training", "held_out") if k in model.meta}), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
