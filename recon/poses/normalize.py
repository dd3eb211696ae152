"""Scale/orientation normalisation of an estimated reconstruction: object at the origin, +z up, scale ~1."""

from __future__ import annotations

import numpy as np

from recon.poses.align import Similarity
from recon.rig import meeting_point


def _rotation_to_z(up: np.ndarray) -> np.ndarray:
    """Rotation taking unit vector ``up`` to +z."""
    up = up / np.linalg.norm(up)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(up, z)
    c = float(up @ z)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def normalisation(viewmats: list[np.ndarray], points: np.ndarray | None = None) -> Similarity:
    """Similarity putting the looked-at point at the origin, the cameras' mean "up" (-y image axis) along +z,
    and the object's radius (80th percentile of sparse points' distances, or a third of the camera distance)
    at 1."""
    R = np.stack([V[:3, :3] for V in viewmats])
    t = np.stack([V[:3, 3] for V in viewmats])
    centres = -np.einsum("nji,nj->ni", R, t)
    axes = R[:, 2]
    target = meeting_point(centres, axes) if len(viewmats) >= 2 else centres[0] + axes[0]
    up = -R[:, 1].mean(axis=0)
    Rn = _rotation_to_z(up)
    if points is not None and len(points) >= 10:
        radius = float(np.percentile(np.linalg.norm(points - target, axis=1), 80))
    else:
        radius = float(np.median(np.linalg.norm(centres - target, axis=1))) / 3.0
    s = 1.0 / max(radius, 1e-9)
    return Similarity(s, Rn, -s * Rn @ target)
