"""PatchMatch refinement of the sweep's planes (priors.stereo_refine): a slanted wall's normal and depth found
from fronto-parallel starting planes, a correct plane spreading from a few pixels to its neighbours, the
geometric term's reprojection error, and the full stereo with both passes staying accurate."""

from __future__ import annotations

import numpy as np
import torch

from priors.stereo import StereoSettings, stereo_depths, sweep
from priors.stereo_refine import _PlaneScorer, refine_planes
from recon.cameras import Camera
from tests.test_stereo import PLANE_Z, _oblique_view, _true_depth


def _gray(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2).astype(np.float32)


def _wall_plane(cam: Camera) -> tuple[np.ndarray, float]:
    """The wall z = PLANE_Z as n . X = d in ``cam``'s frame, n facing away from the camera (n_z > 0)."""
    n = cam.R @ np.array([0.0, 0.0, 1.0])
    d = float(n @ cam.t) + PLANE_Z * float(n @ (cam.R @ np.array([0.0, 0.0, 1.0])))
    if d < 0:
        n, d = -n, -d
    return n, d


def _wall_views() -> tuple[list[np.ndarray], list[Camera]]:
    views = [_oblique_view(a) for a in (49, 55, 61)]
    return [_gray(v[0]) for v in views], [v[1] for v in views]


def test_refinement_finds_the_slant_from_fronto_parallel_planes() -> None:
    images, cams = _wall_views()
    ref, ref_cam = images[1], cams[1]
    sources = [(images[0], cams[0]), (images[2], cams[2])]
    near_far = (1.5, 6.0)
    depth, score, normals = sweep(ref, ref_cam, sources, near_far, StereoSettings(slant_deg=0.0, refine_iters=0))
    truth = _true_depth(ref_cam)
    active = (score > -1) & (depth > 0)
    active[:6], active[-6:], active[:, :6], active[:, -6:] = False, False, False, False
    d2, s2, n2 = refine_planes(ref, ref_cam, sources, depth, normals, active, 9, iterations=6)
    before = np.median(np.abs(depth[active] - truth[active]) / truth[active])
    after = np.median(np.abs(d2[active] - truth[active]) / truth[active])
    assert after < 0.5 * before
    n_true, _ = _wall_plane(ref_cam)
    tilt = np.degrees(np.arccos(np.clip(n2[active] @ n_true, -1, 1)))
    assert np.median(tilt) < 10  # the wall is ~55 degrees off the fronto-parallel start
    assert np.median(s2[active]) > np.median(score[active])


def test_a_correct_plane_spreads_to_its_neighbours() -> None:
    images, cams = _wall_views()
    ref, ref_cam = images[1], cams[1]
    sources = [(images[0], cams[0]), (images[2], cams[2])]
    truth = _true_depth(ref_cam)
    h, w = ref.shape
    n_true, _ = _wall_plane(ref_cam)
    # everything starts fronto-parallel at a wrong depth, except a 4x4 patch that has the true plane
    depth = np.full((h, w), 2.0, dtype=np.float32)
    normals = np.tile(np.array([0.0, 0.0, 1.0], dtype=np.float32), (h, w, 1))
    cy, cx = h // 2, w // 2
    depth[cy - 2 : cy + 2, cx - 2 : cx + 2] = truth[cy - 2 : cy + 2, cx - 2 : cx + 2]
    normals[cy - 2 : cy + 2, cx - 2 : cx + 2] = n_true
    active = np.zeros((h, w), dtype=bool)
    active[8:-8, 8:-8] = True
    d2, _, _ = refine_planes(ref, ref_cam, sources, depth, normals, active, 9, iterations=4)
    right = np.abs(d2 - truth) / truth < 0.01
    yy, xx = np.mgrid[:h, :w]
    hops = np.maximum(np.abs(yy - cy + 0.5) - 2, 0) + np.maximum(np.abs(xx - cx + 0.5) - 2, 0)  # L1 from the patch
    assert right[hops <= 10].mean() > 0.9  # four rounds of +-1 / +-3 pixel hops reach 12 pixels (L1)
    assert (np.abs(depth - truth) / truth < 0.01)[hops <= 10].mean() < 0.1  # where it started


def test_reprojection_error_is_zero_on_the_true_surface_and_large_off_it() -> None:
    images, cams = _wall_views()
    ref, ref_cam = images[1], cams[1]
    pixels = torch.tensor([[40, 30], [50, 36], [60, 40]])
    geometry = [(_true_depth(c), c) for c in (cams[0], cams[2])]
    scorer = _PlaneScorer(ref, ref_cam, [(images[0], cams[0])], pixels, 9, 2, geometry=geometry)
    n_true, d_true = _wall_plane(ref_cam)
    n = torch.tensor(np.tile(n_true, (3, 1)))
    on = scorer.reprojection_error(n, torch.full((3,), d_true, dtype=torch.float64))
    off = scorer.reprojection_error(n, torch.full((3,), 0.7 * d_true, dtype=torch.float64))
    assert on.max() < 0.1 and off.min() > 1.5  # 30% nearer: well over a pixel between these views
    assert scorer.score(n, torch.full((3,), d_true, dtype=torch.float64)).min() > 0.9


def test_stereo_with_both_passes_stays_accurate() -> None:
    views = [_oblique_view(a) for a in (49, 55, 61)]
    images, cams = [v[0] for v in views], [v[1] for v in views]
    bounds = np.array([[-3.0, -3.0, -1.0], [3.0, 3.0, 1.0]])
    plain = stereo_depths(images, cams, bounds, StereoSettings(max_side=96, refine_iters=0))
    both = stereo_depths(images, cams, bounds, StereoSettings(max_side=96, refine_iters=3, geom_iters=2))
    for a, b in zip(plain, both):
        truth = _true_depth(b.camera)
        rel_a = np.abs(a.depth[a.valid] - truth[a.valid]) / truth[a.valid]
        rel_b = np.abs(b.depth[b.valid] - truth[b.valid]) / truth[b.valid]
        assert np.median(rel_b) < 0.8 * np.median(rel_a) and np.percentile(rel_b, 95) < np.percentile(rel_a, 95)
        assert b.valid.mean() >= 0.9 * a.valid.mean()
