"""Surfaces that stay opaque from new directions: a term on views the inputs never had.

A surface the input photos see at a grazing angle (a roof or a table top from cameras at its height) is drawn by
Gaussians thin along the photos' rays: every input view renders it opaque, but from above its Gaussians are
needles with gaps between them, and the test view shows holes (on DTU's top-row test views of scan37, 3% of the
object's pixels under half opacity carried a fifth of the squared error). Real surfaces are opaque from every
side, so a camera tilted away from a training view (about the point the inputs look at) renders the scene and
every pixel a surface partly covers is pulled to full coverage; pixels nothing covers (empty space, outside the
inputs' frusta) are left alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recon.cameras import Camera


def tilted_camera(cam: Camera, centre: np.ndarray, max_deg: float, generator: torch.Generator) -> Camera:
    """``cam`` rotated about the point ``centre`` by a random angle up to ``max_deg`` about a random axis across
    its optical axis (up, down, sideways or between), still looking at what it looked at."""
    u = torch.rand(2, generator=generator, dtype=torch.float64).numpy()
    angle = math.radians(max_deg) * float(u[0])
    phi = 2.0 * math.pi * float(u[1])
    axis = math.cos(phi) * cam.R[0] + math.sin(phi) * cam.R[1]  # the camera's x / y axes in world coordinates
    rot = _axis_angle(axis / np.linalg.norm(axis), angle)
    centre = np.asarray(centre, dtype=np.float64)
    new_centre = centre + rot @ (cam.center - centre)
    return Camera.from_rotation_center(
        cam.R @ rot.T, new_centre, cam.K.copy(), cam.width, cam.height, name=f"{cam.name}-tilted"
    )


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def opacity_completeness(alpha: torch.Tensor, covered: float = 0.1) -> torch.Tensor:
    """Mean missing opacity ``1 - alpha`` over the pixels a surface partly covers (alpha above ``covered``);
    zero when there are none."""
    a = alpha.reshape(-1)
    sel = (a.detach() > covered).to(a.dtype)
    return ((1.0 - a) * sel).sum() / sel.sum().clamp_min(1.0)
