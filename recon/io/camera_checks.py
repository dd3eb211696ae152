"""Checks on cameras read from users' files: one the pinhole pipeline can use, or a one-line error.

Every reader converts its format to a Camera and passes it through :func:`checked_camera`, so transforms.json,
COLMAP and SpaRe/DTU projection matrices share one set of limits. A rotation that is orthonormal up to
ROTATION_TOL is re-orthonormalised (text files round numbers); anything further off is refused, since a
scaled, sheared or mirrored matrix would silently distort every ray.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from recon.cameras import Camera, nearest_rotation, orthonormality_error
from recon.errors import ReconInputError

#: Largest entry of |R^T R - I| accepted (float32 or 6-digit text rounding stays far below).
ROTATION_TOL = 1e-3
#: Widest field of view, degrees: a wider pinhole image is nearly all stretched border; such lenses are fisheyes.
MAX_FOV_DEG = 170.0
#: Narrowest field of view, degrees (a 1000 px image at a 5.7 million px focal): anything less is a corrupt focal.
MIN_FOV_DEG = 0.01
#: Largest |skew| / fx: the rasteriser has no skew term, so a larger skew would be dropped silently.
MAX_SKEW = 1e-3
#: Largest camera coordinate, world units: georeferenced (UTM) models stay below; beyond, float32 rendering fails.
MAX_COORDINATE = 1e7
#: The principal point must lie within this many image sizes of the image centre.
MAX_PRINCIPAL_OFFSET = 10.0
#: Largest image side, pixels, that a camera file may declare.
MAX_IMAGE_SIDE = 1_000_000

Where = str | Path


def check_size(width: float, height: float, what: str, path: Where) -> tuple[int, int]:
    """Image size declared by a camera file as ints; ReconInputError unless both are whole and in range."""
    for name, v in (("width", width), ("height", height)):
        if not (
            isinstance(v, (int, float, np.integer, np.floating))
            and math.isfinite(v)
            and float(v) == int(v)
            and 1 <= v <= MAX_IMAGE_SIDE
        ):
            raise ReconInputError(
                f"{what}: image {name} must be a whole number of pixels in 1..{MAX_IMAGE_SIDE}, got {v!r}", path
            )
    return int(width), int(height)


def fov_deg(focal: float, side: float) -> float:
    """Field of view in degrees across ``side`` pixels at ``focal`` pixels."""
    return math.degrees(2.0 * math.atan(0.5 * side / focal))


def check_intrinsics(K: np.ndarray, width: int, height: int, what: str, path: Where) -> None:
    """ReconInputError unless K is a finite pinhole matrix with positive focals, no skew, a field of view
    within MIN_FOV_DEG..MAX_FOV_DEG and the principal point near the image."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ReconInputError(f"{what}: intrinsics are not finite numbers", path)
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    if not (fx > 0 and fy > 0):
        raise ReconInputError(f"{what}: focal length must be positive, got fx={fx:g}, fy={fy:g}", path)
    if abs(skew) > MAX_SKEW * fx or abs(K[1, 0]) > MAX_SKEW * fy or np.abs(K[2] - [0, 0, 1]).max() > 1e-9:
        raise ReconInputError(
            f"{what}: intrinsics are skewed (sheared pixel axes, skew {skew:g} px); "
            "only pinhole cameras without skew are supported",
            path,
        )
    for axis, f, side in (("horizontal", fx, width), ("vertical", fy, height)):
        fov = fov_deg(f, side)
        if not MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
            raise ReconInputError(
                f"{what}: {axis} field of view {fov:.4g} degrees (focal {f:g} px for {side} px) "
                f"is outside {MIN_FOV_DEG:g}..{MAX_FOV_DEG:g} degrees",
                path,
            )
    for name, c, side in (("cx", cx, width), ("cy", cy, height)):
        if abs(c - side / 2.0) > MAX_PRINCIPAL_OFFSET * side:
            raise ReconInputError(f"{what}: principal point {name}={c:g} is far outside the {side} px image", path)


def checked_rotation(R: np.ndarray, what: str, path: Where) -> np.ndarray:
    """The nearest exact rotation to ``R``; ReconInputError when R is not finite, not orthonormal within
    ROTATION_TOL (scaled or sheared) or a reflection (det < 0)."""
    err = orthonormality_error(R)
    if not math.isfinite(err):
        raise ReconInputError(f"{what}: rotation is not finite", path)
    if err > ROTATION_TOL:
        raise ReconInputError(
            f"{what}: rotation is not orthonormal (|R^T R - I| up to {err:.3g}; a scaled or sheared matrix?)", path
        )
    if np.linalg.det(R) < 0:
        raise ReconInputError(f"{what}: rotation is a reflection (determinant < 0, a mirrored camera)", path)
    return nearest_rotation(R)


def check_coordinates(vec: np.ndarray, name: str, what: str, path: Where) -> None:
    """ReconInputError unless every entry of ``vec`` is finite and at most MAX_COORDINATE in size."""
    v = np.asarray(vec, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.abs(v).max(initial=0.0) > MAX_COORDINATE:
        raise ReconInputError(
            f"{what}: {name} {np.array2string(v, precision=4)} is not finite or beyond {MAX_COORDINATE:g} world units",
            path,
        )


def checked_camera(cam: Camera, what: str, path: Where) -> Camera:
    """``cam`` with its rotation re-orthonormalised (the camera centre kept), after every check above."""
    check_size(cam.width, cam.height, what, path)
    check_intrinsics(cam.K, cam.width, cam.height, what, path)
    V = cam.viewmat
    if not np.all(np.isfinite(V)):
        raise ReconInputError(f"{what}: pose is not finite", path)
    if np.abs(V[3] - [0.0, 0.0, 0.0, 1.0]).max() > ROTATION_TOL:
        raise ReconInputError(f"{what}: pose matrix has bottom row {V[3].tolist()}, expected [0, 0, 0, 1]", path)
    R = checked_rotation(V[:3, :3], what, path)
    check_coordinates(V[:3, 3], "translation", what, path)
    center = -V[:3, :3].T @ V[:3, 3]
    check_coordinates(center, "camera centre", what, path)
    if orthonormality_error(V[:3, :3]) < 1e-12 and np.array_equal(V[3], [0.0, 0.0, 0.0, 1.0]):
        return cam  # already exact: leave the numbers as read
    return Camera.from_rotation_center(R, center, cam.K.copy(), cam.width, cam.height, name=cam.name, extra=cam.extra)
