"""reconstruct() with representation "mesh" and "hybrid" on a tiny generated scene: run folder, reload, scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recon.bench.evaluate import score_run
from recon.bench.geometry import mesh_scores
from recon.bench.synth import ground_truth_mesh, make_scene
from recon.config import make_config
from recon.pipeline import load_run_model, reconstruct
from renderers.mesh import MeshModel
from renderers.mesh.hybrid import HybridModel

SEED = 3


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "tiny"
    make_scene(path, seed=SEED, width=96, height=72, views="splits")
    return path


@pytest.mark.parametrize("representation", ["mesh", "hybrid"])
def test_reconstruct_mesh_and_hybrid(tiny_scene: Path, tmp_path: Path, representation: str) -> None:
    cfg = make_config(
        "fast",
        iterations=80,
        track=9,
        representation=representation,
        settings={
            "init.points": 1500,
            "init.hull_resolution": 48,
            "densify.refine_start_iter": 20,
            "densify.refine_every": 20,
            "train.sh_raise_every": 20,
            "mesh.faces": 3000,
            "mesh.hybrid_iterations": 15,
        },
    )
    out = tmp_path / "run"
    summary = reconstruct(tiny_scene, out, cfg)
    info = summary["mesh"]
    assert 0 < info["faces"] <= 3000 and (out / "mesh.ply").exists()
    model = load_run_model(out)
    if representation == "hybrid":
        assert isinstance(model, HybridModel) and (out / "splats.ply").exists()
        assert info["gaussians_after"] < info["gaussians_before"]
        assert summary["num_gaussians"] == info["gaussians_after"]
    else:
        assert isinstance(model, MeshModel)
    scores = score_run(out, tiny_scene, track=9)
    assert scores.mean["masked_psnr"] > 15.0
    v, f, _ = MeshModel.load(out / "mesh.ply").numpy()
    geo = mesh_scores((v, f), ground_truth_mesh(SEED), n_points=20000)
    assert geo.chamfer < 0.1 * geo.gt_diagonal and geo.fscore > 0.1
    assert json.loads((out / "config.json").read_text())["representation"] == representation
