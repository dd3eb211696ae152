"""Test-view pose fitting for runs whose cameras were estimated (the pose-free evaluation protocol).

A reconstruction from unposed photos lives in its own frame. A similarity fitted on the input cameras maps the
ground-truth test cameras into it, but it carries the input cameras' residual errors (and any focal-length
error) to the test cameras, and a masked PSNR is unforgiving: a test camera 0.2-0.4 deg off costs several dB on
a textured object although the reconstruction is right. Pose-free NeRF evaluations (BARF, NoPe-NeRF, CF-3DGS,
InstantSplat) therefore fit each test camera's pose to its image with the reconstruction frozen before
scoring. ``fit_test_cameras`` does that: a small SE(3) correction per test camera (intrinsics fixed), Adam on
the masked L1 error, a half-resolution phase first for a wider basin. The reconstruction itself is never
changed.
"""

from __future__ import annotations

import numpy as np
import torch

from recon.cameras import Camera
from recon.io.types import ViewSet


def fit_test_cameras(
    model: object, test: ViewSet, steps: int = 150, lr: float = 2e-3, half_fraction: float = 0.5
) -> tuple[list[Camera], dict]:
    """Copies of ``test.cameras`` with poses fitted to ``test.images`` under the frozen ``model``.

    ``model`` is anything with ``render((viewmats, Ks), width=, height=, background=, render_mode=)`` returning a
    batched RenderOutput (Gaussians, neural primitives). The loss is the L1 error of the render on black times
    the mask against the image times the mask (the masked metrics' convention: a scene-mode run renders the
    background too, and without masking the render the fit pulled the test cameras towards rendering it black:
    DTU scan37, 3 views, dataset cameras: 18.61 dB as mapped, 14.24 dB after that fit), or of the plain image
    without masks.
    Returns the cameras and a report: per-view rotation (deg) and translation of the correction and the loss
    before/after.
    """
    from recon.pipeline import half_resolution
    from recon.poses.refine import PoseCorrection

    if test.cameras is None:
        raise ValueError("test views need cameras to start from")
    device = getattr(model, "device", torch.device("cpu"))
    cams = list(test.cameras)
    targets, weights = [], []
    for k, img in enumerate(test.images):
        gt = torch.as_tensor(np.ascontiguousarray(img, dtype=np.float32), device=device)
        m = torch.ones(gt.shape[:2], device=device)
        if test.masks is not None:
            m = torch.as_tensor(np.ascontiguousarray(test.masks[k], dtype=np.float32), device=device)
        targets.append(gt * m[..., None])
        weights.append(m[..., None])
    half_targets = [half_resolution(t) for t in targets]
    half_weights = [half_resolution(w) for w in weights]
    half_cams = [c.resized(c.width // 2, c.height // 2) for c in cams]
    K_full = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32, device=device)
    K_half = torch.tensor(np.stack([c.K for c in half_cams]), dtype=torch.float32, device=device)
    corr = PoseCorrection(cams, device=device)
    adam = torch.optim.Adam(corr.param_groups(lr))
    black = torch.zeros(3, device=device)
    params = [p for p in model.parameters()] if hasattr(model, "parameters") else []
    frozen = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)

    def loss_of(i: int, half: bool) -> torch.Tensor:
        c = half_cams[i] if half else cams[i]
        K = (K_half if half else K_full)[i : i + 1]
        out = model.render(
            (corr.viewmats(i)[None], K), width=c.width, height=c.height, background=black, render_mode="RGB"
        )
        w = half_weights[i] if half else weights[i]
        return (out.rgb[0] * w - (half_targets[i] if half else targets[i])).abs().mean()

    try:
        with torch.no_grad():
            before = [float(loss_of(i, False)) for i in range(len(cams))]
        half_steps = int(half_fraction * steps)
        for step in range(steps):
            half = step < half_steps
            loss = sum(loss_of(i, half) for i in range(len(cams)))
            adam.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            adam.step()
        with torch.no_grad():
            after = [float(loss_of(i, False)) for i in range(len(cams))]
    finally:
        for p, f in zip(params, frozen):
            p.requires_grad_(f)
    rot, trans = corr.magnitudes()
    fitted = corr.cameras(cams)
    # a view whose fit made things worse keeps its starting pose (the loss is what the score measures)
    fitted = [f if a <= b else c for f, c, a, b in zip(fitted, cams, after, before)]
    report = {
        "rotation_deg": rot.tolist(),
        "translation": trans.tolist(),
        "l1_before": before,
        "l1_after": after,
        "steps": steps,
    }
    return fitted, report
