"""Test-view pose fitting (pose-free evaluation): perturbed test cameras are pulled back to the true ones."""

from __future__ import annotations

import numpy as np
import torch

from recon.bench.pose_free import fit_test_cameras
from recon.cameras import Camera, intrinsics
from recon.io.types import ViewSet
from recon.poses import Similarity, pose_errors
from recon.poses.refine import so3_exp
from renderers.gaussians.model import GaussianModel

_IDENTITY = Similarity(1.0, np.eye(3), np.zeros(3))


def _cloud(seed: int = 0) -> GaussianModel:
    """A textured ball of opaque Gaussians (random colours give the photometric loss something to hold)."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(3000, 3))
    xyz = 0.6 * xyz / np.linalg.norm(xyz, axis=1, keepdims=True) * rng.uniform(0.8, 1.0, size=(3000, 1))
    return GaussianModel.from_points(xyz, rng.random((3000, 3)), sh_degree=0, init_scale=0.7, init_opacity=0.9)


def _cameras() -> list[Camera]:
    K = intrinsics(90.0, 90.0, 40.0, 30.0)
    out = []
    for k, az in enumerate((0.3, 1.9, 3.7)):
        eye = np.array([2.2 * np.cos(az), 2.2 * np.sin(az), 0.5])
        out.append(Camera.look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]), K, 80, 60, name=f"t{k}"))
    return out


def _perturb(c: Camera, deg: float, shift: float, seed: int) -> Camera:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    w = np.radians(deg) * axis / np.linalg.norm(axis)
    V = c.viewmat.copy()
    V[:3, :3] = so3_exp(torch.tensor(w[None])).numpy()[0] @ V[:3, :3]
    V[:3, 3] += shift * rng.normal(size=3) / np.sqrt(3)
    return Camera(K=c.K.copy(), viewmat=V, width=c.width, height=c.height, name=c.name)


def test_fitting_pulls_perturbed_test_cameras_back_and_leaves_the_model_alone() -> None:
    model = _cloud()
    truth = _cameras()
    with torch.no_grad():
        images = [model.render(c, background=torch.zeros(3), render_mode="RGB").rgb.clamp(0, 1).numpy() for c in truth]
    masks = [np.ones(im.shape[:2], dtype=np.float32) for im in images]
    start = [_perturb(c, 2.0, 0.03, k) for k, c in enumerate(truth)]
    test = ViewSet(
        names=[c.name for c in truth], images=images, cameras=start, masks=masks, source="synthetic", meta={}
    )
    before = {k: v.detach().clone() for k, v in model.splats.items()}
    fitted, report = fit_test_cameras(model, test, steps=120, lr=3e-3)
    e0 = pose_errors(start, truth, sim=_IDENTITY)
    e1 = pose_errors(fitted, truth, sim=_IDENTITY)
    assert e0["rotation_deg"].min() > 1.5
    assert e1["rotation_deg"].max() < 0.5 * e0["rotation_deg"].min(), (e0, e1)
    assert all(a < b for a, b in zip(report["l1_after"], report["l1_before"]))
    assert all(torch.equal(before[k], v) for k, v in model.splats.items())
    assert all(p.requires_grad for p in model.parameters())  # frozen only while fitting
    assert [c.name for c in fitted] == test.names and np.allclose(fitted[0].K, start[0].K)


def test_fit_scores_only_the_masked_object_when_the_model_also_renders_a_background() -> None:
    """A scene-mode reconstruction renders the background too; the fit must look at the masked object only, as
    the masked metric does, and not pull the cameras towards rendering the background black."""
    ball = _cloud()
    rng = np.random.default_rng(5)
    far = rng.normal(size=(3000, 3))
    far = 6.0 * far / np.linalg.norm(far, axis=1, keepdims=True)  # a bright shell around the cameras
    xyz = np.concatenate([ball.splats["means"].detach().numpy(), far])
    rgb = np.concatenate([rng.random((3000, 3)), 0.8 + 0.2 * rng.random((3000, 3))])
    scene = GaussianModel.from_points(xyz, rgb, sh_degree=0, init_scale=0.7, init_opacity=0.9)
    truth = _cameras()
    with torch.no_grad():
        images = [scene.render(c, background=torch.zeros(3), render_mode="RGB").rgb.clamp(0, 1).numpy() for c in truth]
        masks = [
            (ball.render(c, background=torch.zeros(3), render_mode="RGB").alpha > 0.5).float().numpy().reshape(60, 80)
            for c in truth
        ]
    assert all(0.05 < m.mean() < 0.8 for m in masks)
    start = [_perturb(c, 2.0, 0.03, k) for k, c in enumerate(truth)]
    test = ViewSet(names=[c.name for c in truth], images=images, cameras=start, masks=masks, source="s", meta={})
    fitted, _ = fit_test_cameras(scene, test, steps=200, lr=3e-3)
    e0 = pose_errors(start, truth, sim=_IDENTITY)
    e1 = pose_errors(fitted, truth, sim=_IDENTITY)
    assert e1["rotation_deg"].max() < 0.5 * e0["rotation_deg"].min(), (e0, e1)
