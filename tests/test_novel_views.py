"""Tilted training cameras and the opacity-completeness term (priors.novel_views)."""

from __future__ import annotations

import math

import numpy as np
import torch

from priors.novel_views import opacity_completeness, tilted_camera
from recon.cameras import Camera


def _camera() -> Camera:
    K = np.array([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])
    return Camera.look_at(np.array([0.5, -1.0, -3.0]), np.array([0.2, 0.1, 0.3]), np.array([0.0, -1.0, 0.0]), K, 64, 48)


def _pixel(cam: Camera, point: np.ndarray) -> np.ndarray:
    p = cam.K @ (cam.R @ point + cam.t)
    return p[:2] / p[2]


def test_a_tilted_camera_turns_about_the_centre_and_still_looks_at_it() -> None:
    cam, centre = _camera(), np.array([0.2, 0.1, 0.3])
    gen = torch.Generator().manual_seed(3)
    angles = []
    for _ in range(20):
        t = tilted_camera(cam, centre, 30.0, gen)
        a, b = cam.center - centre, t.center - centre
        assert np.isclose(np.linalg.norm(a), np.linalg.norm(b))
        angles.append(math.degrees(math.acos(np.clip(a @ b / (a @ a), -1.0, 1.0))))
        assert np.allclose(_pixel(t, centre), _pixel(cam, centre))  # what it looked at stays where it was
        assert np.allclose(t.R @ t.R.T, np.eye(3)) and (t.width, t.height) == (cam.width, cam.height)
    assert max(angles) <= 30.0 + 1e-6 and max(angles) > 20.0 and min(angles) < 10.0


def test_opacity_completeness_pulls_partly_covered_pixels_only() -> None:
    alpha = torch.tensor([[0.0, 0.05, 0.5, 1.0]], requires_grad=True)
    loss = opacity_completeness(alpha)
    assert torch.isclose(loss, torch.tensor(0.25))  # (0.5 + 0.0) over the two covered pixels
    loss.backward()
    assert alpha.grad is not None and alpha.grad[0, 0] == 0 and alpha.grad[0, 1] == 0 and alpha.grad[0, 2] < 0
    assert opacity_completeness(torch.ones(3, 4)) == 0 and opacity_completeness(torch.zeros(3, 4)) == 0


def test_scene_mode_turns_the_term_on_and_object_mode_leaves_it_off() -> None:
    from recon.config import make_config
    from recon.modes import scene_config

    config = make_config("fast")
    assert config.loss.novel_opacity == 0 and scene_config(config).loss.novel_opacity == 0.5
    assert scene_config(make_config("fast", settings={"loss.scene_novel_opacity": "none"})).loss.novel_opacity == 0
    assert scene_config(make_config("plain")).loss.novel_opacity == 0
