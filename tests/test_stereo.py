"""Plane-sweep stereo (priors.stereo): depth of a textured plane recovered from three views; no texture -> no
trusted depth; the points it gives lie on the plane."""

from __future__ import annotations

import numpy as np
import pytest

from priors.stereo import (
    StereoSettings,
    depth_range,
    plane_homography,
    plane_normals,
    source_views,
    stereo_depths,
    stereo_points,
)
from recon.cameras import Camera, intrinsics

PLANE_Z = 0.0  # the textured wall: the plane z = 0 in world coordinates, cameras at z = -3 looking at it


def _texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A smooth random colour pattern on the wall (sum of sinusoids), RGB in [0, 1]."""
    rng = np.random.default_rng(1)
    out = np.zeros((*u.shape, 3))
    for _ in range(12):
        f = rng.uniform(2, 9, size=2)
        ph = rng.uniform(0, 2 * np.pi)
        out += rng.uniform(0.2, 1, size=3) * np.sin(f[0] * u + f[1] * v + ph)[..., None]
    return 0.5 + 0.5 * out / np.abs(out).max()


def _view(x: float, textured: bool = True) -> tuple[np.ndarray, Camera]:
    w, h = 96, 72
    cam = Camera.look_at(
        [x, 0.2 * x, -3.0], [0.0, 0.0, PLANE_Z], [0.0, -1.0, 0.0], intrinsics(90.0, 90.0, w / 2, h / 2), w, h
    )
    grid = cam.pixel_grid().reshape(-1, 2)
    rays = cam.world_directions(grid)
    c = cam.center
    s = (PLANE_Z - c[2]) / rays[:, 2]
    p = c + rays * s[:, None]
    img = _texture(p[:, 0], p[:, 1]) if textured else np.full((len(p), 3), 0.5)
    return img.reshape(h, w, 3).astype(np.float32), cam


def _true_depth(cam: Camera) -> np.ndarray:
    grid = cam.pixel_grid().reshape(-1, 2)
    rays = cam.world_directions(grid)
    s = (PLANE_Z - cam.center[2]) / rays[:, 2]
    pts = cam.center + rays * s[:, None]
    return cam.world_to_camera(pts)[:, 2].reshape(cam.height, cam.width)


def test_plane_homography_agrees_with_projecting_the_plane_point() -> None:
    _, a = _view(-0.5)
    _, b = _view(0.6)
    uv = np.array([[30.5, 20.5]])
    X = a.unproject(uv, np.array([2.7]))
    expect, _ = b.project(X)
    H = plane_homography(a, b, 2.7)
    p = H @ np.array([uv[0, 0] - 0.5, uv[0, 1] - 0.5, 1.0])
    assert np.allclose(p[:2] / p[2] + 0.5, expect[0], atol=1e-6)


def test_stereo_recovers_the_depth_of_a_textured_wall() -> None:
    views = [_view(x) for x in (-0.4, 0.0, 0.45)]
    images, cams = [v[0] for v in views], [v[1] for v in views]
    bounds = np.array([[-2.0, -2.0, -1.0], [2.0, 2.0, 1.0]])
    depths = stereo_depths(images, cams, bounds, StereoSettings(max_side=96))
    assert len(depths) == 3
    for sd in depths:
        truth = _true_depth(sd.camera)
        ok = sd.valid
        assert ok.mean() > 0.4  # most of the wall is trusted
        rel = np.abs(sd.depth[ok] - truth[ok]) / truth[ok]
        assert np.median(rel) < 0.01 and np.percentile(rel, 95) < 0.03
        assert sd.confidence[~ok].max(initial=0) == 0
    xyz, rgb = stereo_points(depths, images, 500, np.random.default_rng(0))
    assert len(xyz) == 500 and rgb.shape == (500, 3)
    assert np.percentile(np.abs(xyz[:, 2] - PLANE_Z), 95) < 0.05  # on the wall


def _oblique_view(angle_deg: float) -> tuple[np.ndarray, Camera]:
    """The wall seen from ``angle_deg`` off its normal (around the vertical axis), 3 units away."""
    w, h = 96, 72
    a = np.radians(angle_deg)
    centre = [3.0 * np.sin(a), 0.1 * angle_deg / 40, -3.0 * np.cos(a)]
    cam = Camera.look_at(centre, [0.0, 0.0, PLANE_Z], [0.0, -1.0, 0.0], intrinsics(60.0, 60.0, w / 2, h / 2), w, h)
    rays = cam.world_directions(cam.pixel_grid().reshape(-1, 2))
    p = cam.center + rays * ((PLANE_Z - cam.center[2]) / rays[:, 2])[:, None]
    return _texture(3 * p[:, 0], 3 * p[:, 1]).reshape(h, w, 3).astype(np.float32), cam


def test_tilted_plane_homography_agrees_with_projecting_the_plane_point() -> None:
    _, a = _view(-0.5)
    _, b = _view(0.6)
    n = plane_normals(30.0)[1]
    uv = np.array([[30.5, 20.5]])
    ray = a.pixel_rays_camera(uv)[0]  # (x, y, 1) in a's camera frame
    depth = 2.7 / float(n @ ray)  # where the ray meets n.X = 2.7
    expect, _ = b.project(a.unproject(uv, np.array([depth])))
    p = plane_homography(a, b, 2.7, n) @ np.array([uv[0, 0] - 0.5, uv[0, 1] - 0.5, 1.0])
    assert np.allclose(p[:2] / p[2] + 0.5, expect[0], atol=1e-6)
    assert len(plane_normals(0.0)) == 1 and len(plane_normals(30.0)) == 5


def test_slanted_planes_place_an_oblique_wall_more_exactly() -> None:
    """A wall seen 55 degrees off its normal: fronto-parallel windows straddle depths, tilted planes fit it (the
    sweep alone: PatchMatch refinement would find the slant from either start)."""
    views = [_oblique_view(a) for a in (49, 55, 61)]
    images, cams = [v[0] for v in views], [v[1] for v in views]
    bounds = np.array([[-3.0, -3.0, -1.0], [3.0, 3.0, 1.0]])

    def median_error(slant: float) -> tuple[float, float]:
        depths = stereo_depths(images, cams, bounds, StereoSettings(max_side=96, slant_deg=slant, refine_iters=0))
        errors = []
        for sd in depths:
            truth, ok = _true_depth(sd.camera), sd.valid
            errors.append(np.abs(sd.depth[ok] - truth[ok]) / truth[ok])
        return float(np.median(np.concatenate(errors))), float(np.mean([sd.valid.mean() for sd in depths]))

    (flat, flat_cover), (slanted, slanted_cover) = median_error(0.0), median_error(30.0)
    assert slanted < 0.75 * flat and slanted < 0.01
    assert slanted_cover >= flat_cover


def test_source_views_are_the_nearest_directions() -> None:
    cams = [_oblique_view(a)[1] for a in (0, 10, 50, 20, 90)]
    assert source_views(cams, 0, 0) == [1, 2, 3, 4]
    assert source_views(cams, 0, 2) == [1, 3]
    assert source_views(cams, 2, 1) == [3]


def test_untextured_views_give_no_trusted_depth() -> None:
    views = [_view(x, textured=False) for x in (-0.4, 0.0, 0.45)]
    bounds = np.array([[-2.0, -2.0, -1.0], [2.0, 2.0, 1.0]])
    depths = stereo_depths([v[0] for v in views], [v[1] for v in views], bounds, StereoSettings(max_side=96))
    assert all(not sd.valid.any() for sd in depths)
    xyz, _ = stereo_points(depths, [v[0] for v in views], 100, np.random.default_rng(0))
    assert len(xyz) == 0


def test_depth_range_of_the_working_volume_and_behind_the_camera() -> None:
    _, cam = _view(0.0)
    near, far = depth_range(cam, np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    assert near == pytest.approx(2.0, abs=0.2) and far == pytest.approx(4.0, abs=0.3)
    with pytest.raises(ValueError):
        depth_range(cam, np.array([[-1.0, -1.0, -9.0], [1.0, 1.0, -8.0]]))


def test_free_space_flags_points_in_front_of_the_trusted_wall_only() -> None:
    from priors.stereo import StereoDepth, in_free_space

    _, cam = _view(0.0)
    depth = _true_depth(cam).astype(np.float32)
    conf = np.ones_like(depth)
    conf[:, : cam.width // 2] = 0.0  # the left half is untrusted: no verdict there
    sd = StereoDepth(cam, np.where(conf > 0, depth, 0.0).astype(np.float32), conf, (2.0, 4.0))
    right = cam.unproject(np.array([[70.5, 36.5]]), np.array([1.0]))[0]  # a ray through the trusted half
    left = cam.unproject(np.array([[20.5, 36.5]]), np.array([1.0]))[0]
    d_right = float(depth[36, 70])
    points = np.stack(
        [
            cam.center + (right - cam.center) * 0.6 * d_right,  # well in front of the wall: seen through
            cam.center + (right - cam.center) * 0.99 * d_right,  # on the wall (within the margin)
            cam.center + (right - cam.center) * 1.5 * d_right,  # behind it: hidden, not free space
            cam.center + (left - cam.center) * 0.6 * float(depth[36, 20]),  # in front, but where depth is unknown
        ]
    )
    assert in_free_space(points, [sd], margin=0.05).tolist() == [True, False, False, False]
