"""Neural primitives through the pipeline: reconstruct(representation="neural") with densification and pruning,
the run folder (neural.pt + baked splats.ply), loading and scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recon.bench.evaluate import score_run
from recon.config import make_config
from recon.pipeline import load_run_model, neural_model_from_init, reconstruct, train
from renderers.gaussians import GaussianModel, read_ply
from renderers.neural import NeuralPrimitives


@pytest.fixture(scope="module")
def neural_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "neural"
    cfg = make_config(
        "fast",
        iterations=40,
        track=3,
        representation="neural",
        settings={
            "init.points": 1000,
            "init.hull_resolution": 48,
            "densify.refine_start_iter": 10,
            "densify.refine_every": 10,
            "neural.sparsity": 0.8,
            "neural.prune_start": 0.2,
            "neural.prune_end": 0.6,
        },
    )
    return out, reconstruct(tiny_scene, out, cfg)


def test_neural_run_folder_loads_and_scores(neural_run: tuple[Path, dict], tiny_scene: Path) -> None:
    out, summary = neural_run
    assert summary["files"] == ["neural.pt", "splats.ply"]
    assert json.loads((out / "config.json").read_text())["representation"] == "neural"
    model = load_run_model(out)
    assert isinstance(model, NeuralPrimitives) and model.num_gaussians == summary["num_gaussians"]
    assert model.mlp.sparsity() == pytest.approx(0.8, abs=0.01), "pruning reached its target during training"
    for i in model.mlp.prunable:
        assert bool((model.mlp.layers[i].weight[~model.mlp.mask(i)] == 0).all())
    baked = read_ply(out / "splats.ply")  # what `recon view` shows
    assert isinstance(baked, GaussianModel) and baked.num_gaussians == model.num_gaussians
    assert summary["train_psnr"] > 18.0
    scores = score_run(out, tiny_scene, track=3)
    assert len(scores.psnr) == 10 and 10.0 < scores.mean["masked_psnr"] < 60.0


def test_train_densifies_neural_primitives(tiny_scene: Path) -> None:
    from recon.pipeline import initialise, load_inputs, object_masks

    cfg = make_config(
        "fast",
        iterations=30,
        track=3,
        representation="neural",
        settings={
            "init.points": 600,
            "init.hull_resolution": 32,
            "densify.refine_start_iter": 5,
            "densify.refine_every": 5,
            "densify.grow_grad2d": 1e-06,
            "neural.feature_dim": 6,
        },
    )
    views = load_inputs(tiny_scene, cfg)
    masks = object_masks(views)
    init = initialise(views, views.cameras, masks, cfg)
    n0 = init.model.num_gaussians
    init.model = neural_model_from_init(init, cfg)
    assert isinstance(init.model, NeuralPrimitives) and init.model.feature_dim == 6
    assert init.model.prune_schedule is not None and init.model.prune_schedule.end == int(0.7 * 30)
    mlp_before = [p.detach().clone() for p in init.model.mlp.parameters()]
    result = train(init, views, views.cameras, masks, cfg)
    model = init.model
    counts = [h["gaussians"] for h in result.history]
    assert max(counts) > n0, "densification grew the primitives"
    assert all(model.splats[k].shape[0] == model.num_gaussians for k in model.splats.keys())
    assert any(not torch.equal(a, b) for a, b in zip(mlp_before, model.mlp.parameters())), "the decoder trained"
    assert result.history[-1]["psnr"] > result.history[0]["psnr"]
