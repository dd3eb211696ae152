"""Train the repair prior (priors/diffusion) on leave-out reconstructions of generated and real scenes.

Data (GaussianObject / ReconFusion style, self-generated): each *source* is a scene and three of its views; the
three are reconstructed with the default pipeline exactly as a user's run (`fast` preset, scene mode for photos
without masks), then
  * renders at views the reconstruction never saw are paired with the true images, and
  * renders of noise-perturbed copies of the Gaussians at the three inputs are paired with those photos,
each at half the input size (the scale of the run-time pseudo views) and each with its guide: the nearest input
photo warped into the view through the rendered depth, occlusion-checked (priors/diffusion/guide.py).
Sources: generated scenes (``--seeds``; the benchmark seeds 100-104 are refused) and real development scenes'
views that are never a protocol test view (``--real KIND:SCENE:IDS``: DTU's non-test views, Blender's train split,
LLFF's non-held-out views). ``--max-angle`` keeps only held-out views near an input's viewing direction, where
the run-time pseudo views are. Pairs are cached per source (``--data``), leave-out runs kept in ``--work``.

The bundled weights (data/priors/repair-small, 0.83 M parameters, 3.3 MB) were made with, DATA = the real
development set (../shared/data/real):

    python benchmarks/train_repair_prior.py --seeds 0 1 2 \
        --real dtu:DATA/dtu/scan24:40,44,48 dtu:DATA/dtu/scan37:40,44,48 dtu:DATA/dtu/scan24:0,8,13 \
               dtu:DATA/dtu/scan37:0,8,13 blender:DATA/blender/lego:10,45,80 \
        --max-angle 30 --max-targets 200 --val gen2_400x300 \
        --channels 24 48 64 --crop 48 --lr 2e-3 --steps 980 --time-budget 100000

(about 20 min of leave-out runs and 14 min of training on one thread here). ``--evaluate W --val NAME`` measures
a saved model on cached sources: PSNR of the render, of the guide alone and of the repair against the truth.
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


def _resize(img: np.ndarray, width: int, height: int) -> torch.Tensor:
    """HxW[xC] image area-resized to ``width`` x ``height`` (as the run-time guidance resizes its inputs)."""
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    x = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(height, width), mode="area")
    return y[0, 0] if t.dim() == 2 else y[0].permute(1, 2, 0)


def pairs_from_reconstruction(
    views,
    input_ids: list[int],
    target_ids: list[int],
    work: Path,
    *,
    scene_mode: bool,
    scale: float = 0.5,
    noisy: int = 2,
    seed: int = 0,
    guides: bool = True,
    reuse: bool = False,
    max_angle_deg: float | None = None,
) -> PairSet:
    """Reconstruct ``views`` at ``input_ids`` with the default pipeline (as a user's run), then pair its renders
    at ``target_ids`` (views it never saw) and of noise-perturbed copies at the inputs with the true images,
    at ``scale`` of the input size (the run-time pseudo views' scale); with ``guides``, each pair also gets the
    nearest input photo warped into the view (priors.diffusion.guide). ``scene_mode``: the inputs lose their
    masks (a scene, whole images); otherwise images are masked to the object on black, as the guidance does."""
    from priors.diffusion.guide import guide_for_view, sources_from_renders
    from recon.config import make_config
    from recon.pipeline import load_run_model, reconstruct
    from renderers.gaussians.render import render_cameras

    inputs = views.subset(input_ids)
    if scene_mode:
        inputs.masks = None
    h, w = inputs.images[0].shape[:2]
    cfg = make_config("fast", max_side=max(h, w), seed=seed)
    run_dir = work / "run"
    if not (reuse and (run_dir / "metrics.json").is_file()):
        reconstruct(inputs, run_dir, cfg, overwrite=True)
    model = load_run_model(run_dir)
    if max_angle_deg is not None:  # only views a pseudo view could be at: near some input's viewing direction
        axes = np.stack([views.cameras[i].R[2] for i in input_ids])
        near = [
            i
            for i in target_ids
            if np.degrees(np.arccos(np.clip(axes @ views.cameras[i].R[2], -1, 1))).min() <= max_angle_deg
        ]
        target_ids = near

    def clean_of(i: int, cam) -> torch.Tensor:
        img = views.images[i]
        if not scene_mode and views.masks is not None:
            img = img * views.masks[i][..., None]
        return _resize(img, cam.width, cam.height)

    in_cams = [views.cameras[i].scaled(scale) for i in input_ids]
    in_clean = [clean_of(i, c) for i, c in zip(input_ids, in_cams)]

    def sources_of(m) -> list:
        return sources_from_renders(in_clean, in_cams, render_cameras(m, in_cams, background=[0.0, 0.0, 0.0]))

    pairs = PairSet()
    with torch.no_grad():
        sources = sources_of(model) if guides else []
        cams = [views.cameras[i].scaled(scale) for i in target_ids]
        outs = render_cameras(model, cams, background=[0.0, 0.0, 0.0])
        for i, c, o in zip(target_ids, cams, outs):
            g = guide_for_view(o.depth.cpu(), o.alpha.cpu(), c, sources).numpy() if guides else None
            pairs.add(o.rgb.clamp(0, 1).numpy(), o.alpha.numpy(), clean_of(i, c).numpy(), g)
        gen = torch.Generator().manual_seed(seed)
        scene_scale = float(np.linalg.norm(np.ptp(np.stack([c.center for c in in_cams]), axis=0))) or 1.0
        for k in range(noisy):
            noisy_model = perturb_gaussians(model, strength=0.3 + 0.4 * k, generator=gen, scene_scale=scene_scale)
            outs = render_cameras(noisy_model, in_cams, background=[0.0, 0.0, 0.0])
            nsrc = sources_from_renders(in_clean, in_cams, outs)
            for j, (c, o) in enumerate(zip(in_cams, outs)):
                g = guide_for_view(o.depth.cpu(), o.alpha.cpu(), c, nsrc, exclude=j).numpy() if guides else None
                pairs.add(o.rgb.clamp(0, 1).numpy(), o.alpha.numpy(), in_clean[j].numpy(), g)
    return pairs


def generated_source(seed: int, width: int, height: int):
    """(views, input ids, target ids, scene_mode) of one generated scene: its 3-view track, every other view."""
    from recon.bench.synth import synthesize
    from recon.io.types import ViewSet

    sc = synthesize(seed, width, height)
    views = ViewSet(
        names=[f"{i:03d}" for i in range(len(sc.images))],
        images=list(sc.images),
        cameras=list(sc.cameras),
        masks=[m.astype(np.float32) for m in sc.masks],
    )
    idx = list(sc.splits["track3"]["input_views"])
    return views, idx, [i for i in range(len(views)) if i not in idx], False


def real_source(kind: str, scene: Path, input_ids: list[int], max_targets: int):
    """(views, input ids, target ids, scene_mode) of a real development scene. Only views that are never a test
    view of the dataset's protocols are used: DTU's non-test views (RegNeRF split), Blender's train split (its
    test split is never read), LLFF's non-held-out views; ``max_targets`` of them, spread evenly."""
    from recon.bench import protocols as P

    if kind == "dtu":
        from recon.io.dtu import read_dtu

        views = read_dtu(scene, with_masks=True)
        allowed = [i for i in range(len(views)) if i not in P.dtu_split(3, len(views))[1]]
        scene_mode = True
    elif kind == "blender":
        from recon.io.blender import read_blender

        views = read_blender(scene, split="train", background=(1.0, 1.0, 1.0))
        allowed = list(range(len(views)))
        scene_mode = False
    elif kind == "llff":
        from recon.io.llff import read_llff

        views = read_llff(scene, factor=8)
        allowed = [i for i in range(len(views)) if i % P.LLFF_HOLD != 0]
        scene_mode = True
    else:
        raise SystemExit(f"unknown real source kind {kind!r} (dtu, blender, llff)")
    bad = [i for i in input_ids if i not in allowed]
    if bad:
        raise SystemExit(f"{scene}: views {bad} are protocol test views or out of range")
    rest = [i for i in allowed if i not in input_ids]
    picks = sorted({rest[round(x)] for x in np.linspace(0, len(rest) - 1, min(max_targets, len(rest)))})
    return views, input_ids, picks, scene_mode


def load_or_make_source(
    name: str, make, data: Path, work: Path, reuse: bool = False, max_angle_deg: float | None = None
) -> PairSet:
    """The pairs of one source, cached as ``data/<name>.npz``."""
    path = data / f"{name}.npz"
    if path.exists():
        return PairSet.load(path)
    t = time.perf_counter()
    views, inputs, targets, scene_mode = make()
    pairs = pairs_from_reconstruction(
        views, inputs, targets, work / name, scene_mode=scene_mode, reuse=reuse, max_angle_deg=max_angle_deg
    )
    pairs.save(path)
    print(f"{name}: {len(pairs)} pairs in {time.perf_counter() - t:.1f} s -> {path}", flush=True)
    return pairs


def evaluate_repair(model: RepairModel, pairs: PairSet, steps: tuple[int, ...] = (1, 4)) -> dict:
    """PSNR to the clean images before and after repair, over two regions: ``area`` (pixels where the render or
    the clean image shows anything: floaters count) and ``object`` (the true object only, what masked test
    metrics see)."""
    sums: dict[str, list[float]] = {}
    gen = torch.Generator().manual_seed(0)
    guides = pairs.guides if pairs.has_guides else [None] * len(pairs)
    for r, a, c, g in zip(pairs.renders, pairs.alphas, pairs.cleans, guides):
        obj = c.max(axis=2) > 0.02
        area = (a > 0.05) | obj
        if not obj.any():
            continue
        rt = torch.from_numpy(r).permute(2, 0, 1)[None]
        at = torch.from_numpy(a)[None, None]
        gt = None if g is None else torch.from_numpy(g).permute(2, 0, 1)[None]
        outs = {"render": r}
        if g is not None:  # the warped photo alone, where valid (the render elsewhere): what the guide brings
            outs["guide"] = np.where(g[..., 3:4] > 0.5, g[..., :3], r)
        for k in steps:
            fixed = model.repair(rt, at, steps=k, generator=gen, guide=gt)
            outs[f"repair_{k}step"] = fixed[0].permute(1, 2, 0).numpy()
        for name, img in outs.items():
            err = (img - c) ** 2
            sums.setdefault(f"{name}_area", []).append(float(err[area].mean()))
            sums.setdefault(f"{name}_object", []).append(float(err[obj].mean()))
    out: dict = {f"{k}_psnr": float(-10 * np.log10(max(float(np.mean(v)), 1e-10))) for k, v in sums.items()}
    out["pairs"] = len(sums.get("render_area", []))
    return out


def parse_real(spec: str) -> tuple[str, Path, list[int]]:
    """KIND:SCENE_DIR:ID,ID,ID (e.g. dtu:../shared/data/real/dtu/scan24:40,44,48) -> parts."""
    try:
        kind, scene, ids = spec.split(":")
        return kind, Path(scene), [int(x) for x in ids.split(",")]
    except ValueError:
        raise SystemExit(f"--real {spec!r}: expected KIND:SCENE_DIR:ID,ID,ID") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3], help="generated training scenes")
    ap.add_argument(
        "--real",
        nargs="*",
        default=[],
        metavar="KIND:SCENE:IDS",
        help="real scenes' non-test views, e.g. dtu:data/real/dtu/scan24:40,44,48 (inputs of the leave-out run)",
    )
    ap.add_argument("--val", nargs="*", default=[], metavar="NAME", help="cached sources held out for evaluation")
    ap.add_argument("--max-targets", type=int, default=24, help="held-out views rendered per real source")
    ap.add_argument(
        "--max-angle",
        type=float,
        default=None,
        help="only held-out views within this many degrees of an input's viewing direction",
    )
    ap.add_argument("--reuse-runs", action="store_true", help="keep finished leave-out runs in --work")
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--height", type=int, default=300)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--object-weight", type=float, default=0.0, help="extra loss weight on object pixels")
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64, 96])
    ap.add_argument("--no-guide", action="store_true", help="a model without the warped-photo guide")
    ap.add_argument("--time-budget", type=float, default=1800.0, help="seconds of training at most")
    ap.add_argument("--data", type=Path, default=None, help="pair cache folder (default RECON_CACHE_DIR/repair_pairs)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/repair_prior_runs"), help="leave-out run folders")
    ap.add_argument("--data-only", action="store_true", help="only generate the pairs")
    ap.add_argument("--evaluate", type=Path, default=None, help="only measure this saved model on --val sources")
    ap.add_argument("--out", type=Path, default=BUNDLED_WEIGHTS)
    ap.add_argument("--init", type=Path, default=None, help="continue training this saved model")
    args = ap.parse_args()
    bad = sorted(set(args.seeds) & set(BENCH_SEEDS))
    if bad:
        sys.exit(f"train_repair_prior: seeds {bad} are benchmark seeds; pick others")
    data = args.data or cache_root()
    sources = {}
    for seed in args.seeds:
        sources[f"gen{seed}_{args.width}x{args.height}"] = lambda seed=seed: generated_source(
            seed, args.width, args.height
        )
    for spec in args.real:
        kind, scene, ids = parse_real(spec)
        name = f"{kind}_{scene.name}_{'-'.join(map(str, ids))}"
        sources[name] = lambda kind=kind, scene=scene, ids=ids: real_source(kind, scene, ids, args.max_targets)
    pairs, val, used = PairSet(), PairSet(), []
    for name, make in sources.items():
        got = load_or_make_source(name, make, data, args.work, args.reuse_runs, args.max_angle)
        if name in args.val:
            val.extend(got)
        else:
            pairs.extend(got)
            used.append(name)
    for name in args.val:
        if name not in sources:
            val.extend(PairSet.load(data / f"{name}.npz"))
    print(f"{len(pairs)} training pairs from {used}, {len(val)} held-out pairs", flush=True)
    if args.data_only:
        return
    if args.evaluate is not None:
        print(
            json.dumps(
                {"model": str(args.evaluate), "val": args.val, **evaluate_repair(RepairModel.load(args.evaluate), val)}
            )
        )
        return
    if args.init:
        model = RepairModel.load(args.init)
    else:
        model = RepairModel.build(channels=tuple(args.channels), guide=not args.no_guide)
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
            "trained_on": {"sources": used, "pairs": len(pairs), "pair_scale": 0.5},
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
        model.meta["held_out"] = {"sources": args.val, **evaluate_repair(model, val)}
    model.save(args.out)
    print(json.dumps({k: model.meta[k] for k in ("training", "held_out") if k in model.meta}), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
