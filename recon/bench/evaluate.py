"""Score a reconstruction on a SpaRe-style scene's hidden test views (masked PSNR / SSIM, RegNeRF convention).

Masked metrics follow RegNeRF's DTU protocol: prediction and ground truth are both multiplied by the object mask
(i.e. composited on black) and compared over the whole image. ``psnr_in_mask`` (the leaderboard's PSNR-M: error
over mask pixels only) is reported beside it; the two differ by 10*log10(pixels / mask pixels) per view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon import metrics
from recon.io.types import ViewSet


@dataclass
class TestScores:
    """Per-view and mean scores of one run on one split's test views."""

    names: list[str]
    psnr: list[float]
    ssim: list[float]
    psnr_full: list[float]
    psnr_in_mask: list[float] = field(default_factory=list)
    renders: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def mean(self) -> dict[str, float]:
        return {
            "masked_psnr": float(np.mean(self.psnr)),
            "masked_ssim": float(np.mean(self.ssim)),
            "psnr_full": float(np.mean(self.psnr_full)),
            "psnr_in_mask": float(np.mean(self.psnr_in_mask)) if self.psnr_in_mask else float("nan"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "per_view": [
                {"name": n, "masked_psnr": p, "masked_ssim": s, "psnr_full": f}
                for n, p, s, f in zip(self.names, self.psnr, self.ssim, self.psnr_full)
            ],
        }


@torch.no_grad()
def score_model(model: Any, test: ViewSet, keep_renders: bool = False) -> TestScores:
    """Render ``test.cameras`` with ``model`` (anything with .render(Camera) -> RenderOutput) and score them.

    Renders are composited on black; masked scores need ``test.masks``.
    """
    if test.cameras is None:
        raise ValueError("test views need cameras")
    names, ps, ss, pf, pm, renders = [], [], [], [], [], []
    for k, cam in enumerate(test.cameras):
        gt = torch.from_numpy(np.ascontiguousarray(test.images[k], dtype=np.float32))
        out = model.render(cam, background=torch.zeros(3), render_mode="RGB")
        pred = out.rgb.clamp(0, 1).cpu()
        m = None if test.masks is None else torch.from_numpy(np.ascontiguousarray(test.masks[k], dtype=np.float32))
        psnr_v, ssim_v = metrics.image_psnr_ssim(pred, gt, m)
        ps.append(psnr_v)
        ss.append(ssim_v)
        if m is not None:
            pm.append(float(metrics.psnr(pred, gt, m)))
        pf.append(float(metrics.psnr(pred, gt)))
        names.append(test.names[k])
        if keep_renders:
            renders.append(pred.numpy())
    return TestScores(names=names, psnr=ps, ssim=ss, psnr_full=pf, psnr_in_mask=pm, renders=renders)


def score_run(run_dir: str | Path, scene_dir: str | Path, track: int, max_side: int | None = None) -> TestScores:
    """Load the run's model (any representation) and score it on the test views of ``scene_dir``'s ``track`` split."""
    from recon.io.detect import resize_views
    from recon.io.spare import read_spare_scene
    from recon.pipeline import load_run_model

    model = load_run_model(run_dir)
    test = read_spare_scene(scene_dir, track=track, split="test")
    if max_side is not None:
        test = resize_views(test, max_size=max_side)
    return score_model(model, test)
