"""Pose estimation for unposed views: alignment maths, SE(3) corrections, and SfM on a tiny generated scene."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recon.bench.synth import make_scene
from recon.errors import ReconInputError
from recon.io.spare import read_spare_scene
from recon.io.types import ViewSet
from recon.poses import Similarity, align_cameras, estimate_poses, pose_errors, transform_camera, umeyama
from recon.poses.refine import PoseCorrection, so3_exp


def _rot(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("poses") / "scene"
    make_scene(path, seed=101, width=240, height=180, views="splits", depth=False)
    return path


def _unposed(v: ViewSet) -> ViewSet:
    return ViewSet(names=list(v.names), images=list(v.images), cameras=None, source=v.source, meta={})


def test_umeyama_recovers_a_similarity() -> None:
    X = np.random.default_rng(0).normal(size=(20, 3))
    sim = Similarity(2.5, _rot(1), np.array([1.0, -2.0, 0.5]))
    est = umeyama(X, sim.apply(X))
    assert est.s == pytest.approx(2.5, rel=1e-9)
    assert np.allclose(est.R, sim.R, atol=1e-9) and np.allclose(est.t, sim.t, atol=1e-9)
    assert np.allclose(est.inverse().apply(sim.apply(X)), X, atol=1e-9)


def test_pose_errors_are_zero_after_any_similarity_and_see_a_rotation(scene: Path) -> None:
    gt = read_spare_scene(scene, track=9, split="train").cameras
    sim = Similarity(0.3, _rot(2), np.array([4.0, 1.0, -3.0]))
    moved = [transform_camera(c, sim) for c in gt]
    X = np.array([[0.1, 0.2, 0.3], [-0.2, 0.1, 0.0]])
    assert np.allclose(gt[0].project(X)[0], moved[0].project(sim.apply(X))[0], atol=1e-6)
    e = pose_errors(moved, gt)
    assert e["rotation_deg"].max() < 1e-4 and e["center"].max() < 1e-9
    # perturb one camera by 2 degrees: its error shows, the others stay ~0 (robust alignment)
    bad = list(moved)
    V = bad[4].viewmat.copy()
    V[:3, :3] = so3_exp(torch.tensor([[0.0, np.radians(2.0), 0.0]], dtype=torch.float64))[0].numpy() @ V[:3, :3]
    bad[4] = type(bad[4])(K=bad[4].K, viewmat=V, width=bad[4].width, height=bad[4].height)
    e = pose_errors(bad, gt, align_cameras(bad, gt))
    assert e["rotation_deg"][4] == pytest.approx(2.0, abs=0.05)
    assert np.delete(e["rotation_deg"], 4).max() < 1e-3


def test_pose_correction_starts_at_identity_and_gets_gradients(scene: Path) -> None:
    cams = read_spare_scene(scene, track=3, split="train").cameras
    corr = PoseCorrection(cams)
    assert torch.allclose(corr.viewmats(1), torch.tensor(cams[1].viewmat, dtype=torch.float32), atol=1e-6)
    loss = corr.viewmats(2)[:3, 3].sum() + corr.viewmats(2)[0, 1]
    loss.backward()
    assert corr.delta.grad is not None and corr.delta.grad[2].abs().sum() > 0 and corr.delta.grad[0].abs().sum() == 0
    with torch.no_grad():
        corr.delta[0, :3] = torch.tensor([0.0, 0.0, np.radians(3.0)])
    rot_deg, _ = corr.magnitudes()
    assert rot_deg[0] == pytest.approx(3.0, abs=1e-4)
    out = corr.cameras(cams)
    assert np.allclose(out[0].R @ out[0].R.T, np.eye(3), atol=1e-9)


def test_three_views_register_with_small_errors(scene: Path) -> None:
    v = read_spare_scene(scene, track=3, split="train")
    res = estimate_poses(_unposed(v), focal_px=v.cameras[0].fx)
    assert res.failed == [] and sorted(res.registered) == sorted(v.names)
    ref = [v.cameras[v.names.index(n)] for n in res.registered]
    e = pose_errors(res.cameras, ref)
    assert np.median(e["rotation_deg"]) < 3.0, e
    assert len(res.xyz) > 50 and res.xyz.shape == res.rgb.shape
    # normalised frame: the looked-at point at the origin, image "up" along +z, sparse points within a few units
    axes_meet = np.linalg.norm(np.median(res.xyz, axis=0))
    assert axes_meet < 1.0
    up = np.mean([-c.R[1] for c in res.cameras], axis=0)
    assert up[2] > 0.95 * np.linalg.norm(up)
    assert 0.5 < np.percentile(np.linalg.norm(res.xyz, axis=1), 80) < 2.0


def test_an_unmatchable_view_is_reported_by_name(scene: Path) -> None:
    v = read_spare_scene(scene, track=3, split="train")
    u = _unposed(v)
    noise = np.random.default_rng(0).random(u.images[0].shape).astype(np.float32)
    u.names.append("noise.png")
    u.images.append(noise)
    res = estimate_poses(u, focal_px=v.cameras[0].fx)
    assert res.failed == ["noise.png"]
    assert len(res.registered) == 3 and len(res.cameras) == 3


def test_featureless_images_fail_with_a_clear_error(tmp_path: Path) -> None:
    grey = [np.full((60, 80, 3), 0.5, dtype=np.float32) for _ in range(3)]
    u = ViewSet(names=["a.png", "b.png", "c.png"], images=grey, cameras=None, source=tmp_path, meta={})
    with pytest.raises(ReconInputError, match="pose estimation failed"):
        estimate_poses(u)
