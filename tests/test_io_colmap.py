"""COLMAP models: write a text model, read it back through pycolmap (text and binary), layouts and bad input."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.colmap import read_colmap, write_colmap_text
from recon.io.detect import detect_format, read_views

W, H = 32, 24
NAMES = ["img_1.png", "img_2.png", "img_10.png"]


def ring_cameras(n: int = 3) -> list[Camera]:
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n + 0.3
        eye = np.array([2.5 * math.cos(a), 0.4 * i - 0.5, 2.5 * math.sin(a)])
        K = intrinsics(38.0 + i, 39.5, 16.25, 11.75)
        cams.append(Camera.look_at(eye, np.array([0.1, 0.0, -0.2]), np.array([0.0, -1.0, 0.0]), K, W, H))
    return cams


def make_scene(root: Path, layout: str = "sparse/0", cams: list[Camera] | None = None, points=None) -> Path:
    """scene/images + scene/<layout> COLMAP text model; returns the scene folder."""
    cams = cams or ring_cameras()
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in NAMES[: len(cams)]:
        Image.fromarray(rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)).save(images / name)
    write_colmap_text(root / layout, cams, NAMES[: len(cams)], points=points)
    return root


def assert_cameras_close(a: list[Camera], b: list[Camera], tol: float = 1e-9) -> None:
    assert len(a) == len(b)
    for ca, cb in zip(a, b):
        np.testing.assert_allclose(ca.K, cb.K, atol=tol)
        np.testing.assert_allclose(ca.viewmat, cb.viewmat, atol=tol)
        assert (ca.width, ca.height) == (cb.width, cb.height)


def test_text_model_round_trip_with_points(tmp_path):
    cams = ring_cameras()
    xyz = np.array([[0.0, 0.1, 0.2], [1.0, -1.0, 0.5]])
    rgb = np.array([[255, 0, 10], [1, 2, 3]], dtype=np.uint8)
    scene = make_scene(tmp_path / "scene", cams=cams, points=(xyz, rgb))
    vs = read_colmap(scene / "sparse" / "0")
    # Natural order of names (img_10 last), cameras in the same order.
    order = [NAMES.index(n) for n in vs.names]
    assert vs.names == ["img_1.png", "img_2.png", "img_10.png"]
    assert_cameras_close([cams[i] for i in order], vs.cameras)
    got_xyz, got_rgb = vs.meta["points3d"]
    np.testing.assert_allclose(got_xyz, xyz)
    np.testing.assert_allclose(got_rgb, rgb / 255.0, atol=1e-7)
    assert got_rgb.dtype == np.float32
    assert vs.images[0].shape == (H, W, 3) and vs.masks is None


def test_binary_model_and_agreement_with_pycolmap_projection(tmp_path):
    cams = ring_cameras()
    scene = make_scene(tmp_path / "scene", cams=cams)
    rec = pycolmap.Reconstruction(str(scene / "sparse" / "0"))
    binary = scene / "sparse" / "1"
    binary.mkdir()
    rec.write_binary(str(binary))
    vs = read_colmap(binary, images_dir=scene / "images")
    assert_cameras_close(cams, vs.cameras)
    # Our Camera projects world points exactly where pycolmap does (same pixel-centre convention and pose).
    pts = np.array([[0.1, 0.2, -0.1], [-0.3, 0.1, 0.2], [0.0, 0.0, 0.0]])
    for cam in vs.cameras:
        img = rec.find_image_with_name(cam.name)
        ref = rec.cameras[img.camera_id].img_from_cam(img.cam_from_world() * pts)
        np.testing.assert_allclose(cam.project(pts)[0], ref, atol=1e-9)


def test_layouts_and_detection(tmp_path):
    cams = ring_cameras()
    scene = make_scene(tmp_path / "scene")
    assert detect_format(scene) == "colmap"
    assert_cameras_close(cams, read_views(scene).cameras)  # scene folder -> sparse/0, images/ found
    flat = make_scene(tmp_path / "flat", layout="sparse")  # scene/sparse + scene/images
    assert_cameras_close(cams, read_colmap(flat / "sparse").cameras)
    assert detect_format(flat / "sparse") == "colmap"


def test_downscale(tmp_path):
    cams = ring_cameras()
    vs = read_colmap(make_scene(tmp_path / "scene"), downscale=2)
    assert vs.images[0].shape == (H // 2, W // 2, 3)
    assert_cameras_close([c.resized(W // 2, H // 2) for c in cams], vs.cameras)


def replace_camera_line(model: Path, cam_id: int, line: str) -> None:
    lines = (model / "cameras.txt").read_text().splitlines()
    lines = [line if ln.split()[:1] == [str(cam_id)] else ln for ln in lines]
    (model / "cameras.txt").write_text("\n".join(lines) + "\n")


def test_distortion_models_are_read_as_pinhole(tmp_path, caplog):
    scene = make_scene(tmp_path / "scene")
    model = scene / "sparse" / "0"
    replace_camera_line(model, 1, f"1 SIMPLE_RADIAL {W} {H} 38.0 16.25 11.75 0.01")
    replace_camera_line(model, 2, f"2 OPENCV {W} {H} 39 39.5 16.25 11.75 0 0 0 0")
    with caplog.at_level("WARNING"):
        vs = read_colmap(model)
    np.testing.assert_allclose(vs.cameras[0].K, intrinsics(38.0, 38.0, 16.25, 11.75))
    np.testing.assert_allclose(vs.cameras[1].K, intrinsics(39.0, 39.5, 16.25, 11.75))
    assert "camera 1 is SIMPLE_RADIAL" in caplog.text and "camera 2" not in caplog.text


def test_bad_models(tmp_path):
    with pytest.raises(ReconInputError, match="ghost.*does not exist"):
        read_colmap(tmp_path / "ghost")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ReconInputError, match="plain.*not a COLMAP model"):
        read_colmap(plain)

    scene = make_scene(tmp_path / "s1")
    (scene / "sparse" / "0" / "points3D.txt").unlink()
    with pytest.raises(ReconInputError, match="0: incomplete COLMAP model: missing points3D.txt"):
        read_colmap(scene / "sparse" / "0")

    scene = make_scene(tmp_path / "s2")
    model = scene / "sparse" / "0"
    (model / "cameras.txt").write_text("1 PINHOLE 32 24 38 39.5 16.25 11.75\n")  # 1 camera for 3 images
    with pytest.raises(ReconInputError, match="images.txt: image img_2.png refers to camera 2.*1 cameras"):
        read_colmap(model)
    (model / "cameras.txt").write_text("1 PINHOLE 32 24 thirty 39.5 16.25 11.75\n2 x\n3 y\n")
    with pytest.raises(ReconInputError, match="0: cannot read COLMAP model"):
        read_colmap(model)


def test_missing_images_and_counts(tmp_path):
    scene = make_scene(tmp_path / "scene")
    (scene / "images" / "img_2.png").unlink()
    with pytest.raises(ReconInputError, match="images: image img_2.png of the COLMAP model is missing"):
        read_colmap(scene)
    with pytest.raises(ReconInputError, match="nothing_here.*images folder does not exist"):
        read_colmap(scene, images_dir=tmp_path / "nothing_here")
    lonely = tmp_path / "lonely"
    write_colmap_text(lonely / "model", ring_cameras()[:1], ["a.png"])
    with pytest.raises(ReconInputError, match="model: found 1 registered images; need at least 2"):
        read_colmap(lonely / "model")
    orphan = tmp_path / "orphan"
    write_colmap_text(orphan / "model", ring_cameras(), NAMES)
    with pytest.raises(ReconInputError, match="cannot find the model's images.*img_1.png"):
        read_colmap(orphan / "model")


def test_non_perspective_camera_rejected(tmp_path):
    scene = make_scene(tmp_path / "scene")
    replace_camera_line(scene / "sparse" / "0", 3, f"3 EQUIRECTANGULAR {W} {H} {W} {H}")
    with pytest.raises(ReconInputError, match="camera 3 \\(EQUIRECTANGULAR, used by img_10.png\\) is not a perspective"):
        read_colmap(scene)


def test_write_colmap_text_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="3 cameras but 2 names"):
        write_colmap_text(tmp_path / "m", ring_cameras(), ["a.png", "b.png"])
    with pytest.raises(ValueError, match="spaces"):
        write_colmap_text(tmp_path / "m", ring_cameras()[:1], ["a b.png"])
