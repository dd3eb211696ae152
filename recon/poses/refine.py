"""Photometric pose refinement: a small SE(3) correction per camera, optimised with the Gaussians.

Like gsplat's camera optimisation, each camera gets a 6-vector (rotation vector, translation) initialised to
zero (identity), applied on the camera side: viewmat' = exp(delta) @ viewmat. The rasterizer propagates
gradients into viewmats, so the correction follows the photometric loss and fixes what features could not.
One shared focal-length scale exp(log_focal) (zero-initialised) can correct the intrinsics too. It is off by
default (``refine_focal``): bundle adjustment already estimates the focal from the features, and in the one
end-to-end check with it on (9 views, no EXIF, before bundle adjustment could move the focal) it drifted the
wrong way (441.7 -> 433.2 px, truth 471.2), trading off against the camera distance.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from recon.cameras import Camera


def so3_exp(w: Tensor) -> Tensor:
    """Rotation matrices [N,3,3] from rotation vectors [N,3] (Rodrigues; exact gradient at 0)."""
    theta2 = (w * w).sum(-1, keepdim=True)[..., None]  # [N,1,1]
    K = torch.zeros(w.shape[0], 3, 3, dtype=w.dtype, device=w.device)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = w[:, 2], -w[:, 1], w[:, 0]
    theta = torch.sqrt(theta2 + 1e-12)
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta2 + 1e-12))
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(K)
    return eye + a * K + b * (K @ K)


class PoseCorrection(nn.Module):
    """Per-camera SE(3) corrections (zero-initialised) applied to fixed base viewmats."""

    def __init__(self, cameras: list[Camera], device: torch.device | str = "cpu", refine_focal: bool = False) -> None:
        super().__init__()
        base = torch.tensor(np.stack([c.viewmat for c in cameras]), dtype=torch.float32, device=device)
        self.register_buffer("base", base)
        self.delta = nn.Parameter(torch.zeros(len(cameras), 6, device=device))
        self.log_focal = nn.Parameter(torch.zeros(1, device=device), requires_grad=refine_focal)

    def param_groups(self, lr: float, focal_lr: float = 2e-3) -> list[dict]:
        """Optimizer groups: the SE(3) corrections at ``lr``; the log focal scale at ``focal_lr`` (one scalar
        with a consistent gradient: a larger step lets it cover a few percent within a short run)."""
        groups: list[dict] = [{"params": [self.delta], "lr": lr}]
        if self.log_focal.requires_grad:
            groups.append({"params": [self.log_focal], "lr": focal_lr})
        return groups

    def focal_scale(self) -> float:
        return float(torch.exp(self.log_focal.detach()).item())

    def scale_K(self, K: Tensor) -> Tensor:
        """Intrinsics [..,3,3] with fx, fy multiplied by the focal scale (principal point unchanged)."""
        s = torch.exp(self.log_focal)[0]
        scale = torch.stack([s, s, torch.ones_like(s)]).to(K.dtype)
        return K * scale.view(3, 1) if K.dim() == 2 else K * scale.view(1, 3, 1)

    def viewmats(self, idx: int | None = None) -> Tensor:
        """Corrected world-to-camera matrices: [4,4] for one camera, else [N,4,4]."""
        d = self.delta if idx is None else self.delta[idx : idx + 1]
        base = self.base if idx is None else self.base[idx : idx + 1]
        T = torch.zeros(d.shape[0], 4, 4, dtype=d.dtype, device=d.device)
        T[:, :3, :3] = so3_exp(d[:, :3])
        T[:, :3, 3] = d[:, 3:]
        T[:, 3, 3] = 1.0
        out = T @ base
        return out[0] if idx is not None else out

    def cameras(self, cameras: list[Camera]) -> list[Camera]:
        """Copies of ``cameras`` with the corrections (poses and focal scale) applied."""
        with torch.no_grad():
            V = self.viewmats().detach().cpu().double().numpy()
        out = []
        fs = self.focal_scale()
        for c, v in zip(cameras, V):
            v = v.copy()
            u, _, vt = np.linalg.svd(v[:3, :3])  # re-orthonormalise after float32 round trip
            v[:3, :3] = u @ vt
            K = c.K.copy()
            K[0, 0] *= fs
            K[1, 1] *= fs
            out.append(Camera(K=K, viewmat=v, width=c.width, height=c.height, name=c.name, extra=dict(c.extra)))
        return out

    def magnitudes(self) -> tuple[np.ndarray, np.ndarray]:
        """(rotation degrees, translation length) of each correction."""
        d = self.delta.detach().cpu().double().numpy()
        return np.degrees(np.linalg.norm(d[:, :3], axis=1)), np.linalg.norm(d[:, 3:], axis=1)
