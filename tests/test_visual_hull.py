"""Visual hull: carve analytic sphere silhouettes, check containment, volume, sampling, colours, view counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from priors.visual_hull import VisualHull, carve_visual_hull, floater_mask, views_seeing
from recon.cameras import Camera, intrinsics

CENTRE = np.array([0.1, -0.2, 0.05])
RADIUS = 1.0
SIZE = 64


def _cameras(n: int, dist: float = 4.0, forward_facing: bool = False) -> list[Camera]:
    """n look-at cameras on a sphere around CENTRE (Fibonacci directions), or on a +-30 degree arc."""
    K = intrinsics(1.4 * SIZE, 1.4 * SIZE, SIZE / 2, SIZE / 2)
    cams = []
    for i in range(n):
        if forward_facing:
            a = math.radians(-30 + 60 * i / max(n - 1, 1))
            d = np.array([math.sin(a), 0.15 * (i % 2), -math.cos(a)])
        else:
            z = 1 - 2 * (i + 0.5) / n
            phi = i * math.pi * (3 - math.sqrt(5))
            d = np.array([math.sqrt(1 - z * z) * math.cos(phi), math.sqrt(1 - z * z) * math.sin(phi), z])
        eye = CENTRE + dist * d / np.linalg.norm(d)
        up = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 * np.linalg.norm(d) else np.array([0.0, 1.0, 0.0])
        cams.append(Camera.look_at(eye, CENTRE, up, K, SIZE, SIZE))
    return cams


def _render(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Analytic sphere: mask (ray hits the sphere) and colour (red where the hit has x > centre, else blue)."""
    o, d = cam.rays_world()
    oc = o - CENTRE
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - RADIUS**2)
    hit = disc >= 0
    t = -b - np.sqrt(np.maximum(disc, 0))
    p = o + t[..., None] * d
    img = np.zeros((cam.height, cam.width, 3), np.float32)
    img[hit & (p[..., 0] > CENTRE[0])] = (1.0, 0.0, 0.0)
    img[hit & (p[..., 0] <= CENTRE[0])] = (0.0, 0.0, 1.0)
    return hit.astype(np.float32), img


def _uniform_ball(n: int, radius: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return CENTRE + d * radius * rng.uniform(0, 1, (n, 1)) ** (1 / 3)


def _sphere_shell(n: int, radius: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    return CENTRE + radius * d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def hull8() -> tuple[VisualHull, list[Camera], list[np.ndarray]]:
    cams = _cameras(8)
    rendered = [_render(c) for c in cams]
    masks = [m for m, _ in rendered]
    images = [im for _, im in rendered]
    return carve_visual_hull(masks, cams, resolution=64), cams, images


def test_hull_contains_sphere_and_volume_is_tight(hull8) -> None:
    hull, _, _ = hull8
    inside = _uniform_ball(3000, RADIUS)
    assert bool(hull.contains(inside, dilate_voxels=0).all())
    assert bool(hull.contains(_sphere_shell(2000, 0.999 * RADIUS), dilate_voxels=0).all())
    true_volume = 4 / 3 * math.pi * RADIUS**3
    ratio = hull.volume / true_volume
    assert 1.0 < ratio < 2.0, ratio
    # Estimated bounds hug the object (not the whole camera rig).
    extent = hull.bounds[1] - hull.bounds[0]
    assert np.all(extent < 3.0 * RADIUS) and np.all(extent > 2.0 * RADIUS)
    far = _sphere_shell(500, 2.0 * RADIUS)
    assert not bool(hull.contains(far, dilate_voxels=1).any())
    assert not bool(hull.contains(CENTRE[None] + 100.0).any())  # outside the grid entirely


def test_fewer_views_give_a_larger_hull(hull8) -> None:
    cams = _cameras(3)
    hull3 = carve_visual_hull([_render(c)[0] for c in cams], cams, resolution=48)
    assert bool(hull3.contains(_uniform_ball(2000, RADIUS), dilate_voxels=0).all())
    assert hull3.volume > 1.2 * hull8[0].volume


def test_object_cropped_by_the_frame_is_kept() -> None:
    """Close cameras cut the sphere off at the image border; the extended silhouettes must not carve it."""
    cams = _cameras(6, dist=2.6)
    masks = [_render(c)[0] for c in cams]
    assert all(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() for m in masks)
    hull = carve_visual_hull(masks, cams, resolution=40)
    assert bool(hull.contains(_uniform_ball(2000, RADIUS), dilate_voxels=0).all())


def test_extended_silhouettes_carve_more_than_the_plain_rule() -> None:
    cams = _cameras(4)
    masks = [_render(c)[0] for c in cams]
    box = np.stack([CENTRE - 2.0, CENTRE + 2.0])
    tight = carve_visual_hull(masks, cams, resolution=40, bounds=box)
    loose = carve_visual_hull(masks, cams, resolution=40, bounds=box, extend_silhouettes=False)
    assert bool(tight.contains(_uniform_ball(1000, RADIUS), dilate_voxels=0).all())
    assert loose.volume > 1.5 * tight.volume
    assert bool(loose.occupancy[tight.occupancy].all())  # the plain rule only adds voxels


def test_forward_facing_cameras_and_explicit_bounds() -> None:
    cams = _cameras(4, forward_facing=True)
    masks = [_render(c)[0] for c in cams]
    hull = carve_visual_hull(masks, cams, resolution=48)
    assert not hull.is_empty
    assert bool(hull.contains(_uniform_ball(2000, RADIUS), dilate_voxels=0).all())
    box = np.stack([CENTRE - 1.5, CENTRE + 1.5])
    hull_b = carve_visual_hull(masks, cams, resolution=40, bounds=box)
    assert hull_b.shape == (40, 40, 40)
    assert np.allclose(hull_b.bounds, box)
    assert bool(hull_b.contains(_uniform_ball(2000, RADIUS), dilate_voxels=0).all())


def test_points_prefer_surface_and_lie_in_hull(hull8) -> None:
    hull, _, _ = hull8
    pts = hull.points(4000, surface_fraction=0.8, seed=3)
    assert pts.shape == (4000, 3) and pts.dtype == torch.float32
    assert bool(hull.contains(pts, dilate_voxels=0).all())
    r = torch.linalg.norm(pts - torch.as_tensor(CENTRE, dtype=torch.float32), dim=1)
    # Uniform in the ball would put ~49% beyond 0.8 R; surface preference puts most there.
    assert (r > 0.8 * RADIUS).float().mean() > 0.75
    assert len(torch.unique(pts, dim=0)) == 4000  # jittered: no duplicates
    assert torch.equal(pts, hull.points(4000, surface_fraction=0.8, seed=3))  # seeded
    assert hull.points(50).shape == (50, 3)


def test_colors_respect_occlusion(hull8) -> None:
    hull, cams, images = hull8
    for pts in (torch.as_tensor(_sphere_shell(1500, RADIUS), dtype=torch.float32), hull.points(1500)):
        red_side = pts[:, 0] > CENTRE[0] + 0.4
        blue_side = pts[:, 0] < CENTRE[0] - 0.4
        cols = hull.colors_from_images(pts, images)
        assert cols.shape == (1500, 3)
        assert cols[red_side, 0].mean() > 0.9 and cols[red_side, 2].mean() < 0.1
        assert cols[blue_side, 2].mean() > 0.9 and cols[blue_side, 0].mean() < 0.1
        # Without the depth test, back-facing views bleed the other side's colour in.
        naive = hull.colors_from_images(pts, images, occlusion=False)
        assert naive[red_side, 2].mean() > cols[red_side, 2].mean() + 0.1


def test_views_seeing_and_floaters(hull8) -> None:
    hull, cams, _ = hull8
    pts = torch.tensor(np.stack([CENTRE, CENTRE + [0.0, 0.0, 50.0], CENTRE + [1.8, 0.0, 0.0]]), dtype=torch.float32)
    counts = views_seeing(pts, cams)
    assert counts.dtype == torch.int64
    assert counts[0].item() == 8 and counts[1].item() == 0
    masks = [m > 0.5 for m in hull.masks]
    masked = views_seeing(pts, cams, masks)
    assert masked[0].item() == 8 and masked[2].item() < counts[2].item()
    bad = floater_mask(pts, hull, cams, min_views=2)
    assert bad.tolist() == [False, True, True]


def test_empty_masks_give_empty_hull_and_bad_inputs_raise() -> None:
    cams = _cameras(3)
    empty = [np.zeros((SIZE, SIZE), np.float32) for _ in cams]
    hull = carve_visual_hull(empty, cams, resolution=16)
    assert hull.is_empty and hull.points(10).shape == (0, 3)
    with pytest.raises(ValueError):
        carve_visual_hull(empty[:2], cams)
    with pytest.raises(ValueError):
        carve_visual_hull([np.zeros((SIZE, 2 * SIZE))] * 3, cams)


def test_points_accept_numpy_rng(hull8) -> None:
    hull, _, _ = hull8
    a = hull.points(100, rng=np.random.default_rng(5))
    b = hull.points(100, rng=np.random.default_rng(5))
    assert torch.equal(a, b) and not torch.equal(a, hull.points(100, rng=np.random.default_rng(6)))


def test_max_misses_tolerates_a_mask_missing_a_part() -> None:
    cams = _cameras(6)
    masks = [_render(c)[0] for c in cams]
    masks[0] = masks[0].copy()
    masks[0][:, : SIZE // 2] = 0.0  # one bad automatic mask: half the object missing
    ball = _uniform_ball(2000, RADIUS)
    strict = carve_visual_hull(masks, cams, resolution=40)
    tolerant = carve_visual_hull(masks, cams, resolution=40, max_misses=1)
    assert strict.contains(ball, dilate_voxels=0).float().mean() < 0.9
    assert bool(tolerant.contains(ball, dilate_voxels=0).all())
    assert tolerant.volume < 2.5 * 4 / 3 * math.pi * RADIUS**3
