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
from recon.poses import (
    PoseResult,
    Similarity,
    align_cameras,
    estimate_poses,
    pose_errors,
    transform_camera,
    umeyama,
)
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
    res = estimate_poses(_unposed(v), method="own", focal_px=v.cameras[0].fx)
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
    res = estimate_poses(u, method="own", focal_px=v.cameras[0].fx)
    assert res.failed == ["noise.png"]
    assert len(res.registered) == 3 and len(res.cameras) == 3


def test_featureless_images_fail_with_a_clear_error(tmp_path: Path) -> None:
    grey = [np.full((60, 80, 3), 0.5, dtype=np.float32) for _ in range(3)]
    u = ViewSet(names=["a.png", "b.png", "c.png"], images=grey, cameras=None, source=tmp_path, meta={})
    with pytest.raises(ReconInputError, match="pose estimation failed"):
        estimate_poses(u)


def test_pose_correction_focal_scale_gets_gradients_and_reaches_the_cameras(scene: Path) -> None:
    cams = read_spare_scene(scene, track=3, split="train").cameras
    corr = PoseCorrection(cams, refine_focal=True)
    K = torch.tensor(cams[0].K, dtype=torch.float32)
    assert torch.allclose(corr.scale_K(K), K)  # starts at identity
    corr.scale_K(K)[0, 0].backward()
    assert corr.log_focal.grad is not None and float(corr.log_focal.grad) == pytest.approx(cams[0].fx, rel=1e-5)
    with torch.no_grad():
        corr.log_focal.fill_(np.log(1.05))
    out = corr.cameras(cams)
    assert out[1].fx == pytest.approx(1.05 * cams[1].fx, rel=1e-5) and out[1].K[0, 2] == cams[1].K[0, 2]
    groups = corr.param_groups(1e-4)
    assert [g["lr"] for g in groups] == [1e-4, 2e-3]
    assert len(PoseCorrection(cams, refine_focal=False).param_groups(1e-4)) == 1


def _orbit(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cameras on a 100-degree arc at two elevations looking at a 2-unit cube of points 4 units away."""
    import cv2

    from recon.cameras import Camera

    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1, 1, size=(300, 3))
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    cams = []
    for k in range(n):
        az = np.radians(-50 + 100 * k / (n - 1))
        el = np.radians(15 if k % 2 else 45)
        eye = 4 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        V = Camera.look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]), K, 320, 240).viewmat
        cams.append(np.concatenate([cv2.Rodrigues(V[:3, :3])[0].ravel(), V[:3, 3]]))
    return np.stack(cams), np.stack([K] * n), pts


def test_bundle_adjustment_recovers_a_wrong_focal() -> None:
    from recon.poses.bundle_adjustment import Observations, bundle_adjust, project, reprojection_errors

    cams, Ks, pts = _orbit()
    n = len(cams)
    cam = np.repeat(np.arange(n), len(pts))
    pt = np.tile(np.arange(len(pts)), n)
    xy = project(cams, Ks, pts, Observations(cam, pt, np.zeros((len(cam), 2))))
    obs = Observations(cam, pt, xy)
    rng = np.random.default_rng(1)
    c0 = cams.copy()
    c0[1:] += rng.normal(scale=[0.01] * 3 + [0.03] * 3, size=(n - 1, 6))
    K0 = Ks.copy()
    K0[:, 0, 0] *= 0.9  # 10% too short, as a default field of view typically is
    K0[:, 1, 1] *= 0.9
    c, p, K = bundle_adjust(
        c0, K0, pts + rng.normal(scale=0.02, size=pts.shape), obs, fixed=[0], refine_focal=True, max_nfev=200
    )
    assert K[0, 0, 0] == pytest.approx(300.0, rel=0.01)
    assert np.sqrt(np.mean(reprojection_errors(c, K, p, obs) ** 2)) < 0.05


def test_bundle_adjustment_walks_the_focal_valley_from_a_structure_fitted_to_the_wrong_focal(scene: Path) -> None:
    """What the pipeline meets: real matches, poses and points already adjusted to a focal 10% short (a local
    optimum where the focal trades off against distance). Freeing the focal must reach the true one; a
    trust-region solver with an inexact inner solve (scipy least_squares + LSMR) stayed at its start here."""
    from recon.poses import estimate as E
    from recon.poses.bundle_adjustment import bundle_adjust

    v = read_spare_scene(scene, track=9, split="train")
    f_true = v.cameras[0].fx
    Ks, _ = E._intrinsics(v, f_true, 50.0)
    feats = [E.detect(im) for im in v.images]
    putative: dict = {}
    pairs = E.consistent_pairs(E.match_all(feats, Ks, putative=putative))
    m, _, sfm = E._sfm(feats, pairs, Ks, refine_focal=False, putative=putative, reachable=len(v))
    obs, cam_list, trk = sfm._observations(m)
    cams = np.stack([m.cams[i] for i in cam_list])
    K0 = sfm.Ks[cam_list].copy()
    K0[:, :2, :2] *= 0.9
    c1, p1, _ = bundle_adjust(cams, K0, m.xyz[np.asarray(trk)], obs, fixed=[0])  # settle at the wrong focal
    _, _, K = bundle_adjust(c1, K0, p1, obs, fixed=[0], refine_focal=True, max_nfev=100)
    assert K[0, 0, 0] == pytest.approx(f_true, rel=0.02)


def test_tracks_join_pair_matches_and_drop_ambiguous_ones() -> None:
    from recon.poses.incremental import Tracks

    matches = {
        (0, 1): np.array([[0, 0], [1, 1], [2, 2]]),
        (1, 2): np.array([[0, 5], [1, 6]]),
        (0, 2): np.array([[1, 7]]),
    }  # keypoint 1 of image 0 reaches image 2 twice (6 and 7): ambiguous
    t = Tracks.build([3, 3, 8], matches)
    assert t.n == 2
    tr0 = t.lookup[0][0]
    assert tr0 >= 0 and t.lookup[1][0] == tr0 and t.lookup[2][5] == tr0
    assert t.lookup[0][1] == -1 and t.lookup[2][6] == -1 and t.lookup[2][7] == -1
    assert sorted(t.im[t.track == tr0].tolist()) == [0, 1, 2]


def test_guided_matching_finds_matches_along_epipolar_lines_only() -> None:
    from recon.poses.matching import guided_matches

    rng = np.random.default_rng(0)
    x1 = rng.uniform(-0.4, 0.4, (400, 2))
    x2 = rng.uniform(-0.4, 0.4, (500, 2))
    d1 = rng.normal(size=(400, 128)).astype(np.float32)
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    d2 = rng.normal(size=(500, 128)).astype(np.float32)
    d2 /= np.linalg.norm(d2, axis=1, keepdims=True)
    d2[:200] = d1[:200]
    x2[:100, 1] = x1[:100, 1]  # first 100 on their epipolar line (x translation: horizontal lines)
    x2[100:200, 1] = x1[100:200, 1] + 0.05  # the next 100 well off it
    E = np.array([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    g = guided_matches(x1, x2, d1, d2, E, 0.002)
    on_line = g[g[:, 0] < 100]
    assert len(on_line) >= 95 and np.all(on_line[:, 0] == on_line[:, 1])
    # keypoints 100-199 have their twin off the epipolar line: never matched to it
    off = g[(g[:, 0] >= 100) & (g[:, 0] < 200)]
    assert not np.any(off[:, 0] == off[:, 1])


def _fake_result(names: list[str], failed: list[str], method: str) -> PoseResult:
    from recon.cameras import Camera

    cams = [Camera(K=np.eye(3), viewmat=np.eye(4), width=4, height=3, name=n) for n in names]
    ident = Similarity(1.0, np.eye(3), np.zeros(3))
    return PoseResult(cams, list(names), failed, np.zeros((0, 3)), np.zeros((0, 3)), ident, method=method)


@pytest.mark.parametrize("global_registers", [3, 2, None])
def test_auto_falls_back_to_the_global_mapper_only_where_the_incremental_one_leaves_views_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, global_registers: int | None
) -> None:
    from recon.poses import colmap_runner

    names = ["a.png", "b.png", "c.png"]
    u = ViewSet(names=names, images=[np.zeros((3, 4, 3), np.float32)] * 3, cameras=None, source=tmp_path, meta={})
    monkeypatch.setattr(colmap_runner, "colmap_poses", lambda *a, **k: _fake_result(names[:2], ["c.png"], "inc"))

    def global_mapper(*a: object, **k: object) -> PoseResult:
        if global_registers is None:
            raise ReconInputError("no pair", tmp_path)
        return _fake_result(names[:global_registers], names[global_registers:], "glob")

    monkeypatch.setattr(colmap_runner, "global_poses", global_mapper)
    res = estimate_poses(u)
    assert res.method == ("glob" if global_registers == 3 else "inc")  # a tie keeps the incremental mapper's
    assert len(res.registered) == (3 if global_registers == 3 else 2)
    # every view registered by the incremental mapper: the global one is not run
    monkeypatch.setattr(colmap_runner, "colmap_poses", lambda *a, **k: _fake_result(names, [], "inc"))
    monkeypatch.setattr(colmap_runner, "global_poses", lambda *a, **k: pytest.fail("global mapper run needlessly"))
    assert estimate_poses(u).method == "inc"
    # neither mapper registers a pair: one clear error naming the folder
    monkeypatch.setattr(colmap_runner, "colmap_poses", lambda *a, **k: _raise(tmp_path))
    monkeypatch.setattr(colmap_runner, "global_poses", lambda *a, **k: _raise(tmp_path))
    with pytest.raises(ReconInputError, match="neither of pycolmap's mappers"):
        estimate_poses(u)


def _raise(path: Path) -> PoseResult:
    raise ReconInputError("no pair", path)


def test_global_mapper_poses_three_generated_views_without_a_focal(scene: Path) -> None:
    """pycolmap's global mapper from the focal sweep (no focal given) registers the 3-view track, cameras scaled
    back to the input size, focal found by bundle adjustment."""
    from recon.poses.colmap_runner import global_poses

    v = read_spare_scene(scene, track=3, split="train")
    res = global_poses(_unposed(v))
    assert res.failed == [] and res.info["focal_prior"] == "none"
    ref = [v.cameras[v.names.index(n)] for n in res.registered]
    assert np.median(pose_errors(res.cameras, ref)["rotation_deg"]) < 2.0
    assert res.cameras[0].fx == pytest.approx(v.cameras[0].fx, rel=0.1)
    assert (res.cameras[0].width, res.cameras[0].height) == (240, 180)


def test_pycolmap_sparse_settings_register_three_generated_views(scene: Path) -> None:
    """pycolmap with the few-view settings (images upsampled for SIFT, cameras scaled back) on 3 views."""
    from recon.poses.colmap_runner import SPARSE, colmap_poses

    v = read_spare_scene(scene, track=3, split="train")
    res = colmap_poses(_unposed(v), focal_px=v.cameras[0].fx, settings=SPARSE)
    assert res.failed == []
    ref = [v.cameras[v.names.index(n)] for n in res.registered]
    assert np.median(pose_errors(res.cameras, ref)["rotation_deg"]) < 1.0
    c = res.cameras[0]
    assert (c.width, c.height) == (240, 180) and c.fx == pytest.approx(v.cameras[0].fx, rel=1e-6)
    assert c.cx == pytest.approx(120.0, abs=1e-6)


def test_affine_sift_keypoints_follow_colmap_conventions() -> None:
    """Keypoints at COLMAP's pixel-centre convention, strongest first, capped; RootSIFT as COLMAP's uint8."""
    from recon.poses.affine_features import affine_sift

    rng = np.random.default_rng(0)
    img = np.kron(rng.random((24, 32)), np.ones((8, 8)))  # 192x256 blocky texture: plenty of corners
    kps, desc = affine_sift(img, max_tilt=1, max_features=300)
    assert kps.shape == (300, 4) and kps.dtype == np.float32 and desc.shape == (300, 128) and desc.dtype == np.uint8
    assert (kps[:, 0] > 0).all() and (kps[:, 0] < 256).all() and (kps[:, 1] < 192).all()
    # RootSIFT has unit L2 norm, so x512 in uint8 has a norm near 512 (clipping only lowers it)
    norms = np.linalg.norm(desc.astype(np.float64), axis=1)
    assert np.all(norms > 400) and np.all(norms < 520)
    tilted, _ = affine_sift(img, max_tilt=3, max_features=100000)
    assert len(tilted) > len(affine_sift(img, max_tilt=1, max_features=100000)[0])  # simulated tilts add keypoints


def test_pycolmap_on_imported_affine_features_registers_three_generated_views(scene: Path) -> None:
    """COLMAP's matching and mapping on ASIFT keypoints imported into its database (SPARSE_AFFINE)."""
    from dataclasses import replace

    from recon.poses.colmap_runner import SPARSE_AFFINE, colmap_poses

    v = read_spare_scene(scene, track=3, split="train")
    settings = replace(SPARSE_AFFINE, affine_tilt=2.0, max_features=3000)
    res = colmap_poses(_unposed(v), focal_px=v.cameras[0].fx, settings=settings)
    assert res.failed == []
    ref = [v.cameras[v.names.index(n)] for n in res.registered]
    assert np.median(pose_errors(res.cameras, ref)["rotation_deg"]) < 1.0
