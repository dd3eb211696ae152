"""Read and write transforms.json (nerfstudio, instant-ngp and Blender/NeRF-synthetic layouts).

Poses are OpenGL camera-to-world matrices (``transform_matrix``), converted with Camera.from_opengl_c2w.
Intrinsics are global or per frame (``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``), or a horizontal
field of view ``camera_angle_x`` (Blender). ``file_path`` is relative to the JSON's folder, with or
without an extension. Distortion coefficients are ignored with a warning.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_text
from recon.io.image_folder import check_count, load_views
from recon.io.images import find_image, image_size
from recon.io.types import ViewSet

log = logging.getLogger(__name__)

_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_JSON_NAMES = ("transforms.json", "transforms_train.json")


def find_transforms_json(path: Path) -> Path | None:
    """``path`` when it is a .json file, else transforms.json (or transforms_train.json) inside the folder."""
    if path.is_file():
        return path if path.suffix.lower() == ".json" else None
    if path.is_dir():
        for name in _JSON_NAMES:
            if (path / name).is_file():
                return path / name
    return None


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReconInputError("malformed JSON: not UTF-8 text", path) from None
    except OSError as exc:
        raise ReconInputError(f"cannot read file ({exc.strerror or exc})", path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReconInputError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", path) from None
    if not isinstance(data, dict):
        raise ReconInputError("malformed transforms file: top level must be a JSON object", path)
    return data


def _num(value: Any, key: str, where: str, path: Path) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ReconInputError(f"{where}: '{key}' must be a number, got {value!r}", path) from None
    if not math.isfinite(out):
        raise ReconInputError(f"{where}: '{key}' must be finite, got {value!r}", path)
    return out


def _frame_camera(meta: dict, frame: dict, idx: int, size: tuple[int, int], path: Path) -> Camera:
    """Camera of frame ``idx``: per-frame keys override global ones; ``size`` is the image's (w, h) on disk."""
    where = f"frame {idx}"

    def get(key: str) -> Any:
        return frame.get(key, meta.get(key))

    w = int(_num(get("w"), "w", where, path)) if get("w") is not None else size[0]
    h = int(_num(get("h"), "h", where, path)) if get("h") is not None else size[1]
    if get("fl_x") is not None:
        fx = _num(get("fl_x"), "fl_x", where, path)
    elif get("camera_angle_x") is not None:
        fx = 0.5 * w / math.tan(0.5 * _num(get("camera_angle_x"), "camera_angle_x", where, path))
    else:
        raise ReconInputError(f"{where}: missing key 'fl_x' (or 'camera_angle_x')", path)
    if get("fl_y") is not None:
        fy = _num(get("fl_y"), "fl_y", where, path)
    elif get("camera_angle_y") is not None:
        fy = 0.5 * h / math.tan(0.5 * _num(get("camera_angle_y"), "camera_angle_y", where, path))
    else:
        fy = fx
    cx = _num(get("cx"), "cx", where, path) if get("cx") is not None else w / 2.0
    cy = _num(get("cy"), "cy", where, path) if get("cy") is not None else h / 2.0
    if fx <= 0 or fy <= 0 or w <= 0 or h <= 0:
        raise ReconInputError(f"{where}: focal length and size must be positive", path)
    if "transform_matrix" not in frame:
        raise ReconInputError(f"{where}: missing key 'transform_matrix'", path)
    try:
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ReconInputError(f"{where}: 'transform_matrix' must be a 4x4 list of numbers", path) from None
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        raise ReconInputError(f"{where}: 'transform_matrix' must be a 4x4 list of finite numbers", path)
    if abs(np.linalg.det(c2w[:3, :3])) < 1e-12:
        raise ReconInputError(f"{where}: 'transform_matrix' is singular", path)
    return Camera.from_opengl_c2w(c2w, intrinsics(fx, fy, cx, cy), w, h)


def read_transforms(
    path: str | Path,
    downscale: float = 1.0,
    max_size: int | None = None,
    min_views: int = 2,
) -> ViewSet:
    """Read a transforms.json (or a folder holding one) into a ViewSet with cameras.

    Masks come from per-frame ``mask_path`` (all frames or none) or else from the images' alpha channels.
    meta: ``image_paths``, ``transforms_path``.
    """
    path = Path(path)
    if not path.exists():
        raise ReconInputError("file or folder does not exist", path)
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
    model = str(meta.get("camera_model", "OPENCV")).upper()
    if model == "EQUIRECTANGULAR":
        raise ReconInputError("camera_model EQUIRECTANGULAR is not supported (perspective cameras only)", json_path)
    base = json_path.parent
    if any(meta.get(k) for k in _DISTORTION_KEYS) or any(
        isinstance(f, dict) and any(f.get(k) for k in _DISTORTION_KEYS) for f in frames
    ):
        log.warning("%s: lens distortion coefficients are ignored (pinhole model assumed)", json_path)

    image_paths: list[Path] = []
    mask_paths: list[Path] = []
    cameras: list[Camera] = []
    has_mask = [isinstance(f, dict) and "mask_path" in f for f in frames]
    for idx, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise ReconInputError(f"frame {idx}: must be a JSON object", json_path)
        if "file_path" not in frame:
            raise ReconInputError(f"frame {idx}: missing key 'file_path'", json_path)
        rel = str(frame["file_path"])
        img = find_image(base / rel)
        if img is None:
            raise ReconInputError(f"frame {idx}: image file not found: {rel}", json_path)
        image_paths.append(img)
        if any(has_mask):
            if not has_mask[idx]:
                raise ReconInputError(f"frame {idx}: missing key 'mask_path' (other frames have one)", json_path)
            mask = find_image(base / str(frame["mask_path"]))
            if mask is None:
                raise ReconInputError(f"frame {idx}: mask file not found: {frame['mask_path']}", json_path)
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
