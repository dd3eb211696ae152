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
    with pytest.raises(
        ReconInputError, match="camera 3 \\(EQUIRECTANGULAR, used by img_10.png\\) is not a perspective"
    ):
        read_colmap(scene)


def test_write_colmap_text_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="3 cameras but 2 names"):
        write_colmap_text(tmp_path / "m", ring_cameras(), ["a.png", "b.png"])
    with pytest.raises(ValueError, match="spaces"):
        write_colmap_text(tmp_path / "m", ring_cameras()[:1], ["a b.png"])


# ------------------------------------------------------------------------------------------------ hostile models
def binary_scene(root: Path) -> Path:
    """scene/images + scene/sparse/0 as a binary model (with COLMAP 3.12's rigs.bin and frames.bin)."""
    scene = make_scene(root)
    text, model = scene / "sparse" / "0", scene / "sparse" / "1"
    model.mkdir()
    pycolmap.Reconstruction(str(text)).write_binary(str(model))
    for p in text.iterdir():
        p.unlink()
    text.rmdir()
    model.rename(text)
    return text


def test_binary_model_round_trip_still_reads(tmp_path):
    model = binary_scene(tmp_path / "s")
    names = {p.name for p in model.iterdir()}
    assert names >= {"cameras.bin", "images.bin", "points3D.bin", "rigs.bin", "frames.bin"}
    assert_cameras_close(ring_cameras(), read_colmap(model).cameras)


@pytest.mark.parametrize(
    "name, what",
    [("points3D", "points"), ("cameras", "cameras"), ("images", "images"), ("frames", "frames"), ("rigs", "rigs")],
)
def test_binary_counts_are_checked_against_the_file_size(tmp_path, name, what):
    """8 bytes declaring 2^62 records made pycolmap allocate without end; now a one-line error, at once."""
    import struct
    import time

    model = binary_scene(tmp_path / "s")
    (model / f"{name}.bin").write_bytes(struct.pack("<Q", 2**62))
    t0 = time.perf_counter()
    with pytest.raises(
        ReconInputError,
        match=rf"{name}.bin: declares 4611686018427387904 {what}, but the file has "
        r"room for at most 0",
    ):
        read_colmap(model)
    assert time.perf_counter() - t0 < 5.0


def test_binary_record_fields_are_bounded(tmp_path):
    import struct

    model = binary_scene(tmp_path / "s")
    point = struct.pack("<Q3d3BdQ", 1, 0.0, 0.0, 0.0, 1, 2, 3, 0.5, 2**40)
    (model / "points3D.bin").write_bytes(struct.pack("<Q", 1) + point)
    with pytest.raises(
        ReconInputError,
        match=r"points3D.bin: point 1 track: 1099511627776 entries of 8 bytes do "
        r"not fit in the 0 bytes left",
    ):
        read_colmap(model)

    model = binary_scene(tmp_path / "s2")
    image = struct.pack("<I7dI", 1, 1, 0, 0, 0, 0, 0, 2, 1) + b"img_1.png\0" + struct.pack("<Q", 2**60)
    (model / "images.bin").write_bytes(struct.pack("<Q", 1) + image)
    with pytest.raises(ReconInputError, match="images.bin: image 1 points2D: 1152921504606846976 entries"):
        read_colmap(model)
    (model / "images.bin").write_bytes(struct.pack("<Q", 1) + image[:64] + b"\xff\xfe.png\0" + struct.pack("<Q", 0))
    with pytest.raises(ReconInputError, match="images.bin: image 1: image name is not UTF-8 text"):
        read_colmap(model)

    model = binary_scene(tmp_path / "s3")
    data = bytearray((model / "cameras.bin").read_bytes())
    data[12:16] = struct.pack("<i", 99)  # model id of the first camera
    (model / "cameras.bin").write_bytes(bytes(data))
    with pytest.raises(ReconInputError, match="cameras.bin: camera 1 has unknown camera model id 99"):
        read_colmap(model)
    (model / "cameras.bin").write_bytes((model / "cameras.bin").read_bytes()[:-3])
    with pytest.raises(ReconInputError, match="cameras.bin"):
        read_colmap(model)

    model = binary_scene(tmp_path / "s4")
    (model / "frames.bin").write_bytes((model / "frames.bin").read_bytes() + b"\0\0")
    with pytest.raises(ReconInputError, match="frames.bin: 2 unexpected bytes after the last record"):
        read_colmap(model)
    (model / "frames.bin").write_bytes((model / "frames.bin").read_bytes()[:150])
    with pytest.raises(ReconInputError, match="frames.bin: declares 3 frames, but the file has room for at most 2"):
        read_colmap(model)


def edit_image_line(model: Path, image_id: int, fn) -> None:
    lines = (model / "images.txt").read_text().splitlines()
    for k, ln in enumerate(lines):
        tok = ln.split()
        if len(tok) >= 10 and tok[0] == str(image_id):
            fn(tok)
            lines[k] = " ".join(tok)
    (model / "images.txt").write_text("\n".join(lines) + "\n")


def test_zero_quaternion_is_an_error(tmp_path):
    """pycolmap turns a zero quaternion into the identity rotation without a word."""
    scene = make_scene(tmp_path / "s")
    model = scene / "sparse" / "0"
    edit_image_line(model, 2, lambda t: t.__setitem__(slice(1, 5), ["0", "0", "0", "0"]))
    with pytest.raises(
        ReconInputError,
        match=r"0: image img_2.png: rotation quaternion \[0.0, 0.0, 0.0, 0.0\] is "
        r"zero or not finite",
    ):
        read_colmap(model)
    binary = tmp_path / "b" / "sparse" / "0"
    binary.mkdir(parents=True)
    pycolmap.Reconstruction(str(model)).write_binary(str(binary))
    (scene / "images").rename(tmp_path / "b" / "images")
    with pytest.raises(ReconInputError, match="image img_2.png: rotation quaternion .* is zero"):
        read_colmap(binary)


def test_non_unit_quaternion_is_normalised_with_a_warning(tmp_path, caplog):
    scene = make_scene(tmp_path / "s")
    model = scene / "sparse" / "0"
    edit_image_line(model, 2, lambda t: t.__setitem__(slice(1, 5), [repr(5 * float(x)) for x in t[1:5]]))
    with caplog.at_level("WARNING"):
        vs = read_colmap(model)
    assert "image img_2.png has a quaternion of norm 5; normalised" in caplog.text
    assert_cameras_close(ring_cameras(), vs.cameras)


@pytest.mark.parametrize(
    "line",
    [
        f"2 OPENCV_FISHEYE {W} {H} 39 39.5 16.25 11.75 0.1 0 0 0",
        f"2 FOV {W} {H} 39 39.5 16.25 11.75 0.5",
        f"2 SIMPLE_RADIAL_FISHEYE {W} {H} 39 16.25 11.75 0.1",
        f"2 THIN_PRISM_FISHEYE {W} {H} 39 39 16 12 0 0 0 0 0 0 0 0",
    ],
)
def test_fisheye_and_wide_angle_models_are_refused(tmp_path, line):
    scene = make_scene(tmp_path / "s")
    replace_camera_line(scene / "sparse" / "0", 2, line)
    model = line.split()[1]
    with pytest.raises(
        ReconInputError,
        match=rf"camera 2 \({model}, used by img_2.png\) is a fisheye or wide-angle "
        r"model; only pinhole-based models .* undistort the images first",
    ):
        read_colmap(scene)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda m: replace_camera_line(m, 2, f"2 PINHOLE {W} {H} 0 0 16.25 11.75"),
            r"image img_2.png \(camera 2\): focal length must be positive, got fx=0",
        ),
        (
            lambda m: replace_camera_line(m, 2, f"2 PINHOLE {W} {H} -39 -39 16.25 11.75"),
            "focal length must be positive",
        ),
        (
            lambda m: replace_camera_line(m, 2, f"2 PINHOLE {W} {H} 0.0001 0.0001 16.25 11.75"),
            "field of view .* is outside",
        ),
        (
            lambda m: replace_camera_line(m, 2, f"2 PINHOLE 0 {H} 39 39 16.25 11.75"),
            "camera 2: image width must be a whole number of pixels in 1..1000000, got 0",
        ),
        (
            lambda m: edit_image_line(m, 2, lambda t: t.__setitem__(5, "1e308")),
            r"image img_2.png \(camera 2\): "
            r"translation .* beyond 1e\+07",
        ),
        (
            lambda m: (m / "images.txt").write_text((m / "images.txt").read_text().replace("img_2.png", "img_1.png")),
            r"image img_1.png appears twice in the model \(image ids",
        ),
        (
            lambda m: (m / "images.txt").write_bytes((m / "images.txt").read_bytes().replace(b"img_2", b"img_\xff")),
            r"images.txt: not UTF-8 text",
        ),
    ],
)
def test_bad_cameras_and_poses_are_one_line_errors(tmp_path, edit, message):
    scene = make_scene(tmp_path / "s")
    edit(scene / "sparse" / "0")
    with pytest.raises(ReconInputError, match=message) as err:
        read_colmap(scene)
    assert "\n" not in str(err.value)


def test_special_model_files_are_named(tmp_path):
    import os

    model = binary_scene(tmp_path / "s")
    (model / "points3D.bin").unlink()
    os.mkfifo(model / "points3D.bin")
    with pytest.raises(ReconInputError, match="points3D.bin: COLMAP points3D.bin is a FIFO, not a regular file"):
        read_colmap(model)
    scene = make_scene(tmp_path / "t")
    (scene / "sparse" / "0" / "rigs.txt").symlink_to("/dev/zero")
    with pytest.raises(ReconInputError, match="rigs.txt: COLMAP rigs.txt is a device, not a regular file"):
        read_colmap(scene)
