"""Read and write transforms.json (nerfstudio, instant-ngp and Blender/NeRF-synthetic layouts).

Poses are OpenGL camera-to-world matrices (``transform_matrix``), converted with Camera.from_opengl_c2w.
Intrinsics are global or per frame (``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``), or a horizontal
field of view ``camera_angle_x`` (Blender). ``file_path`` is relative to the JSON's folder, with or
without an extension. Distortion coefficients of pinhole-based models are ignored with a warning; fisheye and
spherical ``camera_model`` values are refused (the pipeline is pinhole only). Cameras go through
recon.io.camera_checks; a frame listing an image another frame already uses is an error.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_text
from recon.io.camera_checks import MAX_FOV_DEG, check_coordinates, check_size, checked_camera, checked_rotation
from recon.io.files import file_kind, not_regular_message
from recon.io.image_folder import MIN_VIEWS, check_count, load_views
from recon.io.images import find_image, image_size
from recon.io.jsonfile import read_json
from recon.io.types import ViewSet

log = logging.getLogger(__name__)

_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_JSON_NAMES = ("transforms.json", "transforms_train.json")
#: camera_model values read as pinhole (their distortion, if any, is dropped with a warning).
PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "FULL_OPENCV")


def find_transforms_json(path: Path) -> Path | None:
    """``path`` when it is a .json file, else transforms.json (or transforms_train.json) inside the folder.

    A transforms.json that is there but not a regular file (a FIFO, a broken link) is returned too, for the
    reader to name it rather than to fall through to another kind of input.
    """
    kind = file_kind(path)
    if kind == "file":
        return path if path.suffix.lower() == ".json" else None
    if kind == "folder":
        for name in _JSON_NAMES:
            if file_kind(path / name) not in ("missing", "folder"):
                return path / name
    return None


def _load_json(path: Path) -> dict:
    data = read_json(path, "transforms file", invalid="malformed JSON")
    if not isinstance(data, dict):
        raise ReconInputError("malformed transforms file: top level must be a JSON object", path)
    return data


def _num(value: Any, key: str, where: str, path: Path) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ReconInputError(f"{where}: '{key}' must be a number, got {_short(value)}", path) from None
    if not math.isfinite(out):
        raise ReconInputError(f"{where}: '{key}' must be finite, got {_short(value)}", path)
    return out


def _short(value: Any) -> str:
    """repr of a JSON value for a one-line message (a mutated file can hold a megabyte string)."""
    return _clip(repr(value))


def _clip(text: str, limit: int = 80) -> str:
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _focal_from_angle(meta_get: Any, key: str, side: int, where: str, path: Path) -> float:
    """Focal in pixels from a field of view in radians; it must lie in (0, MAX_FOV_DEG]."""
    angle = _num(meta_get(key), key, where, path)
    if not 0.0 < angle <= math.radians(MAX_FOV_DEG):
        raise ReconInputError(
            f"{where}: '{key}' must be a field of view in radians between 0 and "
            f"{math.radians(MAX_FOV_DEG):.4f} ({MAX_FOV_DEG:g} degrees), got {angle:g}",
            path,
        )
    return 0.5 * side / math.tan(0.5 * angle)


def _c2w(frame: dict, where: str, path: Path) -> np.ndarray:
    """The frame's OpenGL camera-to-world matrix, checked, with its rotation made exactly orthonormal."""
    if "transform_matrix" not in frame:
        raise ReconInputError(f"{where}: missing key 'transform_matrix'", path)
    try:
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ReconInputError(f"{where}: 'transform_matrix' must be a 4x4 list of numbers", path) from None
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        raise ReconInputError(f"{where}: 'transform_matrix' must be a 4x4 list of finite numbers", path)
    if np.abs(c2w[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-6:
        raise ReconInputError(
            f"{where}: 'transform_matrix' bottom row is {c2w[3].tolist()}, expected [0, 0, 0, 1]", path
        )
    check_coordinates(c2w[:3, 3], "camera position", f"{where}: 'transform_matrix'", path)
    out = np.eye(4)
    out[:3, :3] = checked_rotation(c2w[:3, :3], f"{where}: 'transform_matrix'", path)
    out[:3, 3] = c2w[:3, 3]
    return out


def _frame_camera(meta: dict, frame: dict, idx: int, size: tuple[int, int], path: Path) -> Camera:
    """Camera of frame ``idx``: per-frame keys override global ones; ``size`` is the image's (w, h) on disk."""
    where = f"frame {idx}"

    def get(key: str) -> Any:
        return frame.get(key, meta.get(key))

    w = _num(get("w"), "w", where, path) if get("w") is not None else size[0]
    h = _num(get("h"), "h", where, path) if get("h") is not None else size[1]
    w, h = check_size(w, h, where, path)
    if get("fl_x") is not None:
        fx = _num(get("fl_x"), "fl_x", where, path)
    elif get("camera_angle_x") is not None:
        fx = _focal_from_angle(get, "camera_angle_x", w, where, path)
    else:
        raise ReconInputError(f"{where}: missing key 'fl_x' (or 'camera_angle_x')", path)
    if get("fl_y") is not None:
        fy = _num(get("fl_y"), "fl_y", where, path)
    elif get("camera_angle_y") is not None:
        fy = _focal_from_angle(get, "camera_angle_y", h, where, path)
    else:
        fy = fx
    cx = _num(get("cx"), "cx", where, path) if get("cx") is not None else w / 2.0
    cy = _num(get("cy"), "cy", where, path) if get("cy") is not None else h / 2.0
    c2w = _c2w(frame, where, path)
    cam = Camera.from_opengl_c2w(c2w, intrinsics(fx, fy, cx, cy), w, h)
    return checked_camera(cam, where, path)


def _camera_model(meta: dict, path: Path) -> str:
    """The file's camera_model (OPENCV when absent); ReconInputError for a model the pipeline cannot use."""
    model = meta.get("camera_model", "OPENCV")
    if not isinstance(model, str):
        raise ReconInputError(f"'camera_model' must be a string, got {_short(model)}", path)
    if model.upper() not in PINHOLE_MODELS:
        raise ReconInputError(
            f"camera_model {_short(model)} is not supported: only pinhole models ({', '.join(PINHOLE_MODELS)}) can "
            "be read; undistort fisheye or spherical images to pinhole first",
            path,
        )
    return model.upper()


def read_transforms(
    path: str | Path,
    downscale: float = 1.0,
    max_size: int | None = None,
    min_views: int = MIN_VIEWS,
) -> ViewSet:
    """Read a transforms.json (or a folder holding one) into a ViewSet with cameras.

    Masks come from per-frame ``mask_path`` (all frames or none) or else from the images' alpha channels.
    meta: ``image_paths``, ``transforms_path``.
    """
    path = Path(path)
    kind = file_kind(path)
    if kind == "missing":
        raise ReconInputError("file or folder does not exist", path)
    if kind not in ("file", "folder"):
        raise ReconInputError(not_regular_message(kind, "input"), path)
    json_path = find_transforms_json(path)
    if json_path is None:
        raise ReconInputError("no transforms.json found", path)
    meta = _load_json(json_path)
    if "frames" not in meta:
        raise ReconInputError("missing key 'frames'", json_path)
    frames = meta["frames"]
    if not isinstance(frames, list):
        raise ReconInputError("'frames' must be a list", json_path)
    check_count(len(frames), json_path, min_views, what="frames")
    _camera_model(meta, json_path)
    base = json_path.parent
    if any(meta.get(k) for k in _DISTORTION_KEYS) or any(
        isinstance(f, dict) and any(f.get(k) for k in _DISTORTION_KEYS) for f in frames
    ):
        log.warning("%s: lens distortion coefficients are ignored (pinhole model assumed)", json_path)

    image_paths: list[Path] = []
    mask_paths: list[Path] = []
    cameras: list[Camera] = []
    has_mask = [isinstance(f, dict) and "mask_path" in f for f in frames]
    used: dict[Path, int] = {}
    for idx, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise ReconInputError(f"frame {idx}: must be a JSON object", json_path)
        if "file_path" not in frame:
            raise ReconInputError(f"frame {idx}: missing key 'file_path'", json_path)
        rel = str(frame["file_path"])
        img = find_image(base / rel)
        if img is None:
            raise ReconInputError(f"frame {idx}: image file not found: {_clip(rel)}", json_path)
        key = _resolved(img)
        if key in used:
            raise ReconInputError(
                f"frame {idx}: image {_clip(rel)} is already used by frame {used[key]} "
                "(every frame must be a different image)",
                json_path,
            )
        used[key] = idx
        image_paths.append(img)
        if any(has_mask):
            if not has_mask[idx]:
                raise ReconInputError(f"frame {idx}: missing key 'mask_path' (other frames have one)", json_path)
            mask = find_image(base / str(frame["mask_path"]))
            if mask is None:
                raise ReconInputError(f"frame {idx}: mask file not found: {_clip(str(frame['mask_path']))}", json_path)
            mask_paths.append(mask)
        needs_size = frame.get("w", meta.get("w")) is None or frame.get("h", meta.get("h")) is None
        size = image_size(img) if needs_size else (0, 0)
        cam = _frame_camera(meta, frame, idx, size, json_path)
        cam.name = img.name
        cameras.append(cam)

    loaded = load_views(
        image_paths, mask_paths=mask_paths or None, cameras=cameras, downscale=downscale, max_size=max_size
    )
    return ViewSet(
        names=[p.name for p in image_paths],
        images=loaded.images,
        cameras=loaded.cameras,
        masks=loaded.masks,
        source=json_path,
        meta={"image_paths": [str(p) for p in image_paths], "transforms_path": str(json_path)},
    )


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the image loader names it
        return path


def _rel(target: Path, base: Path) -> str:
    """``target`` relative to ``base`` (POSIX separators) when possible, else absolute."""
    try:
        return Path(os.path.relpath(Path(target).resolve(), base.resolve())).as_posix()
    except ValueError:  # different drives on Windows
        return Path(target).resolve().as_posix()


def write_transforms(
    path: str | Path,
    views: ViewSet | Sequence[Camera],
    image_paths: Sequence[str | Path] | None = None,
    mask_paths: Sequence[str | Path] | None = None,
) -> Path:
    """Write a nerfstudio-style transforms.json with per-frame intrinsics, atomically; returns its path.

    ``path`` is the JSON file (or a folder, which gets transforms.json). ``image_paths`` default to a
    ViewSet's ``meta["image_paths"]``, else its names; they are stored relative to the JSON's folder.
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() != ".json":
        path = path / "transforms.json"
    if isinstance(views, ViewSet):
        if views.cameras is None:
            raise ValueError("write_transforms: the ViewSet has no cameras")
        cameras = list(views.cameras)
        if image_paths is None:
            image_paths = views.meta.get("image_paths") or list(views.names)
    else:
        cameras = list(views)
    if image_paths is None:
        raise ValueError("write_transforms: image_paths is required with a list of cameras")
    if len(image_paths) != len(cameras) or (mask_paths is not None and len(mask_paths) != len(cameras)):
        raise ValueError(
            f"write_transforms: {len(cameras)} cameras but {len(image_paths)} image paths"
            + ("" if mask_paths is None else f" and {len(mask_paths)} mask paths")
        )
    base = path.parent
    base.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (cam, img) in enumerate(zip(cameras, image_paths)):
        img = Path(img)
        frame = {
            "file_path": _rel(img if img.is_absolute() else base / img, base),
            "fl_x": cam.fx,
            "fl_y": cam.fy,
            "cx": cam.cx,
            "cy": cam.cy,
            "w": cam.width,
            "h": cam.height,
            "transform_matrix": cam.to_opengl_c2w().tolist(),
        }
        if mask_paths is not None:
            m = Path(mask_paths[i])
            frame["mask_path"] = _rel(m if m.is_absolute() else base / m, base)
        frames.append(frame)
    data = {"camera_model": "OPENCV", "frames": frames}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path
