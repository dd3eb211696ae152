"""Readers for the real datasets' own layouts (LLFF, DTU IDR/NeuS and RegNeRF/MVSNet, Blender) on tiny files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.blender import is_blender_scene, read_blender
from recon.io.dtu import is_dtu_idr_scene, is_dtu_rect_scene, read_dtu
from recon.io.llff import is_llff_scene, read_llff

W, H = 8, 6
DTU_K = intrinsics(2892.33, 2883.18, 823.2, 619.07)  # DTU's calibration, 1600x1200


def write_png(path: Path, arr: np.ndarray) -> Path:
    """uint8 HxW, HxWx3 (RGB) or HxWx4 (RGBA) array -> PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 3:
        arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]]
    assert cv2.imwrite(str(path), arr)
    return path


def noise(seed: int, w: int = W, h: int = H, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)


def assert_one_line_error(excinfo: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg, msg
    for w in words:
        assert w in msg, msg


def ring(n: int, K: np.ndarray, w: int, h: int, center=(0.0, 0.0, 0.0), radius: float = 3.0) -> list[Camera]:
    """Cameras on an arc looking at ``center`` (y down in the images)."""
    c = np.asarray(center, dtype=float)
    cams = []
    for i in range(n):
        a = 0.4 * i - 0.4
        eye = c + radius * np.array([math.sin(a), -0.3, -math.cos(a)])
        cams.append(Camera.look_at(eye, c, np.array([0.0, -1.0, 0.0]), K, w, h))
    return cams


# ----------------------------------------------------------------------------------------- LLFF
FULL_W, FULL_H, FULL_F = 80, 60, 100.0  # "full resolution" in poses_bounds; images_10 is 8x6


def llff_row(cam: Camera, near: float = 1.0, far: float = 9.0) -> np.ndarray:
    """One poses_bounds row: [down, right, back | centre | (H, W, focal)] row-major, then near, far."""
    c2w = cam.c2w
    right, down, forward = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
    m = np.stack([down, right, -forward, c2w[:3, 3], [FULL_H, FULL_W, FULL_F]], axis=1)
    return np.concatenate([m.reshape(-1), [near, far]])


def forward_cameras(n: int = 3) -> list[Camera]:
    K = intrinsics(FULL_F, FULL_F, FULL_W / 2, FULL_H / 2)
    return [
        Camera.look_at(
            np.array([0.3 * i - 0.3, 0.1 * i, 0.0]),
            np.array([0.0, 0.0, 5.0]),
            np.array([0.0, -1.0, 0.0]),
            K,
            FULL_W,
            FULL_H,
        )
        for i in range(n)
    ]


def make_llff(root: Path, folders=("images_10",), names=("a.png", "b.png", "c.png"), table=None) -> list[Camera]:
    cams = forward_cameras(len(names))
    root.mkdir(parents=True, exist_ok=True)
    rows = np.stack([llff_row(c, near=1.0 + i, far=9.0 + i) for i, c in enumerate(cams)])
    np.save(root / "poses_bounds.npy", rows if table is None else table)
    for folder in folders:
        factor = 1 if folder == "images" else int(folder.split("_")[1])
        for i, name in enumerate(names):
            write_png(root / folder / name, noise(i, FULL_W // factor, FULL_H // factor))
    return cams


def test_llff_cameras_scaled_to_the_folder_and_forward_facing(tmp_path: Path) -> None:
    cams = make_llff(tmp_path / "fern")
    assert is_llff_scene(tmp_path / "fern") and not is_llff_scene(tmp_path)
    v = read_llff(tmp_path / "fern")
    assert v.names == ["a.png", "b.png", "c.png"] and v.images[0].shape == (H, W, 3) and v.masks is None
    assert v.meta["layout"] == "llff" and v.meta["forward_facing"] is True and v.meta["factor"] == 10
    assert v.meta["near_far"] == [(1.0, 9.0), (2.0, 10.0), (3.0, 11.0)]
    point = np.array([[0.2, -0.1, 5.0]])
    for got, ref in zip(v.cameras, cams):
        np.testing.assert_allclose(got.K, intrinsics(10.0, 10.0, 4.0, 3.0), atol=1e-9)
        np.testing.assert_allclose(got.viewmat, ref.viewmat, atol=1e-9)
        np.testing.assert_allclose(got.project(point)[0], ref.project(point)[0] / 10, atol=1e-6)


def test_llff_folder_choice_and_factor(tmp_path: Path) -> None:
    make_llff(tmp_path / "s", folders=("images", "images_2", "images_10"))
    assert read_llff(tmp_path / "s").images[0].shape == (FULL_H, FULL_W, 3)  # images/ by default
    v = read_llff(tmp_path / "s" / "poses_bounds.npy", factor=2)
    assert v.images[0].shape == (30, 40, 3) and v.cameras[0].fx == pytest.approx(50.0)
    small = read_llff(tmp_path / "s", factor=10, downscale=2)
    assert small.images[0].shape == (3, 4, 3) and small.cameras[0].fx == pytest.approx(5.0)
    with pytest.raises(ReconInputError) as e:
        read_llff(tmp_path / "s", factor=4)
    assert_one_line_error(e, tmp_path / "s", "images_4")


def test_llff_rows_follow_plain_sorted_names(tmp_path: Path) -> None:
    """LLFF pairs rows with sorted(os.listdir): img10 comes before img9."""
    make_llff(tmp_path / "s", names=("img10.png", "img8.png", "img9.png"))
    assert read_llff(tmp_path / "s").names == ["img10.png", "img8.png", "img9.png"]


@pytest.mark.parametrize("case", ["count", "shape", "nan", "garbage", "bounds", "missing", "header"])
def test_llff_bad_input(tmp_path: Path, case: str) -> None:
    root = tmp_path / "s"
    make_llff(root)
    npy = root / "poses_bounds.npy"
    table = np.load(npy)
    if case == "count":
        (root / "images_10" / "c.png").unlink()
    elif case == "shape":
        np.save(npy, table[:, :15])
    elif case == "nan":
        table[1, 3] = np.nan
        np.save(npy, table)
    elif case == "garbage":
        npy.write_bytes(b"not a numpy file")
    elif case == "bounds":
        table[2, 15:] = [5.0, 1.0]
        np.save(npy, table)
    elif case == "header":  # numpy's header parser raised tokenize.TokenError here, not a ValueError
        npy.write_bytes(npy.read_bytes().replace(b"'shape': (3, 17)", b"'shape': (3, 17 "))
    else:
        npy.unlink()
    with pytest.raises(ReconInputError) as e:
        read_llff(root)
    assert_one_line_error(e, npy)


# ----------------------------------------------------------------------------------------- DTU, IDR / NeuS
SCALE_MAT = np.array([[200.0, 0, 0, 10.0], [0, 200.0, 0, -5.0], [0, 0, 200.0, 600.0], [0, 0, 0, 1]])
POINT_UNIT = np.array([[0.1, -0.2, 0.3]])  # in the unit sphere; SCALE_MAT @ it is the DTU world point


def dtu_world_cameras(n: int = 3) -> list[Camera]:
    """Cameras in DTU's world (mm), at the 1600x1200 calibration size, looking at the object."""
    return ring(n, DTU_K, 1600, 1200, center=SCALE_MAT[:3, 3], radius=550.0)


def world_point() -> np.ndarray:
    return (SCALE_MAT[:3, :3] @ POINT_UNIT[0] + SCALE_MAT[:3, 3])[None]


def make_idr(
    root: Path,
    size: tuple[int, int],
    n: int = 3,
    mask_digits: int = 3,
    k_scale: float = 1.0,
    npz_name: str = "cameras_sphere.npz",
    solid: bool = False,
) -> list[Camera]:
    cams = dtu_world_cameras(n)
    arrays = {}
    for i, c in enumerate(cams):
        K = c.K.copy()
        K[:2] *= k_scale
        P = np.eye(4)
        P[:3] = 3.7 * (K @ c.viewmat[:3])  # DTU's matrices have an arbitrary scale
        arrays[f"world_mat_{i}"] = P
        arrays[f"scale_mat_{i}"] = SCALE_MAT
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / npz_name, **arrays)
    w, h = size
    for i in range(n):
        img = np.full((h, w, 3), 40 * i, np.uint8) if solid else noise(i, w, h)
        write_png(root / "image" / f"{i:06d}.png", img)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        write_png(root / "mask" / f"{i:0{mask_digits}d}.png", mask)
    return cams


def check_projects(views, cams: list[Camera], size: tuple[int, int]) -> None:
    """Each read camera (unit-sphere frame) projects the known point where the DTU camera does, scaled."""
    for got, ref in zip(views.cameras, cams):
        assert (got.width, got.height) == size
        uv_ref = ref.project(world_point())[0] * size[0] / 1600
        np.testing.assert_allclose(got.project(POINT_UNIT)[0], uv_ref, atol=1e-6)


@pytest.mark.parametrize("size", [(400, 300), (160, 120)])
def test_dtu_idr_scales_calibration_to_the_image_size(tmp_path: Path, size: tuple[int, int]) -> None:
    cams = make_idr(tmp_path / "scan24", size)
    assert is_dtu_idr_scene(tmp_path / "scan24") and not is_dtu_rect_scene(tmp_path / "scan24")
    v = read_dtu(tmp_path / "scan24")
    assert v.names == ["000000", "000001", "000002"] and v.meta["layout"] == "dtu-idr"
    assert v.meta["calibration_size"] == (1600, 1200) and v.meta["normalised"] is True
    check_projects(v, cams, size)
    assert v.masks is not None and v.masks[0].shape == size[::-1]
    assert v.masks[0][size[1] // 2, size[0] // 2] == 1.0 and v.masks[0][0, 0] == 0.0
    # the unit-sphere frame: the object centre (origin) is in front of every camera
    assert all(c.project(np.zeros((1, 3)))[1][0] > 0 for c in v.cameras)


def test_dtu_idr_full_size_images_six_digit_masks_and_cameras_npz(tmp_path: Path) -> None:
    cams = make_idr(tmp_path / "s", (1600, 1200), mask_digits=6, npz_name="cameras.npz", solid=True)
    v = read_dtu(tmp_path / "s", max_size=400)
    assert v.images[0].shape == (300, 400, 3) and v.masks is not None
    check_projects(v, cams, (400, 300))
    assert read_dtu(tmp_path / "s", with_masks=False).masks is None


def test_dtu_idr_intrinsics_already_scaled_to_the_images(tmp_path: Path) -> None:
    """Copies whose world_mat was rescaled for 400x300 images read the same (told apart by the principal point)."""
    cams = make_idr(tmp_path / "s", (400, 300), k_scale=0.25)
    v = read_dtu(tmp_path / "s")
    assert v.meta["calibration_size"] == (400, 300)
    check_projects(v, cams, (400, 300))


@pytest.mark.parametrize("case", ["no_world_mat", "shape", "nan", "garbage", "npy", "raw_member"])
def test_dtu_idr_bad_camera_file(tmp_path: Path, case: str) -> None:
    root = tmp_path / "s"
    make_idr(root, (W, H))
    npz = root / "cameras_sphere.npz"
    arrays = dict(np.load(npz))
    if case == "no_world_mat":
        del arrays["world_mat_2"]
    elif case == "shape":
        arrays["world_mat_1"] = np.eye(3)
    elif case == "nan":
        arrays["scale_mat_0"] = np.full((4, 4), np.nan)
    if case == "garbage":
        npz.write_bytes(b"PK\x03\x04 broken")
    elif case == "npy":
        with npz.open("wb") as fh:
            np.save(fh, np.eye(4))
    elif case == "raw_member":  # a member without the .npy magic came back as bytes: an AttributeError later
        import zipfile

        np.savez(npz, **arrays)
        with zipfile.ZipFile(npz, "a") as z:
            z.writestr("world_mat_7.npy", b"\x00 not an array")
    else:
        np.savez(npz, **arrays)
    with pytest.raises(ReconInputError) as e:
        read_dtu(root)
    assert_one_line_error(e, npz)
    if case == "no_world_mat":
        assert "world_mat_2" in str(e.value) and "000002.png" in str(e.value)


@pytest.mark.parametrize("case", ["gap", "unreadable", "no_mask", "name"])
def test_dtu_idr_bad_files(tmp_path: Path, case: str) -> None:
    root = tmp_path / "s"
    make_idr(root, (W, H))
    named = root / "image"
    if case == "gap":
        (root / "image" / "000001.png").unlink()
    elif case == "unreadable":
        named = root / "image" / "000001.png"
        named.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif case == "no_mask":
        named = root / "mask"
        (named / "002.png").unlink()
    else:
        named = write_png(root / "image" / "extra.png", noise(9))
    with pytest.raises(ReconInputError) as e:
        read_dtu(root)
    assert_one_line_error(e, named)


# ----------------------------------------------------------------------------------------- DTU, RegNeRF / MVSNet
def write_cam_txt(path: Path, cam: Camera, K: np.ndarray) -> None:
    E = cam.viewmat
    text = "extrinsic\n" + "".join(" ".join(f"{x:.10f}" for x in row) + "\n" for row in E)
    text += "\nintrinsic\n" + "".join(" ".join(f"{x:.10f}" for x in row) + "\n" for row in K)
    text += "\n425.0 2.5\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_rect(dtu_root: Path, k_scale: float = 1.0, n: int = 3) -> tuple[Path, list[Camera]]:
    """DTU root with Rectified/scan24/rect_*.png (8x6), Cameras/*_cam.txt and idrmasks/scan24/mask/*.png."""
    scene = dtu_root / "Rectified" / "scan24"
    cams = ring(n, DTU_K, 1600, 1200, radius=600.0)
    for i, c in enumerate(cams):
        K = c.K.copy()
        K[:2] *= k_scale
        write_cam_txt(dtu_root / "Cameras" / f"{i:08d}_cam.txt", c, K)
        write_png(scene / f"rect_{i + 1:03d}_3_r5000.png", noise(i))
        write_png(scene / f"rect_{i + 1:03d}_0_r5000.png", noise(10 + i))  # another lighting: not read
        mask = np.zeros((1200, 1600), np.uint8)  # IDR masks keep the calibration size
        mask[300:900, 400:1200] = 255
        write_png(dtu_root / "idrmasks" / "scan24" / "mask" / f"{i:03d}.png", mask)
    return scene, cams


@pytest.mark.parametrize("k_scale", [1.0, 0.25])
def test_dtu_rect_cam_txt_and_idrmasks(tmp_path: Path, k_scale: float) -> None:
    scene, cams = make_rect(tmp_path / "dtu", k_scale)
    assert is_dtu_rect_scene(scene) and not is_dtu_idr_scene(scene)
    v = read_dtu(scene)
    assert v.names == [f"rect_{i:03d}_3_r5000" for i in (1, 2, 3)] and v.meta["layout"] == "dtu-rect"
    assert v.meta["depth_ranges"][0] == [425.0, 2.5]
    point = np.array([[0.1, 0.2, -0.3]])
    for got, ref in zip(v.cameras, cams):
        np.testing.assert_allclose(got.project(point)[0], ref.project(point)[0] * W / 1600, atol=1e-6)
    assert v.masks is not None and v.masks[0].shape == (H, W)
    assert v.masks[0][H // 2, W // 2] == 1.0 and v.masks[0][0, 0] == 0.0
    light0 = read_dtu(scene, light=0, with_masks=False)
    assert light0.names[0] == "rect_001_0_r5000" and light0.masks is None


@pytest.mark.parametrize("case", ["no_intrinsic", "missing_cam", "off_centre", "no_mask"])
def test_dtu_rect_bad_input(tmp_path: Path, case: str) -> None:
    scene, cams = make_rect(tmp_path / "dtu")
    named = tmp_path / "dtu" / "Cameras" / "00000001_cam.txt"
    if case == "no_intrinsic":
        named.write_text(named.read_text().replace("intrinsic", "intrinsics_missing"))
    elif case == "missing_cam":
        named.unlink()
    elif case == "off_centre":
        write_cam_txt(named, cams[1], intrinsics(2892.0, 2883.0, 100.0, 619.0))
    else:
        named = tmp_path / "dtu" / "idrmasks" / "scan24" / "mask"
        (named / "002.png").unlink()
    with pytest.raises(ReconInputError) as e:
        read_dtu(scene)
    assert_one_line_error(e, named)


def test_read_dtu_refuses_other_folders(tmp_path: Path) -> None:
    write_png(tmp_path / "x" / "a.png", noise(0))
    with pytest.raises(ReconInputError) as e:
        read_dtu(tmp_path / "x")
    assert_one_line_error(e, tmp_path / "x", "not a DTU scene")


# ----------------------------------------------------------------------------------------- Blender
def make_blender(root: Path, train_ids=(26, 86, 2), test_ids=(0, 8)) -> None:
    for split, ids in (("train", train_ids), ("test", test_ids)):
        frames = []
        for k, i in enumerate(ids):
            rgba = noise(i, c=4)
            rgba[..., 3] = 0
            rgba[1:5, 2:6, 3] = 255
            rgba[1, 2, 3] = 128
            write_png(root / split / f"r_{i}.png", rgba)
            cam = ring(len(ids), intrinsics(10, 10, 4, 3), W, H)[k]
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": cam.to_opengl_c2w().tolist()})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))


def test_blender_composites_on_the_background_with_alpha_masks(tmp_path: Path) -> None:
    make_blender(tmp_path / "lego")
    assert is_blender_scene(tmp_path / "lego") and not is_blender_scene(tmp_path)
    v = read_blender(tmp_path / "lego")
    assert v.names == ["r_26", "r_86", "r_2"] and v.meta["frame_ids"] == [26, 86, 2]
    assert v.meta["layout"] == "blender" and v.meta["split"] == "train"
    raw = noise(26, c=4)[..., :3] / 255.0
    np.testing.assert_allclose(v.images[0][0, 0], [1.0, 1.0, 1.0])  # alpha 0 -> white
    np.testing.assert_allclose(v.images[0][2, 3], raw[2, 3], atol=1e-6)  # alpha 1 -> the RGB
    np.testing.assert_allclose(v.images[0][1, 2], raw[1, 2] * 128 / 255 + 127 / 255, atol=1e-6)
    assert v.masks is not None and v.masks[0][0, 0] == 0.0 and v.masks[0][2, 3] == 1.0
    assert v.cameras is not None and v.cameras[0].fx == pytest.approx(4.0 / math.tan(0.345))
    black = read_blender(tmp_path / "lego", background=(0, 0, 0))
    np.testing.assert_allclose(black.images[0][0, 0], [0.0, 0.0, 0.0])


def test_blender_test_split_and_bad_split(tmp_path: Path) -> None:
    make_blender(tmp_path / "lego")
    t = read_blender(tmp_path / "lego", split="test")
    assert t.meta["frame_ids"] == [0, 8] and t.names == ["r_0", "r_8"]
    with pytest.raises(ReconInputError) as e:
        read_blender(tmp_path / "lego", split="val")
    assert_one_line_error(e, tmp_path / "lego", "transforms_val.json")
    with pytest.raises(ReconInputError) as e:
        read_blender(tmp_path / "lego", background=(2, 0, 0))
    assert "\n" not in str(e.value)


def test_blender_missing_frame_image(tmp_path: Path) -> None:
    make_blender(tmp_path / "lego")
    (tmp_path / "lego" / "train" / "r_86.png").unlink()
    with pytest.raises(ReconInputError) as e:
        read_blender(tmp_path / "lego")
    assert_one_line_error(e, tmp_path / "lego" / "transforms_train.json", "r_86")


def test_subset_keeps_per_view_meta_in_step() -> None:
    from recon.io.types import ViewSet

    img = np.zeros((2, 2, 3), np.float32)
    vs = ViewSet(
        names=["a", "b", "c"],
        images=[img] * 3,
        meta={
            "near_far": [(1, 2), (3, 4), (5, 6)],
            "frame_ids": [7, 8, 9],
            "full_size": (3, 4, 5),
            "image_paths": ["pa", "pb", "pc"],
            "layout": "llff",
        },
    )
    sub = vs.subset([2, 0])
    assert sub.meta["near_far"] == [(5, 6), (1, 2)] and sub.meta["frame_ids"] == [9, 7]
    assert sub.meta["image_paths"] == ["pc", "pa"] and sub.meta["full_size"] == (3, 4, 5)
    assert sub.meta["layout"] == "llff" and vs.meta["frame_ids"] == [7, 8, 9]
