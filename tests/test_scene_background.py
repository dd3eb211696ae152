"""Scene mode trains over the background the data was composited on (Blender: white), as vanilla 3DGS does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recon.cameras import Camera, intrinsics
from recon.config import make_config
from recon.io.types import ViewSet
from recon.pipeline import data_background, reconstruct


def test_data_background_reads_the_blender_colour_and_defaults_to_black() -> None:
    def views(meta: dict) -> ViewSet:
        return ViewSet(names=["a"], images=[np.zeros((4, 4, 3), np.float32)], meta=meta)

    assert data_background(views({"background": [1.0, 1.0, 1.0]})) == (1.0, 1.0, 1.0)
    assert data_background(views({"background": [0.2, 0.4, 0.6]})) == pytest.approx((0.2, 0.4, 0.6))
    assert data_background(views({})) == (0.0, 0.0, 0.0)
    # the generator's record (a name and a colour) is not a composited background; nor is nonsense
    assert data_background(views({"background": {"name": "grey", "rgb": [0.5] * 3}})) == (0.0, 0.0, 0.0)
    assert data_background(views({"background": [2.0, 0.0, 0.0]})) == (0.0, 0.0, 0.0)
    assert data_background(views({"background": "white"})) == (0.0, 0.0, 0.0)


def _white_backdrop_views(w: int = 48, h: int = 36) -> ViewSet:
    """Three views of a dark cube centred at the origin over a white background (a Blender-like capture)."""
    K = intrinsics(50.0, 50.0, w / 2, h / 2)
    images, cams = [], []
    for k, ang in enumerate((-0.3, 0.0, 0.3)):
        eye = 4.0 * np.array([np.sin(ang), 0.0, -np.cos(ang)])
        cam = Camera.look_at(eye, np.zeros(3), [0, -1.0, 0], K, w, h, name=f"v{k}.png")
        o, d = cam.rays_world()
        # slab test against the cube [-0.5, 0.5]^3
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = (-0.5 - o) / d, (0.5 - o) / d
        hit = np.minimum(t0, t1).max(-1) <= np.maximum(t0, t1).min(-1)
        img = np.ones((h, w, 3), np.float32)
        img[hit] = 0.2
        images.append(img)
        cams.append(cam)
    return ViewSet(names=[c.name for c in cams], images=images, cameras=cams, meta={"background": [1.0, 1.0, 1.0]})


def test_scene_mode_over_a_known_white_background_leaves_it_to_the_background(tmp_path: Path) -> None:
    config = make_config("plain", iterations=60, **{"init.points": 300})
    views = _white_backdrop_views()
    white = reconstruct(views, tmp_path / "white", config)
    views.meta = {}
    black = reconstruct(views, tmp_path / "black", config)
    assert white["mode"]["mode"] == black["mode"]["mode"] == "scene"
    # over white, the background pixels are right wherever the Gaussians leave them free; over black, 60 steps
    # of a few hundred Gaussians cannot paint the whole backdrop white
    assert white["train_psnr"] > black["train_psnr"] + 2.0, (white["train_psnr"], black["train_psnr"])
