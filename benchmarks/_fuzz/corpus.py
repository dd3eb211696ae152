"""Small valid inputs for every reader, written with the project's own writers: the seeds the fuzzer mutates.

Each reader has one or two variants (e.g. per-frame intrinsics and Blender's camera_angle_x for
transforms.json) so that more of each reader's paths are reached. A Seed names the entry the reader is given
and the files worth mutating, with a kind that picks the mutators and a weight.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Readers the fuzzer knows, in table order (new ones go at the end: a reader's number seeds its cases).
READERS = (
    "transforms",
    "colmap_text",
    "colmap_binary",
    "spare",
    "images",
    "ply",
    "llff",
    "dtu_idr",
    "dtu_rect",
    "blender",
)
W, H = 32, 24


@dataclass(frozen=True)
class Target:
    """A file of a seed that mutations may hit: path relative to the seed folder, kind (json, text, binary,
    npz, image, ply) and relative weight."""

    path: str
    kind: str
    weight: float = 1.0


@dataclass(frozen=True)
class Seed:
    """A valid input: ``entry`` (relative to the seed folder) is what the reader is called on."""

    reader: str
    variant: str
    entry: str
    call: str  # "views" (recon.io.detect.read_views), "ply" (renderers.gaussians.ply.read_ply) or "module:function"
    targets: tuple[Target, ...]


def _ring(n: int, width: int = W, height: int = H):
    from recon.cameras import Camera, intrinsics

    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n + 0.3
        eye = np.array([2.5 * math.cos(a), 0.3 * i - 0.4, 2.5 * math.sin(a)])
        K = intrinsics(30.0 + i, 30.5, width / 2 + 0.25, height / 2 - 0.25)
        cams.append(Camera.look_at(eye, np.zeros(3), np.array([0.0, -1.0, 0.0]), K, width, height, name=f"v{i}"))
    return cams


def _pattern(i: int, channels: int = 3, dtype=np.uint8, width: int = W, height: int = H) -> np.ndarray:
    rng = np.random.default_rng(100 + i)
    top = 255 if dtype == np.uint8 else 65535
    return rng.integers(0, top + 1, size=(height, width, channels) if channels > 1 else (height, width), dtype=dtype)


def _png(path: Path, arr: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]]
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    path.write_bytes(buf.tobytes())


def _jpeg_with_exif(path: Path, arr: np.ndarray, orientation: int = 1) -> None:
    from PIL import ExifTags, Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    ifd[0xA405] = 28  # FocalLengthIn35mmFilm
    ifd[0x920A] = 4.2  # FocalLength
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=90, exif=exif)


def _transforms(root: Path, variant: str) -> Seed:
    from recon.io.transforms_json import write_transforms

    cams = _ring(3)
    if variant == "per_frame":
        imgs = [root / "images" / f"f{i}.png" for i in range(3)]
        masks = [root / "masks" / f"m{i}.png" for i in range(3)]
        for i, (p, m) in enumerate(zip(imgs, masks)):
            _png(p, _pattern(i))
            _png(m, (_pattern(10 + i, 1) > 128).astype(np.uint8) * 255)
        out = write_transforms(root / "transforms.json", cams, imgs, mask_paths=masks)
        data = json.loads(out.read_text())
        data.update({"k1": 0.01, "p1": 0.0})
        out.write_text(json.dumps(data, indent=1))
        return Seed(
            "transforms",
            variant,
            ".",
            "views",
            (
                Target("transforms.json", "json", 6.0),
                Target("images/f1.png", "image", 2.0),
                Target("masks/m2.png", "image", 1.0),
            ),
        )
    frames = []
    for i, cam in enumerate(cams):
        rgba = _pattern(i, 4)
        rgba[..., 3] = 0
        rgba[6:18, 8:24, 3] = 255
        _png(root / "train" / f"r_{i}.png", rgba)
        c2w = cam.to_opengl_c2w().tolist()
        frames.append({"file_path": f"./train/r_{i}", "rotation": 0.1, "transform_matrix": c2w})
    angle = 2 * math.atan(W / (2 * 30.0))
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}, indent=1))
    return Seed(
        "transforms",
        variant,
        ".",
        "views",
        (Target("transforms_train.json", "json", 6.0), Target("train/r_0.png", "image", 2.0)),
    )


def _colmap_text_model(model: Path) -> None:
    """cameras/images/points3D.txt with three camera models and points seen by every image (tracks filled)."""
    from recon.cameras import rotmat_to_qvec

    cams = _ring(3)
    pts = np.array([[0.1, 0.2, -0.1], [-0.3, 0.1, 0.2], [0.0, 0.0, 0.0], [0.2, -0.2, 0.1]])
    model.mkdir(parents=True, exist_ok=True)
    cam_lines = [
        f"1 PINHOLE {W} {H} {cams[0].fx} {cams[0].fy} {cams[0].cx} {cams[0].cy}",
        f"2 SIMPLE_RADIAL {W} {H} {cams[1].fx} {cams[1].cx} {cams[1].cy} 0.01",
        f"3 OPENCV {W} {H} {cams[2].fx} {cams[2].fy} {cams[2].cx} {cams[2].cy} 0.01 0 0 0",
    ]
    img_lines = []
    for i, cam in enumerate(cams, start=1):
        q, t = rotmat_to_qvec(cam.R), cam.t
        uv, _ = cam.project(pts)
        obs = " ".join(f"{u:.4f} {v:.4f} {j + 1}" for j, (u, v) in enumerate(uv))
        img_lines += [f"{i} {' '.join(repr(float(x)) for x in (*q, *t))} {i} img_{i}.png", obs]
    pt_lines = [
        f"{j + 1} {p[0]} {p[1]} {p[2]} 200 100 50 0.5 " + " ".join(f"{i} {j}" for i in (1, 2, 3))
        for j, p in enumerate(pts)
    ]
    (model / "cameras.txt").write_text("# cameras\n" + "\n".join(cam_lines) + "\n")
    (model / "images.txt").write_text("# images\n" + "\n".join(img_lines) + "\n")
    (model / "points3D.txt").write_text("# points\n" + "\n".join(pt_lines) + "\n")
    for i in range(3):
        _png(model.parent.parent / "images" / f"img_{i + 1}.png", _pattern(i))


def _colmap_text(root: Path, variant: str) -> Seed:
    _colmap_text_model(root / "sparse" / "0")
    return Seed(
        "colmap_text",
        variant,
        ".",
        "views",
        (
            Target("sparse/0/cameras.txt", "text", 3.0),
            Target("sparse/0/images.txt", "text", 4.0),
            Target("sparse/0/points3D.txt", "text", 2.0),
            Target("images/img_2.png", "image", 1.0),
        ),
    )


def _colmap_binary(root: Path, variant: str) -> Seed:
    import pycolmap

    text = root / "text"
    _colmap_text_model(text / "sparse" / "0")
    model = root / "sparse" / "0"
    model.mkdir(parents=True)
    pycolmap.Reconstruction(str(text / "sparse" / "0")).write_binary(str(model))
    (text / "images").rename(root / "images")
    for p in sorted((text / "sparse" / "0").iterdir()):
        p.unlink()
    for d in (text / "sparse" / "0", text / "sparse", text):
        d.rmdir()
    names = [p.name for p in sorted(model.iterdir())]
    weights = {"cameras.bin": 3.0, "images.bin": 3.0, "points3D.bin": 3.0, "rigs.bin": 1.0, "frames.bin": 1.5}
    return Seed(
        "colmap_binary",
        variant,
        ".",
        "views",
        tuple(Target(f"sparse/0/{n}", "binary", weights.get(n, 1.0)) for n in names)
        + (Target("images/img_1.png", "image", 0.5),),
    )


def _spare(root: Path, variant: str) -> Seed:
    from recon.io.spare import camera_file_name, image_name, write_spare_scene

    cams = _ring(6)
    images = {i: _pattern(i) for i in range(6)}
    masks = {i: _pattern(20 + i, 1) > 100 for i in range(6)}
    depths = {i: np.where(masks[i], 2.0 + 0.1 * i, 0.0) for i in range(6)}
    scene = root / "toy"  # the folder name is the scene's name when there is no scene.json
    write_spare_scene(
        scene,
        cams,
        images,
        name="toy",
        masks=masks,
        depths=depths,
        splits={"track3": {"input_views": [1, 2, 3], "test_views": [0, 5]}},
    )
    targets = [
        Target("toy/splits/track3.json", "json", 3.0),
        Target(f"toy/cameras/{camera_file_name(2)}", "text", 3.0),
        Target(f"toy/images/{image_name(1)}", "image", 1.5),
        Target(f"toy/masks/{image_name(3)}", "image", 1.0),
    ]
    if variant == "no_scene_json":
        (scene / "scene.json").unlink()
    else:
        targets.append(Target("toy/scene.json", "json", 3.0))
    return Seed("spare", variant, "toy", "views", tuple(targets))


def _images(root: Path, variant: str) -> Seed:
    folder = root / "photos"
    if variant == "mixed_with_masks":
        _png(folder / "a.png", _pattern(0))
        _jpeg_with_exif(folder / "b.jpg", _pattern(1))
        _png(folder / "c.png", _pattern(2, 4))
        gray16 = _pattern(3, 1, np.uint16)
        _png(folder / "d.png", gray16)
        for stem in "abcd":
            _png(folder / "masks" / f"{stem}.png", (_pattern(30, 1) > 100).astype(np.uint8) * 255)
        return Seed(
            "images",
            variant,
            "photos",
            "views",
            (
                Target("photos/a.png", "image", 2.0),
                Target("photos/b.jpg", "image", 2.0),
                Target("photos/c.png", "image", 1.0),
                Target("photos/d.png", "image", 1.0),
                Target("photos/masks/b.png", "image", 1.0),
            ),
        )
    for i in range(3):
        _jpeg_with_exif(folder / f"IMG_{i + 1}.jpg", _pattern(i, width=H, height=W), orientation=6)
    return Seed(
        "images", variant, "photos", "views", tuple(Target(f"photos/IMG_{i + 1}.jpg", "image") for i in range(3))
    )


def _ply(root: Path, variant: str) -> Seed:
    import torch

    from renderers.gaussians.model import GaussianModel
    from renderers.gaussians.ply import ply_property_names, write_ply

    g = torch.Generator().manual_seed(0)
    n, k = 4, 4
    params = {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.randn(n, 3, generator=g) - 3,
        "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": 0.1 * torch.randn(n, k - 1, 3, generator=g),
    }
    model = GaussianModel(params, active_sh_degree=1)
    if variant == "binary":
        write_ply(root / "splats.ply", model)
    else:
        from renderers.gaussians.ply import _to_columns

        names, table = _to_columns(model)
        assert names == ply_property_names(9)
        head = ["ply", "format ascii 1.0", "comment fuzz seed", f"element vertex {n}"]
        head += [f"property double {c}" for c in names] + ["end_header"]
        rows = [" ".join(repr(float(x)) for x in row) for row in table]
        (root / "splats.ply").write_text("\n".join(head + rows) + "\n")
    return Seed("ply", variant, "splats.ply", "ply", (Target("splats.ply", "ply"),))


def _llff(root: Path, variant: str) -> Seed:
    """poses_bounds.npy (rows of [down, right, back, centre, (H, W, focal)] + near, far) and images/."""
    cams = _ring(3)
    rows = []
    for i, cam in enumerate(cams):
        R = cam.c2w[:3, :3]  # columns: right, down, forward
        m = np.stack([R[:, 1], R[:, 0], -R[:, 2], cam.center, [H, W, cam.fx]], axis=1)
        rows.append(np.concatenate([m.reshape(-1), [0.5, 6.0]]))
        _png(root / "images" / f"img{i}.png", _pattern(i))
    np.save(root / "poses_bounds.npy", np.array(rows))
    return Seed(
        "llff",
        variant,
        ".",
        "recon.io.llff:read_llff",
        (Target("poses_bounds.npy", "binary", 3.0), Target("images/img1.png", "image", 1.0)),
    )


def _dtu_idr(root: Path, variant: str) -> Seed:
    """image/00000N.png, mask/00N.png and cameras_sphere.npz (world_mat_i = K [R | t], scale_mat_i)."""
    arrays = {}
    scale = np.diag([0.8, 0.8, 0.8, 1.0])
    scale[:3, 3] = [0.05, -0.02, 0.01]
    for i, cam in enumerate(_ring(3)):
        K4 = np.eye(4)
        K4[:3, :3] = cam.K
        arrays[f"world_mat_{i}"] = K4 @ cam.viewmat @ np.linalg.inv(scale)
        arrays[f"scale_mat_{i}"] = scale
        _png(root / "image" / f"{i:06d}.png", _pattern(i))
        _png(root / "mask" / f"{i:03d}.png", (_pattern(40 + i, 1) > 100).astype(np.uint8) * 255)
    np.savez(root / "cameras_sphere.npz", **arrays)
    return Seed(
        "dtu_idr",
        variant,
        ".",
        "recon.io.dtu:read_dtu",
        (
            Target("cameras_sphere.npz", "npz", 3.0),
            Target("image/000001.png", "image", 1.0),
            Target("mask/002.png", "image", 1.0),
        ),
    )


def _dtu_rect(root: Path, variant: str) -> Seed:
    """scan1/rect_00N_3_r5000.png, Cameras/0000000N_cam.txt (MVSNet text) and idrmasks/scan1/mask/00N.png."""
    for i, cam in enumerate(_ring(3)):
        _png(root / "scan1" / f"rect_{i + 1:03d}_3_r5000.png", _pattern(i))
        _png(root / "idrmasks" / "scan1" / "mask" / f"{i:03d}.png", (_pattern(50 + i, 1) > 100).astype(np.uint8) * 255)
        lines = [
            "extrinsic",
            *(" ".join(repr(float(x)) for x in row) for row in cam.viewmat),
            "",
            "intrinsic",
            *(" ".join(repr(float(x)) for x in row) for row in cam.K),
            "",
            "1.5 0.01",
        ]
        (root / "Cameras").mkdir(exist_ok=True)
        (root / "Cameras" / f"{i:08d}_cam.txt").write_text("\n".join(lines) + "\n")
    return Seed(
        "dtu_rect",
        variant,
        "scan1",
        "recon.io.dtu:read_dtu",
        (
            Target("Cameras/00000001_cam.txt", "text", 3.0),
            Target("scan1/rect_002_3_r5000.png", "image", 1.0),
            Target("idrmasks/scan1/mask/000.png", "image", 1.0),
        ),
    )


def _blender(root: Path, variant: str) -> Seed:
    seed = _transforms(root, "blender")
    return Seed("blender", variant, ".", "recon.io.blender:read_blender", seed.targets)


_BUILDERS = {
    "transforms": (_transforms, ("per_frame", "blender")),
    "colmap_text": (_colmap_text, ("tracks",)),
    "colmap_binary": (_colmap_binary, ("tracks",)),
    "spare": (_spare, ("scene_json", "no_scene_json")),
    "images": (_images, ("mixed_with_masks", "rotated_jpegs")),
    "ply": (_ply, ("binary", "ascii")),
    "llff": (_llff, ("images",)),
    "dtu_idr": (_dtu_idr, ("cameras_sphere",)),
    "dtu_rect": (_dtu_rect, ("mvsnet",)),
    "blender": (_blender, ("train",)),
}


def build_seeds(reader: str, root: Path) -> list[tuple[Path, Seed]]:
    """Write every variant of ``reader``'s seed under ``root`` (one folder each); returns (folder, Seed) pairs."""
    build, variants = _BUILDERS[reader]
    out = []
    for variant in variants:
        folder = root / f"{reader}-{variant}"
        folder.mkdir(parents=True)
        out.append((folder, build(folder, variant)))
    return out
