"""MeshModel ray-cast rendering: conventions agree with the scene generator's own ray caster; colour gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.bench.synth import ground_truth_mesh, synthesize
from recon.cameras import Camera, intrinsics
from renderers.mesh import MeshModel


def _affine_colors(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A colour that is an affine function of position: barycentric interpolation reproduces it exactly."""
    return (points - lo) / (hi - lo)


@pytest.mark.parametrize("seed,view", [(3, 24), (7, 5)])
def test_gt_mesh_render_matches_scene_generator(seed: int, view: int) -> None:
    """Depth, mask and colour of the ground-truth object mesh agree with the generator's pixel-centre rays."""
    scene = synthesize(seed, 160, 120, views=[view], antialias=1, keep_points=True)
    cam = scene.cameras[view]
    verts, tris = ground_truth_mesh(seed)
    lo, hi = verts.min(axis=0) - 1e-3, verts.max(axis=0) + 1e-3
    mesh = MeshModel(verts, tris, _affine_colors(verts, lo, hi))
    bg = np.array([0.2, 0.4, 0.6], dtype=np.float32)
    out = mesh.render(cam, background=torch.tensor(bg), render_mode="RGB+ED")

    gen_mask = scene.masks[view]
    ours_mask = out.alpha.numpy() > 0.5
    assert gen_mask.sum() > 500  # the objects are in view
    assert np.mean(gen_mask != ours_mask) < 1 / 255

    both = gen_mask & ours_mask
    depth_err = np.abs(out.depth.numpy()[both] - scene.depths[view][both])
    assert depth_err.mean() < 1e-4 and np.median(depth_err) < 1e-5

    pts = np.nan_to_num(scene.points[view])
    expected = np.where(gen_mask[..., None], _affine_colors(pts, lo, hi), bg[None, None]).astype(np.float32)
    diff = np.abs(out.rgb.detach().numpy() - expected)
    assert diff.mean() < 1 / 255
    assert diff[both].mean() < 1e-3


def _square_mesh() -> MeshModel:
    """A unit square at z = 2 in front of a camera at the origin looking down +z, two triangles."""
    v = np.array([[-1, -1, 2], [1, -1, 2], [1, 1, 2], [-1, 1, 2]], dtype=np.float64)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    c = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=np.float64)
    return MeshModel(v, f, c)


def _camera(w: int = 32, h: int = 24) -> Camera:
    return Camera(K=intrinsics(20.0, 20.0, w / 2, h / 2), viewmat=np.eye(4), width=w, height=h)


def test_render_modes_and_camera_forms() -> None:
    mesh = _square_mesh()
    cam = _camera()
    out = mesh.render(cam, background=[0, 0, 0], render_mode="RGB+ED")
    assert out.rgb.shape == (24, 32, 3) and out.depth is not None
    hit = out.alpha > 0
    assert torch.allclose(out.depth[hit], torch.full_like(out.depth[hit], 2.0), atol=1e-5)
    assert float(out.depth[~hit].abs().max()) == 0.0 if bool((~hit).any()) else True
    pair = mesh.render((torch.tensor(cam.viewmat), torch.tensor(cam.K)), width=32, height=24, background=[0, 0, 0])
    assert torch.allclose(pair.rgb, out.rgb)
    batch = mesh.render([cam, cam], render_mode="RGB")
    assert batch.rgb.shape == (2, 24, 32, 3) and batch.depth is None
    with pytest.raises(ValueError):
        mesh.render(cam, render_mode="D")


def test_colour_gradients_and_fit() -> None:
    mesh = _square_mesh()
    cam = _camera()
    out = mesh.render(cam, background=[0, 0, 0])
    out.rgb.sum().backward()
    assert mesh.colors.grad is not None and bool((mesh.colors.grad > 0).all())
    mesh.colors.grad = None
    target = torch.full((24, 32, 3), 0.3)
    err = mesh.fit_colors([target], [cam])
    assert err < 0.02
    assert torch.allclose(mesh.colors.detach(), torch.full((4, 3), 0.3), atol=0.03)
