"""Mesh extraction from Gaussians (TSDF and Poisson) and the geometry scores."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import torch

from recon.bench.geometry import mesh_scores
from recon.cameras import Camera, intrinsics
from renderers.gaussians import GaussianModel
from renderers.mesh.extract import extract_mesh, orbit_cameras

RADIUS = 0.5


def _sphere_gaussians(n: int = 16000) -> GaussianModel:
    """Opaque flat Gaussians tangent to a sphere of radius 0.5 at the origin (like trained surface splats)."""
    rng = np.random.default_rng(0)
    nrm = rng.normal(size=(n, 3))
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    nrm[nrm[:, 2] < -0.999] = [0.0, 0.0, 1.0]  # avoid the one degenerate rotation below
    p = RADIUS * nrm
    model = GaussianModel.from_points(p, 0.5 + 0.4 * nrm, sh_degree=0, init_opacity=0.95)
    with torch.no_grad():  # disc-shaped: rotate local z onto the normal, flatten along it
        q = torch.tensor(np.stack([1.0 + nrm[:, 2], -nrm[:, 1], nrm[:, 0], np.zeros(n)], axis=1), dtype=torch.float32)
        model.splats["quats"].copy_(torch.nn.functional.normalize(q, dim=1))
        disc = float(np.sqrt(4 * np.pi * RADIUS**2 / n))
        model.splats["scales"].copy_(torch.log(torch.tensor([disc, disc, 1e-3])).expand(n, 3))
    return model


def _ring(n: int = 8, w: int = 160, h: int = 120) -> list[Camera]:
    K = intrinsics(140.0, 140.0, w / 2, h / 2)
    cams = []
    for k in range(n):
        a = 2 * np.pi * k / n
        e = 0.5 if k % 2 else -0.2
        eye = 2.0 * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        cams.append(Camera.look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]), K, w, h))
    return cams


def _sphere_mesh() -> tuple[np.ndarray, np.ndarray]:
    m = o3d.geometry.TriangleMesh.create_sphere(RADIUS, resolution=40)
    return np.asarray(m.vertices), np.asarray(m.triangles)


@pytest.mark.parametrize("method", ["tsdf", "poisson"])
def test_extraction_recovers_sphere(method: str) -> None:
    model = _sphere_gaussians()
    mesh = extract_mesh(model, _ring(), method=method, target_faces=4000, extra_views=False)
    assert 0 < mesh.num_faces <= 4000
    assert mesh.extraction.method == method
    v, f, c = mesh.numpy()
    scores = mesh_scores((v, f), _sphere_mesh(), n_points=20000)
    assert scores.chamfer < 0.02  # 1.2% of the diagonal (1.73)
    assert scores.fscore > 0.6
    # vertex colours follow the Gaussians' colour ramp (x -> red)
    corr = np.corrcoef(v[:, 0], c[:, 0])[0, 1]
    assert corr > 0.8


def test_orbit_cameras_look_at_the_target() -> None:
    cams = orbit_cameras(_ring(), n_azimuth=6, n_elevation=2)
    assert len(cams) == 12
    for cam in cams:
        uv, z = cam.project(np.zeros((1, 3)))
        assert z[0] > 0 and np.allclose(uv[0], [cam.cx, cam.cy], atol=1e-6)


def test_geometry_scores_self_and_shifted() -> None:
    gt = _sphere_mesh()
    same = mesh_scores(gt, gt, n_points=5000)
    assert same.chamfer == 0.0 and same.fscore == 1.0
    shifted = mesh_scores((gt[0] + np.array([0.05, 0.0, 0.0]), gt[1]), gt, n_points=5000)
    assert shifted.chamfer > 0.005 and shifted.fscore < 1.0
    assert shifted.threshold == pytest.approx(0.01 * same.gt_diagonal)
