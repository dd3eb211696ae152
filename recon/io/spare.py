"""Read and write SpaRe-style scenes (the AIM 2024 Sparse Neural Rendering layout, DTU-compatible).

Conventions shared with SpaRe/DTU/RegNeRF: views are numbered by a 0-based *index* i everywhere in split
files and in the API, and the file of view i carries the number i + 1; images are
``cam_{i+1:03d}_3_0000.png`` (SpaRe synthetic) or ``rect_{i+1:03d}_3_r5000.png`` (DTU), lighting 3 = all
lights on; cameras are 3x4 projection matrices P = K [R | t] as text (3 rows of 4 numbers,
``pos_{i+1:03d}.txt``), mapping world points to pixel coordinates with pixel centres at +0.5 (this
project's convention). A split file is JSON ``{scene_name: {"input_views": [...], "test_views": [...],
"dataset": "synthetic"}}``.

On-disk layout written by :func:`write_spare_scene` (and by ``recon make-scene``)::

    scene/
      scene.json                  name, dataset, n_cameras, width, height, views (indices that have images),
                                  depth scale, split files, generator metadata (seed, version, objects, rig)
      images/cam_001_3_0000.png   uint8 RGB, one per view in ``views`` (a scene may hold only some views)
      masks/cam_001_3_0000.png    uint8, 255 = object (the objects only; the platform they stand on is not
                                  part of the mask), optional
      depth/cam_001.png           uint16 depth along the optical axis (camera-frame z, OpenCV axes) in units
                                  of ``scene.json: depth.scale`` world units; 0 = no surface; optional
      cameras/pos_001.txt         3x4 projection matrix, one per camera (all n_cameras, even without image)
      splits/track3.json          3 input views + 10 test views (split JSON as above)
      splits/track9.json          9 input views (a superset of track 3's) + the same 10 test views

The reader also accepts the original SpaRe/DTU arrangement: images directly in the scene folder, no
scene.json, and the projection matrices in a separate folder (``calibration_dir``, e.g. DTU's
``Calibration/cal18``) given for another image size (``calibration_size``, e.g. (1600, 1200)).

Cameras decomposed from the matrices go through recon.io.camera_checks (a sheared matrix shows up as skew
and is refused). P and -P are the same projective camera, so a matrix with det < 0 is read as a negatively
scaled one (see Camera.from_projection), not refused as mirrored: the two cannot be told apart from P alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.io.atomic import atomic_output_dir
from recon.io.camera_checks import check_coordinates, checked_camera
from recon.io.files import file_kind, not_regular_message, read_text
from recon.io.image_folder import MIN_VIEWS
from recon.io.images import load_image, load_mask, read_raw, save_image
from recon.io.jsonfile import read_json, read_json_object
from recon.io.types import ViewSet

FORMAT = "recon-spare-scene"
FORMAT_VERSION = 1
SCENE_JSON = "scene.json"
DEPTH_SCALE = 1e-4  # scene units per uint16 step: 6.55 units of range
_PATTERNS = {
    "synthetic": ("cam_{:03d}_3_0000.png", re.compile(r"^cam_(\d{3})_3_0000\.png$")),
    "dtu": ("rect_{:03d}_3_r5000.png", re.compile(r"^rect_(\d{3})_3_r5000\.png$")),
}
_POS_RE = re.compile(r"^pos_(\d{3})\.txt$")
SPLITS = ("train", "test", "all")
_MAX_PROJECTION_BYTES = 64 * 1024  # 12 numbers; generous for comments and padding


# ----------------------------------------------------------------------------------------- names
def image_name(index: int, dataset: str = "synthetic") -> str:
    """File name of view ``index`` (0-based): ``cam_{index+1:03d}_3_0000.png`` or the DTU name."""
    key = "dtu" if dataset.lower() == "dtu" else "synthetic"
    return _PATTERNS[key][0].format(index + 1)


def camera_file_name(index: int) -> str:
    """Projection-matrix file of view ``index`` (0-based): ``pos_{index+1:03d}.txt``."""
    return f"pos_{index + 1:03d}.txt"


def depth_file_name(index: int) -> str:
    """Depth file of view ``index`` (0-based): ``cam_{index+1:03d}.png``."""
    return f"cam_{index + 1:03d}.png"


# ----------------------------------------------------------------------------------------- small file IO
def _encode_depth_png(path: Path, arr: np.ndarray) -> None:
    """uint16 single-channel PNG (recon.io.images writes 8-bit only)."""
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def _decode_png(path: Path, flags: int) -> np.ndarray:
    """Decode through the one image loader (pixel budget, regular files only)."""
    kind = file_kind(path)
    if kind != "file":
        raise ReconInputError(f"cannot read file ({not_regular_message(kind, 'depth file')})", path)
    return read_raw(path, flags)


def write_projection(path: str | Path, P: np.ndarray) -> None:
    """Write a 3x4 projection matrix as 3 text lines of 4 numbers (DTU ``pos_XXX.txt`` style)."""
    P = np.asarray(P, dtype=np.float64).reshape(3, 4)
    Path(path).write_text("".join(" ".join(f"{x:.12e}" for x in row) + "\n" for row in P))


def read_projection(path: str | Path) -> np.ndarray:
    """Read a 3x4 projection matrix text file; ReconInputError if it is not 12 finite numbers of rank 3."""
    path = Path(path)
    text = read_text(path, "projection matrix file", _MAX_PROJECTION_BYTES)
    try:
        values = [float(x) for x in text.split()]
    except ValueError as exc:
        raise ReconInputError(f"projection matrix file has a non-numeric entry ({str(exc)[:80]})", path) from None
    if len(values) != 12:
        raise ReconInputError(f"expected a 3x4 projection matrix (12 numbers), found {len(values)} numbers", path)
    P = np.array(values, dtype=np.float64).reshape(3, 4)
    if not np.all(np.isfinite(P)) or np.linalg.matrix_rank(P[:, :3]) < 3:
        raise ReconInputError("projection matrix is degenerate (non-finite or rank < 3)", path)
    with np.errstate(all="ignore"):  # the centre solves M c = -p4; a huge one overflows
        centre = -np.linalg.solve(P[:, :3], P[:, 3])
    check_coordinates(centre, "camera centre", "projection matrix", path)
    return P


def read_depth(path: str | Path, scale: float = DEPTH_SCALE) -> np.ndarray:
    """Depth map (HxW float32, camera-frame z; 0 where no surface) from a uint16 PNG in ``scale`` units."""
    path = Path(path)
    arr = _decode_png(path, cv2.IMREAD_UNCHANGED)
    if arr.dtype != np.uint16 or arr.ndim != 2:
        raise ReconInputError("depth must be a single-channel 16-bit PNG", path)
    return (arr.astype(np.float64) * scale).astype(np.float32)


def _encode_depth(depth: np.ndarray, scale: float) -> np.ndarray:
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    q = np.zeros(d.shape, dtype=np.float64)
    q[valid] = np.round(d[valid] / scale)
    if q.max(initial=0) > 65535:
        raise ValueError(f"depth {d[valid].max():.3f} exceeds the uint16 range at scale {scale}")
    q[valid] = np.maximum(q[valid], 1)  # keep 0 for "no surface"
    return q.astype(np.uint16)


def _dumps(data: object) -> str:
    """Indented JSON with lists of numbers kept on one line (readable split and scene files)."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[([\d\s,.eE+-]*)\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


# ----------------------------------------------------------------------------------------- splits
def _check_views(value: object, key: str, scene: str, path: Path, allow_empty: bool) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ReconInputError(f"scene {scene!r}: {key} must be a list of integer view indices", path)
    if any(v < 0 for v in value):
        raise ReconInputError(f"scene {scene!r}: {key} has a negative view index", path)
    if len(set(value)) != len(value):
        raise ReconInputError(f"scene {scene!r}: {key} lists a view twice", path)
    if not value and not allow_empty:
        raise ReconInputError(f"scene {scene!r}: {key} is empty", path)
    return list(value)


def read_split(path: str | Path) -> dict[str, dict]:
    """Read and validate a split JSON: ``{scene: {"input_views": [int], "test_views": [int], "dataset": str}}``.

    Indices are 0-based (file number = index + 1). Input and test views must be disjoint.
    """
    path = Path(path)
    raw = read_json(path, "split file", invalid="split file is not valid JSON")
    if not isinstance(raw, dict) or not raw:
        raise ReconInputError("split file must be a non-empty JSON object {scene: {input_views, test_views}}", path)
    out: dict[str, dict] = {}
    for scene, entry in raw.items():
        if not isinstance(entry, dict):
            raise ReconInputError(f"scene {scene!r}: entry must be an object with input_views and test_views", path)
        for key in ("input_views", "test_views"):
            if key not in entry:
                raise ReconInputError(f"scene {scene!r}: missing {key!r}", path)
        inputs = _check_views(entry["input_views"], "input_views", scene, path, allow_empty=False)
        tests = _check_views(entry["test_views"], "test_views", scene, path, allow_empty=True)
        both = sorted(set(inputs) & set(tests))
        if both:
            raise ReconInputError(f"scene {scene!r}: views {both} are both input and test views", path)
        dataset = entry.get("dataset", "")
        if not isinstance(dataset, str):
            raise ReconInputError(f"scene {scene!r}: dataset must be a string", path)
        if len(inputs) < MIN_VIEWS:
            raise ReconInputError(
                f"scene {scene!r}: input_views has only {len(inputs)} view; at least {MIN_VIEWS} are "
                "needed to reconstruct",
                path,
            )
        out[str(scene)] = {"input_views": inputs, "test_views": tests, "dataset": dataset}
    return out


def write_split(path: str | Path, entries: Mapping[str, Mapping]) -> None:
    """Write a split JSON (same form as :func:`read_split` returns)."""
    data = {
        name: {
            "input_views": [int(i) for i in e["input_views"]],
            "test_views": [int(i) for i in e["test_views"]],
            "dataset": str(e.get("dataset", "synthetic")),
        }
        for name, e in entries.items()
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(_dumps(data))


# ----------------------------------------------------------------------------------------- writer
def write_spare_scene(
    scene_dir: str | Path,
    cameras: Sequence[Camera],
    images: Mapping[int, np.ndarray],
    *,
    name: str,
    masks: Mapping[int, np.ndarray] | None = None,
    depths: Mapping[int, np.ndarray] | None = None,
    splits: Mapping[str, Mapping] | None = None,
    dataset: str = "synthetic",
    meta: Mapping | None = None,
    depth_scale: float = DEPTH_SCALE,
    overwrite: bool = False,
) -> Path:
    """Write a scene in the layout of the module docstring, atomically (all or nothing).

    ``cameras`` holds every camera of the rig (index = position); ``images``/``masks``/``depths`` map a
    0-based index to an array (HxWx3 float [0,1] or uint8; HxW bool/float/uint8; HxW float depth) and may
    cover only some views. ``splits`` maps a track name (e.g. "track3") to {"input_views", "test_views"}.
    """
    n = len(cameras)
    views = sorted(int(i) for i in images)
    if not views or views[0] < 0 or views[-1] >= n:
        raise ValueError(f"image indices must be within 0..{n - 1}")
    for label, extra in (("masks", masks), ("depths", depths)):
        if extra is not None and not set(extra) <= set(views):
            raise ValueError(f"{label} given for views without an image")
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise ValueError("all cameras of a scene must have the same image size")
    ((width, height),) = sizes
    with atomic_output_dir(scene_dir, overwrite=overwrite) as tmp:
        for i, cam in enumerate(cameras):
            (tmp / "cameras").mkdir(exist_ok=True)
            write_projection(tmp / "cameras" / camera_file_name(i), cam.to_projection())
        for i in views:
            img = np.asarray(images[i])
            if img.shape != (height, width, 3):
                raise ValueError(f"image {i} has shape {img.shape}, expected {(height, width, 3)}")
            save_image(tmp / "images" / image_name(i, dataset), img)
            if masks is not None and i in masks:
                save_image(tmp / "masks" / image_name(i, dataset), np.asarray(masks[i]))
            if depths is not None and i in depths:
                _encode_depth_png(tmp / "depth" / depth_file_name(i), _encode_depth(depths[i], depth_scale))
        split_files = {}
        for track, entry in (splits or {}).items():
            rel = f"splits/{track}.json"
            write_split(tmp / rel, {name: {**entry, "dataset": dataset}})
            split_files[track] = rel
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "dataset": dataset,
            "n_cameras": n,
            "width": width,
            "height": height,
            "index_base": "0-based view index i is stored in files numbered i + 1",
            "views": views,
            "image_pattern": _PATTERNS["dtu" if dataset.lower() == "dtu" else "synthetic"][0],
            "masks": masks is not None,
            "depth": None
            if depths is None
            else {"folder": "depth", "scale": depth_scale, "meaning": "camera-frame z; 0 = no surface"},
            "splits": split_files,
            **dict(meta or {}),
        }
        (tmp / SCENE_JSON).write_text(_dumps(info))
    return Path(scene_dir)


# ----------------------------------------------------------------------------------------- reader
def _read_scene_json(scene_dir: Path) -> dict:
    path = scene_dir / SCENE_JSON
    if file_kind(path) == "missing":
        return {}
    info = read_json_object(path, "scene.json")
    _check_scene_info(info, path)
    return info


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_scene_info(info: dict, path: Path) -> None:
    """The scene.json fields the reader uses have the types it expects (the rest is kept as metadata)."""
    if "name" in info and not isinstance(info["name"], str):
        raise ReconInputError("name must be a string", path)
    for key in ("n_cameras", "width", "height"):
        if key in info and not (_is_int(info[key]) and info[key] >= 1):
            raise ReconInputError(f"{key} must be a positive integer", path)
    if ("width" in info) != ("height" in info):
        raise ReconInputError("width and height must be given together", path)
    views = info.get("views")
    if views is not None:
        if not isinstance(views, list) or not all(_is_int(i) for i in views):
            raise ReconInputError("views must be a list of integer view indices", path)
        if len(set(views)) != len(views):
            raise ReconInputError("views lists a view twice", path)
    depth = info.get("depth")
    if depth is not None:
        scale = depth.get("scale", DEPTH_SCALE) if isinstance(depth, dict) else None
        if (
            not isinstance(depth, dict)
            or not isinstance(depth.get("folder", "depth"), str)
            or not isinstance(scale, (int, float))
            or isinstance(scale, bool)
            or not 0 < scale < float("inf")
        ):
            raise ReconInputError('depth must be null or {"folder": str, "scale": positive number}', path)


def _read_cameras(cam_dir: Path, info: dict, scene_json: Path) -> list[np.ndarray]:
    if file_kind(cam_dir) != "folder":
        raise ReconInputError("no cameras folder with pos_XXX.txt projection matrices (pass calibration_dir)", cam_dir)
    numbers = sorted(int(m.group(1)) for p in cam_dir.iterdir() if (m := _POS_RE.match(p.name)))
    if not numbers:
        raise ReconInputError("no pos_XXX.txt projection matrix files", cam_dir)
    for k, num in enumerate(numbers, start=1):
        if num != k:
            raise ReconInputError(f"missing {camera_file_name(k - 1)} (camera files must be numbered 1..N)", cam_dir)
    expected = info.get("n_cameras")
    if expected is not None and expected != len(numbers):
        raise ReconInputError(f"scene.json lists {expected} cameras but {cam_dir} has {len(numbers)}", scene_json)
    return [read_projection(cam_dir / camera_file_name(i)) for i in range(len(numbers))]


def _find_images(scene_dir: Path) -> tuple[Path, str, dict[int, Path]]:
    """(image folder, dataset key, {0-based index: path}) for the lighting-3 images of a scene."""
    for folder in (scene_dir / "images", scene_dir):
        if not folder.is_dir():
            continue
        names = [p.name for p in folder.iterdir()]
        for key, (_fmt, rx) in _PATTERNS.items():
            found = {int(m.group(1)) - 1: folder / nm for nm in names if (m := rx.match(nm))}
            if found:
                return folder, key, found
    raise ReconInputError(
        "no images named cam_XXX_3_0000.png or rect_XXX_3_r5000.png (in images/ or the folder)", scene_dir
    )


def _pick_split(scene_dir: Path, name: str, split_file: str | Path | None, track: int | None) -> tuple[dict, Path]:
    if split_file is None:
        split_file = scene_dir / "splits" / f"track{int(track or 3)}.json"
    split_file = Path(split_file)
    entries = read_split(split_file)
    for key in (name, scene_dir.name):
        if key in entries:
            return entries[key], split_file
    raise ReconInputError(f"no entry for scene {name!r} (entries: {', '.join(sorted(entries))})", split_file)


def read_spare_scene(
    scene_dir: str | Path,
    split_file: str | Path | None = None,
    track: int | None = None,
    split: str = "train",
    *,
    calibration_dir: str | Path | None = None,
    calibration_size: tuple[int, int] | None = None,
) -> ViewSet:
    """Read the views of a SpaRe-style scene as a ViewSet (images, cameras, masks when present).

    ``split``: "train" (the split's input views), "test" (its test views) or "all" (every view with an
    image). The split comes from ``split_file`` or from ``splits/track{track}.json`` in the scene (track 3
    when neither is given). The scene's entry is looked up by its scene.json name, then its folder name.
    ``calibration_dir`` overrides ``scene/cameras``; ``calibration_size`` (width, height) is the image size the
    projection matrices were made for, when it differs from the images' (e.g. DTU's 1600x1200).

    ``meta`` holds: scene, dataset, split, track, split_file, indices (0-based), input_views, test_views,
    n_cameras, depth_paths (one per view, None where absent), depth_scale, scene_info (scene.json).
    Errors that the user can fix raise ReconInputError naming the file.
    """
    scene_dir = Path(scene_dir)
    if file_kind(scene_dir) != "folder":
        raise ReconInputError("scene folder not found", scene_dir)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    info = _read_scene_json(scene_dir)
    name = str(info.get("name") or scene_dir.name)
    cam_dir = Path(calibration_dir) if calibration_dir is not None else scene_dir / "cameras"
    projections = _read_cameras(cam_dir, info, scene_dir / SCENE_JSON)
    n_cams = len(projections)
    img_dir, dataset_key, present = _find_images(scene_dir)
    extra = sorted(i for i in present if i >= n_cams)
    if extra:
        raise ReconInputError(
            f"image {present[extra[0]].name} has no camera (only {n_cams} cameras in {cam_dir})", img_dir
        )

    entry, used_split = None, None
    if split == "all":
        indices = info.get("views", sorted(present))
        if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise ReconInputError("views must be a list of integer view indices", scene_dir / SCENE_JSON)
    else:
        if split_file is None and track is None:
            track = 3
        entry, used_split = _pick_split(scene_dir, name, split_file, track)
        indices = entry["input_views" if split == "train" else "test_views"]
        if not indices:
            raise ReconInputError(f"scene {name!r} has no {split} views", used_split)
    for i in indices:
        if not 0 <= i < n_cams:
            raise ReconInputError(
                f"view index {i} out of range (the scene has {n_cams} cameras)", used_split or scene_dir / SCENE_JSON
            )
        if i not in present:
            raise ReconInputError(f"image missing for view index {i}", img_dir / image_name(i, dataset_key))
    if len(set(indices)) != len(indices):
        raise ReconInputError(
            f"view index {next(i for i in indices if indices.count(i) > 1)} is listed twice",
            used_split or scene_dir / SCENE_JSON,
        )

    names, images, cameras = [], [], []
    for i in indices:
        path = present[i]
        rgb, _alpha = load_image(path)  # SpaRe images are opaque; an alpha channel is ignored
        h, w = rgb.shape[:2]
        if calibration_size is not None:
            cam = Camera.from_projection(projections[i], *calibration_size, name=path.stem).resized(w, h)
        else:
            if "width" in info and (info.get("width"), info.get("height")) != (w, h):
                raise ReconInputError(f"image is {w}x{h} but scene.json says {info['width']}x{info['height']}", path)
            cam = Camera.from_projection(projections[i], w, h, name=path.stem)
        cam = checked_camera(cam, "projection matrix", cam_dir / camera_file_name(i))
        cam.extra["index"] = i
        names.append(path.stem)
        images.append(rgb)
        cameras.append(cam)

    masks = None
    mask_dir = scene_dir / "masks"
    if mask_dir.is_dir():
        masks = []
        for i, rgb in zip(indices, images):
            mpath = mask_dir / present[i].name
            if file_kind(mpath) == "missing":
                raise ReconInputError(f"mask missing for view index {i}", mpath)
            m = load_mask(mpath)
            if m.shape != rgb.shape[:2]:
                raise ReconInputError(
                    f"mask is {m.shape[1]}x{m.shape[0]}, image is {rgb.shape[1]}x{rgb.shape[0]}", mpath
                )
            masks.append(m)

    depth_info = info.get("depth") or {}
    depth_dir = scene_dir / str(depth_info.get("folder", "depth"))
    depth_paths = [
        (depth_dir / depth_file_name(i)) if (depth_dir / depth_file_name(i)).exists() else None for i in indices
    ]
    meta = {
        "format": "spare",
        "scene": name,
        "dataset": (entry or {}).get("dataset") or info.get("dataset", dataset_key),
        "split": split,
        "track": track,
        "split_file": str(used_split) if used_split else None,
        "indices": list(indices),
        "input_views": None if entry is None else list(entry["input_views"]),
        "test_views": None if entry is None else list(entry["test_views"]),
        "n_cameras": n_cams,
        "depth_paths": depth_paths,
        "depth_scale": float(depth_info.get("scale", DEPTH_SCALE)),
        "scene_info": info,
    }
    return ViewSet(names=names, images=images, cameras=cameras, masks=masks, source=scene_dir, meta=meta)


def is_scene(path: str | Path) -> bool:
    """True when ``path`` looks like a SpaRe-style scene folder (scene.json, cameras/pos_XXX.txt or SpaRe/DTU
    image names)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / SCENE_JSON).exists():
        return True
    if (path / "cameras").is_dir() and any(_POS_RE.match(p.name) for p in (path / "cameras").iterdir()):
        return True
    try:
        _find_images(path)
    except ReconInputError:
        return False
    return True


def list_scenes(root: str | Path) -> list[Path]:
    """Scene folders under ``root`` (sorted by name), or ``[root]`` when root is itself a scene."""
    root = Path(root)
    if not root.is_dir():
        raise ReconInputError("scenes folder not found", root)
    if is_scene(root):
        return [root]
    scenes = sorted((p for p in root.iterdir() if not p.name.startswith(".") and is_scene(p)), key=lambda p: p.name)
    if not scenes:
        raise ReconInputError("no SpaRe-style scenes found (folders with scene.json, cameras/ or cam_XXX images)", root)
    return scenes
