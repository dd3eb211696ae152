"""The representation registry: adding one is one entry; every built-in one satisfies the protocols."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recon import representations
from recon.config import make_config
from recon.errors import ReconInputError
from recon.pipeline import load_run_model, reconstruct
from recon.representations import REPRESENTATIONS, Representation
from recon.run_folder import RunFolder
from renderers.gaussians import GaussianModel
from renderers.mesh import MeshModel
from renderers.mesh.hybrid import HybridModel
from renderers.neural import NeuralPrimitives
from renderers.types import Renderer, TrainableSplats


def test_built_in_models_satisfy_the_protocols() -> None:
    g = GaussianModel.from_points(np.random.default_rng(0).normal(size=(8, 3)), sh_degree=1)
    n = NeuralPrimitives.from_gaussians(g, feature_dim=4)
    mesh = MeshModel(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float), np.array([[0, 1, 2]]))
    h = HybridModel(g.copy(), mesh)
    for model in (g, n, h):
        assert isinstance(model, TrainableSplats), type(model).__name__
    assert isinstance(mesh, Renderer) and not isinstance(mesh, TrainableSplats)
    assert set(REPRESENTATIONS) == {"gaussians", "mesh", "hybrid", "neural"}


def test_a_fifth_representation_is_one_registry_entry(
    tiny_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []

    def create(init, config):  # Gaussians whose colour stays view-independent
        made.append(init.model.num_gaussians)
        return GaussianModel({k: v.detach() for k, v in init.model.splats.items()}, active_sh_degree=0)

    entry = Representation(
        "flat", create, REPRESENTATIONS["gaussians"].load, lambda s: f"{s['num_gaussians']} flat Gaussians"
    )
    monkeypatch.setitem(representations.REPRESENTATIONS, "flat", entry)
    cfg = make_config("fast", iterations=5, track=3, representation="flat", settings={"init.points": 300})
    summary = reconstruct(tiny_scene, tmp_path / "run", cfg)
    assert made == [300] and summary["representation"] == "flat"
    assert RunFolder(tmp_path / "run").representation() == "flat"
    assert isinstance(load_run_model(tmp_path / "run"), GaussianModel)
    assert entry.describe(summary) == f"{summary['num_gaussians']} flat Gaussians"


def test_unknown_representation_in_a_run_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"representation": "voxels"}')
    with pytest.raises(ReconInputError, match="unknown representation 'voxels'"):
        load_run_model(tmp_path)
    with pytest.raises(ValueError, match="representation must be one of"):
        make_config("fast", representation="voxels")
