"""PatchMatch refinement of plane-sweep depth: a plane per pixel, improved by propagation and random search.

The sweep (``priors.stereo``) scores a few fixed plane orientations at discrete depths. Real surfaces have every
slant in between and lie between the planes; PatchMatch stereo (Bleyer et al. 2011; Gipuma, COLMAP's
patch-match MVS) keeps a plane per pixel instead (a depth and a normal) and improves it in rounds: each pixel
tries its neighbours' planes (a surface found at one pixel spreads along it, slant included) and a random
perturbation of its own, and keeps whichever matches the source views best by NCC over its window, warped
through that pixel's own plane. Started from the sweep's winners it needs only a few rounds.

Each round evaluates every candidate plane for all textured pixels at once, Jacobi style (every pixel reads its
neighbours' planes from the previous round); the scoring is the C++ kernel ``recon.kernels.plane_ncc`` (a
homography per pixel), the window sampled every other pixel during the search (Gipuma's sparse windows) and
densely for the final score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recon.cameras import Camera
from recon.kernels.plane_ncc import plane_ncc

# the geometric term (COLMAP's patch-match geometric consistency): score = NCC - GEOM_WEIGHT x min(error px,
# GEOM_MAX_PX), so a plane that another view's depth map contradicts by 3 pixels loses 0.9 of NCC
GEOM_WEIGHT = 0.3
GEOM_MAX_PX = 3.0

# neighbours whose planes each pixel tries every round: the four adjacent pixels and four at distance 3 (faster
# spread along a surface while each round reads the previous one)
_NEIGHBOURS = ((0, -1), (0, 1), (-1, 0), (1, 0), (0, -3), (0, 3), (-3, 0), (3, 0))


class _PlaneScorer:
    """NCC of the reference windows of the given pixels against the sources, each window warped through its
    pixel's own plane (n . X = d in the reference camera frame, X = ray * depth)."""

    def __init__(
        self,
        ref: np.ndarray,
        ref_cam: Camera,
        sources: Sequence[tuple[np.ndarray, Camera]],
        pixels: torch.Tensor,
        window: int,
        stride: int,
        geometry: Sequence[tuple[np.ndarray, Camera]] = (),
    ) -> None:
        self.K = torch.from_numpy(ref_cam.K)
        self.Kinv = torch.from_numpy(np.linalg.inv(ref_cam.K))
        self.pixels, self.window, self.stride = pixels, window, stride
        self.centres = pixels.double() + 0.5
        # each pixel's own camera-frame ray (z = 1)
        self.rays = torch.cat([self.centres, torch.ones_like(self.centres[:, :1])], dim=1) @ self.Kinv.T
        self.ref = torch.from_numpy(ref.astype(np.float32))
        self.images = [torch.from_numpy(img.astype(np.float32)) for img, _ in sources]
        A, b = [], []
        for _, cam in sources:  # reference pixel q -> source pixel: A q + b (g . q)
            R_rel, t_rel = cam.motion_from(ref_cam)
            A.append(cam.K @ R_rel @ np.linalg.inv(ref_cam.K))
            b.append(cam.K @ t_rel)
        self.A = torch.from_numpy(np.stack(A)) if A else torch.zeros((0, 3, 3), dtype=torch.float64)
        self.b = torch.from_numpy(np.stack(b)) if b else torch.zeros((0, 3), dtype=torch.float64)

        # other views' depth maps for the geometric term: (depth, K_s, K_s^-1, R_rel, t_rel)
        self.geometry = []
        for depth_s, cam in geometry:
            R_rel, t_rel = cam.motion_from(ref_cam)
            self.geometry.append(
                (
                    torch.from_numpy(depth_s.astype(np.float64)),
                    torch.from_numpy(cam.K),
                    torch.from_numpy(np.linalg.inv(cam.K)),
                    torch.from_numpy(R_rel),
                    torch.from_numpy(t_rel),
                )
            )

    def reprojection_error(self, normals: torch.Tensor, dists: torch.Tensor) -> torch.Tensor:
        """Per pixel, the smallest forward-backward reprojection error (pixels, at most ``GEOM_MAX_PX``) of its
        plane's point through another view's depth map (COLMAP's geometric consistency); ``GEOM_MAX_PX`` where no
        view has a depth there."""
        z = dists / (self.rays * normals).sum(-1).clamp_min(1e-3)
        pts = self.rays * z[:, None]
        best = torch.full((len(z),), GEOM_MAX_PX, dtype=torch.float64)
        for depth_s, K, Kinv, R, t in self.geometry:
            h, w = depth_s.shape
            ps = pts @ R.T + t
            zs = ps[:, 2]
            uv = (ps[:, :2] / zs.clamp_min(1e-6)[:, None]) @ K[:2, :2].T + K[:2, 2]
            ix, iy = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
            ok = (zs > 1e-6) & (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
            d_s = torch.zeros_like(zs)
            d_s[ok] = depth_s[iy[ok], ix[ok]]
            ok &= d_s > 0
            back = torch.cat([uv, torch.ones_like(uv[:, :1])], dim=1) @ Kinv.T * d_s[:, None]
            back_r = (back - t) @ R  # R^T (X_s - t), row-wise
            uv_r = (back_r[:, :2] / back_r[:, 2:3].clamp_min(1e-6)) @ self.K[:2, :2].T + self.K[:2, 2]
            err = (uv_r - self.centres).norm(dim=1)
            ok &= back_r[:, 2] > 1e-6
            best = torch.minimum(best, torch.where(ok, err.clamp_max(GEOM_MAX_PX), best))
        return best

    def score(self, normals: torch.Tensor, dists: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """Best NCC over the sources (N,) for planes n . X = d given per pixel (normals (N, 3), d (N,)); -1 where
        a plane faces away or a window leaves a source image (as the sweep, which needs full coverage). The
        window is sampled every ``stride`` pixels (default: the scorer's own)."""
        g = (normals.double() @ self.Kinv) / dists.double()[:, None]  # K^-T n / d, row-wise
        g = torch.where((dists > 0)[:, None], g, torch.zeros_like(g))  # d <= 0: faces away (scores -1)
        step = self.stride if stride is None else stride
        return plane_ncc(self.ref, self.images, self.A, self.b, self.pixels, g, self.window, step)


def refine_planes(
    ref: np.ndarray,
    ref_cam: Camera,
    sources: Sequence[tuple[np.ndarray, Camera]],
    depth: np.ndarray,
    normals: np.ndarray,
    active: np.ndarray,
    window: int,
    iterations: int,
    seed: int = 0,
    geometry: Sequence[tuple[np.ndarray, Camera]] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PatchMatch rounds over the ``active`` pixels of ``ref`` [H, W] starting from the sweep's ``depth`` [H, W]
    (optical-axis depth) and plane ``normals`` [H, W, 3] (reference frame, n_z > 0). Returns the refined
    (depth, NCC, normals); the NCC is scored over the full window, as the sweep scores it, and is -1 outside
    ``active``."""
    h, w = ref.shape
    gen = torch.Generator().manual_seed(seed)
    ys, xs = np.nonzero(active)
    score_out = np.full((h, w), -1.0, dtype=np.float32)
    if len(ys) == 0:
        return depth, score_out, normals
    pixels = torch.from_numpy(np.stack([xs, ys], axis=1))
    with torch.no_grad():
        search = _PlaneScorer(ref, ref_cam, sources, pixels, window, stride=2, geometry=geometry)

        def total(n: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            s = search.score(n, d)
            if geometry:
                s = s - GEOM_WEIGHT * search.reprojection_error(n, d).float()
            return s

        ray_p = search.rays  # (N, 3) the pixel's own ray, z = 1
        n_map = torch.from_numpy(normals.astype(np.float64)).clone()
        z_map = torch.from_numpy(depth.astype(np.float64)).clone()
        # a plane per pixel of the whole image (inactive pixels keep the sweep's) so neighbours can be read
        d_map = z_map * (n_map * torch.from_numpy(_pixel_rays(ref_cam))).sum(-1)
        yi, xi = torch.from_numpy(ys), torch.from_numpy(xs)
        cur_n, cur_d = n_map[yi, xi], d_map[yi, xi]
        cur_s = total(cur_n, cur_d)
        z0 = z_map[yi, xi]
        for it in range(iterations):
            cands: list[tuple[torch.Tensor, torch.Tensor]] = []
            for dx, dy in _NEIGHBOURS:
                yy, xx = (yi + dy).clamp(0, h - 1), (xi + dx).clamp(0, w - 1)
                cands.append((n_map[yy, xx], d_map[yy, xx]))
            # random search: the depth moved by up to +-(4%, 2%, 1%, ...) and the normal tilted, shrinking per round
            scale = 0.5**it
            cur_z = cur_d / (cur_n * ray_p).sum(-1).clamp_min(1e-3)
            jitter = torch.rand(len(cur_z), generator=gen, dtype=torch.float64) * 2 - 1
            z_new = cur_z * torch.exp(jitter * 0.04 * scale)
            n_new = cur_n + torch.randn(cur_n.shape, generator=gen, dtype=torch.float64) * 0.15 * scale
            n_new[:, 2] = n_new[:, 2].abs()
            n_new = n_new / n_new.norm(dim=1, keepdim=True)
            cands.append((n_new, z_new * (n_new * ray_p).sum(-1)))
            cands.append((cur_n, z_new * (cur_n * ray_p).sum(-1)))  # depth alone
            cands.append((n_new, cur_z * (n_new * ray_p).sum(-1)))  # normal alone
            # a random orientation facing the camera at the current depth: reaches slants the perturbations
            # would need many rounds to tilt to
            n_rnd = torch.randn(cur_n.shape, generator=gen, dtype=torch.float64)
            n_rnd = n_rnd * torch.sign((n_rnd * ray_p).sum(-1, keepdim=True) + 1e-12)
            n_rnd = n_rnd / n_rnd.norm(dim=1, keepdim=True)
            cands.append((n_rnd, cur_z * (n_rnd * ray_p).sum(-1)))
            for n_c, d_c in cands:
                s = total(n_c, d_c)
                better = s > cur_s
                cur_s = torch.where(better, s, cur_s)
                cur_n = torch.where(better[:, None], n_c, cur_n)
                cur_d = torch.where(better, d_c, cur_d)
            n_map[yi, xi], d_map[yi, xi] = cur_n, cur_d
        cur_z = cur_d / (cur_n * ray_p).sum(-1).clamp_min(1e-3)
        # a plane that faces away at its pixel (never chosen over one that scores) leaves the sweep's depth
        cur_z = torch.where(cur_z > 0, cur_z, z0)
        final = search.score(cur_n, cur_z * (cur_n * ray_p).sum(-1), stride=1)  # the full window, as the sweep
    depth_out = depth.astype(np.float32).copy()
    normals_out = normals.astype(np.float32).copy()
    depth_out[ys, xs] = cur_z.numpy().astype(np.float32)
    normals_out[ys, xs] = cur_n.numpy().astype(np.float32)
    score_out[ys, xs] = final.numpy()
    return depth_out, score_out, normals_out


def _pixel_rays(cam: Camera) -> np.ndarray:
    """[H, W, 3] camera-frame rays (z = 1) through the pixel centres."""
    return cam.pixel_rays_camera(cam.pixel_grid().reshape(-1, 2)).reshape(cam.height, cam.width, 3)
