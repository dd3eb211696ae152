"""Automatic mask quality on real data: IoU of each segmenter against the datasets' own masks, and confidence.

DTU scans (IDR/NeuS layout: image/000000.png..., mask/000.png..., white = object) and Blender scenes (train/*.png
RGBA, alpha = ground truth, composited on white); LLFF scenes (images_8/, no masks) report the confidence only,
to check that a forward-facing scene is not taken for one object. Prints a table, writes JSON.

    .venv/bin/python benchmarks/masks_real.py ../shared/data/real --out benchmarks/results/masks_real.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from priors.segmentation import make_segmenter
from recon.run_checks import decide_masks


def load_dtu(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    out = []
    for img in sorted((folder / "image").glob("*.png")):
        mask = folder / "mask" / f"{int(img.stem):03d}.png"
        gt = np.asarray(Image.open(mask).convert("L")) > 127
        out.append((img.name, np.asarray(Image.open(img).convert("RGB")), gt))
    return out


def load_blender(folder: Path, step: int) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    out = []
    for f in sorted((folder / "train").glob("*.png"))[::step]:
        a = np.asarray(Image.open(f).convert("RGBA")).astype(np.float32) / 255.0
        rgb = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
        out.append((f.name, (rgb * 255.0 + 0.5).astype(np.uint8), a[..., 3] > 0.5))
    return out


def load_llff(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    return [(f.name, np.asarray(Image.open(f).convert("RGB")), None) for f in sorted((folder / "images_8").glob("*"))]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the real data folder (dtu/, blender/, llff/)")
    ap.add_argument("--segmenters", default="opencv,salient")
    ap.add_argument("--blender-step", type=int, default=4, help="every Nth lego train view (100 views / 4 = 25)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/masks_real.json"))
    args = ap.parse_args()
    sets = {
        "dtu/scan24": lambda: load_dtu(args.root / "dtu/scan24"),
        "dtu/scan37": lambda: load_dtu(args.root / "dtu/scan37"),
        "blender/lego": lambda: load_blender(args.root / "blender/lego", args.blender_step),
        "llff/fern": lambda: load_llff(args.root / "llff/fern"),
    }
    results: dict[str, dict] = {}
    head = ("scene", "segmenter", "views", "IoU mean", "min", "conf", "s/view")
    print("{:14s} {:9s} {:>5s} {:>8s} {:>6s} {:>6s} {:>7s}  decision".format(*head))
    for scene, load in sets.items():
        data = load()
        for name in args.segmenters.split(","):
            seg = make_segmenter(name)
            ious, confs, masks, t0 = [], [], [], time.perf_counter()
            for _, img, gt in data:
                s = seg.segment(img)
                masks.append(s.mask)
                confs.append(s.confidence)
                if gt is not None:
                    ious.append(iou(s.mask > 0.5, gt))
            sec = (time.perf_counter() - t0) / len(data)
            d = decide_masks([n for n, _, _ in data], masks, from_input=False, confidence=confs)
            row = {
                "views": len(data),
                "iou_mean": float(np.mean(ious)) if ious else None,
                "iou_min": float(np.min(ious)) if ious else None,
                "iou_per_view": [round(x, 4) for x in ious],
                "confidence_mean": float(np.mean(confs)),
                "confidence_per_view": [round(x, 4) for x in confs],
                "seconds_per_view": sec,
                "object_mode": d.use,
                "reason": d.reason,
            }
            results.setdefault(scene, {})[seg.name] = row
            ious_txt = f"{row['iou_mean']:8.3f} {row['iou_min']:6.3f}" if ious else f"{'-':>8s} {'-':>6s}"
            mode = "object" if d.use else "scene"
            conf = row["confidence_mean"]
            print(f"{scene:14s} {seg.name:9s} {len(data):5d} {ious_txt} {conf:6.3f} {sec:7.2f}  {mode}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    note = "IoU vs the dataset masks (DTU mask/, lego alpha); seconds on a shared 2-core CPU under load"
    args.out.write_text(json.dumps({"note": note, "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
