"""Bundle adjustment with scipy.optimize.least_squares: robust (Huber) reprojection error, sparse Jacobian,
optional shared focal-length refinement. Cameras are (rotation vector, translation) world-to-camera."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix


def rotate(points: np.ndarray, rvecs: np.ndarray) -> np.ndarray:
    """Rotate each row of ``points`` by the matching rotation vector (Rodrigues), vectorised."""
    theta = np.linalg.norm(rvecs, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(theta > 1e-12, rvecs / theta, 0.0)
    cos, sin = np.cos(theta), np.sin(theta)
    dot = np.sum(points * v, axis=1, keepdims=True)
    return cos * points + sin * np.cross(v, points) + dot * (1.0 - cos) * v


@dataclass
class Observations:
    """Every 2D observation of a 3D point: camera index, point index, pixel xy."""

    cam: np.ndarray
    pt: np.ndarray
    xy: np.ndarray


def project(cams: np.ndarray, Ks: np.ndarray, points: np.ndarray, obs: Observations, fscale: float = 1.0) -> np.ndarray:
    """Pixel projections (Nobs x 2) of the observed points; cams (n,6) = rvec | t, Ks (n,3,3)."""
    pc = rotate(points[obs.pt], cams[obs.cam, :3]) + cams[obs.cam, 3:]
    z = pc[:, 2:3]
    z = np.where(np.abs(z) < 1e-9, 1e-9, z)
    K = Ks[obs.cam]
    u = fscale * K[:, 0, 0] * pc[:, 0] / z[:, 0] + K[:, 0, 2]
    v = fscale * K[:, 1, 1] * pc[:, 1] / z[:, 0] + K[:, 1, 2]
    return np.stack([u, v], axis=1)


def reprojection_errors(cams: np.ndarray, Ks: np.ndarray, points: np.ndarray, obs: Observations) -> np.ndarray:
    """Per-observation reprojection error in pixels (inf when the point is behind the camera)."""
    pc = rotate(points[obs.pt], cams[obs.cam, :3]) + cams[obs.cam, 3:]
    err = np.linalg.norm(project(cams, Ks, points, obs) - obs.xy, axis=1)
    return np.where(pc[:, 2] > 1e-6, err, np.inf)


def bundle_adjust(
    cams: np.ndarray, Ks: np.ndarray, points: np.ndarray, obs: Observations, fixed: list[int] | None = None,
    refine_focal: bool = False, loss_scale_px: float = 2.0, max_nfev: int = 60,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jointly refine camera poses, points and (optionally) one focal scale shared by all cameras.

    ``fixed`` cameras keep their pose (the gauge). Returns (cams, points, Ks) refined.
    """
    n_cam, n_pt = len(cams), len(points)
    fixed_set = set(fixed if fixed is not None else [0])
    free = [c for c in range(n_cam) if c not in fixed_set]
    col_of = {c: k for k, c in enumerate(free)}
    n_cp = 6 * len(free)
    n_f = 1 if refine_focal else 0

    def unpack(x: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        c = cams.copy()
        if free:
            c[free] = x[:n_cp].reshape(-1, 6)
        fs = float(np.exp(x[n_cp])) if refine_focal else 1.0
        return c, fs, x[n_cp + n_f:].reshape(-1, 3)

    def fun(x: np.ndarray) -> np.ndarray:
        c, fs, p = unpack(x)
        return (project(c, Ks, p, obs, fs) - obs.xy).ravel()

    m = len(obs.cam)
    A = lil_matrix((2 * m, n_cp + n_f + 3 * n_pt), dtype=np.int8)
    rows = np.arange(m)
    cam_col = np.array([col_of.get(c, -1) for c in range(n_cam)])[obs.cam]
    sel = cam_col >= 0
    for k in range(6):
        A[2 * rows[sel], 6 * cam_col[sel] + k] = 1
        A[2 * rows[sel] + 1, 6 * cam_col[sel] + k] = 1
    if refine_focal:
        A[:, n_cp] = 1
    for k in range(3):
        A[2 * rows, n_cp + n_f + 3 * obs.pt + k] = 1
        A[2 * rows + 1, n_cp + n_f + 3 * obs.pt + k] = 1
    x0 = np.concatenate([cams[free].ravel(), np.zeros(n_f), points.ravel()])
    res = least_squares(fun, x0, jac_sparsity=A, loss="huber", f_scale=loss_scale_px, x_scale="jac",
                        method="trf", max_nfev=max_nfev, xtol=1e-10, ftol=1e-8)
    c, fs, p = unpack(res.x)
    K_out = Ks.copy()
    K_out[:, 0, 0] *= fs
    K_out[:, 1, 1] *= fs
    return c, p, K_out
