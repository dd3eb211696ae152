"""SpaRe-style scene IO: layout, split files, camera round trip, DTU-style inputs, and user errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io import spare
from recon.io.spare import (
    image_name,
    is_scene,
    list_scenes,
    read_depth,
    read_projection,
    read_spare_scene,
    read_split,
    write_projection,
    write_spare_scene,
    write_split,
)

W, H, N = 32, 24, 20
TRACK3 = {"input_views": [9, 7, 11], "test_views": [0, 5, 15, 19]}
TRACK9 = {"input_views": [9, 7, 11, 1, 3, 13, 14, 16, 18], "test_views": [0, 5, 15, 19]}


def _rig(n: int = N, width: int = W, height: int = H) -> list[Camera]:
    K = intrinsics(30.0, 31.0, width / 2 + 0.3, height / 2 - 0.2)
    cams = []
    for i in range(n):
        a = np.radians(-50 + 100 * i / (n - 1))
        eye = np.array([3 * np.cos(a), 3 * np.sin(a), 1.0 + 0.05 * i])
        cams.append(Camera.look_at(eye, np.zeros(3), np.array([0.0, 0.0, 1.0]), K, width, height))
    return cams


def _write(path: Path, views: list[int] | None = None, **kw) -> tuple[Path, list[Camera], dict]:
    cams = _rig()
    rng = np.random.default_rng(0)
    views = list(range(N)) if views is None else views
    images = {i: rng.random((H, W, 3)).astype(np.float32) for i in views}
    masks = {i: rng.random((H, W)) > 0.5 for i in views}
    depths = {i: np.where(masks[i], rng.uniform(1.0, 4.0, (H, W)), 0.0) for i in views}
    kw.setdefault("splits", {"track3": TRACK3, "track9": TRACK9})
    write_spare_scene(path, cams, images, name="toy", masks=masks, depths=depths, meta={"seed": 1}, **kw)
    return path, cams, {"images": images, "masks": masks, "depths": depths}


@pytest.fixture()
def scene(tmp_path: Path) -> tuple[Path, list[Camera], dict]:
    return _write(tmp_path / "toy")


# ----------------------------------------------------------------------------------------- layout and round trip
def test_layout_names_and_index_base(scene):
    path, _, _ = scene
    assert (path / "images" / "cam_001_3_0000.png").exists()  # index 0 -> file number 1
    assert (path / "images" / "cam_020_3_0000.png").exists()
    assert not (path / "images" / "cam_021_3_0000.png").exists()
    assert (path / "masks" / "cam_001_3_0000.png").exists()
    assert (path / "depth" / "cam_001.png").exists()
    assert sorted(p.name for p in (path / "cameras").iterdir())[:2] == ["pos_001.txt", "pos_002.txt"]
    split = json.loads((path / "splits" / "track3.json").read_text())
    assert split == {"toy": {**TRACK3, "dataset": "synthetic"}}
    info = json.loads((path / "scene.json").read_text())
    assert (info["name"], info["n_cameras"], info["width"], info["height"]) == ("toy", N, W, H)
    assert info["seed"] == 1 and info["views"] == list(range(N))
    assert image_name(24) == "cam_025_3_0000.png" and image_name(24, "DTU") == "rect_025_3_r5000.png"


def test_round_trip_cameras_images_masks(scene):
    path, cams, data = scene
    vs = read_spare_scene(path, track=3, split="train")
    assert vs.meta["indices"] == TRACK3["input_views"]
    assert vs.names == ["cam_010_3_0000", "cam_008_3_0000", "cam_012_3_0000"]
    for k, i in enumerate(TRACK3["input_views"]):
        cam = vs.cameras[k]
        assert cam.extra["index"] == i and (cam.width, cam.height) == (W, H)
        np.testing.assert_allclose(cam.K, cams[i].K, atol=1e-7)
        np.testing.assert_allclose(cam.viewmat, cams[i].viewmat, atol=1e-9)
        np.testing.assert_allclose(vs.images[k], np.round(data["images"][i] * 255) / 255, atol=1e-6)
        np.testing.assert_array_equal(vs.masks[k] > 0.5, data["masks"][i])
        assert vs.images[k].dtype == np.float32 and vs.images[k].shape == (H, W, 3)


def test_projection_points_land_where_they_should(scene):
    path, cams, _ = scene
    vs = read_spare_scene(path, split="all")
    pts = np.random.default_rng(1).uniform(-0.5, 0.5, (100, 3))
    for cam in vs.cameras:
        uv_read, z_read = cam.project(pts)
        uv_true, z_true = cams[cam.extra["index"]].project(pts)
        assert np.abs(uv_read - uv_true).max() < 1e-6
        np.testing.assert_allclose(z_read, z_true, rtol=1e-9)


def test_splits_and_default_track(scene):
    path, _, _ = scene
    default = read_spare_scene(path)  # track 3, input views
    assert default.meta["track"] == 3 and default.meta["split"] == "train"
    assert default.meta["indices"] == TRACK3["input_views"]
    test9 = read_spare_scene(path, track=9, split="test")
    assert test9.meta["indices"] == TRACK9["test_views"] and len(test9) == 4
    assert test9.meta["input_views"] == TRACK9["input_views"]
    train9 = read_spare_scene(path, split_file=path / "splits" / "track9.json")
    assert len(train9) == 9 and train9.meta["scene"] == "toy" and train9.meta["dataset"] == "synthetic"
    everything = read_spare_scene(path, split="all")
    assert len(everything) == N and everything.meta["input_views"] is None


def test_depth_round_trip(scene):
    path, _, data = scene
    vs = read_spare_scene(path, split="all")
    for k in (0, 7):
        d = read_depth(vs.meta["depth_paths"][k], vs.meta["depth_scale"])
        true = data["depths"][k]
        assert d.dtype == np.float32 and d.shape == (H, W)
        np.testing.assert_array_equal(d > 0, true > 0)
        assert np.abs(d - true).max() <= vs.meta["depth_scale"] / 2 + 1e-6


def test_depth_out_of_range_is_refused(tmp_path):
    cams = _rig(3)
    img = {0: np.zeros((H, W, 3))}
    with pytest.raises(ValueError, match="uint16"):
        write_spare_scene(tmp_path / "s", cams, img, name="s", depths={0: np.full((H, W), 10.0)})
    assert not (tmp_path / "s").exists()  # atomic: nothing left behind


def test_sparse_views_scene(tmp_path):
    views = sorted(set(TRACK9["input_views"] + TRACK9["test_views"]))
    path, _, _ = _write(tmp_path / "sparse", views=views)
    assert len(list((path / "images").iterdir())) == len(views)
    assert len(list((path / "cameras").iterdir())) == N  # the whole rig is kept
    assert len(read_spare_scene(path, track=9, split="test")) == 4
    assert read_spare_scene(path, split="all").meta["indices"] == views


def test_write_refuses_non_empty_folder_unless_overwrite(scene):
    path, _, _ = scene
    with pytest.raises(ReconInputError):
        _write(path)
    _write(path, overwrite=True, splits={"track3": TRACK3})
    assert not (path / "splits" / "track9.json").exists()


# ----------------------------------------------------------------------------------------- DTU / original SpaRe layout
def test_dtu_layout_with_separate_calibration(tmp_path):
    big = _rig(N, 4 * W, 4 * H)  # projection matrices made for 4x the image size, as DTU's 1600x1200
    calib = tmp_path / "Calibration" / "cal18"
    calib.mkdir(parents=True)
    for i, cam in enumerate(big):
        write_projection(calib / f"pos_{i + 1:03d}.txt", cam.to_projection() * 7.5)  # any scale
    scan = tmp_path / "Rectified" / "scan1"
    scan.mkdir(parents=True)
    for i in range(N):
        cv2.imwrite(str(scan / image_name(i, "dtu")), np.full((H, W, 3), i, np.uint8))
    write_split(tmp_path / "split.json", {"scan1": {**TRACK3, "dataset": "DTU"}})
    assert is_scene(scan)
    vs = read_spare_scene(
        scan, split_file=tmp_path / "split.json", calibration_dir=calib, calibration_size=(4 * W, 4 * H)
    )
    assert vs.names[0] == "rect_010_3_r5000" and vs.meta["dataset"] == "DTU"
    pts = np.random.default_rng(2).uniform(-0.5, 0.5, (50, 3))
    for cam in vs.cameras:
        uv_small, _ = cam.project(pts)
        uv_big, _ = big[cam.extra["index"]].project(pts)
        assert (cam.width, cam.height) == (W, H)
        assert np.abs(uv_small - uv_big / 4).max() < 1e-6  # same rays, pixel-centre convention kept


def test_list_scenes(tmp_path):
    _write(tmp_path / "b")
    _write(tmp_path / "a")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    assert list_scenes(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert list_scenes(tmp_path / "a") == [tmp_path / "a"]
    with pytest.raises(ReconInputError, match="no SpaRe-style scenes"):
        list_scenes(tmp_path / "notes")
    with pytest.raises(ReconInputError, match="not found"):
        list_scenes(tmp_path / "missing")


def test_detect_reads_spare_scene(scene):
    from recon.io.detect import detect_format, read_views

    path, _, _ = scene
    assert detect_format(path) == "spare"
    vs = read_views(path, track=9, split="train")
    assert len(vs) == 9 and vs.cameras is not None


# ----------------------------------------------------------------------------------------- split validation
@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "non-empty JSON object"),
        ("{}", "non-empty JSON object"),
        ('{"s": [1, 2]}', "entry must be an object"),
        ('{"s": {"test_views": [1]}}', "missing 'input_views'"),
        ('{"s": {"input_views": [1], "test_views": "2"}}', "test_views must be a list"),
        ('{"s": {"input_views": [1, -2], "test_views": []}}', "negative"),
        ('{"s": {"input_views": [1, 1], "test_views": []}}', "twice"),
        ('{"s": {"input_views": [1.5], "test_views": []}}', "must be a list of integer"),
        ('{"s": {"input_views": [true], "test_views": []}}', "must be a list of integer"),
        ('{"s": {"input_views": [], "test_views": [1]}}', "input_views is empty"),
        ('{"s": {"input_views": [1, 2], "test_views": [2, 3]}}', r"views \[2\] are both"),
        ('{"s": {"input_views": [1], "test_views": [2], "dataset": 3}}', "dataset must be a string"),
    ],
)
def test_read_split_rejects_malformed(tmp_path, content, message):
    path = tmp_path / "split.json"
    path.write_text(content)
    with pytest.raises(ReconInputError, match=message) as err:
        read_split(path)
    assert str(path) in str(err.value)


def test_read_split_accepts_spare_form(tmp_path):
    path = tmp_path / "Track1_split_test.json"
    path.write_text(
        '{"scan63": {"input_views": [25, 22, 28], "test_views": [1, 2], "dataset": "DTU"},'
        ' "Amplifier": {"input_views": [0, 4, 8], "test_views": [3]}}'
    )
    entries = read_split(path)
    assert entries["scan63"]["input_views"] == [25, 22, 28]
    assert entries["Amplifier"]["dataset"] == ""


# ----------------------------------------------------------------------------------------- reader errors
def test_missing_image_names_the_file(scene):
    path, _, _ = scene
    (path / "images" / "cam_008_3_0000.png").unlink()  # index 7, a track-3 input view
    with pytest.raises(ReconInputError, match="cam_008_3_0000.png") as err:
        read_spare_scene(path, track=3)
    assert "view index 7" in str(err.value)


def test_index_out_of_range(scene):
    path, _, _ = scene
    write_split(path / "splits" / "track3.json", {"toy": {"input_views": [1, 2, 25], "test_views": []}})
    with pytest.raises(ReconInputError, match="view index 25 out of range") as err:
        read_spare_scene(path)
    assert "track3.json" in str(err.value)


def test_scene_missing_from_split_file(scene, tmp_path):
    path, _, _ = scene
    write_split(tmp_path / "other.json", {"scan1": TRACK3})
    with pytest.raises(ReconInputError, match="no entry for scene 'toy'"):
        read_spare_scene(path, split_file=tmp_path / "other.json")


def test_missing_split_file(scene):
    path, _, _ = scene
    with pytest.raises(ReconInputError, match="track5.json: split file not found"):
        read_spare_scene(path, track=5)


def test_camera_count_mismatch(scene):
    path, _, _ = scene
    (path / "cameras" / "pos_020.txt").unlink()
    with pytest.raises(ReconInputError, match="lists 20 cameras but") as err:
        read_spare_scene(path)
    assert "scene.json" in str(err.value)


def test_image_without_camera(scene):
    path, _, _ = scene
    shutil.copy(path / "images" / "cam_001_3_0000.png", path / "images" / "cam_030_3_0000.png")
    with pytest.raises(ReconInputError, match="cam_030_3_0000.png has no camera"):
        read_spare_scene(path)


def test_gap_in_camera_files(scene):
    path, _, _ = scene
    (path / "cameras" / "pos_005.txt").unlink()
    with pytest.raises(ReconInputError, match="missing pos_005.txt"):
        read_spare_scene(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 3 4\n5 6 7 8\n9 10 11\n", "found 11 numbers"),
        ("1 2 3 4\n5 6 x 8\n9 10 11 12\n", "non-numeric"),
        ("1 2 3 4\n2 4 6 8\n0 0 1 0\n", "degenerate"),
        ("1 0 0 0\n0 1 0 0\n0 0 nan 1\n", "degenerate"),
    ],
)
def test_bad_projection_file(scene, text, message):
    path, _, _ = scene
    bad = path / "cameras" / "pos_003.txt"
    bad.write_text(text)
    with pytest.raises(ReconInputError, match=message) as err:
        read_spare_scene(path)
    assert "pos_003.txt" in str(err.value)


def test_projection_text_round_trip(tmp_path):
    P = _rig(2)[1].to_projection()
    write_projection(tmp_path / "pos_001.txt", P)
    assert len((tmp_path / "pos_001.txt").read_text().splitlines()) == 3
    np.testing.assert_allclose(read_projection(tmp_path / "pos_001.txt"), P, rtol=1e-11)


def test_missing_and_mismatched_masks(scene):
    path, _, _ = scene
    (path / "masks" / "cam_010_3_0000.png").unlink()
    with pytest.raises(ReconInputError, match="mask missing for view index 9"):
        read_spare_scene(path)
    cv2.imwrite(str(path / "masks" / "cam_010_3_0000.png"), np.zeros((H + 1, W), np.uint8))
    with pytest.raises(ReconInputError, match="mask is 32x25, image is 32x24"):
        read_spare_scene(path)


def test_image_size_differs_from_scene_json(scene):
    path, _, _ = scene
    cv2.imwrite(str(path / "images" / "cam_010_3_0000.png"), np.zeros((H * 2, W * 2, 3), np.uint8))
    with pytest.raises(ReconInputError, match="image is 64x48 but scene.json says 32x24"):
        read_spare_scene(path)


def test_corrupt_image_and_scene_json(scene):
    path, _, _ = scene
    (path / "images" / "cam_010_3_0000.png").write_bytes(b"not a png")
    with pytest.raises(ReconInputError, match="cam_010_3_0000.png"):
        read_spare_scene(path)
    (path / "scene.json").write_text("{oops")
    with pytest.raises(ReconInputError, match="scene.json: not valid JSON"):
        read_spare_scene(path)


def test_not_a_scene(tmp_path):
    with pytest.raises(ReconInputError, match="scene folder not found"):
        read_spare_scene(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReconInputError, match="no cameras folder"):
        read_spare_scene(tmp_path / "empty")
    assert not is_scene(tmp_path / "empty")


def test_read_depth_errors(tmp_path):
    with pytest.raises(ReconInputError, match="cannot read file"):
        read_depth(tmp_path / "missing.png")
    cv2.imwrite(str(tmp_path / "d8.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(ReconInputError, match="16-bit"):
        read_depth(tmp_path / "d8.png")
    assert spare.DEPTH_SCALE * 65535 > 6.0  # enough range for the synthetic rigs (radius < 3.5)


def test_malformed_views_in_scene_json(scene):
    path, _, _ = scene
    info = json.loads((path / "scene.json").read_text())
    info["views"] = "all of them"
    (path / "scene.json").write_text(json.dumps(info))
    with pytest.raises(ReconInputError, match="views must be a list"):
        read_spare_scene(path, split="all")


def test_plain_folder_with_cameras_subfolder_is_not_a_scene(tmp_path):
    (tmp_path / "cameras").mkdir()
    (tmp_path / "cameras" / "notes.txt").write_text("not a projection matrix")
    assert not is_scene(tmp_path)


# ----------------------------------------------------------------------------------------- hostile scenes
def test_split_with_one_input_view_is_refused(scene):
    path, _, _ = scene
    write_split(path / "splits" / "track3.json", {"toy": {"input_views": [9], "test_views": [0, 5]}})
    with pytest.raises(
        ReconInputError,
        match=r"track3.json: scene 'toy': input_views has only 1 view; at least 2 are "
        r"needed",
    ):
        read_spare_scene(path)
    from recon.io.image_folder import MIN_VIEWS

    assert MIN_VIEWS == 2


def test_sheared_and_far_projection_matrices_are_refused(scene):
    path, cams, _ = scene
    shear = np.eye(3)
    shear[0, 1] = 0.4
    write_projection(path / "cameras" / "pos_010.txt", shear @ cams[9].to_projection())
    with pytest.raises(
        ReconInputError,
        match=r"pos_010.txt: projection matrix: intrinsics are skewed \(sheared pixel "
        r"axes, skew 12.4 px\)",
    ):
        read_spare_scene(path)
    far = cams[9].to_projection()
    far[:, 3] = 1e300
    write_projection(path / "cameras" / "pos_010.txt", far)
    with pytest.raises(
        ReconInputError,
        match=r"pos_010.txt: projection matrix: camera centre .* is not finite or "
        r"beyond 1e\+07 world units",
    ):
        read_spare_scene(path)


def test_negatively_scaled_projection_is_the_same_camera(scene):
    """P and -P are one projective camera: a matrix with det < 0 is read as a negative scale, not refused."""
    path, cams, _ = scene
    write_projection(path / "cameras" / "pos_010.txt", -3.0 * cams[9].to_projection())
    cam = read_spare_scene(path).cameras[0]
    np.testing.assert_allclose(cam.viewmat, cams[9].viewmat, atol=1e-9)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda info: info.update(views=[9, 9, 9]), "scene.json: views lists a view twice"),
        (lambda info: info.update(depth=[1]), r"scene.json: depth must be null or \{"),
        (lambda info: info.update(depth={"folder": "depth", "scale": -1}), "depth must be null or"),
        (lambda info: info.pop("height"), "scene.json: width and height must be given together"),
        (lambda info: info.update(n_cameras="20"), "scene.json: n_cameras must be a positive integer"),
        (lambda info: info.update(name=["toy"]), "scene.json: name must be a string"),
    ],
)
def test_malformed_scene_json_fields(scene, edit, message):
    path, _, _ = scene
    info = json.loads((path / "scene.json").read_text())
    edit(info)
    (path / "scene.json").write_text(json.dumps(info))
    with pytest.raises(ReconInputError, match=message):
        read_spare_scene(path, split="all")


def test_deeply_nested_json_is_one_line_error(scene):
    path, _, _ = scene
    deep = "[" * 100_000 + "]" * 100_000
    (path / "splits" / "track3.json").write_text('{"toy": ' + deep + "}")
    with pytest.raises(ReconInputError, match="track3.json: split file is not valid JSON: nested too deeply"):
        read_spare_scene(path)
    (path / "scene.json").write_text(deep)
    with pytest.raises(ReconInputError, match="scene.json: not valid JSON: nested too deeply"):
        read_spare_scene(path)


def test_special_and_oversized_camera_files(scene):
    import os

    path, _, _ = scene
    pos = path / "cameras" / "pos_002.txt"
    pos.write_text("1 " * 40_000)
    with pytest.raises(ReconInputError, match=r"pos_002.txt: projection matrix file is too large"):
        read_spare_scene(path)
    pos.unlink()
    os.mkfifo(pos)
    with pytest.raises(ReconInputError, match="pos_002.txt: projection matrix file is a FIFO, not a regular file"):
        read_spare_scene(path)
    depth = path / "depth" / "cam_001.png"
    depth.unlink()
    os.mkfifo(depth)
    with pytest.raises(ReconInputError, match=r"cam_001.png: cannot read file \(depth file is a FIFO"):
        read_depth(depth)
