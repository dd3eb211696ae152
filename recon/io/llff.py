"""Read LLFF scenes (``poses_bounds.npy`` + ``images/`` or ``images_N/``): the forward-facing LLFF data.

``poses_bounds.npy`` has one row of 17 numbers per image, rows in sorted file-name order (as LLFF's
imgs2poses wrote them): a 3x5 matrix flattened row-major whose columns are the camera-to-world rotation axes
(down, right, backwards), the camera centre, and (H, W, focal) of the full-resolution images; then the near
and far depth bounds. Poses are kept in the file's units: no recentring or rescaling by the bounds as NeRF's
loader does, so ``meta["near_far"]`` stays valid for them.

Image folder: ``images_{factor}`` when ``factor`` is given (``images/`` for factor 1); else ``images/`` when
it exists (the file's own resolution), else the lowest-factor ``images_N``. Protocols at 504x378 (RegNeRF,
DNGaussian) pass ``factor=8``.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import numpy as np

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.camera_checks import checked_camera, checked_rotation
from recon.io.files import file_kind, not_regular_message, read_bytes
from recon.io.image_folder import MIN_VIEWS, check_count, list_images, load_views
from recon.io.images import image_size
from recon.io.types import ViewSet

POSES_FILE = "poses_bounds.npy"
_FACTOR_DIR = re.compile(r"^images_(\d+)$")
_MAX_NPY_BYTES = 64 * 1024 * 1024
#: What np.load raises on corrupt bytes: its header parser tokenizes and literal_evals the header text.
NPY_ERRORS = (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError)
#: Largest relative difference between the image's aspect ratio and the one in poses_bounds.
_ASPECT_TOL = 0.01


def is_llff_scene(path: str | Path) -> bool:
    """True for a folder (or its poses_bounds.npy) with poses_bounds.npy and an images/ or images_N/ folder."""
    path = Path(path)
    scene = path.parent if path.name == POSES_FILE else path
    return file_kind(scene / POSES_FILE) == "file" and bool(image_folders(scene))


def image_folders(scene: Path) -> dict[int, Path]:
    """{downscale factor: folder}: ``images`` is factor 1, ``images_N`` factor N."""
    out: dict[int, Path] = {}
    if file_kind(scene) != "folder":
        return out
    if file_kind(scene / "images") == "folder":
        out[1] = scene / "images"
    for p in scene.iterdir():
        m = _FACTOR_DIR.match(p.name)
        if m and int(m.group(1)) >= 1 and file_kind(p) == "folder":
            out.setdefault(int(m.group(1)), p)
    return out


def _pick_folder(scene: Path, factor: int | None) -> tuple[Path, int]:
    """The image folder to read (see the module docstring) and its factor."""
    folders = image_folders(scene)
    if not folders:
        raise ReconInputError("no images/ or images_N/ folder beside poses_bounds.npy", scene)
    if factor is None:
        best = min(folders)
        return folders[best], best
    if factor not in folders:
        have = ", ".join(folders[k].name for k in sorted(folders))
        raise ReconInputError(
            f"no image folder for factor {factor} (expected "
            f"{'images' if factor == 1 else f'images_{factor}'}/; found {have})",
            scene,
        )
    return folders[factor], factor


def read_poses_bounds(path: Path) -> np.ndarray:
    """The N x 17 float64 table of a poses_bounds.npy; ReconInputError unless it is one, finite."""
    data = read_bytes(path, "poses file", _MAX_NPY_BYTES)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except NPY_ERRORS as exc:
        raise ReconInputError(f"not a readable .npy array ({npy_error_reason(exc)})", path) from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise ReconInputError("expected a single .npy array, not an .npz archive", path)
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ReconInputError(f"expected an N x 17 array of numbers, got shape {arr.shape} ({arr.dtype})", path)
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        row = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ReconInputError(f"row {row} has a non-finite number", path)
    return arr


def npy_error_reason(exc: BaseException) -> str:
    """numpy's reason in a few words (its pickle refusal, which any non-.npy bytes get, is a paragraph)."""
    text = str(exc).strip()
    if isinstance(exc, (SyntaxError, tokenize.TokenError)):
        return "corrupt .npy header"
    if "pickle" in text:
        return "not a NumPy file, or pickled Python objects, which are not loaded"
    return (text.splitlines() or [type(exc).__name__])[0][:100]


def llff_camera(row: np.ndarray, width: int, height: int, idx: int, path: Path) -> Camera:
    """Camera of one poses_bounds row for an image of ``width`` x ``height`` (focal scaled from the row's W, H)."""
    where = f"row {idx}"
    m = row[:15].reshape(3, 5)
    full_h, full_w, focal = m[:, 4]
    if not (full_h > 0 and full_w > 0 and focal > 0):
        raise ReconInputError(f"{where}: H, W and focal must be positive, got {full_h:g}, {full_w:g}, {focal:g}", path)
    if abs((width / height) / (full_w / full_h) - 1.0) > _ASPECT_TOL:
        raise ReconInputError(
            f"{where}: image is {width}x{height} but the poses are for {full_w:g}x{full_h:g} (different aspect ratio)",
            path,
        )
    down, right, back, centre = m[:, 0], m[:, 1], m[:, 2], m[:, 3]
    R_c2w = checked_rotation(np.stack([right, down, -back], axis=1), where, path)  # OpenCV axes x, y, z
    viewmat = np.eye(4)
    viewmat[:3, :3] = R_c2w.T
    viewmat[:3, 3] = -R_c2w.T @ centre
    K = intrinsics(focal * width / full_w, focal * height / full_h, width / 2.0, height / 2.0)
    return checked_camera(Camera(K=K, viewmat=viewmat, width=width, height=height), where, path)


def _near_far(row: np.ndarray, idx: int, path: Path) -> tuple[float, float]:
    near, far = float(row[15]), float(row[16])
    if not 0.0 <= near < far:
        raise ReconInputError(f"row {idx}: bounds must satisfy 0 <= near < far, got near={near:g}, far={far:g}", path)
    return near, far


def _scene_dir(path: Path) -> Path:
    kind = file_kind(path)
    if kind == "file" and path.name == POSES_FILE:
        return path.parent
    if kind != "folder":
        raise ReconInputError(
            not_regular_message(kind, "LLFF scene folder")
            if kind != "file"
            else "expected an LLFF scene folder or its poses_bounds.npy",
            path,
        )
    return path


def read_llff(
    path: str | Path,
    factor: int | None = None,
    downscale: float = 1.0,
    max_size: int | None = None,
) -> ViewSet:
    """Read an LLFF scene folder into a ViewSet with cameras (no masks).

    Images are taken in plain sorted file-name order (LLFF's; it differs from natural order for unpadded
    numbers) and must match the rows of poses_bounds.npy one to one. meta: layout "llff", forward_facing,
    near_far [(near, far)] per view, factor (of the folder read), image_paths, poses_path, full_size (W, H).
    """
    scene = _scene_dir(Path(path))
    poses_path = scene / POSES_FILE
    table = read_poses_bounds(poses_path)
    check_count(len(table), poses_path, MIN_VIEWS, what="poses")
    folder, used = _pick_folder(scene, factor)
    paths = sorted(list_images(folder), key=lambda p: p.name)
    if len(paths) != len(table):
        raise ReconInputError(
            f"{len(table)} poses but {len(paths)} images in {folder.name}/ (one row per image, in sorted name order)",
            poses_path,
        )
    cameras, bounds = [], []
    for i, (row, img) in enumerate(zip(table, paths)):
        cam = llff_camera(row, *image_size(img), i, poses_path)
        cam.name = img.name
        cameras.append(cam)
        bounds.append(_near_far(row, i, poses_path))
    loaded = load_views(paths, cameras=cameras, downscale=downscale, max_size=max_size, alpha_masks=False)
    full_h, full_w = table[0, 4], table[0, 9]
    return ViewSet(
        names=[p.name for p in paths],
        images=loaded.images,
        cameras=loaded.cameras,
        masks=None,
        source=scene,
        meta={
            "layout": "llff",
            "forward_facing": True,
            "near_far": bounds,
            "factor": used,
            "image_paths": [str(p) for p in paths],
            "poses_path": str(poses_path),
            "full_size": (float(full_w), float(full_h)),
        },
    )
