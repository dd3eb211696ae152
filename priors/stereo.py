"""Multi-view stereo on the input views themselves: plane-sweep NCC depth maps and their consistent 3D points.

Sparse-view Gaussian methods lead the tables by starting from (and supervising with) good geometry: monocular
depth networks (DNGaussian, FSGS), dense matchers (Binocular3DGS). Neither can be downloaded here, but with known
cameras the input views already constrain depth wherever two of them see the same textured surface. For every
input view (the reference) this module sweeps planes through its depth range (uniform in inverse depth),
fronto-parallel and tilted four ways (``plane_normals``), warps the views that look most alike onto each plane
(``source_views``), scores the match by normalised cross-correlation (NCC) over a small window and keeps the best
plane per pixel (sub-plane refined by a parabola through the neighbouring scores). PatchMatch rounds
(``priors.stereo_refine``, ``refine_iters``) then give every pixel its own plane, depth and normal, improved by
its neighbours' planes and random perturbations; an optional second pass (``geom_iters``) also scores each plane
by its reprojection error through the other views' depth maps. A depth is trusted only where

* the best NCC is high and the reference window has texture (flat patches match at any depth), and
* it is geometrically consistent: back-projected, projected into another view and re-projected through that
  view's own depth, it lands within a pixel of where it started at nearly the same depth (MVSNet / COLMAP
  fusion's check); one pair alone cannot tell a true match from a repeated pattern.

The survivors become coloured 3D points (initialisation of scene-mode runs) and per-view depth maps with a
confidence (a depth loss). OpenCV warps and box filters on the CPU (no gradients needed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from priors.stereo_refine import refine_planes
from recon.cameras import Camera

log = logging.getLogger("recon")


@dataclass
class StereoSettings:
    """Plane sweep: enough depth hypotheses for ``plane_step_px`` of image shift between planes (at most
    ``max_planes``), NCC over ``window`` x ``window`` pixels; trust a depth with NCC >= ``min_ncc``, a reference
    window standard deviation >= ``min_texture`` (images in [0, 1]) and agreement with another view within
    ``max_reproj_px`` pixels and ``max_rel_depth`` relative depth."""

    max_planes: int = 512  # depth hypotheses: enough for <= ``plane_step_px`` pixels of shift between planes
    plane_step_px: float = 1.0
    window: int = 9
    min_ncc: float = 0.6
    min_texture: float = 0.01
    max_reproj_px: float = 1.5
    max_rel_depth: float = 0.02
    # > 0: also sweep planes tilted by this many degrees (``plane_normals``; 0 = fronto-parallel only). 30:
    # DTU dtu3 19.77 -> 20.12 dB over seeds 0-2 (5 of 6 scene-seed pairs up, SSIM up on all), fern -0.01,
    # dtu3m +0.31 / -0.02; 20 gave about as much, 45 lost 0.9 dB on scan24 (more orientations, more false matches)
    slant_deg: float = 30.0
    # > 0: each view is matched against at most this many others, those looking most alike (``source_views``);
    # the tilted planes cost a sweep per orientation, and lego's 8 views with all 7 sources took 2.3x as long
    # for 23.99 dB; with the 2 nearest: 24.17 (fronto-parallel, all sources: 24.03), 1.6x the sweep's time
    max_sources: int = 2
    # views are swept at most this large (longest side). At the fast preset's training size (400; was 200, half
    # of it): DTU dtu3 scan24 / scan37 19.55 / 18.61 -> 20.44 / 19.30 dB, fern 20.65 -> 21.12 (at its full 504:
    # 21.09); fewer pixels pass the checks (38% -> 26% of DTU scan24's first view) but they are placed twice as
    # finely; the sweep costs ~5 s more
    max_side: int = 400
    # > 0: PatchMatch rounds after the sweep (``priors.stereo_refine``): every textured pixel's plane (depth and
    # normal) improved by its neighbours' planes and random perturbations; 0 = the sweep's planes as they are.
    # 6 (at 1020 steps): DTU dtu3 20.24 -> 20.43 dB over seeds 0-2 (SSIM up on all six runs), dtu3m 21.78 / 19.40
    # -> 22.09 / 19.67, fern 21.43 -> 21.47, lego 8 views 24.17 -> 24.00 (SSIM 0.875 -> 0.876); DTU scan24's
    # trusted depth 31 / 19 / 22% -> 34 / 24 / 23% of the views' pixels; ~2 s a view (C++ scoring kernel)
    refine_iters: int = 6
    # > 0: a second PatchMatch pass of this many rounds whose score also counts the reprojection error through
    # the other views' depth maps (``_geometric_pass``); 0 = off
    geom_iters: int = 0


@dataclass
class StereoDepth:
    """One view's stereo depth: ``depth`` [H, W] along the optical axis (0 = unknown), ``confidence`` [H, W] in
    [0, 1] (0 where the depth is not trusted), at the size of ``camera``; ``near_far`` is the swept range."""

    camera: Camera
    depth: np.ndarray
    confidence: np.ndarray
    near_far: tuple[float, float]

    @property
    def valid(self) -> np.ndarray:
        return self.confidence > 0


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image[..., :3], dtype=np.float32)
    return np.ascontiguousarray(img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def _resize(image: np.ndarray, camera: Camera, max_side: int) -> tuple[np.ndarray, Camera]:
    h, w = image.shape[:2]
    gray = _gray(image)
    s = min(1.0, max_side / max(h, w))
    nw, nh = max(8, round(w * s)), max(8, round(h * s))
    if (nw, nh) != (w, h):
        gray = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA)
    return gray, camera.resized(nw, nh) if (nw, nh) != (camera.width, camera.height) else camera


def _box(x: np.ndarray, window: int) -> np.ndarray:
    """Mean over a window x window neighbourhood (same size, edges replicated)."""
    return cv2.boxFilter(x, -1, (window, window), borderType=cv2.BORDER_REPLICATE)


def depth_range(camera: Camera, bounds: np.ndarray) -> tuple[float, float]:
    """(near, far) depths of a [2, 3] world box's corners in ``camera``, near kept in front of the camera."""
    corners = np.array([[bounds[i][0], bounds[j][1], bounds[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    z = camera.world_to_camera(corners)[:, 2]
    far = float(z.max())
    if far <= 0:
        raise ValueError(f"the working volume is behind camera {camera.name or '?'}")
    near = max(float(z.min()), 0.02 * far)
    return near, far


def _cv_K(camera: Camera) -> np.ndarray:
    """Intrinsics in OpenCV's pixel convention (pixel centres at integers; ours are at +0.5)."""
    K = camera.K.copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def plane_homography(ref: Camera, src: Camera, depth: float, normal: np.ndarray | None = None) -> np.ndarray:
    """3x3 map from ``ref`` pixels (OpenCV convention) to ``src`` pixels through the plane n.X = ``depth`` in
    ``ref``'s camera frame: K_s (R_rel + t_rel n^T / d) K_r^-1; ``normal`` n (unit, n_z > 0) defaults to the
    fronto-parallel (0, 0, 1), where ``depth`` is the optical depth of the plane."""
    R_rel, t_rel = src.motion_from(ref)
    n = np.array([0.0, 0.0, 1.0]) if normal is None else np.asarray(normal, dtype=np.float64)
    return _cv_K(src) @ (R_rel + np.outer(t_rel, n) / depth) @ np.linalg.inv(_cv_K(ref))


def plane_normals(slant_deg: float) -> list[np.ndarray]:
    """The plane orientations swept: fronto-parallel, plus (``slant_deg`` > 0) four tilted by that angle
    towards +-x and +-y of the reference view. A window on a surface seen obliquely (a roof, the table, the
    ground) matches only on a plane of about its slant (PatchMatch stereo's slanted support windows); four
    fixed tilts catch most of that at 5x the sweep's cost."""
    normals = [np.array([0.0, 0.0, 1.0])]
    if slant_deg > 0:
        s, c = math.sin(math.radians(slant_deg)), math.cos(math.radians(slant_deg))
        normals += [np.array([s, 0.0, c]), np.array([-s, 0.0, c]), np.array([0.0, s, c]), np.array([0.0, -s, c])]
    return normals


def plane_count(ref: Camera, sources: Sequence[Camera], near_far: tuple[float, float], settings: StereoSettings) -> int:
    """Planes needed so that no image point moves more than ``plane_step_px`` in any source between neighbouring
    planes (uniform in inverse depth), between 16 and ``max_planes``."""
    near, far = near_far
    grid = np.array([[x * ref.width, y * ref.height] for x in (0.1, 0.5, 0.9) for y in (0.1, 0.5, 0.9)])
    shift = 0.0
    for src in sources:
        a, _ = src.project(ref.unproject(grid, np.full(len(grid), near)))
        b, _ = src.project(ref.unproject(grid, np.full(len(grid), far)))
        d = np.linalg.norm(a - b, axis=1)
        shift = max(shift, float(np.nanmax(d)) if np.isfinite(d).any() else 0.0)
    return int(np.clip(math.ceil(shift / settings.plane_step_px) + 1, 16, settings.max_planes))


def sweep(
    ref: np.ndarray,
    ref_cam: Camera,
    sources: Sequence[tuple[np.ndarray, Camera]],
    near_far: tuple[float, float],
    settings: StereoSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best depth, its NCC and its plane's normal [H, W, 3] per pixel of ``ref`` [H, W] against the ``sources``
    (image, camera) pairs.

    Per plane the score is the best NCC over the sources (each pixel needs one other view that sees it:
    occlusions). The winning depth is refined by a parabola through its neighbours' scores. With
    ``settings.slant_deg`` the sweep repeats for tilted planes (``plane_normals``) and each pixel keeps the
    orientation that matches best; ``settings.refine_iters`` PatchMatch rounds then refine each pixel's plane."""
    mu_r, var_r = _window_stats(ref, settings.window)  # the reference's windows, the same for every plane
    rays = ref_cam.pixel_rays_camera(ref_cam.pixel_grid().reshape(-1, 2))  # (x, y, 1) per pixel, camera frame
    best_depth: np.ndarray | None = None
    best_score: np.ndarray | None = None
    best_normal = np.zeros(ref.shape, dtype=np.int64)  # index into the orientations
    normals = plane_normals(settings.slant_deg)
    for k, normal in enumerate(normals):
        depth, score = _sweep_planes(ref, ref_cam, sources, near_far, settings, normal, (mu_r, var_r), rays)
        if best_depth is None or best_score is None:
            best_depth, best_score = depth, score
        else:
            better = score > best_score
            best_depth = np.where(better, depth, best_depth)
            best_score = np.where(better, score, best_score)
            best_normal[better] = k
    assert best_depth is not None and best_score is not None
    textured = np.sqrt(var_r) >= settings.min_texture
    plane_n = np.stack(normals)[best_normal]
    if settings.refine_iters > 0:
        active = textured & (best_depth > 0)
        depth_pm, score_pm, n_pm = refine_planes(
            ref,
            ref_cam,
            sources,
            best_depth,
            plane_n,
            active,
            settings.window,
            settings.refine_iters,
        )
        # the refined plane was chosen on a sparse window: keep the sweep's where its full-window NCC is higher
        better = score_pm > best_score
        best_depth = np.where(better, depth_pm, best_depth)
        best_score = np.where(better, score_pm, best_score)
        plane_n = np.where(better[..., None], n_pm, plane_n)
    score = np.where(textured, best_score, -1.0)
    return best_depth.astype(np.float32), score.astype(np.float32), plane_n.astype(np.float32)


def _window_stats(img: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``img`` over each window x window neighbourhood."""
    mu = _box(img, window)
    return mu, np.maximum(_box(img * img, window) - mu * mu, 0)


def _sweep_planes(
    ref: np.ndarray,
    ref_cam: Camera,
    sources: Sequence[tuple[np.ndarray, Camera]],
    near_far: tuple[float, float],
    settings: StereoSettings,
    normal: np.ndarray,
    ref_stats: tuple[np.ndarray, np.ndarray],
    rays: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One orientation's sweep: (depth, NCC) per pixel of planes n.X = d with d uniform in inverse depth over
    ``near_far`` (the depth at the principal point), the best plane sub-plane refined. ``ref_stats``: the
    reference's window mean and variance; ``rays`` [H*W, 3]: its pixels' camera-frame rays with z = 1."""
    near, far = near_far
    planes = plane_count(ref_cam, [c for _, c in sources], near_far, settings)
    inv = np.linspace(1.0 / near, 1.0 / far, planes)
    w = settings.window
    h, wd = ref.shape
    mu_r, var_r = ref_stats
    ones = np.ones_like(ref)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    # running argmax over the planes (first best, as np.argmax) with the scores of the planes either side of it
    top = idx = s_lo = s_hi = prev = None
    pending = np.zeros((h, wd), dtype=bool)  # best so far at the previous plane: the next one is its s_hi
    for k, d in enumerate(1.0 / inv):
        best = np.full((h, wd), -1.0, dtype=np.float32)
        for img, cam in sources:
            H = plane_homography(ref_cam, cam, float(d), normal)
            warped = cv2.warpPerspective(img, H, (wd, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            inside = cv2.warpPerspective(ones, H, (wd, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            mu_s = _box(warped, w)
            var_s = np.maximum(_box(warped * warped, w) - mu_s * mu_s, 0)
            cov = _box(ref * warped, w) - mu_r * mu_s
            ncc = cov / np.sqrt(var_r * var_s + 1e-8)
            ok = _box(inside, w) > 0.99
            np.maximum(best, np.where(ok, ncc, -1.0), out=best)
        if top is None or idx is None or s_lo is None or s_hi is None or prev is None:
            top, idx, s_lo, s_hi = best.copy(), np.zeros((h, wd), dtype=np.int64), best.copy(), best.copy()
            pending[:] = True
        else:
            better = best > top
            settle = pending & ~better
            s_hi[settle] = best[settle]
            top[better], idx[better], s_lo[better] = best[better], k, prev[better]
            pending = better
        prev = best
    assert top is not None and idx is not None and s_lo is not None and s_hi is not None
    # s_hi of a best at the last plane is itself (as np.minimum(idx + 1, planes - 1) picks)
    s_hi[pending] = top[pending]
    # sub-plane refinement in inverse depth: vertex of the parabola through (idx-1, idx, idx+1)
    denom = s_lo - 2 * top + s_hi
    interior = (idx > 0) & (idx < planes - 1) & (denom < -1e-6)
    offset = np.where(interior, 0.5 * (s_lo - s_hi) / np.where(interior, denom, -1.0), 0.0)
    step = (inv[-1] - inv[0]) / max(1, planes - 1)
    plane_d = 1.0 / (inv[idx] + np.clip(offset, -0.5, 0.5) * step)
    if normal[2] >= 1.0:
        return plane_d, top
    # depth along the optical axis where the pixel's ray (x, y, 1) meets n.X = d: d / (n . ray)
    facing = (rays @ normal).reshape(h, wd)
    depth = np.where(facing > 1e-3, plane_d / np.maximum(facing, 1e-3), 0.0)
    return depth, np.where(facing > 1e-3, top, -1.0)


def _seen_at(camera: Camera, points: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uv [N,2], depth [N], value [N]) of world ``points`` in ``camera``: pixel coordinates, depth along the
    optical axis, and the value of the single-channel ``image`` at the nearest pixel (0 behind the camera or
    outside the image)."""
    uv, z = camera.project(points)
    inside = np.isfinite(uv).all(axis=1) & (z > 0)
    xs = np.floor(np.nan_to_num(uv[:, 0], nan=-1)).astype(int)
    ys = np.floor(np.nan_to_num(uv[:, 1], nan=-1)).astype(int)
    inside &= (xs >= 0) & (xs < image.shape[1]) & (ys >= 0) & (ys < image.shape[0])
    value = np.zeros(len(uv), dtype=image.dtype)
    value[inside] = image[ys[inside], xs[inside]]
    return uv, z, value


def _consistent(
    depth_r: np.ndarray, cam_r: Camera, depth_s: np.ndarray, cam_s: Camera, settings: StereoSettings
) -> np.ndarray:
    """Pixels of view r whose depth, carried into view s and back through s's depth (nearest pixel), returns
    within ``max_reproj_px`` pixels and ``max_rel_depth`` relative depth."""
    h, w = depth_r.shape
    grid = cam_r.pixel_grid().reshape(-1, 2)
    d_r = depth_r.reshape(-1)
    xyz = cam_r.unproject(grid, d_r)
    uv_s, _, d_s = _seen_at(cam_s, xyz, depth_s)
    ok = d_s > 0
    back = cam_s.unproject(np.where(ok[:, None], uv_s, 0.0), np.where(ok, d_s, 1.0))
    uv_b, z_b = cam_r.project(back)
    err = np.linalg.norm(np.nan_to_num(uv_b - grid, nan=1e9), axis=1)
    rel = np.abs(z_b - d_r) / np.maximum(d_r, 1e-6)
    ok &= (err <= settings.max_reproj_px) & (rel <= settings.max_rel_depth)
    return ok.reshape(h, w)


def source_views(cameras: Sequence[Camera], ref: int, max_sources: int) -> list[int]:
    """Indices of the views ``ref`` is matched against: all others, or (``max_sources`` > 0) the
    ``max_sources`` whose viewing directions are closest to ``ref``'s (MVS source-view selection: a view
    looking from far around the object sees little of the same surface, and every source adds a warp per plane
    and orientation)."""
    others = [s for s in range(len(cameras)) if s != ref]
    if max_sources <= 0 or len(others) <= max_sources:
        return others
    forward = cameras[ref].R[2]
    return sorted(others, key=lambda s: -float(cameras[s].R[2] @ forward))[:max_sources]


def stereo_depths(
    images: Sequence[np.ndarray],
    cameras: Sequence[Camera],
    bounds: np.ndarray,
    settings: StereoSettings | None = None,
    near_far: tuple[float, float] | list[tuple[float, float]] | None = None,
) -> list[StereoDepth]:
    """Trusted stereo depth for every view (see the module docstring). ``bounds`` [2, 3] is the working volume
    the depth range is taken from, unless the data gives ``near_far`` itself. Views are swept at most
    ``settings.max_side`` large; depths come back at that size with the camera they belong to."""
    settings = settings or StereoSettings()
    if len(images) < 2:
        return []
    small = [_resize(im, cam, settings.max_side) for im, cam in zip(images, cameras)]
    swept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    ranges: list[tuple[float, float]] = []
    matched = [[small[s] for s in source_views(cameras, r, settings.max_sources)] for r in range(len(small))]
    for r, (ref, cam) in enumerate(small):
        ranges.append(near_far[r] if isinstance(near_far, list) else near_far or depth_range(cam, bounds))
        swept.append(sweep(ref, cam, matched[r], ranges[r], settings))
    raw = [(d, sc) for d, sc, _ in swept]
    if settings.geom_iters > 0:
        raw = _geometric_pass(small, matched, swept, settings)
    out = []
    for r, (depth, score) in enumerate(raw):
        cam = small[r][1]
        good = score >= settings.min_ncc
        agree = np.zeros_like(good)
        for s in range(len(small)):
            if s != r:
                d_s = np.where(raw[s][1] >= settings.min_ncc, raw[s][0], 0.0)
                agree |= _consistent(depth, cam, d_s, small[s][1], settings)
        keep = good & agree
        conf = np.where(keep, np.clip((score - settings.min_ncc) / (1 - settings.min_ncc), 0.05, 1.0), 0.0)
        depth = np.where(keep, depth, 0.0).astype(np.float32)
        out.append(StereoDepth(cam, depth, conf.astype(np.float32), ranges[r]))
    return out


def _geometric_pass(
    small: Sequence[tuple[np.ndarray, Camera]],
    matched: Sequence[Sequence[tuple[np.ndarray, Camera]]],
    swept: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    settings: StereoSettings,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(depth, NCC) per view, each matched against its ``matched`` sources as in the sweep, after
    ``settings.geom_iters`` PatchMatch rounds scored by NCC minus the
    reprojection error through the other views' first-pass depth maps (COLMAP's geometric consistency pass): a
    repeated pattern's wrong match, which no other view's depth confirms, gives way to a neighbour's plane that
    they do confirm. Every view reads the first pass's maps (Jacobi), so the order of the views does not matter."""
    out = []
    for r, (ref, cam) in enumerate(small):
        depth, score, normals = swept[r]
        geometry = [(np.where(swept[s][1] > -1, swept[s][0], 0.0), small[s][1]) for s in range(len(small)) if s != r]
        active = (score > -1) & (depth > 0)
        d2, s2, _ = refine_planes(
            ref,
            cam,
            matched[r],
            depth,
            normals,
            active,
            settings.window,
            settings.geom_iters,
            seed=1,
            geometry=geometry,
        )
        out.append((np.where(active, d2, depth), np.where(active, s2, score)))
    return out


def _pixel_points(
    sd: StereoDepth, image: np.ndarray, xs: np.ndarray, ys: np.ndarray, depth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World points through pixels (xs, ys) of ``sd``'s camera at ``depth``, coloured from ``image`` (any size)."""
    uv = np.stack([xs + 0.5, ys + 0.5], axis=1)
    h, w = image.shape[:2]
    px = np.clip(((xs + 0.5) * w / sd.camera.width).astype(int), 0, w - 1)
    py = np.clip(((ys + 0.5) * h / sd.camera.height).astype(int), 0, h - 1)
    return sd.camera.unproject(uv, depth), np.asarray(image[py, px, :3], dtype=np.float64)


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def stereo_points(
    depths: Sequence[StereoDepth], images: Sequence[np.ndarray], max_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(xyz, rgb) of the trusted depths of all views, at most ``max_points`` (a random subset), coloured from
    their pixels."""
    parts = []
    for sd, img in zip(depths, images):
        ys, xs = np.nonzero(sd.valid)
        if len(ys):
            parts.append(_pixel_points(sd, img, xs, ys, sd.depth[ys, xs]))
    xyz, rgb = _joined(parts)
    if len(xyz) > max_points:
        pick = rng.choice(len(xyz), size=max_points, replace=False)
        xyz, rgb = xyz[pick], rgb[pick]
    return xyz, rgb


def untrusted_backdrop(
    depths: Sequence[StereoDepth], images: Sequence[np.ndarray], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(xyz, rgb) of ``n`` points through random pixels without a trusted depth, at the far end of their view's
    swept depth range, coloured from their pixel."""
    if n <= 0 or not depths:
        return _joined([])
    per_view = np.bincount(rng.integers(0, len(depths), size=n), minlength=len(depths))
    parts = []
    for sd, img, m in zip(depths, images, per_view):
        ys, xs = np.nonzero(~sd.valid)
        if m == 0 or len(ys) == 0:
            continue
        pick = rng.integers(0, len(ys), size=m)
        parts.append(_pixel_points(sd, img, xs[pick], ys[pick], np.full(m, sd.near_far[1])))
    return _joined(parts)


def in_free_space(
    points: np.ndarray, depths: Sequence[StereoDepth], margin: float = 0.05, window: int = 5
) -> np.ndarray:
    """bool [N]: points that some view sees through: they project onto a pixel whose whole ``window`` x
    ``window`` neighbourhood has trusted stereo depth, and lie nearer than the nearest of those depths by more
    than ``margin`` (relative). That view sees a photo-consistent surface behind them, so anything there is
    transparent in it: a floater (free-space carving with the stereo surface, as the visual hull does for
    objects). The neighbourhood minimum keeps Gaussians at depth edges, where a window straddles two surfaces."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    free = np.zeros(len(points), dtype=bool)
    kernel = np.ones((window, window), np.uint8)
    for sd in depths:
        # untrusted pixels are 0, so any of them in the window makes the minimum 0: no verdict there
        nearest = cv2.erode(np.where(sd.valid, sd.depth, 0.0).astype(np.float32), kernel)
        _, z, surface = _seen_at(sd.camera, points, nearest)
        free |= (surface > 0) & (z < surface * (1.0 - margin))
    return free


def describe(depths: Sequence[StereoDepth]) -> str:
    """For the log: the trusted fraction of each view's pixels."""
    return "confident depth on " + ", ".join(f"{100 * sd.valid.mean():.0f}%" for sd in depths) + " of the views' pixels"


__all__ = [
    "StereoDepth",
    "StereoSettings",
    "depth_range",
    "describe",
    "in_free_space",
    "stereo_depths",
    "stereo_points",
    "untrusted_backdrop",
]
