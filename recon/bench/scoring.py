"""Score renders of the hidden test views: per image, per scene and per track (mean and std over scenes).

Metrics (all from :mod:`recon.metrics`): PSNR (full image), PSNR-M (MSE over the object-mask pixels), SSIM,
SSIM-M (SSIM of both images cropped to the tight bounding box of the mask), LPIPS and LPIPS-M (AlexNet, the
same crop) only when local LPIPS weights are given; otherwise they are None and ``lpips_note`` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon import metrics
from recon.bench.dataset import Benchmark, load_ground_truth

METRICS = ("psnr_m", "psnr", "ssim_m", "ssim", "lpips_m", "lpips")
HIGHER_IS_BETTER = {"psnr_m": True, "psnr": True, "ssim_m": True, "ssim": True, "lpips_m": False, "lpips": False}
LPIPS_MIN_SIDE = 32  # AlexNet's first layers need this much image
NO_LPIPS_NOTE = "LPIPS not computed: no local LPIPS weights given (pass --lpips-weights PATH to alex.pth)"


@dataclass
class Scores:
    """Scores of one submission on one track and split."""

    per_image: list[dict[str, Any]]  # {scene, view, psnr_m, psnr, ssim_m, ssim, lpips_m, lpips}
    per_scene: dict[str, dict[str, float | None]]
    mean: dict[str, float | None]
    std: dict[str, float | None]
    lpips_note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "per_scene": self.per_scene,
            "per_image": self.per_image,
            "lpips": self.lpips_note or "computed (AlexNet, local weights)",
        }


def load_lpips(weights: str | Path | None) -> tuple[Callable | None, str | None]:
    """(LPIPS function or None, note saying why it is missing)."""
    if weights is None:
        return None, NO_LPIPS_NOTE
    fn = metrics.lpips_if_available(weights)
    if fn is None:
        return None, (
            f"LPIPS not computed: {weights} (or the AlexNet backbone alexnet-owt-7be5be79.pth next to it) "
            "is missing or unreadable"
        )
    return fn, None


def score_image(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, lpips_fn: Callable | None = None
) -> dict[str, float | None]:
    """All metrics of one render (HxWx3 uint8 or float in [0,1]) against its ground truth and mask."""
    p = torch.from_numpy(_to_float(pred))
    g = torch.from_numpy(_to_float(gt))
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
    has_object = bool((m > 0.5).any())
    out: dict[str, float | None] = {
        "psnr": float(metrics.psnr(p, g)),
        "psnr_m": float(metrics.psnr(p, g, (m > 0.5).float())) if has_object else None,
        "ssim": float(metrics.ssim(p, g)),
        "ssim_m": metrics.bbox_ssim(p, g, m),
        "lpips": None,
        "lpips_m": None,
    }
    if lpips_fn is not None:
        out["lpips"] = float(lpips_fn(p, g))
        crop = metrics.crop_to_mask_bbox(p, g, m, min_size=LPIPS_MIN_SIDE)
        out["lpips_m"] = float(lpips_fn(*crop)) if crop is not None else None
    return out


def _to_float(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.ascontiguousarray(a, dtype=np.float32)


def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the values that exist (None = not computed, e.g. LPIPS without weights); None when none do."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _std(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.std(vals)) if vals else None


def score_renders(
    bench: Benchmark,
    images: dict[str, dict[str, np.ndarray]],
    lpips_weights: str | Path | None = None,
) -> Scores:
    """Score ``images[scene][view file name]`` against the benchmark's hidden test views.

    Per scene: the mean over its views; per track: mean and std over scenes (every scene weighs the same).
    """
    lpips_fn, note = load_lpips(lpips_weights)
    per_image: list[dict[str, Any]] = []
    per_scene: dict[str, dict[str, float | None]] = {}
    for scene in sorted(images):
        rows = []
        for view in bench.test_views(scene):
            gt, mask = load_ground_truth(view)
            row = {"scene": scene, "view": view.name, **score_image(images[scene][view.name], gt, mask, lpips_fn)}
            rows.append(row)
        per_image.extend(rows)
        per_scene[scene] = {k: mean_or_none([r[k] for r in rows]) for k in METRICS}
    mean = {k: mean_or_none([s[k] for s in per_scene.values()]) for k in METRICS}
    std = {k: _std([s[k] for s in per_scene.values()]) for k in METRICS}
    return Scores(per_image=per_image, per_scene=per_scene, mean=mean, std=std, lpips_note=note)
