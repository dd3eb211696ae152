"""Geometry of a camera rig: what the cameras look at, which way is up, the working volume, orbits around it.

One definition for the pipeline (initialisation volume, scene scale), the mesh stage (orbit views for pruning),
the diffusion prior (pseudo views) and pose normalisation, so they all agree on the rig's frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recon.cameras import Camera, nearest_point_to_rays


def meeting_point(centres: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """What cameras at ``centres`` (Nx3) with optical ``axes`` (Nx3, unit) look at: the least-squares meeting
    point of the axes; for parallel axes (or one camera) a point ahead of the mean camera, the median camera
    distance from the origin along the mean axis (1 when that distance is 0)."""
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    axes = np.asarray(axes, dtype=np.float64).reshape(-1, 3)
    point = nearest_point_to_rays(centres, axes) if len(centres) > 1 else None
    if point is not None:
        return point
    ahead = float(np.median(np.linalg.norm(centres, axis=1))) or 1.0
    return centres.mean(axis=0) + axes.mean(axis=0) * ahead


def look_at_point(cameras: Sequence[Camera]) -> np.ndarray:
    """:func:`meeting_point` of the cameras' optical axes."""
    return meeting_point(np.stack([c.center for c in cameras]), np.stack([c.R[2] for c in cameras]))


def rig_up(cameras: Sequence[Camera]) -> np.ndarray:
    """The rig's up direction: the mean of the cameras' up vectors (OpenCV: -y of each camera), unit length."""
    up = -np.mean([c.R[1] for c in cameras], axis=0)
    return up / max(float(np.linalg.norm(up)), 1e-12)


def _perpendicular(up: np.ndarray) -> np.ndarray:
    return np.cross(up, [1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.cross(up, [0.0, 1.0, 0.0])


@dataclass(frozen=True)
class RigFrame:
    """``target`` the cameras look at, unit ``up``, a unit horizontal axis ``x`` (perpendicular to up, towards
    ``toward`` of :func:`rig_frame`), ``y = up x x`` and the median camera distance ``radius``."""

    target: np.ndarray
    up: np.ndarray
    x: np.ndarray
    radius: float

    @property
    def y(self) -> np.ndarray:
        return np.cross(self.up, self.x)

    def direction(self, azimuth: float, elevation: float) -> np.ndarray:
        """Unit vector from the target at ``azimuth`` (from x towards y) and ``elevation`` (radians)."""
        return (
            math.cos(elevation) * (math.cos(azimuth) * self.x + math.sin(azimuth) * self.y)
            + math.sin(elevation) * self.up
        )

    def angles(self, point: np.ndarray) -> tuple[float, float]:
        """(azimuth, elevation) in radians of ``point`` seen from the target."""
        d = np.asarray(point, dtype=np.float64) - self.target
        d = d / np.linalg.norm(d)
        return (math.atan2(float(d @ self.y), float(d @ self.x)), math.asin(float(np.clip(d @ self.up, -1.0, 1.0))))


def rig_frame(cameras: Sequence[Camera], toward: str = "mean") -> RigFrame:
    """The rig's frame; ``x`` points to the cameras' mean side (``toward="mean"``) or the first camera's."""
    centers = np.stack([c.center for c in cameras])
    target = look_at_point(cameras)
    up = rig_up(cameras)
    offs = centers - target
    radius = float(np.median(np.linalg.norm(offs, axis=1)))
    ref = offs.mean(axis=0) if toward == "mean" else offs[0]
    x = ref - up * float(ref @ up)
    if np.linalg.norm(x) < 1e-9:
        x = _perpendicular(up)
    return RigFrame(target=target, up=up, x=x / np.linalg.norm(x), radius=radius)


def scene_bounds(cameras: Sequence[Camera]) -> np.ndarray:
    """A box around what all cameras look at: the look-at point +- (median camera distance x tan of the widest
    half field of view). [2, 3] min/max corners."""
    centers = np.stack([c.center for c in cameras])
    target = look_at_point(cameras)
    dist = float(np.median(np.linalg.norm(centers - target, axis=1)))
    half_fov = max(math.atan(0.5 * c.width / c.fx) for c in cameras)
    half = dist * math.tan(half_fov)
    return np.stack([target - half, target + half])


def scene_scale(bounds: np.ndarray) -> float:
    """Half the diagonal of a [2, 3] box: the length unit the trainer's learning rates and thresholds use."""
    bounds = np.asarray(bounds, dtype=np.float64)
    return float(np.linalg.norm(bounds[1] - bounds[0]) / 2.0)


def orbit_cameras(cameras: Sequence[Camera], n_azimuth: int = 8, n_elevation: int = 3) -> list[Camera]:
    """Look-at cameras on rings around the rig's target, at its radius, over the inputs' elevation range and
    all 360 degrees of azimuth (every other ring offset by half a step). Intrinsics and size: the first input's."""
    frame = rig_frame(cameras, toward="first")
    offs = np.stack([c.center for c in cameras]) - frame.target
    elev = np.degrees(np.arcsin(np.clip((offs @ frame.up) / np.linalg.norm(offs, axis=1), -1, 1)))
    e_lo, e_hi = float(elev.min()), float(elev.max())
    elevations = np.linspace(e_lo, e_hi, n_elevation) if n_elevation > 1 else np.array([0.5 * (e_lo + e_hi)])
    ref = cameras[0]
    out: list[Camera] = []
    for k, e in enumerate(elevations):
        er = math.radians(float(np.clip(e, -85.0, 85.0)))
        for j in range(n_azimuth):
            az = 2 * math.pi * (j + 0.5 * (k % 2)) / n_azimuth
            out.append(
                Camera.look_at(
                    frame.target + frame.radius * frame.direction(az, er),
                    frame.target,
                    frame.up,
                    ref.K,
                    ref.width,
                    ref.height,
                    name=f"orbit_{k}_{j}",
                )
            )
    return out
