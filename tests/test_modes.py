"""Object or scene: a forward-facing capture without masks never ends in silent nonsense."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recon.cameras import Camera, intrinsics
from recon.config import make_config
from recon.io.images import save_image
from recon.io.transforms_json import write_transforms
from recon.io.types import ViewSet
from recon.modes import data_depth_range, decide_mode, frustum_points

RECON = [sys.executable, "-c", "from apps.cli import main; main()"]


def _forward_facing_scene(folder: Path, n: int = 4, w: int = 64, h: int = 48) -> list[Camera]:
    """A textured wall at z = 4 seen by cameras translated in a small grid, all looking along +z (LLFF-like)."""
    rng = np.random.default_rng(0)
    texture = rng.uniform(0.1, 0.9, size=(40, 40, 3))
    K = intrinsics(60.0, 60.0, w / 2, h / 2)
    cams = []
    (folder / "images").mkdir(parents=True)
    for k in range(n):
        eye = np.array([0.3 * (k % 2), 0.2 * (k // 2), 0.0])
        cam = Camera.look_at(eye, eye + [0, 0, 4.0], [0, -1.0, 0], K, w, h, name=f"v{k}.png")
        o, d = cam.rays_world()
        t = (4.0 - o[..., 2]) / d[..., 2]
        p = o + d * t[..., None]
        ij = np.clip(((p[..., :2] + 4.0) / 8.0 * 40).astype(int), 0, 39)
        save_image(folder / "images" / f"v{k}.png", texture[ij[..., 1], ij[..., 0]].astype(np.float32))
        cams.append(cam)
    write_transforms(folder / "transforms.json", cams, image_paths=[f"images/v{k}.png" for k in range(n)])
    return cams


def test_photos_without_masks_are_a_scene_and_masks_make_an_object(monkeypatch: pytest.MonkeyPatch) -> None:
    import priors.segmentation as seg

    monkeypatch.setattr(seg, "salient_model_path", lambda: None)  # no segmentation model installed
    views = ViewSet(names=["a", "b"], images=[np.zeros((8, 8, 3), np.float32)] * 2)
    d = decide_mode(views, make_config("fast"))
    assert d.mode == "scene" and "without object masks" in d.reason and d.masks is None
    views.masks = [np.ones((8, 8), np.float32)] * 2
    d = decide_mode(views, make_config("fast"))
    assert d.mode == "object" and d.masks is not None
    assert decide_mode(views, make_config("fast", mode="scene")).mode == "scene"
    assert decide_mode(views, make_config("plain")).mode == "scene"


class _FakeSegmenter:
    """Masks a centred square; confident on the views listed."""

    name = "fake"

    def __init__(self, confident: set[int]) -> None:
        self.confident, self.k = confident, 0

    def segment(self, image: np.ndarray):
        from priors.segmentation import Segmentation

        m = np.zeros(image.shape[:2], np.float32)
        m[4:12, 4:12] = 1.0
        conf = 0.9 if self.k in self.confident else 0.1
        self.k += 1
        return Segmentation(m, m, conf)


@pytest.mark.parametrize(("confident", "mode"), [({0, 1, 2, 3}, "object"), ({0, 1, 2}, "object"), ({0}, "scene")])
def test_mode_object_is_object_only_for_a_confident_segmentation_and_auto_stays_a_scene(
    monkeypatch: pytest.MonkeyPatch, confident: set[int], mode: str
) -> None:
    import priors.segmentation as seg

    monkeypatch.setattr(seg, "salient_model_path", lambda: Path("model.onnx"))
    monkeypatch.setattr(seg, "make_segmenter", lambda name="auto": _FakeSegmenter(confident))
    views = ViewSet(names=list("abcd"), images=[np.zeros((16, 16, 3), np.float32)] * 4)
    d = decide_mode(views, make_config("fast", mode="object"))
    assert d.mode == mode
    assert ("confident" in d.reason) if mode == "scene" else ("found one object" in d.reason and d.masks is not None)
    # auto: photos without masks are a scene even with a segmentation model installed (measured better on DTU)
    d = decide_mode(views, make_config("fast"))
    assert d.mode == "scene" and "without object masks" in d.reason and d.masks is None


def test_frustum_points_lie_between_near_and_far_and_take_pixel_colours(tmp_path: Path) -> None:
    cams = _forward_facing_scene(tmp_path / "s")
    views = ViewSet(
        names=["x"], images=[np.full((48, 64, 3), 0.25, np.float32)], cameras=cams[:1], meta={"near_far": [(2.0, 6.0)]}
    )
    assert data_depth_range(views) == (2.0, 6.0)
    pts, rgb = frustum_points(views, cams[:1], 500, np.random.default_rng(0), (2.0, 6.0))
    z = (pts @ cams[0].R.T + cams[0].t)[:, 2]
    assert z.min() >= 2.0 - 1e-9 and z.max() <= 6.0 + 1e-9 and np.allclose(rgb, 0.25)
    uv, _ = cams[0].project(pts)
    assert (uv >= 0).all() and (uv[:, 0] <= 64).all() and (uv[:, 1] <= 48).all()


@pytest.mark.parametrize("mode", ["auto", "object"])
def test_forward_facing_toy_scene_is_never_masked_away(tmp_path: Path, mode: str) -> None:
    _forward_facing_scene(tmp_path / "ff")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        RECON
        + [
            "reconstruct",
            str(tmp_path / "ff"),
            "--out",
            str(out),
            "--iterations",
            "30",
            "--set",
            f"mode={mode}",
            "--set",
            "init.points=800",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"]["mode"] == "scene", metrics["mode"]
    assert metrics["train_psnr_over"] == "the whole image"
    assert metrics["black_renders"] == [] and metrics["train_psnr"] < 60
    if mode == "object":  # the automatic segmentation finds no single object in a wall: said on the terminal
        assert "recon: warning:" in proc.stderr and "whole image" in proc.stderr
    assert "scene mode" in (out / "run.log").read_text()


def test_scene_start_puts_stereo_points_on_the_wall_and_a_backdrop_behind(tmp_path: Path) -> None:
    from priors.stereo import StereoSettings
    from recon.io.transforms_json import read_transforms
    from recon.modes import BACKDROP_SHARE, scene_start

    _forward_facing_scene(tmp_path / "ff", w=96, h=72)
    views = read_transforms(tmp_path / "ff" / "transforms.json")
    views.meta["near_far"] = [(2.0, 8.0)] * len(views)
    start = scene_start(views, list(views.cameras), 1000, np.random.default_rng(0))
    assert start is not None and start.stereo is not None and "stereo points" in start.how
    assert len(start.xyz) == 1000 and start.rgb.shape == (1000, 3)
    n_back = int(round(BACKDROP_SHARE * 1000))
    wall, back = start.xyz[:-n_back], start.xyz[-n_back:]
    assert np.median(np.abs(wall[:, 2] - 4.0)) < 0.25  # stereo points near the wall at z = 4 (a blocky texture)
    assert back[:, 2].min() > 7.0  # the backdrop is far behind it (depth 8.8 along each ray)
    assert start.stereo[0].depth.shape == (72, 96)  # smaller than the default stereo size: swept as they are
    small = scene_start(views, list(views.cameras), 1000, np.random.default_rng(0), StereoSettings(max_side=48))
    assert small is not None and small.stereo is not None
    assert all(max(sd.depth.shape) == 48 and sd.camera.width == 48 for sd in small.stereo)


def test_scene_config_drops_masks_and_stops_densifying_at_the_scene_fraction() -> None:
    from recon.modes import scene_config

    config = make_config("fast", **{"densify.refine_stop_frac": 0.7, "densify.scene_refine_stop_frac": 0.5})
    scene = scene_config(config)
    assert scene.densify.refine_stop_frac == 0.5 and config.densify.refine_stop_frac == 0.7
    assert not scene.loss.use_masks and not scene.init.visual_hull and not scene.train.random_background
    assert make_config("fast").densify.scene_refine_stop_frac is not None  # the default uses it
    plain = make_config("plain")
    assert plain.densify.scene_refine_stop_frac is None
    assert scene_config(plain).densify.refine_stop_frac == plain.densify.refine_stop_frac
    with pytest.raises(ValueError, match="scene_refine_stop_frac"):
        make_config("fast", **{"densify.scene_refine_stop_frac": 1.5})


def test_scene_config_trains_at_half_resolution_until_the_scene_fraction() -> None:
    from recon.modes import scene_config

    config = make_config("fast", **{"train.coarse_until": 0.4, "train.scene_coarse_until": 0.8})
    assert scene_config(config).train.coarse_until == 0.8 and config.train.coarse_until == 0.4
    unset = replace(config, train=replace(config.train, scene_coarse_until=None))
    assert scene_config(unset).train.coarse_until == 0.4
    plain = make_config("plain")  # vanilla 3DGS keeps its own schedule in either mode
    assert scene_config(plain).train.coarse_until == plain.train.coarse_until == 0.3
    with pytest.raises(ValueError, match="scene_coarse_until"):
        make_config("fast", **{"train.scene_coarse_until": 1.5})


def test_scene_mode_leaves_the_multiview_photometric_term_to_object_mode() -> None:
    from recon.modes import scene_config

    config = make_config("fast", **{"loss.multiview": 0.5})
    assert scene_config(config).loss.multiview == 0.0
    assert make_config("plain").loss.multiview == 0.0
