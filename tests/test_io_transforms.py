"""transforms.json: nerfstudio / instant-ngp / Blender reading, writing, round trips and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.detect import detect_format, read_views
from recon.io.transforms_json import read_transforms, write_transforms
from recon.io.types import ViewSet

W, H = 32, 24


def ring_cameras(n: int = 3, w: int = W, h: int = H) -> list[Camera]:
    K = intrinsics(40.5, 41.25, 15.75, 12.5)
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = np.array([3 * math.cos(a), 0.7 + 0.1 * i, 3 * math.sin(a)])
        cams.append(Camera.look_at(eye, np.zeros(3), np.array([0.0, 1.0, 0.0]), K, w, h, name=f"v{i}"))
    return cams


def write_images(
    folder: Path, n: int = 3, w: int = W, h: int = H, alpha: bool = False, prefix: str = "f"
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(h, w, 4 if alpha else 3), dtype=np.uint8)
        if alpha:
            arr[..., 3] = 0
            arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 3] = 255
        p = folder / f"{prefix}{i}.png"
        Image.fromarray(arr).save(p)
        out.append(p)
    return out


def assert_cameras_close(a: list[Camera], b: list[Camera], tol: float = 1e-9) -> None:
    assert len(a) == len(b)
    for ca, cb in zip(a, b):
        np.testing.assert_allclose(ca.K, cb.K, atol=tol)
        np.testing.assert_allclose(ca.viewmat, cb.viewmat, atol=tol)
        assert (ca.width, ca.height) == (cb.width, cb.height)


def dump(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def frame(file_path: str, cam: Camera, **extra) -> dict:
    return {"file_path": file_path, "transform_matrix": cam.to_opengl_c2w().tolist(), **extra}


# ------------------------------------------------------------------------------------------------ round trips
def test_write_read_round_trip(tmp_path):
    imgs = write_images(tmp_path / "images")
    cams = ring_cameras()
    out = write_transforms(tmp_path / "transforms.json", cams, imgs)
    data = json.loads(out.read_text())
    assert data["frames"][0]["file_path"] == "images/f0.png"  # relative to the JSON's folder
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h", "transform_matrix"} <= set(data["frames"][1])
    vs = read_transforms(tmp_path)  # the folder works as well as the file
    assert vs.names == ["f0.png", "f1.png", "f2.png"]
    assert_cameras_close(cams, vs.cameras)
    assert vs.masks is None and vs.images[0].shape == (H, W, 3)
    assert vs.meta["image_paths"][2] == str(imgs[2])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic write left no temp file


def test_write_from_viewset_with_masks_round_trip(tmp_path):
    imgs = write_images(tmp_path / "data" / "rgb")
    masks = write_images(tmp_path / "data" / "masks", prefix="m")
    cams = ring_cameras()
    vs = ViewSet(
        names=[p.name for p in imgs],
        images=[np.zeros((H, W, 3), np.float32)] * 3,
        cameras=cams,
        meta={"image_paths": [str(p) for p in imgs]},
    )
    out = write_transforms(tmp_path / "out", vs, mask_paths=masks)
    assert out == tmp_path / "out" / "transforms.json"
    assert json.loads(out.read_text())["frames"][0]["file_path"] == "../data/rgb/f0.png"
    back = read_transforms(out)
    assert_cameras_close(cams, back.cameras)
    assert back.masks is not None and back.masks[0].shape == (H, W)


def test_write_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="3 cameras but 2 image paths"):
        write_transforms(tmp_path / "t.json", ring_cameras(), ["a.png", "b.png"])
    with pytest.raises(ValueError, match="no cameras"):
        write_transforms(tmp_path / "t.json", ViewSet(names=["a"], images=[np.zeros((2, 2, 3))]))


# ------------------------------------------------------------------------------------------------ formats
def test_blender_camera_angle_x_extensionless_and_alpha_masks(tmp_path):
    write_images(tmp_path / "train", n=2, alpha=True, prefix="r_")
    cams = ring_cameras(2)
    angle = 0.6911112070083618
    data = {"camera_angle_x": angle, "frames": [frame(f"./train/r_{i}", c) for i, c in enumerate(cams)]}
    vs = read_transforms(dump(tmp_path / "transforms_train.json", data))
    f = 0.5 * W / math.tan(0.5 * angle)
    np.testing.assert_allclose(vs.cameras[0].K, intrinsics(f, f, W / 2, H / 2), atol=1e-9)
    np.testing.assert_allclose(vs.cameras[1].viewmat, cams[1].viewmat, atol=1e-9)
    assert vs.masks is not None and vs.masks[0][H // 2, W // 2] == 1.0 and vs.masks[0][0, 0] == 0.0
    # a folder with transforms_train.json is a Blender/NeRF-synthetic scene (recon.io.blender, on read_transforms)
    assert detect_format(tmp_path) == "blender"


def test_global_intrinsics_per_frame_override_and_distortion_warning(tmp_path, caplog):
    write_images(tmp_path / "images", n=2)
    cams = ring_cameras(2)
    data = {
        "fl_x": 30.0,
        "fl_y": 31.0,
        "cx": 16.5,
        "cy": 11.5,
        "w": W,
        "h": H,
        "k1": 0.05,
        "frames": [frame("images/f0.png", cams[0]), frame("images/f1.png", cams[1], fl_x=35.0, cx=15.0)],
    }
    with caplog.at_level("WARNING"):
        vs = read_views(dump(tmp_path / "transforms.json", data))
    np.testing.assert_allclose(vs.cameras[0].K, intrinsics(30, 31, 16.5, 11.5))
    np.testing.assert_allclose(vs.cameras[1].K, intrinsics(35, 31, 15.0, 11.5))
    assert "distortion" in caplog.text


def test_origin_projects_to_principal_point(tmp_path):
    # Blender camera 4 units up the +z axis, looking down -z at the origin (identity rotation).
    write_images(tmp_path, n=2)
    c2w = np.eye(4)
    c2w[2, 3] = 4.0
    data = {
        "fl_x": 30.0,
        "cx": 16.0,
        "cy": 12.0,
        "frames": [{"file_path": f"f{i}.png", "transform_matrix": c2w.tolist()} for i in range(2)],
    }
    vs = read_transforms(dump(tmp_path / "transforms.json", data))
    uv, z = vs.cameras[0].project(np.zeros((1, 3)))
    np.testing.assert_allclose(uv[0], [16.0, 12.0])
    assert z[0] == pytest.approx(4.0)
    assert vs.cameras[0].fy == 30.0 and (vs.cameras[0].width, vs.cameras[0].height) == (W, H)


def test_downscale_and_rescaled_images(tmp_path):
    imgs = write_images(tmp_path / "images")
    cams = ring_cameras()
    write_transforms(tmp_path / "transforms.json", cams, imgs)
    vs = read_transforms(tmp_path / "transforms.json", downscale=2)
    assert vs.images[0].shape == (H // 2, W // 2, 3)
    assert_cameras_close([c.resized(W // 2, H // 2) for c in cams], vs.cameras)
    # Intrinsics written for 2x larger images than those on disk: K follows the images.
    big = [Camera(K=c.K * np.array([[2], [2], [1]]), viewmat=c.viewmat, width=2 * W, height=2 * H) for c in cams]
    write_transforms(tmp_path / "transforms.json", big, imgs)
    assert_cameras_close(cams, read_transforms(tmp_path / "transforms.json").cameras)


# ------------------------------------------------------------------------------------------------ bad input
def test_malformed_json_reports_line_and_column(tmp_path):
    bad = tmp_path / "transforms.json"
    bad.write_text('{\n  "frames": [\n    {"file_path": "a.png",,}\n  ]\n}\n')
    with pytest.raises(ReconInputError, match=r"transforms.json: malformed JSON at line 3 column 27"):
        read_transforms(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ReconInputError, match="transforms.json.*top level must be a JSON object"):
        read_transforms(bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ReconInputError, match="transforms.json.*malformed JSON"):
        read_transforms(bad)


def test_missing_keys_name_key_and_frame(tmp_path):
    write_images(tmp_path / "images", n=2)
    cams = ring_cameras(2)
    path = tmp_path / "transforms.json"
    with pytest.raises(ReconInputError, match="transforms.json.*missing key 'frames'"):
        read_transforms(dump(path, {"fl_x": 30}))
    good = [frame("images/f0.png", cams[0]), frame("images/f1.png", cams[1])]
    no_matrix = [good[0], {"file_path": "images/f1.png"}]
    with pytest.raises(ReconInputError, match="frame 1: missing key 'transform_matrix'"):
        read_transforms(dump(path, {"fl_x": 30.0, "frames": no_matrix}))
    with pytest.raises(ReconInputError, match="frame 0: missing key 'fl_x' \\(or 'camera_angle_x'\\)"):
        read_transforms(dump(path, {"frames": good}))
    no_file = [good[0], {"transform_matrix": good[1]["transform_matrix"]}]
    with pytest.raises(ReconInputError, match="frame 1: missing key 'file_path'"):
        read_transforms(dump(path, {"fl_x": 30.0, "frames": no_file}))
    bad_matrix = [good[0], {"file_path": "images/f1.png", "transform_matrix": [[1, 0], [0, 1]]}]
    with pytest.raises(ReconInputError, match="frame 1: 'transform_matrix' must be a 4x4"):
        read_transforms(dump(path, {"fl_x": 30.0, "frames": bad_matrix}))
    with pytest.raises(ReconInputError, match="frame 0: 'fl_x' must be a number"):
        read_transforms(dump(path, {"fl_x": "wide", "frames": good}))
    half_masks = [dict(good[0], mask_path="images/f0.png"), good[1]]
    with pytest.raises(ReconInputError, match="frame 1: missing key 'mask_path'"):
        read_transforms(dump(path, {"fl_x": 30.0, "frames": half_masks}))


def test_missing_files_and_counts(tmp_path):
    write_images(tmp_path / "images", n=2)
    cams = ring_cameras(2)
    path = tmp_path / "transforms.json"
    frames = [frame("images/f0.png", cams[0]), frame("images/gone.png", cams[1])]
    with pytest.raises(ReconInputError, match="transforms.json: frame 1: image file not found: images/gone.png"):
        read_transforms(dump(path, {"fl_x": 30.0, "frames": frames}))
    masks = [frame("images/f0.png", cams[0], mask_path="m0.png"), frame("images/f1.png", cams[1], mask_path="m1.png")]
    with pytest.raises(ReconInputError, match="frame 0: mask file not found: m0.png"):
        read_transforms(dump(path, {"fl_x": 30.0, "frames": masks}))
    with pytest.raises(ReconInputError, match="transforms.json: found 1 frames; need at least 2"):
        read_transforms(dump(path, {"fl_x": 30.0, "frames": frames[:1]}))
    with pytest.raises(ReconInputError, match="nope.json.*does not exist"):
        read_transforms(tmp_path / "nope.json")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(ReconInputError, match="emptydir.*no transforms.json"):
        read_transforms(empty)


def test_image_size_disagrees_with_intrinsics(tmp_path):
    write_images(tmp_path / "images", n=2)
    cams = ring_cameras(2, w=40, h=40)  # square camera, 4:3 images
    path = write_transforms(tmp_path / "transforms.json", cams, ["images/f0.png", "images/f1.png"])
    with pytest.raises(ReconInputError, match=r"f0.png: image is 32x24 but its camera is 40x40"):
        read_transforms(path)


# ------------------------------------------------------------------------------------------------ hostile values
def _scene(tmp_path: Path) -> tuple[Path, dict]:
    """A valid 3-frame transforms.json (global intrinsics) and its data, for one edit per test case."""
    write_images(tmp_path / "images")
    frames = [frame(f"images/f{i}.png", c) for i, c in enumerate(ring_cameras())]
    return tmp_path / "transforms.json", {
        "fl_x": 40.0,
        "fl_y": 40.0,
        "cx": 16.0,
        "cy": 12.0,
        "w": W,
        "h": H,
        "frames": frames,
    }


def _matrix(data: dict, fn) -> None:
    m = np.array(data["frames"][1]["transform_matrix"])
    fn(m)
    data["frames"][1]["transform_matrix"] = m.tolist()


def _no_focal(data: dict, angle: float) -> None:
    del data["fl_x"], data["fl_y"]
    data["camera_angle_x"] = angle


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: _matrix(d, lambda m: m.__setitem__((slice(0, 3), slice(0, 3)), 2 * m[:3, :3])),
            r"frame 1: 'transform_matrix': rotation is not orthonormal \(\|R\^T R - I\| up to 3",
        ),
        (lambda d: _matrix(d, lambda m: m.__setitem__((0, 1), m[0, 1] + 0.3)), "rotation is not orthonormal"),
        (
            lambda d: _matrix(d, lambda m: m.__setitem__((slice(0, 3), 0), -m[:3, 0])),
            r"frame 1: 'transform_matrix': rotation is a reflection \(determinant < 0",
        ),
        (lambda d: _matrix(d, lambda m: m.__setitem__((0, 3), 1e308)), r"camera position .* beyond 1e\+07 world units"),
        (lambda d: _matrix(d, lambda m: m.__setitem__(3, [0.5, 0, 0, 2])), r"bottom row is \[0.5, 0.0, 0.0, 2.0\]"),
        (lambda d: d.update(fl_x=0), "frame 0: focal length must be positive, got fx=0"),
        (lambda d: d.update(fl_x=-40.0, fl_y=-40.0), "focal length must be positive, got fx=-40"),
        (lambda d: d.update(fl_x=float("nan")), "'fl_x' must be finite, got nan"),
        (
            lambda d: d.update(fl_x=1e-9),
            r"horizontal field of view 180 degrees \(focal 1e-09 px for 32 px\) is outside",
        ),
        (lambda d: d.update(fl_y=1e308), "vertical field of view .* is outside 0.01..170 degrees"),
        (lambda d: d.update(cx=1e308), "principal point cx=1e\\+308 is far outside the 32 px image"),
        (lambda d: d.update(w=1e18, h=7.5e17), "image width must be a whole number of pixels in 1..1000000"),
        (lambda d: d.update(w=32.5), "image width must be a whole number"),
        (
            lambda d: _no_focal(d, math.pi),
            r"'camera_angle_x' must be a field of view in radians between 0 and 2.9671 "
            r"\(170 degrees\), got 3.14159",
        ),
        (lambda d: _no_focal(d, 0.0), "'camera_angle_x' must be a field of view .* got 0"),
        (lambda d: _no_focal(d, 4.0), "'camera_angle_x' must be a field of view .* got 4"),
        (lambda d: (d.pop("fl_y"), d.update(camera_angle_y=-1.0)), "'camera_angle_y' must be a field of view"),
        (
            lambda d: d.update(camera_model="OPENCV_FISHEYE", k4=0.1),
            "camera_model 'OPENCV_FISHEYE' is not supported: only pinhole models",
        ),
        (lambda d: d.update(camera_model="EQUIRECTANGULAR"), "camera_model 'EQUIRECTANGULAR' is not supported"),
        (lambda d: d.update(camera_model=42), "'camera_model' must be a string, got 42"),
        (
            lambda d: d["frames"][1].update(file_path="images/f0.png"),
            r"frame 1: image images/f0.png is already used by frame 0 \(every frame must be a different image\)",
        ),
        (
            lambda d: d["frames"][2].update(file_path="./images/../images/f0.png"),
            "frame 2: image .* is already used by frame 0",
        ),
    ],
)
def test_bad_cameras_are_one_line_errors(tmp_path, edit, message):
    path, data = _scene(tmp_path)
    read_transforms(dump(path, data))  # the unedited scene is fine
    edit(data)
    with pytest.raises(ReconInputError, match=message) as err:
        read_transforms(dump(path, data))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_same_image_in_three_frames(tmp_path):
    path, data = _scene(tmp_path)
    for f in data["frames"]:
        f["file_path"] = "images/f2.png"
    with pytest.raises(ReconInputError, match="frame 1: image images/f2.png is already used by frame 0"):
        read_transforms(dump(path, data))


def test_nearly_orthonormal_rotation_is_made_exact(tmp_path):
    """Text files round numbers: a rotation off by 1e-5 is accepted, re-orthonormalised, the centre kept."""
    path, data = _scene(tmp_path)
    rng = np.random.default_rng(0)
    _matrix(data, lambda m: m.__setitem__((slice(0, 3), slice(0, 3)), m[:3, :3] + 1e-5 * rng.standard_normal((3, 3))))
    cam = read_transforms(dump(path, data)).cameras[1]
    assert np.abs(cam.R.T @ cam.R - np.eye(3)).max() < 1e-12 and np.linalg.det(cam.R) > 0
    np.testing.assert_allclose(cam.center, ring_cameras()[1].center, atol=1e-9)
    np.testing.assert_allclose(cam.R, ring_cameras()[1].R, atol=1e-4)


@pytest.mark.parametrize("model", ["PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "simple_radial"])
def test_pinhole_models_are_read(tmp_path, model):
    path, data = _scene(tmp_path)
    data["camera_model"] = model
    assert len(read_transforms(dump(path, data))) == 3


def test_hostile_json(tmp_path, monkeypatch):
    import os

    from recon.io import jsonfile

    path, data = _scene(tmp_path)
    path.write_text('{"frames": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ReconInputError, match="transforms.json: malformed JSON: nested too deeply"):
        read_transforms(path)
    path.write_text('{"frames": ' + "[" * 70 + "]" * 70 + "}")
    with pytest.raises(ReconInputError, match="malformed JSON: nested more than 64 levels deep"):
        read_transforms(path)
    path.write_text('{"fl_x": ' + "9" * 5000 + ', "frames": []}')
    with pytest.raises(ReconInputError, match="malformed JSON: Exceeds the limit") as err:
        read_transforms(path)
    assert "\n" not in str(err.value)
    path.write_text(json.dumps(data).replace("40.0", "Infinity", 1))
    with pytest.raises(ReconInputError, match="'fl_x' must be finite, got inf"):
        read_transforms(path)
    monkeypatch.setattr(jsonfile, "MAX_JSON_BYTES", 100)
    dump(path, data)
    with pytest.raises(
        ReconInputError,
        match=r"transforms.json: transforms file is too large \(\d+ bytes; the limit "
        r"is 100\)",
    ):
        read_transforms(path)
    monkeypatch.undo()
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ReconInputError, match="transforms.json: transforms file is a FIFO, not a regular file"):
        read_views(tmp_path)
