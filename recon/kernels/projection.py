"""EWA projection of 3D Gaussians to 2D screen-space Gaussians, as gsplat's ``fully_fused_projection``.

Per-Gaussian and cheap, so this is vectorised PyTorch with autograd: gradients from the rasteriser
(w.r.t. means2d, conics, depths, opacities) flow back to means, quats, scales through these ops.

Conventions (gsplat / OpenCV): ``viewmats`` [C,4,4] world-to-camera, ``Ks`` [C,3,3] pinhole, quats wxyz
(normalised here), scales activated. Culled Gaussians (depth outside [near, far], non-positive 2D
determinant, opacity below 1/255, radius <= radius_clip, fully off-screen) get radii 0 and zero
means2d / conics / depths, with finite (zero) gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_EXTEND = 3.33  # gsplat's cap on the bounding-box extent, in standard deviations


class Projection(NamedTuple):
    """Screen-space Gaussians for C cameras and N Gaussians."""

    means2d: Tensor  # [C, N, 2] pixel coordinates (pixel centres at +0.5)
    conics: Tensor  # [C, N, 3] inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
    depths: Tensor  # [C, N] camera-space z
    radii: Tensor  # [C, N, 2] int32 half-extent of the bounding box in x and y (0 = culled)
    compensations: Tensor | None  # [C, N] antialiasing opacity factor (only when requested)
    radii_max: Tensor | None = None  # [C, N] int32 max of the two radii (filled by the C++ path)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """wxyz quaternions [..., 4] (any norm) -> rotation matrices [..., 3, 3]."""
    q = torch.nn.functional.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariance R S S^T R^T [..., 3, 3] from quats [..., 4] and activated scales [..., 3]."""
    m = quat_to_rotmat(quats) * scales.unsqueeze(-2)
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor | None,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
) -> Projection:
    """Project N Gaussians into C pinhole cameras (gsplat's EWA rule with 1.3x-FOV Jacobian clamping).

    ``opacities`` ([N] or [C,N]) only shapes the opacity-aware bounding box (gsplat >= 1.5); pass None for
    the plain 3.33-sigma box.
    """
    C = viewmats.shape[0]
    R = viewmats[:, :3, :3]  # [C,3,3]
    t = viewmats[:, :3, 3]  # [C,3]
    mean_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C,N,3]
    covar = quat_scale_to_covar(quats, scales)  # [N,3,3]
    covar_c = R[:, None] @ covar[None] @ R.transpose(-1, -2)[:, None]  # [C,N,3,3]

    x, y, z = mean_c.unbind(-1)
    with torch.no_grad():
        in_depth = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))

    fx = Ks[:, 0, 0, None]
    fy = Ks[:, 1, 1, None]
    cx = Ks[:, 0, 2, None]
    cy = Ks[:, 1, 2, None]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy

    rz = 1.0 / z_safe
    rz2 = rz * rz
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zero = torch.zeros_like(rz)
    J = torch.stack([fx * rz, zero, -fx * tx * rz2, zero, fy * rz, -fy * ty * rz2], dim=-1).reshape(C, -1, 2, 3)
    cov2d = J @ covar_c @ J.transpose(-1, -2)  # [C,N,2,2]
    mean2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)

    a0, b, c0 = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = a0 * c0 - b * b
    a = a0 + eps2d
    c = c0 + eps2d
    det = a * c - b * b
    with torch.no_grad():
        valid = in_depth & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conic = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    compensations = None
    if calc_compensations:
        compensations = torch.sqrt(torch.clamp_min(det_orig / det_safe, 0.0))
        compensations = torch.where(valid, compensations, torch.zeros_like(compensations))

    with torch.no_grad():
        extend = torch.full_like(z, MAX_EXTEND)
        if opacities is not None:
            op = opacities.detach().expand(C, -1).to(z.dtype)
            if compensations is not None:
                op = op * compensations
            valid = valid & (op >= ALPHA_THRESHOLD)
            extend = torch.clamp_max(
                torch.sqrt(2.0 * torch.log(torch.clamp_min(op, ALPHA_THRESHOLD) / ALPHA_THRESHOLD)), MAX_EXTEND
            )
        rx = torch.ceil(extend * torch.sqrt(torch.clamp_min(a.detach(), 0.0)))
        ry = torch.ceil(extend * torch.sqrt(torch.clamp_min(c.detach(), 0.0)))
        valid = valid & ((rx > radius_clip) | (ry > radius_clip))
        mx, my = mean2d.detach().unbind(-1)
        valid = valid & (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        valid = valid & torch.isfinite(rx) & torch.isfinite(ry) & torch.isfinite(mx) & torch.isfinite(my)
        radii = torch.stack([rx, ry], dim=-1).clamp_max(2**30)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)

    vmask = valid[..., None]
    means2d = torch.where(vmask, mean2d, torch.zeros_like(mean2d))
    conics = torch.where(vmask, conic, torch.zeros_like(conic))
    depths = torch.where(valid, z, torch.zeros_like(z))
    if compensations is not None:
        compensations = torch.where(valid, compensations, torch.zeros_like(compensations))
    return Projection(means2d, conics, depths, radii, compensations)


def camera_centers(viewmats: Tensor) -> Tensor:
    """World-space camera centres [C,3] from world-to-camera matrices [C,4,4] (as gsplat: inverse)."""
    return torch.linalg.inv(viewmats)[:, :3, 3]
