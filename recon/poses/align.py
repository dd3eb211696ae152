"""Similarity alignment of estimated cameras to reference cameras (Umeyama) and pose errors after it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.cameras import Camera
from recon.poses.view_graph import rotation_angle_deg


@dataclass
class Similarity:
    """x_ref = s * R @ x + t."""

    s: float
    R: np.ndarray
    t: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.s * np.asarray(x) @ self.R.T + self.t

    def inverse(self) -> Similarity:
        return Similarity(1.0 / self.s, self.R.T, -self.R.T @ self.t / self.s)

    def matrix(self) -> np.ndarray:
        M = np.eye(4)
        M[:3, :3] = self.s * self.R
        M[:3, 3] = self.t
        return M


def umeyama(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """Least-squares similarity mapping points ``src`` (Nx3) onto ``dst`` (Nx3), N >= 3 (Umeyama 1991)."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var = (a**2).sum() / len(src)
    s = float(np.trace(np.diag(D) @ S) / max(var, 1e-300))
    return Similarity(s, R, mu_d - s * R @ mu_s)


def align_cameras(est: list[Camera], ref: list[Camera], robust: bool = True) -> Similarity:
    """Similarity taking the estimated world onto the reference world.

    Rotation: the chordal mean of the per-camera world rotations (R_ref^T R_est), which is well determined
    even for 2-3 close cameras (centre-only Umeyama is not); with ``robust``, cameras more than 3x the median
    rotation residual away are left out of a second pass. Scale and translation: least squares on centres.
    """
    ce = np.stack([c.center for c in est])
    cr = np.stack([c.center for c in ref])
    use = np.ones(len(est), dtype=bool)
    for _ in range(2 if robust else 1):
        M = sum(r.R.T @ e.R for e, r, u in zip(est, ref, use) if u)
        U, _, Vt = np.linalg.svd(M)
        R = U @ np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))]) @ Vt
        res = np.array([np.linalg.norm(e.R - r.R @ R) for e, r in zip(est, ref)])
        med = float(np.median(res))
        use = res <= max(3 * med, 1e-9)
        if use.sum() < 2:
            use[:] = True
    a = (ce - ce[use].mean(0)) @ R.T
    b = cr - cr[use].mean(0)
    den = float((a[use] ** 2).sum())
    s = float((a[use] * b[use]).sum() / den) if den > 0 else 1.0
    return Similarity(s, R, cr[use].mean(0) - s * R @ ce[use].mean(0))


def transform_camera(cam: Camera, sim: Similarity) -> Camera:
    """The same physical camera expressed in the world y = sim(x) (projection of sim(X) unchanged)."""
    inv = sim.inverse()
    V = np.eye(4)
    # x_cam = R_c x + t_c with x = inv(y) = s' R' y + t'  ->  divide by s' (projection is scale-free)
    V[:3, :3] = cam.R @ inv.R
    V[:3, 3] = (cam.R @ inv.t + cam.t) / inv.s
    return Camera(K=cam.K.copy(), viewmat=V, width=cam.width, height=cam.height, name=cam.name, extra=dict(cam.extra))


def pose_errors(est: list[Camera], ref: list[Camera], sim: Similarity | None = None) -> dict[str, np.ndarray]:
    """Rotation error (deg) and camera-centre error (reference units) of each camera after alignment."""
    sim = sim or align_cameras(est, ref)
    rot, cen = [], []
    for e, r in zip(est, ref):
        ea = transform_camera(e, sim)
        dR = ea.R @ r.R.T
        rot.append(rotation_angle_deg(dR))
        cen.append(np.linalg.norm(ea.center - r.center))
    return {"rotation_deg": np.array(rot), "center": np.array(cen)}
