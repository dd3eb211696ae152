"""The diffusion prior through the pipeline: reconstruct(prior="diffusion") on a tiny scene with a tiny repair model
(built and saved by the test), repaired pseudo views and the report in the run folder; pseudo-view geometry;
tile-sparse repair touches only the chosen tiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from priors.diffusion import RepairModel, pseudo_cameras
from priors.diffusion.guidance import azimuth_arc
from priors.diffusion.tiles import repair_tiles, tile_grid, tile_mask, tiles_needing_repair
from recon.cameras import Camera, intrinsics
from recon.config import make_config
from recon.errors import ReconInputError
from recon.pipeline import reconstruct


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "guided"])
def tiny_weights(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny repair model, without and with the warped-input-photo guide (both run-time paths)."""
    model = RepairModel.build(channels=(8, 16), norm_groups=4, seed=1, guide=request.param)
    return model.save(tmp_path_factory.mktemp("w") / "tiny")


def test_reconstruct_with_diffusion_prior_writes_repairs(tiny_scene: Path, tiny_weights: Path, tmp_path: Path) -> None:
    cfg = make_config(
        "fast",
        iterations=30,
        track=3,
        prior="diffusion",
        settings={
            "init.points": 600,
            "init.hull_resolution": 32,
            "densify.refine_start_iter": 10,
            "densify.refine_every": 10,
            "diffusion.weights": str(tiny_weights),
            "diffusion.start": 0.5,
            "diffusion.refresh": 10,
            "diffusion.views": 3,
            "diffusion.every": 2,
            "diffusion.sample_steps": 2,
            "diffusion.finetune_steps": 3,
            "diffusion.tile": 16,
        },
    )
    out = tmp_path / "run"
    summary = reconstruct(tiny_scene, out, cfg)
    rep = summary["prior"]
    assert rep["pseudo_views"] == 3
    assert rep["refreshes"] == 2  # steps 15 and 25 (none within the last refresh/2 steps)
    assert rep["loss_terms"] > 0 and rep["tiles_repaired"] > 0
    assert rep["tiles_repaired"] <= rep["tiles_total"]
    assert rep["finetune_loss_first"] is not None
    assert "prior_setup_s" in summary["timings"]
    guided = RepairModel.load(tiny_weights).uses_guide
    assert rep["guided"] is guided
    if guided:  # the nearest input photo warped into each pseudo view lands on part of it
        assert 0.0 < rep["guide_valid_fraction"] <= 1.0
    else:
        assert rep["guide_valid_fraction"] is None
    repaired = sorted((out / "prior").glob("*_repaired.png"))
    assert len(repaired) == 6
    assert json.loads((out / "metrics.json").read_text())["prior"]["pseudo_views"] == 3


def test_missing_weights_folder_is_an_input_error(tiny_scene: Path, tmp_path: Path) -> None:
    cfg = make_config(
        "fast", iterations=5, track=3, prior="diffusion", settings={"diffusion.weights": str(tmp_path / "nope")}
    )
    with pytest.raises(ReconInputError, match="nope"):
        reconstruct(tiny_scene, tmp_path / "run", cfg)


def test_pseudo_cameras_orbit_the_inputs() -> None:
    K = intrinsics(50.0, 50.0, 40.0, 30.0)
    target = np.array([0.0, 0.0, 0.2])
    cams = []
    for az in (-20.0, 0.0, 20.0):
        a = np.radians(az)
        eye = target + 3.0 * np.array([np.cos(a) * np.cos(0.6), np.sin(a) * np.cos(0.6), np.sin(0.6)])
        cams.append(Camera.look_at(eye, target, np.array([0.0, 0.0, 1.0]), K, 80, 60))
    ps = pseudo_cameras(cams, 6, scale=0.5, seed=0)
    assert len(ps) == 6 and all((p.width, p.height) == (40, 30) for p in ps)
    for p in ps:
        assert np.linalg.norm(p.center - target) == pytest.approx(3.0, rel=1e-6)
        uv, z = p.project(target[None])
        assert np.allclose(uv[0], [20.0, 15.0], atol=1e-6) and z[0] > 0  # looks at the target
        assert p.center[2] > target[2]  # stays above, like the inputs (up = +z)
    assert len({tuple(np.round(p.center, 6)) for p in ps}) == 6


def test_pseudo_view_arc_follows_the_inputs_around_the_circle() -> None:
    r = np.radians
    lo, hi = azimuth_arc([r(-20.0), r(0.0), r(20.0)], r(10.0))
    assert np.degrees([lo, hi]) == pytest.approx([-30.0, 30.0])
    lo, hi = azimuth_arc([r(170.0), r(-170.0)], r(5.0))  # across the +-180 seam: the short way, not through 0
    assert np.degrees(hi - lo) == pytest.approx(30.0) and np.cos(lo + 0.5 * (hi - lo)) == pytest.approx(-1.0)
    lo, hi = azimuth_arc([r(-157.0), r(-19.0), r(71.0)], r(20.0))  # all around (largest gap 138 deg)
    assert (lo, hi) == pytest.approx((-np.pi, np.pi))


def test_repair_tiles_changes_only_active_tiles() -> None:
    torch.manual_seed(0)
    h, w, t = 40, 56, 16
    rgb = torch.rand(h, w, 3)
    alpha = torch.zeros(h, w)
    alpha[4:20, 20:30] = 0.5  # a half-transparent blob: the tiles it touches need repair
    active = tiles_needing_repair(alpha, rgb, t)
    rows, cols = tile_grid(h, w, t)
    assert active.shape == (rows * cols,) and 0 < int(active.sum()) < rows * cols
    calls = []

    def fake_repair(r: torch.Tensor, a: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        assert g is None
        calls.append(r.shape[0])
        return torch.ones_like(r)

    out = repair_tiles(rgb, alpha, active, t, fake_repair)
    mask = tile_mask(active, h, w, t)
    assert sum(calls) == int(active.sum())  # cost follows the active tiles only
    assert torch.all(out[mask] == 1.0) and torch.equal(out[~mask], rgb[~mask])
