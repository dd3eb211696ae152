"""Read a COLMAP sparse model (text or binary, through pycolmap) and write a minimal text model.

COLMAP already uses OpenCV camera axes, a world-to-camera pose and pixel centres at +0.5, so its poses map
to Camera without axis changes. Lens distortion of pinhole-based models is ignored (with a warning): only
pinhole intrinsics are kept; fisheye and other wide-angle models are refused. Binary files are walked by
recon.io.colmap_binary before pycolmap sees them, and cameras go through recon.io.camera_checks.
The sparse points come back in ``meta["points3d"]`` as (xyz float64 Nx3, rgb float32 Nx3 in [0, 1]).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_text
from recon.io.camera_checks import check_size, checked_camera
from recon.io.colmap_binary import check_binary_model
from recon.io.files import file_kind, not_regular_message, read_bytes
from recon.io.image_folder import MIN_VIEWS, check_count, load_views
from recon.io.images import natural_key
from recon.io.types import ViewSet

log = logging.getLogger(__name__)

_MODEL_FILES = ("cameras", "images", "points3D")
#: COLMAP camera models read as pinhole (their distortion, if any, is dropped with a warning). The others
#: (fisheye, FOV, EUCM, thin-prism, spherical) bend rays in ways a pinhole cannot stand in for.
PINHOLE_MODELS = (
    "SIMPLE_PINHOLE",
    "PINHOLE",
    "SIMPLE_RADIAL",
    "RADIAL",
    "OPENCV",
    "FULL_OPENCV",
    "SIMPLE_DIVISION",
    "DIVISION",
)
_MAX_TEXT_BYTES = 1024**3
_QUAT_NORM_TOL = 1e-3


def is_colmap_model(folder: Path) -> bool:
    """True when ``folder`` holds cameras.bin or cameras.txt (of any kind: a FIFO is then named, not skipped)."""
    return any(
        file_kind(folder / name) not in ("missing", "folder", "unreadable path")
        for name in ("cameras.bin", "cameras.txt")
    )


def find_colmap_model(path: Path) -> Path | None:
    """The model folder at ``path``, or beneath it (sparse/0, sparse/<n>, sparse), or None."""
    if file_kind(path) != "folder":
        return None
    if is_colmap_model(path):
        return path
    sparse = path / "sparse"
    if sparse.is_dir():
        numbered = sorted((p for p in sparse.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        for cand in [*numbered, sparse]:
            if is_colmap_model(cand):
                return cand
    return None


def _check_model_files(model: Path) -> None:
    """Every model needs cameras, images and points3D in one format (binary preferred, as pycolmap does)."""
    for ext in (".bin", ".txt"):
        kinds = {n: file_kind(model / f"{n}{ext}") for n in _MODEL_FILES}
        present = [n for n, kind in kinds.items() if kind != "missing"]
        if present:
            missing = [f"{n}{ext}" for n in _MODEL_FILES if n not in present]
            if missing:
                raise ReconInputError(f"incomplete COLMAP model: missing {', '.join(missing)}", model)
            for n in ("rigs", "frames"):  # optional files of COLMAP >= 3.12, read when present
                kinds[n] = file_kind(model / f"{n}{ext}")
            for n, kind in kinds.items():  # pycolmap would block on a FIFO or read a device without end
                if kind not in ("file", "missing"):
                    raise ReconInputError(not_regular_message(kind, f"COLMAP {n}{ext}"), model / f"{n}{ext}")
            return
    raise ReconInputError("not a COLMAP model (no cameras.bin or cameras.txt)", model)


def _default_images_dir(model: Path, first_name: str) -> Path | None:
    """COLMAP's usual layouts: scene/sparse/0 + scene/images, scene/sparse + scene/images, model/images."""
    for cand in (model.parent.parent / "images", model.parent / "images", model / "images"):
        if (cand / first_name).is_file():
            return cand
    return None


def _data_lines(path: Path) -> list[str]:
    data = read_bytes(path, f"COLMAP {path.name}", _MAX_TEXT_BYTES)
    try:  # pycolmap hands image names to Python as str: non-UTF-8 bytes would raise there instead
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReconInputError(f"not UTF-8 text (byte {exc.start})", path) from None
    return [ln for ln in text.splitlines() if not ln.startswith("#")]


def _check_text_model(model: Path) -> None:
    """Text models: UTF-8, and every image must refer to a camera in cameras.txt (pycolmap's own error is
    cryptic)."""
    _data_lines(model / "points3D.txt")
    cam_ids = {ln.split()[0] for ln in _data_lines(model / "cameras.txt") if ln.strip()}
    lines = _data_lines(model / "images.txt")
    for ln in lines[::2]:  # an image line, then its points2D line (possibly empty)
        tok = ln.split()
        if len(tok) >= 10 and tok[8] not in cam_ids:
            raise ReconInputError(
                f"image {' '.join(tok[9:])} refers to camera {tok[8]}, which is not in cameras.txt "
                f"({len(cam_ids)} cameras)",
                model / "images.txt",
            )


def _load_reconstruction(model: Path):
    import pycolmap

    _check_model_files(model)
    if (model / "cameras.bin").exists():
        check_binary_model(model)
    else:
        _check_text_model(model)
    try:
        return pycolmap.Reconstruction(str(model))
    except Exception as exc:  # pycolmap raises ValueError/RuntimeError with a multi-line C++ message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReconInputError(f"cannot read COLMAP model: {first}", model) from None


def _camera_K(cam, model: Path, image_name: str) -> np.ndarray:
    """Pinhole K of a pycolmap camera; warns when distortion parameters are dropped, refuses non-pinhole models."""
    where = f"camera {cam.camera_id} ({cam.model.name}, used by {image_name})"
    if not cam.is_perspective():
        raise ReconInputError(f"{where} is not a perspective camera", model)
    if cam.model.name not in PINHOLE_MODELS:
        raise ReconInputError(
            f"{where} is a fisheye or wide-angle model; only pinhole-based models ({', '.join(PINHOLE_MODELS)}) "
            "can be read: undistort the images first (colmap image_undistorter)",
            model,
        )
    params = np.asarray(cam.params, dtype=np.float64)
    if not np.all(np.isfinite(params)):
        raise ReconInputError(f"{where}: camera parameters are not finite", model)
    extra = params[list(cam.extra_params_idxs())]
    if np.any(np.abs(extra) > 1e-12):
        log.warning(
            "%s: camera %d is %s; its distortion parameters are ignored (pinhole assumed)",
            model,
            cam.camera_id,
            cam.model.name,
        )
    return np.asarray(cam.calibration_matrix(), dtype=np.float64)


def _pose(img, model: Path) -> tuple[np.ndarray, np.ndarray]:
    """(unit quaternion wxyz, translation) of an image; a zero or non-finite quaternion is an error (pycolmap
    would quietly turn a zero one into the identity rotation)."""
    pose = img.cam_from_world()
    x, y, z, w = np.asarray(pose.rotation.quat, dtype=np.float64)
    q = np.array([w, x, y, z])
    norm = float(np.linalg.norm(q)) if np.all(np.isfinite(q)) else float("nan")
    if not norm > 1e-6:
        raise ReconInputError(f"image {img.name}: rotation quaternion {q.tolist()} is zero or not finite", model)
    if abs(norm - 1.0) > _QUAT_NORM_TOL:
        log.warning("%s: image %s has a quaternion of norm %.6g; normalised", model, img.name, norm)
    return q / norm, np.asarray(pose.translation, dtype=np.float64)


def read_colmap(
    model_dir: str | Path,
    images_dir: str | Path | None = None,
    downscale: float = 1.0,
    max_size: int | None = None,
    min_views: int = MIN_VIEWS,
) -> ViewSet:
    """Read the registered images of a COLMAP model into a ViewSet with cameras and sparse points.

    ``model_dir`` is the model folder (cameras/images/points3D .bin or .txt) or a scene folder holding
    sparse/0. ``images_dir`` defaults to the usual COLMAP layouts (scene/images). Images are naturally
    sorted by name. meta: ``points3d`` (xyz, rgb), ``image_paths``, ``model_dir``.
    """
    path = Path(model_dir)
    kind = file_kind(path)
    if kind == "missing":
        raise ReconInputError("COLMAP model folder does not exist", path)
    if kind != "folder":
        raise ReconInputError("not a folder (expected a COLMAP model folder)", path)
    model = find_colmap_model(path)
    if model is None:
        raise ReconInputError("not a COLMAP model (no cameras.bin/cameras.txt here or in sparse/0)", path)
    rec = _load_reconstruction(model)
    registered = [img for img in rec.images.values() if img.has_pose]
    if len(registered) < len(rec.images):
        log.warning(
            "%s: %d of %d images are not registered and are skipped",
            model,
            len(rec.images) - len(registered),
            len(rec.images),
        )
    registered.sort(key=lambda img: natural_key(img.name))
    check_count(len(registered), model, min_views, what="registered images")
    ids_by_name: dict[str, int] = {}
    for img in registered:
        if img.name in ids_by_name:
            raise ReconInputError(
                f"image {img.name} appears twice in the model (image ids {ids_by_name[img.name]} and {img.image_id})",
                model,
            )
        ids_by_name[img.name] = img.image_id

    if images_dir is None:
        found = _default_images_dir(model, registered[0].name)
        if found is None:
            raise ReconInputError(
                f"cannot find the model's images (looked for {registered[0].name} in ../images); "
                "pass the images folder",
                model,
            )
        images_root = found
    else:
        images_root = Path(images_dir)
        if not images_root.is_dir():
            raise ReconInputError("images folder does not exist", images_root)

    paths: list[Path] = []
    cameras: list[Camera] = []
    for img in registered:
        if img.camera_id not in rec.cameras:
            raise ReconInputError(
                f"image {img.name} refers to camera {img.camera_id}, which is not in the model", model
            )
        cam = rec.cameras[img.camera_id]
        file = images_root / img.name
        if file_kind(file) in ("missing", "folder", "unreadable path"):
            raise ReconInputError(f"image {img.name} of the COLMAP model is missing", images_root)
        K = _camera_K(cam, model, img.name)
        width, height = check_size(cam.width, cam.height, f"camera {cam.camera_id}", model)
        qvec, tvec = _pose(img, model)
        camera = Camera.from_colmap(qvec, tvec, K, width, height, name=img.name)
        cameras.append(checked_camera(camera, f"image {img.name} (camera {cam.camera_id})", model))
        paths.append(file)

    loaded = load_views(paths, cameras=cameras, downscale=downscale, max_size=max_size)
    pts = [rec.points3D[pid] for pid in sorted(rec.points3D)]  # by point id: deterministic order
    xyz = np.array([p.xyz for p in pts], dtype=np.float64).reshape(-1, 3)
    rgb = (np.array([p.color for p in pts], dtype=np.float32).reshape(-1, 3) / 255.0).astype(np.float32)
    return ViewSet(
        names=[img.name for img in registered],
        images=loaded.images,
        cameras=loaded.cameras,
        masks=loaded.masks,
        source=model,
        meta={"points3d": (xyz, rgb), "image_paths": [str(p) for p in paths], "model_dir": str(model)},
    )


def write_colmap_text(
    model_dir: str | Path,
    cameras: Sequence[Camera],
    names: Sequence[str],
    points: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write cameras.txt / images.txt / points3D.txt (one PINHOLE camera per image, no 2D observations).

    ``points`` is (xyz Nx3, rgb Nx3 as uint8 or float in [0, 1]); the points get empty tracks. Skew in K
    cannot be stored in COLMAP's PINHOLE model and is dropped. Returns the model folder.
    """
    model = Path(model_dir)
    if len(cameras) != len(names):
        raise ValueError(f"write_colmap_text: {len(cameras)} cameras but {len(names)} names")
    if any(" " in n or "\n" in n for n in names):
        raise ValueError("write_colmap_text: image names must not contain spaces")
    model.mkdir(parents=True, exist_ok=True)
    cam_lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    img_lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
    ]
    for i, (cam, name) in enumerate(zip(cameras, names), start=1):
        params = " ".join(repr(float(v)) for v in (cam.fx, cam.fy, cam.cx, cam.cy))
        cam_lines.append(f"{i} PINHOLE {cam.width} {cam.height} {params}")
        q, t = cam.to_colmap()
        vals = " ".join(repr(float(v)) for v in (*q, *t))
        img_lines.extend([f"{i} {vals} {i} {name}", ""])
    pt_lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
    ]
    if points is not None:
        xyz = np.asarray(points[0], dtype=np.float64).reshape(-1, 3)
        rgb = np.asarray(points[1]).reshape(-1, 3)
        if len(rgb) != len(xyz):
            raise ValueError(f"write_colmap_text: {len(xyz)} points but {len(rgb)} colours")
        if rgb.dtype != np.uint8:
            rgb = (np.clip(rgb.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        for j, (p, c) in enumerate(zip(xyz, rgb), start=1):
            coords = " ".join(repr(float(v)) for v in p)
            pt_lines.append(f"{j} {coords} {int(c[0])} {int(c[1])} {int(c[2])} 0")
    atomic_write_text(model / "cameras.txt", "\n".join(cam_lines) + "\n")
    atomic_write_text(model / "images.txt", "\n".join(img_lines) + "\n")
    atomic_write_text(model / "points3D.txt", "\n".join(pt_lines) + "\n")
    return model
