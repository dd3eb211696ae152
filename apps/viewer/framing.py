"""Where the viewer's camera goes: the world's up direction, an input camera's view, or a view of the bounds.

Runs come in any world (transforms.json scenes are +z up with cameras at radius 4, SpaRe scenes have their own
axes, COLMAP worlds are arbitrary), so nothing here assumes an up axis or a scale: the up direction comes from
the cameras, the orbit distance from where the content is, and the start view is an input camera's own pose,
which by construction sees the object from outside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from apps.viewer.layers import camera_pose
from recon.cameras import Camera

#: a camera counts as level (its x axis perpendicular to the world up) within this angle; level cameras keep the
#: world up as orbit axis and still get their exact orientation
LEVEL_TOLERANCE_DEG = 0.5


@dataclass
class ViewPose:
    """A browser camera: position, camera-to-world wxyz (OpenCV axes), the point it orbits, its up and fov."""

    position: np.ndarray
    wxyz: np.ndarray
    look_at: np.ndarray
    up: np.ndarray
    fov: float


def world_up(cameras: Sequence[Camera]) -> np.ndarray:
    """The world's up direction as the cameras were held: the direction every camera's x axis is (closest to)
    perpendicular to, signed like their image-up axes. Level cameras (turntables, Blender renders, tripods)
    give it exactly; one camera, or cameras whose x axes are all parallel, give the mean image-up axis.

    Not ``recon.rig.rig_up`` (the mean image-up axis): cameras looking down at an object from one side, as
    sparse views do, tilt that mean towards them (37 degrees on the bundled 3-view sample, whose up is +z).
    """
    if not cameras:
        return np.array([0.0, 0.0, 1.0])
    ups = np.stack([-c.R[1] for c in cameras])
    mean_up = ups.mean(axis=0)
    rights = np.stack([c.R[0] for c in cameras])
    evals, evecs = np.linalg.eigh(rights.T @ rights)  # ascending: evecs[:, 0] is the least "right" direction
    if len(cameras) >= 2 and evals[1] > 1e-3 * len(cameras) and evals[0] < 0.5 * evals[1]:
        up = evecs[:, 0]
    else:
        up = mean_up if np.linalg.norm(mean_up) > 1e-6 else ups[0]
    up = up / np.linalg.norm(up)
    return up if up @ mean_up >= 0 else -up


def content_bounds(points: np.ndarray | None, trim: float = 2.0) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-axis ``trim``..100-``trim`` percentiles of ``points`` [N,3] (stray floaters do not stretch them)."""
    if points is None or len(points) == 0:
        return None
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        return None
    lo, hi = np.percentile(pts, [trim, 100.0 - trim], axis=0)
    return lo, hi


def view_from_camera(cam: Camera, up: np.ndarray, centre: np.ndarray | None = None) -> ViewPose:
    """``cam``'s own pose and field of view, orbiting the point of its optical axis level with ``centre``.

    The orbit axis is the world ``up`` when the camera is level with it (then the orientation is still exact);
    a rolled camera keeps its own up, so the view is exactly what it saw.
    """
    wxyz, pos = camera_pose(cam)
    forward, right = cam.R[2], cam.R[0]
    depth = 1.0
    if centre is not None:
        along = float((np.asarray(centre, dtype=np.float64) - pos) @ forward)
        depth = along if along > 1e-6 else max(float(np.linalg.norm(centre - pos)), 1e-3)
    level = abs(float(right @ up)) < math.sin(math.radians(LEVEL_TOLERANCE_DEG))
    own_up = -cam.R[1]
    orbit_up = up if level and abs(float(forward @ up)) < 0.999 and float(own_up @ up) > 0 else own_up
    return ViewPose(
        position=pos, wxyz=wxyz, look_at=pos + depth * forward, up=np.asarray(orbit_up, np.float64), fov=cam.fov_y
    )


def view_from_bounds(lo: np.ndarray, hi: np.ndarray, up: np.ndarray, fov: float = math.radians(50.0)) -> ViewPose:
    """A view from outside the box ``lo``..``hi``: its bounding sphere fills the field of view, seen from 30
    degrees above the horizontal plane of ``up``."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    centre = 0.5 * (lo + hi)
    radius = max(0.5 * float(np.linalg.norm(hi - lo)), 1e-3)
    dist = 1.1 * radius / math.sin(0.5 * fov)
    side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    eye = centre + dist * (math.cos(math.radians(30.0)) * side + math.sin(math.radians(30.0)) * up)
    h = 480
    f = 0.5 * h / math.tan(0.5 * fov)
    K = np.array([[f, 0.0, 0.5 * h * 4 / 3], [0.0, f, 0.5 * h], [0.0, 0.0, 1.0]])
    cam = Camera.look_at(eye, centre, up, K, h * 4 // 3, h)
    wxyz, pos = camera_pose(cam)
    return ViewPose(position=pos, wxyz=wxyz, look_at=centre, up=up, fov=fov)
