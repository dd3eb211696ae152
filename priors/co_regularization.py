"""Co-regularisation of two Gaussian fields trained side by side on the same sparse views (CoR-GS, ECCV 2024).

Two fields fitted to the same few photos agree where the photos constrain them and disagree where they do not
(floaters, unseen surfaces). Two signals follow, neither needs a pretrained network:

- pseudo-view co-regularisation: both fields render a camera between two input views and each is pulled towards
  the other's render (:func:`pseudo_camera`, :func:`co_render_loss`);
- co-pruning: a Gaussian with no counterpart in the other field near its position is an outlier and is removed
  (:func:`unmatched`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation, Slerp

from recon import metrics
from recon.cameras import Camera, nearest_point_to_rays

# A Gaussian is matched when the other field has a centre within this many of its standard deviations (the
# rasteriser's 3-sigma extent) ...
MATCH_SIGMAS = 3.0
# ... or within this many times the field's median nearest-neighbour spacing (so that small Gaussians are not
# pruned for being offset by less than the sampling of the surface).
MATCH_SPACINGS = 2.0


def interpolated_camera(a: Camera, b: Camera, t: float, name: str = "pseudo") -> Camera:
    """The camera a fraction ``t`` of the way from ``a`` to ``b``: rotation by slerp, intrinsics and size of
    ``a``. When both look at a common point (an object capture), the centre moves on the arc around that point
    with the distance interpolated, so the pseudo view stays at the inputs' distance; otherwise (nearly parallel
    axes, a forward-facing capture) it moves on the straight line between the centres.

    On the arc the camera looks at the common point, its roll taken from the slerped rotation."""
    rots = Rotation.from_matrix(np.stack([a.R, b.R]))
    R = Slerp([0.0, 1.0], rots)([t]).as_matrix()[0]
    ca, cb = a.center, b.center
    center = (1.0 - t) * ca + t * cb
    axes = np.stack([a.R[2], b.R[2]])  # viewing directions in world coordinates
    if float(np.dot(axes[0], axes[1])) < math.cos(math.radians(10.0)):
        target = nearest_point_to_rays(np.stack([ca, cb]), axes)
        if target is not None:
            da, db = ca - target, cb - target
            ra, rb = float(np.linalg.norm(da)), float(np.linalg.norm(db))
            in_front = float(np.dot(-da, axes[0])) > 0 and float(np.dot(-db, axes[1])) > 0
            if in_front and ra > 0 and rb > 0:
                u = _slerp_vectors(da / ra, db / rb, t)
                center = target + ((1.0 - t) * ra + t * rb) * u
                return Camera.look_at(center, target, -R[1], a.K.copy(), a.width, a.height, name=name)
    return Camera.from_rotation_center(R, center, a.K.copy(), a.width, a.height, name=name)


def _slerp_vectors(u: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit vectors (linear, renormalised, when nearly parallel or opposite)."""
    cos = float(np.clip(np.dot(u, v), -1.0, 1.0))
    angle = math.acos(cos)
    if angle < 1e-6 or math.pi - angle < 1e-3:
        w = (1.0 - t) * u + t * v
        n = float(np.linalg.norm(w))
        return u if n < 1e-9 else w / n
    s = math.sin(angle)
    return (math.sin((1.0 - t) * angle) * u + math.sin(t * angle) * v) / s


def pseudo_camera(cameras: list[Camera], generator: torch.Generator, scale: float = 0.5) -> Camera:
    """A random pseudo view: an input camera, its nearest other input (by centre), a uniform fraction between
    them; at ``scale`` of the inputs' resolution."""
    i = int(torch.randint(len(cameras), (1,), generator=generator))
    if len(cameras) == 1:
        return cameras[0].scaled(scale)
    centers = np.stack([c.center for c in cameras])
    dist = np.linalg.norm(centers - centers[i], axis=1)
    dist[i] = np.inf
    j = int(np.argmin(dist))
    t = float(torch.rand((), generator=generator))
    return interpolated_camera(cameras[i], cameras[j], t).scaled(scale)


def co_render_loss(render: torch.Tensor, other: torch.Tensor, lambda_dssim: float) -> torch.Tensor:
    """The photometric loss (L1 + D-SSIM) of one field's pseudo-view render against the other's, which is a
    fixed target here (each field gets its own term)."""
    return metrics.rgb_loss(render, other.detach(), lambda_dssim=lambda_dssim)


def unmatched(means: torch.Tensor, scales: torch.Tensor, other_means: torch.Tensor) -> torch.Tensor:
    """Bool mask over ``means`` [N,3]: Gaussians with no centre of the other field within
    max(MATCH_SIGMAS x their largest standard deviation (``scales``: [N,3], linear), MATCH_SPACINGS x the median
    nearest-neighbour spacing of ``means``)."""
    pts = means.detach().cpu().double().numpy()
    other = other_means.detach().cpu().double().numpy()
    if len(pts) == 0 or len(other) == 0:
        return torch.zeros(len(pts), dtype=torch.bool, device=means.device)
    dist, _ = cKDTree(other).query(pts, k=1)
    if len(pts) > 1:
        own, _ = cKDTree(pts).query(pts, k=2)
        spacing = float(np.median(own[:, 1]))
    else:
        spacing = 0.0
    sigma = scales.detach().cpu().double().numpy().max(axis=1)
    tol = np.maximum(MATCH_SIGMAS * sigma, MATCH_SPACINGS * spacing)
    return torch.from_numpy(dist > tol).to(means.device)
