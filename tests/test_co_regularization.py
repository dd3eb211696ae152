"""Co-regularised training of two fields (CoR-GS): pseudo cameras between inputs, co-pruning, the trainer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from priors.co_regularization import co_render_loss, interpolated_camera, pseudo_camera, unmatched
from recon.cameras import Camera
from recon.config import make_config

K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])


def _orbit(azimuth_deg: float, radius: float = 4.0) -> Camera:
    a = math.radians(azimuth_deg)
    eye = np.array([radius * math.cos(a), radius * math.sin(a), 0.5])
    return Camera.look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]), K, 100, 80, name=f"az{azimuth_deg}")


def test_interpolated_camera_ends_at_the_inputs() -> None:
    a, b = _orbit(0.0), _orbit(100.0)
    for t, ref in ((0.0, a), (1.0, b)):
        c = interpolated_camera(a, b, t)
        assert np.allclose(c.center, ref.center, atol=1e-9) and np.allclose(c.R, ref.R, atol=1e-9)
        assert np.allclose(c.K, a.K) and (c.width, c.height) == (a.width, a.height)


def test_interpolated_camera_of_an_object_capture_stays_on_the_orbit_and_looks_at_the_object() -> None:
    a, b = _orbit(0.0, radius=4.0), _orbit(120.0, radius=6.0)
    c = interpolated_camera(a, b, 0.5)
    target = np.array([0.0, 0.0, 0.0])
    # a straight line between the centres would pass at half the radius; the arc keeps the mean distance
    dist = np.linalg.norm(c.center - target)
    assert 4.6 < dist < 5.4
    assert math.degrees(math.atan2(c.center[1], c.center[0])) == pytest.approx(60.0, abs=8.0)
    u, _ = c.project(target[None])
    assert abs(u[0, 0] - 50.0) < 10 and abs(u[0, 1] - 40.0) < 10  # the object stays near the image centre


def test_interpolated_camera_of_a_forward_facing_capture_moves_on_the_line() -> None:
    a = Camera(K=K, viewmat=np.eye(4), width=100, height=80)
    vm = np.eye(4)
    vm[:3, 3] = [-1.0, 0.0, 0.0]  # centre at x = 1, same orientation
    b = Camera(K=K, viewmat=vm, width=100, height=80)
    c = interpolated_camera(a, b, 0.25)
    assert np.allclose(c.center, [0.25, 0.0, 0.0]) and np.allclose(c.R, np.eye(3))


def test_pseudo_camera_lies_between_an_input_and_its_nearest_neighbour_and_repeats_per_seed() -> None:
    cams = [_orbit(0.0), _orbit(30.0), _orbit(180.0)]
    draws = [pseudo_camera(cams, torch.Generator().manual_seed(s), scale=0.5) for s in range(20)]
    again = [pseudo_camera(cams, torch.Generator().manual_seed(s), scale=0.5) for s in range(20)]
    assert all(np.array_equal(p.viewmat, q.viewmat) for p, q in zip(draws, again))
    assert all((p.width, p.height) == (50, 40) for p in draws)
    for p in draws:
        az = math.degrees(math.atan2(p.center[1], p.center[0])) % 360.0
        # pairs are (0, 30), (30, 0) and (180, 30): never across the 180-degree gap towards 0
        assert az <= 30.0 + 1e-6 or 30.0 - 1e-6 <= az <= 180.0 + 1e-6
    assert len({round(float(p.center[0]), 6) for p in draws}) > 5


def test_unmatched_flags_gaussians_without_a_counterpart() -> None:
    grid = torch.stack(torch.meshgrid(*(torch.arange(5.0),) * 3, indexing="ij"), -1).reshape(-1, 3) * 0.1
    other = grid + 0.02  # the other field: the same surface, slightly offset
    means = torch.cat([grid, torch.tensor([[3.0, 3.0, 3.0]])])  # plus one floater far from everything
    scales = torch.full((len(means), 3), 0.01)
    drop = unmatched(means, scales, other)
    assert drop.dtype == torch.bool and drop.shape == (len(means),)
    assert bool(drop[-1]) and not bool(drop[:-1].any())
    # a large Gaussian is matched from further away (its own 3-sigma extent)
    scales[-1] = 2.0
    assert not bool(unmatched(means, scales, other)[-1])
    assert not bool(unmatched(means[:0], scales[:0], other).any())


def test_co_render_loss_pulls_only_the_first_render() -> None:
    a = torch.rand(16, 16, 3, requires_grad=True)
    b = torch.rand(16, 16, 3, requires_grad=True)
    co_render_loss(a, b, 0.2).backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0 and b.grad is None
    assert float(co_render_loss(a, a, 0.2).detach()) == pytest.approx(0.0, abs=1e-6)


def test_co_training_runs_two_fields_with_pseudo_views_and_co_pruning(
    tiny_scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recon import training
    from recon.pipeline import initialise, load_inputs, object_masks, require_poses, train

    config = make_config(
        "fast",
        iterations=20,
        track=3,
        settings={
            "init.points": 600,
            "init.hull_resolution": 40,
            "train.co_fields": "2",
            "loss.binocular": "0",
            "densify.refine_start_iter": "5",
            "densify.refine_every": "5",
        },
    )
    views = load_inputs(tiny_scene, config)
    cameras = require_poses(views)
    masks = object_masks(views)
    init = initialise(views, cameras, masks, config)
    start = init.model.means.detach().clone()
    renders: list[str | None] = []
    original = type(init.model).render

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        renders.append(kwargs.get("render_mode"))
        return original(self, *args, **kwargs)

    pruned_calls: list[int] = []
    real_unmatched = unmatched

    def watching(means, scales, other):  # type: ignore[no-untyped-def]
        drop = real_unmatched(means, scales, other)
        pruned_calls.append(int(drop.sum()))
        return drop

    monkeypatch.setattr(type(init.model), "render", counting)
    monkeypatch.setattr("priors.co_regularization.unmatched", watching)
    result = train(init, views, cameras, masks, config)
    assert all(np.isfinite(h["loss"]) for h in result.history)
    # two training renders per step; from step 5 (CoTraining.START of 20) two pseudo-view renders per step
    pseudo_steps = config.iterations - int(training.CoTraining.START * config.iterations)
    assert renders.count("RGB+ED") == 2 * config.iterations and renders.count("RGB") == 2 * pseudo_steps
    # co-pruning looked at both fields at each densification step while growth runs (steps 5, 10; stop at 14)
    assert len(pruned_calls) == 4 and result.co_pruned >= 0
    assert init.model.means.shape != start.shape or not torch.equal(init.model.means.detach(), start)


def test_co_fields_must_be_one_or_two() -> None:
    with pytest.raises(ValueError, match="co_fields"):
        make_config("fast", settings={"train.co_fields": "3"})
