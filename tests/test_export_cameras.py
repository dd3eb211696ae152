"""`recon export RUN --cameras colmap|nerfstudio --to DIR`: the models load back (pycolmap and the project's
readers) with the run's cameras, photos of another size get rescaled cameras, and bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2  # noqa: F401  (before pycolmap)
import numpy as np
import pycolmap
import pytest

from apps.cli import main
from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.export.cameras import export_cameras
from recon.io.colmap import read_colmap
from recon.io.images import save_image
from recon.io.transforms_json import read_transforms
from recon.run_folder import RunFolder
from renderers.gaussians.model import GaussianModel
from renderers.gaussians.ply import write_ply

W, H = 64, 48


def _cams() -> list[Camera]:
    out = []
    for k, az in enumerate((0.0, 40.0, 80.0)):
        c = Camera.look_at(
            eye=np.array([3 * np.cos(np.radians(az)), 3 * np.sin(np.radians(az)), 1.0]),
            target=np.zeros(3),
            up=np.array([0.0, 0.0, 1.0]),
            K=intrinsics(70.0 + k, 71.0 + k, 32.5, 23.5),
            width=W,
            height=H,
        )
        c.name = f"IMG_{k}.png"
        out.append(c)
    return out


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, Path, list[Camera]]:
    """A run folder (cameras.json, splats.ply, metrics.json naming the photo folder) and photos at 2x size."""
    photos = tmp_path / "photos"
    cams = _cams()
    rng = np.random.default_rng(0)
    for c in cams:
        save_image(photos / c.name, rng.random((2 * H, 2 * W, 3)).astype(np.float32))
    r = RunFolder(tmp_path / "run")
    r.path.mkdir()
    r.write_cameras(cams)
    r.write_metrics({"source": str(photos)})
    xyz = rng.normal(size=(50, 3))
    write_ply(r.splats, GaussianModel.from_points(xyz, rng.random((50, 3)), sh_degree=0))
    return r.path, photos, cams


def _same(a: Camera, b: Camera) -> None:
    assert (a.width, a.height) == (b.width, b.height)
    assert np.allclose(a.K, b.K, atol=1e-5), (a.K, b.K)
    assert np.allclose(a.viewmat, b.viewmat, atol=1e-5), (a.viewmat, b.viewmat)


def test_colmap_export_loads_back_in_pycolmap_and_the_reader(run: tuple, tmp_path: Path) -> None:
    run_dir, photos, cams = run
    done = export_cameras(run_dir, "colmap", tmp_path / "model")
    assert done.cameras == 3 and done.points == 50 and done.photos_missing == []
    want = {c.name: c.resized(2 * W, 2 * H) for c in cams}  # the photos are twice the run's size
    rec = pycolmap.Reconstruction(str(tmp_path / "model"))
    assert rec.num_reg_images() == 3 and rec.num_points3D() == 50
    for img in rec.images.values():
        cam = rec.cameras[img.camera_id]
        V = np.eye(4)
        V[:3, :] = img.cam_from_world().matrix()
        K = intrinsics(cam.focal_length_x, cam.focal_length_y, cam.principal_point_x, cam.principal_point_y)
        _same(Camera(K=K, viewmat=V, width=cam.width, height=cam.height), want[img.name])
    back = read_colmap(tmp_path / "model", images_dir=photos)
    assert sorted(back.names) == sorted(want)
    for n, c in zip(back.names, back.cameras):
        _same(c, want[n])


def test_nerfstudio_export_loads_back_with_the_same_cameras(run: tuple, tmp_path: Path) -> None:
    run_dir, photos, cams = run
    export_cameras(run_dir, "nerfstudio", tmp_path / "ns")
    data = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    f0 = data["frames"][0]
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h", "file_path", "transform_matrix"} <= set(f0)
    assert (tmp_path / "ns" / f0["file_path"]).resolve() == (photos / "IMG_0.png").resolve()
    back = read_transforms(tmp_path / "ns")
    for c, b in zip(cams, back.cameras):
        _same(b, c.resized(2 * W, 2 * H))
    # OpenGL camera-to-world: the camera looks down its -z axis, towards the origin
    c2w = np.array(f0["transform_matrix"])
    assert np.dot(-c2w[:3, 2], -c2w[:3, 3]) > 0


def test_photos_not_found_keep_the_run_size_and_images_names(run: tuple, tmp_path: Path) -> None:
    run_dir, _, cams = run
    done = export_cameras(run_dir, "nerfstudio", tmp_path / "ns", images=tmp_path / "run")  # no photos there
    assert done.photos_missing == [c.name for c in cams]
    frames = json.loads((tmp_path / "ns" / "transforms.json").read_text())["frames"]
    assert [f["file_path"] for f in frames] == [f"images/{c.name}" for c in cams]
    assert [(f["w"], f["h"], f["fl_x"]) for f in frames] == [(W, H, c.fx) for c in cams]


def test_existing_folder_needs_overwrite(run: tuple, tmp_path: Path) -> None:
    run_dir, _, _ = run
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ReconInputError, match="not empty"):
        export_cameras(run_dir, "colmap", out)
    assert (out / "keep.txt").exists()
    export_cameras(run_dir, "colmap", out, overwrite=True)
    assert (out / "cameras.txt").exists() and not (out / "keep.txt").exists()


@pytest.mark.parametrize("make", ["missing", "not_a_run", "bad_format"])
def test_bad_input_is_one_line(run: tuple, tmp_path: Path, make: str, capsys: pytest.CaptureFixture) -> None:
    run_dir, _, _ = run
    src, fmt = run_dir, "colmap"
    if make == "missing":
        src = tmp_path / "nope"
    elif make == "not_a_run":
        src = tmp_path / "photos"
    else:
        fmt = "blender"
    with pytest.raises(SystemExit) as exc:
        main(["export", str(src), "--cameras", fmt, "--to", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recon: error:") and "Traceback" not in err[0], err
    assert not (tmp_path / "out").exists()
