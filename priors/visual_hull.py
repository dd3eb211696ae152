"""Visual hull by voxel carving: initial points for Gaussians without SfM, and a volume for floater removal.

A voxel is kept when its centre projects inside the (dilated) object mask in every view where it projects
inside the image, and at least ``min_views`` views see it. Voxels no view sees are dropped. By default
(``extend_silhouettes``) a view the voxel lies in front of but projects outside of also votes: the voxel
survives it only if the mask reaches the image border near the projection (the object may leave the frame
there). Without that, regions seen by a single narrow-field camera (near the cameras, box corners) survive.
The test is made conservative per voxel: a voxel passes a view when its projected centre lies within
``mask_dilate_px`` plus the voxel's own projected half-diagonal of a mask pixel (an exact distance
transform), so thin parts are not carved away by the grid's discretisation. This is the carving GaussianObject
uses to initialise from masks.

When no bounds are given they are estimated from the data: the object centre is triangulated from the mask
centroids' rays (optical axes if masks are unusable), the radius from each view's mask extent around it, a
coarse carve in that box (keeping only voxels seen by at least 75% of the views, i.e. the frusta
intersection) finds the occupied region, and the final grid covers it with a margin of two coarse voxels.
With user-given bounds much larger than the object, the "seen by >= 1 view" rule keeps the parts of each
mask's viewing cone that no other camera sees (near the cameras): pass ``min_views`` > 1 in that case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from recon.cameras import Camera, nearest_point_to_rays

_COARSE_RES = 48


# --------------------------------------------------------------------------------------------- projection
def _project_np(cam: Camera, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 projection of Nx3 points: (u, v, z)."""
    R = cam.R.astype(np.float32)
    t = cam.t.astype(np.float32)
    pc = pts @ R.T + t
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = np.where(z > 1e-9, z, np.nan)
        u = cam.fx * pc[:, 0] / zs + cam.K[0, 1] * pc[:, 1] / zs + cam.cx
        v = cam.fy * pc[:, 1] / zs + cam.cy
    return u.astype(np.float32), v.astype(np.float32), z


def _in_image(cam: Camera, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (z > 1e-9) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)


def _binary_masks(masks: list, cameras: list[Camera], threshold: float) -> list[np.ndarray]:
    """Masks as HxW bool at each camera's size (resized when only the resolution differs)."""
    if len(masks) != len(cameras):
        raise ValueError(f"got {len(masks)} masks for {len(cameras)} cameras")
    out = []
    for i, (m, cam) in enumerate(zip(masks, cameras)):
        m = m.detach().cpu().numpy() if torch.is_tensor(m) else np.asarray(m)
        m = m.astype(np.float32)
        if m.ndim == 3:
            m = m[..., 0]
        if m.shape != (cam.height, cam.width):
            if abs(m.shape[1] / m.shape[0] - cam.width / cam.height) > 0.01 * cam.width / cam.height:
                raise ValueError(f"mask {i} is {m.shape[1]}x{m.shape[0]}, camera {i} is {cam.width}x{cam.height}")
            m = cv2.resize(m, (cam.width, cam.height), interpolation=cv2.INTER_LINEAR)
        out.append(m >= threshold)
    return out


# --------------------------------------------------------------------------------------------- the hull
@dataclass
class VisualHull:
    """Occupancy grid of the carved hull.

    occupancy: bool [X, Y, Z] (CPU); origin: world position of the grid's minimum corner; voxel_size: edge
    length of the cubic voxels. ``masks``/``cameras`` are the inputs it was carved from (bool masks), used by
    ``colors_from_images`` as defaults; ``mask_dilate_px`` the carving tolerance (the hull is inflated by it).
    """

    occupancy: torch.Tensor
    origin: np.ndarray
    voxel_size: float
    masks: list[np.ndarray] | None = None
    cameras: list[Camera] | None = None
    mask_dilate_px: float = 2.0
    _dilated: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.occupancy.shape)  # type: ignore[return-value]

    @property
    def bounds(self) -> np.ndarray:
        """2x3 [min corner, max corner] of the grid."""
        return np.stack([self.origin, self.origin + np.array(self.shape) * self.voxel_size])

    @property
    def n_occupied(self) -> int:
        return int(self.occupancy.sum())

    @property
    def is_empty(self) -> bool:
        return self.n_occupied == 0

    @property
    def volume(self) -> float:
        return self.n_occupied * self.voxel_size**3

    def voxel_centers(self, grid: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 3] float32 centres of the occupied voxels (of ``grid`` if given)."""
        idx = torch.nonzero(self.occupancy if grid is None else grid).to(torch.float64)
        return ((idx + 0.5) * self.voxel_size + torch.from_numpy(self.origin)).to(torch.float32)

    def surface(self) -> torch.Tensor:
        """bool grid of occupied voxels with at least one empty (or out-of-grid) 26-neighbour."""
        occ = self.occupancy.float()[None, None]
        eroded = -F.max_pool3d(-F.pad(occ, (1, 1, 1, 1, 1, 1)), 3, stride=1)
        return self.occupancy & (eroded[0, 0] < 0.5)

    def dilated(self, voxels: int) -> torch.Tensor:
        """Occupancy dilated by ``voxels`` (cubic neighbourhood), cached."""
        if voxels <= 0:
            return self.occupancy
        if voxels not in self._dilated:
            occ = self.occupancy.float()[None, None]
            self._dilated[voxels] = F.max_pool3d(occ, 2 * voxels + 1, stride=1, padding=voxels)[0, 0] > 0.5
        return self._dilated[voxels]

    # ----------------------------------------------------------------- queries
    def contains(self, xyz: torch.Tensor | np.ndarray, dilate_voxels: int = 1) -> torch.Tensor:
        """bool [N]: whether each point lies in the hull dilated by ``dilate_voxels`` (False outside the grid).

        Returned on the device of ``xyz`` (CPU for numpy input). Used to drop floaters outside the hull.
        """
        pts = torch.as_tensor(xyz)
        pts = pts.reshape(-1, 3)
        grid = self.dilated(dilate_voxels).to(pts.device)
        origin = torch.as_tensor(self.origin, dtype=torch.float64, device=pts.device)
        idx = torch.floor((pts.to(torch.float64) - origin) / self.voxel_size).long()
        dims = torch.tensor(self.shape, device=pts.device)
        inside = ((idx >= 0) & (idx < dims)).all(dim=1)
        out = torch.zeros(len(pts), dtype=torch.bool, device=pts.device)
        ii = idx[inside]
        out[inside] = grid[ii[:, 0], ii[:, 1], ii[:, 2]]
        return out

    def points(
        self,
        n_max: int,
        surface_fraction: float = 0.8,
        jitter: bool = True,
        seed: int = 0,
        rng: np.random.Generator | None = None,
    ) -> torch.Tensor:
        """[n_max, 3] float32 points inside the hull for initialising Gaussians ([0, 3] if the hull is empty).

        ``surface_fraction`` of them come from surface voxels (where appearance lives), the rest from the
        interior; voxels are drawn without replacement while enough exist. Each point is jittered uniformly
        within its voxel so no two coincide. Randomness from ``seed``, or from ``rng`` when given.
        """
        if self.is_empty or n_max <= 0:
            return torch.zeros(0, 3)
        if rng is not None:
            seed = int(rng.integers(0, 2**62))
        g = torch.Generator().manual_seed(seed)
        surf = self.surface()
        surf_c = self.voxel_centers(surf)
        int_c = self.voxel_centers(self.occupancy & ~surf)
        n_surf = n_max if len(int_c) == 0 else min(n_max, round(n_max * surface_fraction))
        chosen = [_draw(surf_c, n_surf, g), _draw(int_c, n_max - n_surf, g)]
        pts = torch.cat([c for c in chosen if len(c)], dim=0)
        if jitter:
            pts = pts + (torch.rand(pts.shape, generator=g) - 0.5) * self.voxel_size
        return pts

    def colors_from_images(
        self,
        points: torch.Tensor | np.ndarray,
        images: list,
        cameras: list[Camera] | None = None,
        masks: list | None = None,
        occlusion: bool = True,
    ) -> torch.Tensor:
        """[N, 3] float32 approximate colours: the mean of bilinear image samples over the views where the point
        projects inside the image and the mask, and (``occlusion``) is not hidden behind the hull's own surface
        in that view. Points no view qualifies for fall back to all views they project into, then to grey.
        ``cameras``/``masks`` default to those the hull was carved from.
        """
        cameras = cameras if cameras is not None else self.cameras
        if cameras is None or len(cameras) != len(images):
            raise ValueError("colors_from_images needs one camera per image")
        if masks is None and self.masks is not None and len(self.masks) == len(images):
            masks = self.masks
        bmasks = _binary_masks(masks, cameras, 0.5) if masks is not None else None
        pts = torch.as_tensor(points).detach().cpu().numpy().reshape(-1, 3).astype(np.float32)
        acc = np.zeros((len(pts), 3), np.float64)
        cnt = np.zeros(len(pts), np.int64)
        acc_any = np.zeros((len(pts), 3), np.float64)
        cnt_any = np.zeros(len(pts), np.int64)
        surf_c = self.voxel_centers(self.surface()).numpy() if occlusion and not self.is_empty else None
        for i, (img, cam) in enumerate(zip(images, cameras)):
            img = img.detach().cpu().numpy() if torch.is_tensor(img) else np.asarray(img)
            img = img[..., :3].astype(np.float32)
            u, v, z = _project_np(cam, pts)
            ok = _in_image(cam, u, v, z)
            col = np.zeros((len(pts), 3), np.float32)
            col[ok] = _bilinear(img, u[ok], v[ok])
            acc_any[ok] += col[ok]
            cnt_any[ok] += 1
            idx = np.nonzero(ok)[0]
            if bmasks is not None:
                idx = idx[bmasks[i][v[idx].astype(np.int64), u[idx].astype(np.int64)]]
            if surf_c is not None:
                idx = idx[self._visible(cam, surf_c, u[idx], v[idx], z[idx])]
            ok = np.zeros(len(pts), bool)
            ok[idx] = True
            acc[ok] += col[ok]
            cnt[ok] += 1
        out = np.full((len(pts), 3), 0.5, np.float64)
        has_any = cnt_any > 0
        out[has_any] = acc_any[has_any] / cnt_any[has_any, None]
        has = cnt > 0
        out[has] = acc[has] / cnt[has, None]
        return torch.from_numpy(out.astype(np.float32))

    def _visible(self, cam: Camera, surf: np.ndarray, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Depth test of projected points against a coarse z-buffer of the hull's surface voxels in ``cam``."""
        su, sv, sz = _project_np(cam, surf)
        sok = _in_image(cam, su, sv, sz)
        if not sok.any():
            return np.ones(len(u), bool)
        # Cells about one projected voxel wide, so the splatted voxel centres leave no holes.
        cell = max(1.0, float(np.median(cam.fx * self.voxel_size / sz[sok])))
        gw, gh = int(np.ceil(cam.width / cell)), int(np.ceil(cam.height / cell))
        zbuf = np.full(gh * gw, np.inf, np.float32)
        flat = (sv[sok] / cell).astype(np.int64) * gw + (su[sok] / cell).astype(np.int64)
        np.minimum.at(zbuf, flat, sz[sok].astype(np.float32))
        zbuf = cv2.erode(zbuf.reshape(gh, gw), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
        front = zbuf[(v / cell).astype(np.int64).clip(0, gh - 1), (u / cell).astype(np.int64).clip(0, gw - 1)]
        # The hull surface sits up to (voxel + dilation) in front of the true surface: allow that much.
        tol = 2.0 * self.voxel_size + (self.mask_dilate_px + 1.0) * z / max(cam.fx, cam.fy)
        return z <= front + tol


def _draw(candidates: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    if n <= 0 or len(candidates) == 0:
        return candidates[:0]
    if n <= len(candidates):
        return candidates[torch.randperm(len(candidates), generator=g)[:n]]
    return candidates[torch.randint(len(candidates), (n,), generator=g)]


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample HxWx3 at pixel coordinates (u, v) with the +0.5 pixel-centre convention."""
    h, w = img.shape[:2]
    x = np.clip(u - 0.5, 0, w - 1)
    y = np.clip(v - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


# --------------------------------------------------------------------------------------------- carving
def carve_visual_hull(
    masks: list,
    cameras: list[Camera],
    resolution: int = 96,
    bounds: np.ndarray | None = None,
    mask_dilate_px: float = 2.0,
    min_views: int = 1,
    threshold: float = 0.5,
    extend_silhouettes: bool = True,
    max_misses: int = 0,
) -> VisualHull:
    """Carve the visual hull of ``masks`` (HxW, 1 = object) seen from ``cameras``.

    resolution: voxels along the longest side of the bounds (cubic voxels). bounds: 2x3 [min, max] world box,
    or None to estimate it (module docstring). mask_dilate_px: tolerance in pixels for mask/pose errors.
    min_views: a kept voxel must be seen (projected inside the image) by at least this many views, and lie
    inside the mask in all of them. extend_silhouettes: a voxel in front of a camera but outside its image is
    kept only if the mask reaches the image border near where it projects (within the voxel's distance
    outside the frame plus the tolerance); False = such views do not constrain it at all (pure "every view
    that sees it" rule, looser). max_misses: a voxel may fall outside the mask in up to this many views
    (robustness to automatic masks that miss a part in one view; 0 = strict carving, as GaussianObject).
    An inconsistent input gives an empty hull (check ``is_empty``).
    """
    if len(cameras) == 0:
        raise ValueError("carve_visual_hull needs at least one view")
    bmasks = _binary_masks(masks, cameras, threshold)
    # Distance (px) from each pixel to the nearest mask pixel: 0 inside the mask.
    dists = [_distance_to_mask(m) for m in bmasks]
    if bounds is None:
        bounds = _estimate_bounds(bmasks, dists, cameras, mask_dilate_px, extend_silhouettes, max_misses)
    bounds = np.asarray(bounds, dtype=np.float64).reshape(2, 3)
    origin, voxel, dims = _grid(bounds, resolution)
    occ = _carve(dists, cameras, origin, voxel, dims, mask_dilate_px, min_views, extend_silhouettes, max_misses)
    return VisualHull(
        occupancy=torch.from_numpy(occ),
        origin=origin,
        voxel_size=voxel,
        masks=bmasks,
        cameras=list(cameras),
        mask_dilate_px=mask_dilate_px,
    )


def _distance_to_mask(mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _grid(bounds: np.ndarray, resolution: int) -> tuple[np.ndarray, float, tuple[int, int, int]]:
    """Cubic voxels: ``resolution`` along the longest side, the box re-centred to whole voxels."""
    lo, hi = bounds
    extent = hi - lo
    if not np.all(extent > 0):
        raise ValueError(f"bounds must have positive extent, got {bounds.tolist()}")
    voxel = float(extent.max() / resolution)
    dims = tuple(int(max(1, np.ceil(e / voxel - 1e-6))) for e in extent)
    centre = (lo + hi) / 2
    origin = centre - np.array(dims) * voxel / 2
    return origin, voxel, dims  # type: ignore[return-value]


def _carve(
    dists: list[np.ndarray],
    cameras: list[Camera],
    origin: np.ndarray,
    voxel: float,
    dims: tuple[int, int, int],
    dilate_px: float,
    min_views: int,
    extend_silhouettes: bool = True,
    max_misses: int = 0,
) -> np.ndarray:
    axes = [(np.arange(n, dtype=np.float32) + 0.5) * voxel + o for n, o in zip(dims, origin)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float32)
    keep = np.ones(len(centres), bool)
    seen = np.zeros(len(centres), np.int32)
    misses = np.zeros(len(centres), np.int32)
    half_diag = voxel * np.sqrt(3) / 2
    for dist, cam in zip(dists, cameras):
        idx = np.nonzero(keep)[0]
        u, v, z = _project_np(cam, centres[idx])
        front = z > 1e-9
        idx, u, v, z = idx[front], u[front], v[front], z[front]
        vis = _in_image(cam, u, v, z)
        radius = dilate_px + max(cam.fx, cam.fy) * half_diag / z
        if extend_silhouettes:
            # Outside the frame the object can only continue where its mask reaches the border nearby.
            uc = np.clip(u, 0.0, cam.width - 1e-3)
            vc = np.clip(v, 0.0, cam.height - 1e-3)
            radius = radius + np.hypot(u - uc, v - vc)
            inside = dist[vc.astype(np.int64), uc.astype(np.int64)] <= radius
            misses[idx[~inside]] += 1
        else:
            inside = dist[v[vis].astype(np.int64), u[vis].astype(np.int64)] <= radius[vis]
            misses[idx[vis][~inside]] += 1
        seen[idx[vis]] += 1
        keep &= misses <= max_misses
    keep &= seen >= max(1, min_views)
    return keep.reshape(dims)


_nearest_point_to_rays = nearest_point_to_rays


def _estimate_bounds(
    masks: list[np.ndarray],
    dists: list[np.ndarray],
    cameras: list[Camera],
    dilate_px: float,
    extend_silhouettes: bool = True,
    max_misses: int = 0,
) -> np.ndarray:
    """Object box: centroid-ray triangulation, per-view angular extent, then a coarse carve."""
    origins, dirs, pix = [], [], []
    for m, cam in zip(masks, cameras):
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            continue
        uv = np.array([[xs.mean() + 0.5, ys.mean() + 0.5]])
        d = cam.pixel_rays_camera(uv)[0] @ cam.R
        origins.append(cam.center)
        dirs.append(d / np.linalg.norm(d))
        step = max(1, len(xs) // 5000)
        pix.append((cam, np.stack([xs[::step] + 0.5, ys[::step] + 0.5], axis=1)))
    centre = _nearest_point_to_rays(np.array(origins), np.array(dirs)) if len(origins) >= 2 else None
    if centre is None:  # fall back to the optical axes
        axes = [cam.R[2] for cam in cameras]
        centre = _nearest_point_to_rays(np.array([c.center for c in cameras]), np.array(axes))
    if centre is None:  # parallel cameras: look ahead by the spread of the camera centres
        spread = max(np.ptp(np.array([c.center for c in cameras]), axis=0).max(), 1.0)
        centre = np.mean([c.center + c.R[2] * 3 * spread for c in cameras], axis=0)
    radius = 0.0
    for cam, uv in pix:
        to_c = cam.world_to_camera(centre[None])[0]
        dist_c = np.linalg.norm(to_c)
        if to_c[2] <= 0:
            continue
        rays = cam.pixel_rays_camera(uv)
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        cos = np.clip(rays @ (to_c / dist_c), -1.0, 1.0)
        radius = max(radius, dist_c * float(np.sin(np.arccos(cos.min()))))
    if radius <= 0:
        radius = 0.25 * np.median([np.linalg.norm(c.center - centre) for c in cameras])
    half = 1.5 * radius
    for _ in range(3):  # grow the box while the coarse hull touches its faces
        box = np.stack([centre - half, centre + half])
        origin, voxel, dims = _grid(box, _COARSE_RES)
        # The object is in (nearly) every view; requiring that keeps the masks' cones near each camera
        # (seen by that camera alone) from inflating the box.
        occ = _carve(
            dists,
            cameras,
            origin,
            voxel,
            dims,
            dilate_px,
            max(1, math.ceil(0.75 * len(cameras))),
            extend_silhouettes,
            max_misses,
        )
        if not occ.any():
            return box
        idx = np.argwhere(occ)
        lo_i, hi_i = idx.min(0), idx.max(0)
        if (lo_i > 0).all() and (hi_i < np.array(dims) - 1).all():
            break
        half *= 2.0
    lo = origin + (lo_i - 2) * voxel
    hi = origin + (hi_i + 3) * voxel
    return np.stack([lo, hi])


def views_seeing(
    points: torch.Tensor | np.ndarray,
    cameras: list[Camera],
    masks: list | None = None,
) -> torch.Tensor:
    """int64 [N]: how many cameras see each point (in front, inside the image; inside the mask if given).

    Runs in torch on the points' device, so it can be applied to Gaussian centres during training.
    """
    pts = torch.as_tensor(points).reshape(-1, 3)
    dev = pts.device
    p = pts.to(torch.float32)
    bm = _binary_masks(masks, cameras, 0.5) if masks is not None else None
    counts = torch.zeros(len(p), dtype=torch.int64, device=dev)
    for i, cam in enumerate(cameras):
        P = torch.as_tensor(cam.K @ cam.viewmat[:3], dtype=torch.float32, device=dev)
        h = p @ P[:, :3].T + P[:, 3]
        z = h[:, 2]
        zs = torch.where(z > 1e-9, z, torch.ones_like(z))
        u, v = h[:, 0] / zs, h[:, 1] / zs
        ok = (z > 1e-9) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        if bm is not None:
            m = torch.as_tensor(bm[i], device=dev)
            ui = u.clamp(0, cam.width - 1).long()
            vi = v.clamp(0, cam.height - 1).long()
            ok &= m[vi, ui]
        counts += ok.long()
    return counts


def floater_mask(
    xyz: torch.Tensor,
    hull: VisualHull | None,
    cameras: list[Camera],
    min_views: int = 2,
    dilate_voxels: int = 1,
) -> torch.Tensor:
    """bool [N]: Gaussians to remove: centre outside the dilated hull, or seen by fewer than ``min_views``."""
    bad = views_seeing(xyz, cameras) < min_views
    if hull is not None and not hull.is_empty:
        bad |= ~hull.contains(xyz, dilate_voxels)
    return bad


__all__ = ["VisualHull", "carve_visual_hull", "views_seeing", "floater_mask"]
