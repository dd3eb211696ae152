"""Read DTU scenes in the two layouts the sparse-view papers ship them in, views in dataset index order.

IDR/NeuS layout (``meta["layout"] = "dtu-idr"``)::

    scan24/image/000000.png ...   view i = the number in the name (0-based)
    scan24/mask/000.png ...       white = object (3 digits in NeuS, 6 in some copies); optional
    scan24/cameras_sphere.npz     world_mat_i (K [R | t], 4x4) and scale_mat_i (unit sphere -> world);
                                  cameras.npz (IDR) is read when there is no cameras_sphere.npz

The camera of view i is decomposed from P = world_mat_i @ scale_mat_i (as IDR/NeuS do), so the object sits
in the unit sphere. Without any scale_mat_i the world_mat_i are used alone (``meta["normalised"] = False``).

RegNeRF/MVSNet layout (``meta["layout"] = "dtu-rect"``)::

    scan24/[image/|images/]rect_{i+1:03d}_{light}_r5000.png   view i (file numbers are 1-based)
    Cameras/{i:08d}_cam.txt       MVSNet text: "extrinsic" 4x4 world-to-camera, "intrinsic" 3x3, a depth line;
                                  in the scene folder or up to two folders above it (DTU's Cameras/)
    idrmasks/scan24/[mask/]{i:03d}.png   RegNeRF's object masks (0-based), in or up to two folders above the scene

Intrinsics are given for DTU's 1600x1200 calibration images, but some copies hold them scaled to a smaller
size: the calibration size is the one among 1600x1200, 800x600, 400x300 and the image's own size whose centre
lies nearest the principal point (DTU's is within 4% of the centre, so these are told apart safely), and the
intrinsics are then scaled to the image size, so full-size and downscaled copies read alike. DTU intrinsics
are taken in this project's pixel convention (centres at +0.5), as RegNeRF and recon.io.spare do.
Masks are resized to the images (the IDR masks are 1600x1200 even beside smaller images).
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.io.camera_checks import checked_camera
from recon.io.files import file_kind, not_regular_message, read_bytes, read_text
from recon.io.image_folder import MIN_VIEWS, check_count, list_images, load_views
from recon.io.images import image_size, load_mask, resize_image
from recon.io.llff import NPY_ERRORS, npy_error_reason
from recon.io.types import ViewSet

CALIBRATION_SIZE = (1600, 1200)
IDR_CAMERA_FILES = ("cameras_sphere.npz", "cameras.npz")
_CALIBRATION_CANDIDATES = ((1600, 1200), (800, 600), (400, 300))
#: Largest offset of the principal point from the centre of the calibration image, as a fraction of its size.
_PRINCIPAL_TOL = 0.1
_ASPECT_TOL = 0.01
_RECT_RE = re.compile(r"^rect_(\d{3})_(\d+)_r5000\.png$", re.IGNORECASE)
_MAX_NPZ_BYTES = 64 * 1024 * 1024
_MAX_NPZ_UNPACKED = 256 * 1024 * 1024
_MAX_CAM_TXT_BYTES = 64 * 1024


# ----------------------------------------------------------------------------------------- detection
def is_dtu_idr_scene(path: str | Path) -> bool:
    """True for a folder with image/ and cameras_sphere.npz or cameras.npz."""
    path = Path(path)
    return file_kind(path / "image") == "folder" and _idr_camera_file(path) is not None


def is_dtu_rect_scene(path: str | Path) -> bool:
    """True for a folder with rect_XXX_L_r5000.png images (here, in image/ or images/) and a Cameras/ folder."""
    path = Path(path)
    if file_kind(path) != "folder" or _find_up(path, "Cameras") is None:
        return False
    return any(_rect_images(d) for d in _rect_dirs(path))


def _idr_camera_file(scene: Path) -> Path | None:
    for name in IDR_CAMERA_FILES:
        if file_kind(scene / name) not in ("missing", "folder"):
            return scene / name
    return None


def _find_up(scene: Path, name: str) -> Path | None:
    """``name`` as a folder in ``scene`` or in one of its two parents (DTU keeps Cameras/ beside Rectified/)."""
    for root in (scene, scene.parent, scene.parent.parent):
        if file_kind(root / name) == "folder":
            return root / name
    return None


# ----------------------------------------------------------------------------------------- shared
def calibration_size(K: np.ndarray, width: int, height: int, path: Path) -> tuple[int, int]:
    """The image size the intrinsics ``K`` were made for (see the module docstring)."""
    cx, cy = float(K[0, 2]), float(K[1, 2])

    def offset(size: tuple[int, int]) -> float:
        return max(abs(2.0 * cx / size[0] - 1.0), abs(2.0 * cy / size[1] - 1.0))

    best = min((*_CALIBRATION_CANDIDATES, (width, height)), key=offset)
    if offset(best) > _PRINCIPAL_TOL:
        raise ReconInputError(
            f"principal point ({cx:.1f}, {cy:.1f}) is not near the centre of a 1600x1200 DTU image "
            f"or of the {width}x{height} image (intrinsics of a cropped image?)",
            path,
        )
    return best


def _fit(cam: Camera, width: int, height: int, what: str, path: Path) -> Camera:
    """``cam`` (at its calibration size) scaled to the image's size and checked."""
    if abs((width / height) / (cam.width / cam.height) - 1.0) > _ASPECT_TOL:
        raise ReconInputError(
            f"{what}: image is {width}x{height} but the camera is for {cam.width}x{cam.height} "
            "(different aspect ratio)",
            path,
        )
    return checked_camera(cam.resized(width, height), what, path)


def _calibrated(K: np.ndarray, viewmat: np.ndarray, img: Path, what: str, path: Path) -> Camera:
    """Camera from intrinsics at an unknown calibration size, fitted to the image ``img``."""
    w, h = image_size(img)
    cw, ch = calibration_size(K, w, h, path)
    cam = _fit(Camera(K=K, viewmat=viewmat, width=cw, height=ch, name=img.stem), w, h, what, path)
    cam.extra["calibration_size"] = (cw, ch)
    return cam


def _in_index_order(found: dict[int, Path], folder: Path, expected: str) -> list[Path]:
    """The files of views 0..N-1 in order; ReconInputError naming the first missing index."""
    for i in range(len(found)):
        if i not in found:
            raise ReconInputError(
                f"no image for view {i} (expected {expected.format(i=i, n=i + 1)}; views must be "
                "numbered without gaps)",
                folder,
            )
    return [found[i] for i in range(len(found))]


def _add(found: dict[int, Path], index: int, path: Path) -> None:
    if index in found:
        raise ReconInputError(f"two files for view {index}: {found[index].name} and {path.name}", path.parent)
    found[index] = path


def _numbered(folder: Path) -> dict[int, Path]:
    """{number in the name: path} for the images of ``folder`` whose stem is all digits."""
    found: dict[int, Path] = {}
    for p in list_images(folder):
        if p.stem.isdigit():
            _add(found, int(p.stem), p)
    return found


def _masks(paths: list[Path], images: list[np.ndarray]) -> list[np.ndarray]:
    """Masks (float [0, 1]) resized to the returned images; the aspect ratio must match."""
    out = []
    for p, img in zip(paths, images):
        m = load_mask(p)
        (mh, mw), (h, w) = m.shape, img.shape[:2]
        if abs((mw / mh) / (w / h) - 1.0) > _ASPECT_TOL:
            raise ReconInputError(f"mask is {mw}x{mh} but the image is {w}x{h} (different aspect ratio)", p)
        out.append(np.clip(resize_image(m, w, h), 0.0, 1.0))
    return out


def _view_set(
    paths: list[Path],
    cameras: list[Camera],
    mask_paths: list[Path] | None,
    scene: Path,
    downscale: float,
    max_size: int | None,
    meta: dict,
) -> ViewSet:
    for i, cam in enumerate(cameras):
        cam.extra["index"] = i
    loaded = load_views(paths, cameras=cameras, downscale=downscale, max_size=max_size, alpha_masks=False)
    masks = None if mask_paths is None else _masks(mask_paths, loaded.images)
    meta = {
        **meta,
        "indices": list(range(len(paths))),
        "image_paths": [str(p) for p in paths],
        "mask_paths": None if mask_paths is None else [str(p) for p in mask_paths],
    }
    return ViewSet(
        names=[p.stem for p in paths],
        images=loaded.images,
        cameras=loaded.cameras,
        masks=masks,
        source=scene,
        meta=meta,
    )


# ----------------------------------------------------------------------------------------- IDR / NeuS
def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz (no pickles; sizes capped before anything is unpacked)."""
    data = read_bytes(path, "camera file", _MAX_NPZ_BYTES)
    try:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ReconInputError("expected an .npz archive of camera matrices, not a single array", path)
        with z:
            if sum(info.file_size for info in z.zip.infolist()) > _MAX_NPZ_UNPACKED:
                raise ReconInputError("camera archive unpacks to over 256 MB", path)
            arrays = {k: z[k] for k in z.files}
    except (*NPY_ERRORS, zipfile.BadZipFile, KeyError, NotImplementedError) as exc:
        raise ReconInputError(f"not a readable .npz archive ({npy_error_reason(exc)})", path) from None
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):  # NpzFile hands back a member without the .npy magic as raw bytes
            raise ReconInputError(f"{k} is not a .npy array", path)
    return arrays


def _matrix(arrays: dict[str, np.ndarray], key: str, what: str, path: Path) -> np.ndarray:
    """``arrays[key]`` as a finite 4x4 float64 (a 3x4 gets the row [0, 0, 0, 1])."""
    if key not in arrays:
        raise ReconInputError(f"no {key} for {what}", path)
    a = arrays[key]
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a) or a.shape not in ((4, 4), (3, 4)):
        raise ReconInputError(f"{key} must be a 4x4 matrix of real numbers, got shape {a.shape} ({a.dtype})", path)
    a = a.astype(np.float64)
    if a.shape == (3, 4):
        a = np.vstack([a, [0.0, 0.0, 0.0, 1.0]])
    if not np.all(np.isfinite(a)):
        raise ReconInputError(f"{key} has a non-finite number", path)
    return a


def _idr_projection(arrays: dict[str, np.ndarray], i: int, normalised: bool, img: Path, path: Path) -> np.ndarray:
    """P = world_mat_i @ scale_mat_i (3x4), checked to be a projective camera."""
    P = _matrix(arrays, f"world_mat_{i}", f"image {img.name}", path)
    if normalised:
        S = _matrix(arrays, f"scale_mat_{i}", f"image {img.name}", path)
        if abs(np.linalg.det(S[:3, :3])) < 1e-12:
            raise ReconInputError(f"scale_mat_{i} is singular", path)
        P = P @ S
    if np.linalg.matrix_rank(P[:3, :3]) < 3:
        raise ReconInputError(f"world_mat_{i} is degenerate (rank < 3)", path)
    return P[:3]


def read_dtu_idr(
    scene: str | Path, downscale: float = 1.0, max_size: int | None = None, with_masks: bool = True
) -> ViewSet:
    """Read the IDR/NeuS layout (module docstring). Masks from mask/ when it exists and ``with_masks``."""
    scene = Path(scene)
    cam_file = _idr_camera_file(scene)
    if cam_file is None:
        raise ReconInputError(f"no {' or '.join(IDR_CAMERA_FILES)}", scene)
    img_dir = scene / "image"
    found: dict[int, Path] = {}
    for p in list_images(img_dir):
        if not p.stem.isdigit():
            raise ReconInputError("image name is not a view number (expected e.g. 000000.png)", p)
        _add(found, int(p.stem), p)
    check_count(len(found), img_dir, MIN_VIEWS)
    paths = _in_index_order(found, img_dir, "{i:06d}.png")
    arrays = _load_npz(cam_file)
    normalised = any(k.startswith("scale_mat_") and not k.endswith("_inv") for k in arrays)
    cameras = []
    for i, img in enumerate(paths):
        P = _idr_projection(arrays, i, normalised, img, cam_file)
        cam = Camera.from_projection(P, *CALIBRATION_SIZE)
        cameras.append(_calibrated(cam.K, cam.viewmat, img, f"world_mat_{i}", cam_file))
    mask_paths = None
    if with_masks and file_kind(scene / "mask") == "folder":
        masks = _numbered(scene / "mask")
        mask_paths = []
        for i in range(len(paths)):
            if i not in masks:
                raise ReconInputError(
                    f"no mask for view {i} (expected {i:03d}.png; pass with_masks=False to read without masks)",
                    scene / "mask",
                )
            mask_paths.append(masks[i])
    meta = {
        "layout": "dtu-idr",
        "cameras_path": str(cam_file),
        "normalised": normalised,
        "calibration_size": cameras[0].extra["calibration_size"],
    }
    return _view_set(paths, cameras, mask_paths, scene, downscale, max_size, meta)


# ----------------------------------------------------------------------------------------- RegNeRF / MVSNet
def _rect_dirs(scene: Path) -> list[Path]:
    return [d for d in (scene / "image", scene / "images", scene) if file_kind(d) == "folder"]


def _rect_images(folder: Path, light: int | None = None) -> dict[int, Path]:
    """{0-based view: path} of the rect_XXX_L_r5000.png files in ``folder`` (lighting ``light``, or any)."""
    found: dict[int, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for p in entries:
        m = _RECT_RE.match(p.name)
        if m and (light is None or int(m.group(2)) == light):
            if light is None:
                found.setdefault(int(m.group(1)) - 1, p)
            else:
                _add(found, int(m.group(1)) - 1, p)
    return found


def read_mvsnet_cam(path: Path) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(K 3x3, world-to-camera 4x4, depth line numbers) of an MVSNet ``*_cam.txt``."""
    tokens = read_text(path, "camera file", _MAX_CAM_TXT_BYTES).split()
    lower = [t.lower() for t in tokens]
    if "extrinsic" not in lower or "intrinsic" not in lower:
        raise ReconInputError("expected an MVSNet camera file ('extrinsic' 4x4, then 'intrinsic' 3x3)", path)
    e, k = lower.index("extrinsic"), lower.index("intrinsic")
    if k < e + 17:
        raise ReconInputError("'extrinsic' must be followed by 16 numbers before 'intrinsic'", path)
    try:
        values = [float(t) for t in tokens[e + 1 : e + 17] + tokens[k + 1 :]]
    except ValueError as exc:
        raise ReconInputError(f"non-numeric entry ({str(exc)[:80]})", path) from None
    if len(values) < 25:
        raise ReconInputError("'intrinsic' must be followed by 9 numbers", path)
    if not np.all(np.isfinite(values)):
        raise ReconInputError("camera file has a non-finite number", path)
    E = np.array(values[:16]).reshape(4, 4)
    K = np.array(values[16:25]).reshape(3, 3)
    if abs(K[2, 2]) < 1e-12:
        raise ReconInputError("intrinsic matrix has K[2][2] = 0", path)
    return K / K[2, 2], E, values[25:]


def _rect_masks(scene: Path, n: int) -> tuple[Path | None, list[Path] | None]:
    """RegNeRF's idrmasks for the scene (folder, one path per view), or (None, None) when there are none."""
    cands = [
        scene / "idrmasks" / scene.name / "mask",
        scene / "idrmasks" / scene.name,
        scene / "idrmasks" / "mask",
        scene / "idrmasks",
    ]
    for root in (scene.parent, scene.parent.parent):
        cands += [root / "idrmasks" / scene.name / "mask", root / "idrmasks" / scene.name]
    for d in cands:
        if file_kind(d) == "folder" and (found := _numbered(d)):
            missing = next((i for i in range(n) if i not in found), None)
            if missing is not None:
                raise ReconInputError(
                    f"no mask for view {missing} (expected {missing:03d}.png; pass with_masks=False "
                    "to read without masks)",
                    d,
                )
            return d, [found[i] for i in range(n)]
    return None, None


def read_dtu_rect(
    scene: str | Path, downscale: float = 1.0, max_size: int | None = None, with_masks: bool = True, light: int = 3
) -> ViewSet:
    """Read the RegNeRF/MVSNet layout (module docstring); ``light`` picks the lighting (3 = all lights on)."""
    scene = Path(scene)
    img_dir, found = next(((d, f) for d in _rect_dirs(scene) if (f := _rect_images(d, light))), (scene, {}))
    if not found:
        raise ReconInputError(f"no images named rect_XXX_{light}_r5000.png (here, in image/ or images/)", scene)
    check_count(len(found), img_dir, MIN_VIEWS)
    paths = _in_index_order(found, img_dir, f"rect_{{n:03d}}_{light}_r5000.png")
    cam_dir = _find_up(scene, "Cameras")
    if cam_dir is None:
        raise ReconInputError("no Cameras/ folder with MVSNet *_cam.txt files (here or up to two folders above)", scene)
    cameras, depth = [], []
    for i, img in enumerate(paths):
        txt = cam_dir / f"{i:08d}_cam.txt"
        if file_kind(txt) != "file":
            raise ReconInputError(not_regular_message(file_kind(txt), f"camera file of view {i}"), txt)
        K, E, depth_line = read_mvsnet_cam(txt)
        cameras.append(_calibrated(K, E, img, "camera", txt))
        depth.append(depth_line or None)
    mask_dir, mask_paths = _rect_masks(scene, len(paths)) if with_masks else (None, None)
    meta = {
        "layout": "dtu-rect",
        "light": light,
        "cameras_dir": str(cam_dir),
        "depth_ranges": depth,
        "mask_dir": None if mask_dir is None else str(mask_dir),
        "calibration_size": cameras[0].extra["calibration_size"],
    }
    return _view_set(paths, cameras, mask_paths, scene, downscale, max_size, meta)


# ----------------------------------------------------------------------------------------- entry point
def read_dtu(
    path: str | Path,
    downscale: float = 1.0,
    max_size: int | None = None,
    with_masks: bool = True,
    light: int = 3,
) -> ViewSet:
    """Read a DTU scene folder in either layout; views in dataset index order (view i = ``names[i]``).

    meta: layout ("dtu-idr" or "dtu-rect"), indices, image_paths, mask_paths, calibration_size, and the
    layout's own (cameras_path and normalised; or light, cameras_dir, depth_ranges, mask_dir).
    """
    path = Path(path)
    kind = file_kind(path)
    if kind != "folder":
        raise ReconInputError(
            not_regular_message(kind, "DTU scene folder") if kind != "file" else "expected a DTU scene folder", path
        )
    if is_dtu_idr_scene(path):
        return read_dtu_idr(path, downscale, max_size, with_masks)
    if any(_rect_images(d) for d in _rect_dirs(path)):
        return read_dtu_rect(path, downscale, max_size, with_masks, light)
    raise ReconInputError(
        "not a DTU scene (expected image/ with cameras_sphere.npz or cameras.npz, or "
        "rect_XXX_3_r5000.png images with a Cameras/ folder)",
        path,
    )
