"""Gaussian + mesh hybrid: far-depth compositing, gradients, pruning, training hooks, run-folder round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from recon.cameras import Camera, intrinsics
from recon.pipeline import load_run_model
from renderers.gaussians import GaussianModel
from renderers.mesh import MeshModel
from renderers.mesh.hybrid import HybridModel
from renderers.mesh.io import read_glb, read_mesh, write_mesh

W, H = 32, 24


def _camera() -> Camera:
    return Camera(K=intrinsics(30.0, 30.0, W / 2, H / 2), viewmat=np.eye(4), width=W, height=H)


def _wall(color: tuple[float, float, float] = (0.0, 0.0, 1.0), z: float = 2.0) -> MeshModel:
    """A big blue square at depth z facing the camera (fills the whole image)."""
    v = np.array([[-5, -5, z], [5, -5, z], [5, 5, z], [-5, 5, z]], dtype=np.float64)
    return MeshModel(v, np.array([[0, 1, 2], [0, 2, 3]]), np.tile(color, (4, 1)))


def _gaussian_at(z: float, rgb: tuple[float, float, float] = (1.0, 0.0, 0.0)) -> GaussianModel:
    """One opaque red Gaussian on the optical axis at depth z (sigma 2 pixels)."""
    params = {
        "means": torch.tensor([[0.0, 0.0, z]]),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        "scales": torch.full((1, 3), math.log(2.0 * z / 30.0)),  # sigma = 2 pixels
        "opacities": torch.tensor([4.0]),
        "sh0": ((torch.tensor([rgb]) - 0.5) / 0.28209479177387814)[:, None, :],
        "shN": torch.zeros((1, 0, 3)),
    }
    return GaussianModel(params)


@torch.no_grad()
def test_gaussian_in_front_shows_behind_is_hidden() -> None:
    cam = _camera()
    front = HybridModel(_gaussian_at(1.0), _wall()).render(cam, background=[0, 0, 0])
    behind = HybridModel(_gaussian_at(3.0), _wall()).render(cam, background=[0, 0, 0])
    c = (H // 2, W // 2)
    assert front.rgb[c][0] > 0.9 and front.rgb[c][2] < 0.1  # red over blue
    assert torch.allclose(behind.rgb, torch.tensor([0.0, 0.0, 1.0]).expand(H, W, 3), atol=1e-6)  # all mesh
    assert torch.all(front.alpha == 1.0) and torch.all(behind.alpha == 1.0)
    assert front.depth is not None and float(front.depth[c]) < 1.1 and float(front.depth[0, 0]) == pytest.approx(2.0)
    # without a mesh hit the given background shows
    off = HybridModel(_gaussian_at(1.0), _wall(z=-2.0)).render(cam, background=[0, 1, 0])
    assert torch.allclose(off.rgb[0, 0], torch.tensor([0.0, 1.0, 0.0])) and float(off.alpha[0, 0]) < 0.01


def test_depth_tolerance_lets_gaussians_just_behind_show() -> None:
    cam = _camera()
    c = (H // 2, W // 2)
    hidden = HybridModel(_gaussian_at(2.05), _wall()).render(cam, background=[0, 0, 0])
    shown = HybridModel(_gaussian_at(2.05), _wall(), depth_tolerance=0.1).render(cam, background=[0, 0, 0])
    assert hidden.rgb[c][0] < 0.01 and shown.rgb[c][0] > 0.9


def test_gradients_reach_gaussians_and_vertex_colours() -> None:
    model = HybridModel(_gaussian_at(1.0), _wall())
    out = model.render(_camera(), background=torch.zeros(3), render_mode="RGB+ED")
    (out.rgb.sum() + out.depth.sum()).backward()
    assert model.splats["sh0"].grad is not None and float(model.splats["sh0"].grad.abs().sum()) > 0
    assert model.splats["means"].grad is not None
    assert model.mesh.colors.grad is not None and float(model.mesh.colors.grad.abs().sum()) > 0
    assert "means2d" in out.meta  # the densify strategy reads the rasteriser's meta
    opts = model.make_optimizers(scene_scale=1.0)
    assert "mesh_colors" in opts and "means" in opts
    model.active_sh_degree = 3
    assert model.active_sh_degree == model.sh_degree == 0


def test_pruning_drops_hidden_gaussians_only() -> None:
    both = _gaussian_at(1.0)
    other = _gaussian_at(3.0)
    params = {k: torch.cat([both.splats[k].detach(), other.splats[k].detach()]) for k in both.splats.keys()}
    model = HybridModel(GaussianModel(params), _wall())
    hidden = model.hidden_mask([_camera()], min_weight=0.5)
    assert hidden.tolist() == [False, True]
    w = model.contribution([_camera()])
    assert float(w[0]) > 5.0 and float(w[1]) == 0.0


def test_run_folder_round_trip(tmp_path) -> None:
    model = HybridModel(_gaussian_at(1.0), _wall((0.2, 0.4, 0.6)), depth_tolerance=0.05)
    files = model.save_run_files(tmp_path)
    assert sorted(files) == ["hybrid.json", "mesh.ply", "splats.ply"]
    (tmp_path / "config.json").write_text(json.dumps({"representation": "hybrid"}))
    back = load_run_model(tmp_path)
    assert isinstance(back, HybridModel) and back.depth_tolerance == pytest.approx(0.05)
    a = model.render(_camera(), background=[0, 0, 0]).rgb.detach()
    b = back.render(_camera(), background=[0, 0, 0]).rgb.detach()
    assert torch.allclose(a, b, atol=1e-5)
    (tmp_path / "config.json").write_text(json.dumps({"representation": "mesh"}))
    mesh = load_run_model(tmp_path)
    assert isinstance(mesh, MeshModel) and mesh.num_faces == 2


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_mesh_files_round_trip(tmp_path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(10, 3))
    f = np.array([[0, 1, 2], [2, 3, 4], [5, 6, 7], [7, 8, 9]])
    c = rng.uniform(size=(10, 3))
    path = write_mesh(tmp_path / f"m{suffix}", v, f, c)
    v2, f2, c2 = read_glb(path) if suffix == ".glb" else read_mesh(path)
    assert np.allclose(v2, v, atol=1e-5) and np.array_equal(f2, f)
    assert c2 is not None and np.allclose(c2, c, atol=1 / 255 + 1e-6)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_read_mesh_reports_missing_file(tmp_path) -> None:
    from recon.errors import ReconInputError

    with pytest.raises(ReconInputError, match="not found"):
        read_mesh(tmp_path / "nope.ply")


def test_export_run_mesh(tmp_path) -> None:
    from recon.errors import ReconInputError
    from renderers.mesh.io import export_run_mesh

    _wall().save_run_files(tmp_path)
    path, faces = export_run_mesh(tmp_path, tmp_path / "out" / "scene.ply", fmt="glb")
    assert path.name == "scene.glb" and faces == 2 and read_glb(path)[1].shape == (2, 3)
    with pytest.raises(ReconInputError, match="unknown mesh format"):
        export_run_mesh(tmp_path, tmp_path / "x.stl", fmt="stl")
    with pytest.raises(ReconInputError, match="no mesh.ply"):
        export_run_mesh(tmp_path / "out", tmp_path / "y.obj")
