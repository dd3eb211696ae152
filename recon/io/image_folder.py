"""Read a folder of photos (no poses) into a ViewSet, and the shared "load these images" step of every reader.

Masks come from a mask folder (matched by file stem: masks/IMG_1.png for IMG_1.jpg; a ``masks`` subfolder of
the image folder is used by default) or, when every image
has an alpha channel that is not fully opaque, from the alpha channels. The EXIF focal length of each photo
(in pixels of the returned images, or None) is kept in ``meta["exif_focal_px"]`` for the pose estimator.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.io import image_header
from recon.io.files import file_kind, not_regular_message, read_bytes
from recon.io.image_header import MAX_IMAGE_FILE_BYTES, parse_header
from recon.io.images import (
    exif_focal_px,
    has_image_name,
    load_image,
    load_mask,
    natural_key,
    read_raw,
    resize_image,
    target_size,
)
from recon.io.types import ViewSet

log = logging.getLogger(__name__)

# Two sizes are "the same shape" when their aspect ratios differ by less than this (relative).
_ASPECT_TOL = 0.01
#: Fewest views any reader accepts: one view gives no parallax, so nothing can be reconstructed.
MIN_VIEWS = 2


@dataclass
class LoadedViews:
    """Images (and masks) of a list of files, resized; cameras fitted to the returned image sizes."""

    images: list[np.ndarray]
    masks: list[np.ndarray] | None
    cameras: list[Camera] | None
    original_sizes: list[tuple[int, int]]


def list_images(folder: Path, skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Image files directly inside ``folder``, naturally sorted by name.

    An entry with an image name that is a folder is skipped with a warning naming it; a broken symbolic link,
    FIFO or device with an image name is a ReconInputError naming it (the user meant it as an image, and a
    FIFO would block the reader), or, when ``skipped`` is given, appended to it as (path, reason).
    """
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise ReconInputError(f"cannot list folder ({exc.strerror or exc})", folder) from None
    out = []
    for p in entries:
        if not has_image_name(p):
            continue
        kind = file_kind(p)
        if kind == "file":
            out.append(p)
        elif kind == "folder":
            log.warning("%s: skipped: a folder with an image file name", p)
        elif skipped is not None:
            skipped.append((p, not_regular_message(kind, "image file")))
        else:
            raise ReconInputError(not_regular_message(kind, "image file"), p)
    return sorted(out, key=lambda p: natural_key(p.name))


def unreadable_reason(path: Path) -> str | None:
    """Why the image file ``path`` cannot be read (not a regular file, no permission, not an image, corrupt
    header, truncated data), or None when it reads. An image over the pixel budget reads: the loader refuses it
    with its own error. Decoded at 1/8 scale (JPEGs by Pillow, which reads the whole entropy-coded stream and
    raises on a truncated one)."""
    try:
        data = read_bytes(path, "image file", MAX_IMAGE_FILE_BYTES)
        header = parse_header(data, path)
    except ReconInputError as exc:
        return _reason(exc)
    if header.width * header.height > image_header.MAX_IMAGE_PIXELS:
        return None
    if path.suffix.lower() not in (".jpg", ".jpeg"):  # PNG & co: OpenCV refuses truncated data
        try:
            read_raw(path, cv2.IMREAD_REDUCED_GRAYSCALE_8)
        except ReconInputError as exc:
            return _reason(exc)
        return None
    from PIL import Image  # OpenCV decodes a truncated JPEG with a grey bottom; Pillow raises

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return f"cannot decode image ({exc})"
    return None


def _reason(exc: ReconInputError) -> str:
    """The problem part of a ReconInputError's one-line message (without the path)."""
    text = str(exc)
    return text.split(": ", 1)[1] if exc.path is not None and ": " in text else text


def readable_images(paths: list[Path], skipped: list[tuple[Path, str]]) -> list[Path]:
    """``paths`` less the files that cannot be read, each added to ``skipped`` with its reason."""
    out = []
    for p in paths:
        why = unreadable_reason(p)
        if why is None:
            out.append(p)
        else:
            skipped.append((p, why))
    return out


def check_unique(paths: list[Path]) -> None:
    """ReconInputError naming the first image listed twice (also through another path or a link to it)."""
    seen: dict[Path, Path] = {}
    for p in paths:
        try:
            key = p.resolve()
        except (OSError, RuntimeError):  # a symlink loop: the loader names it
            key = p
        if key in seen:
            first = seen[key]
            detail = "is listed twice" if first == p else f"is the same file as {first}"
            raise ReconInputError(f"image {detail}; every view must be a different image", p)
        seen[key] = p


def fit_camera(camera: Camera, width: int, height: int, path: Path) -> Camera:
    """``camera`` rescaled to an image of ``width`` x ``height``; error when the aspect ratio differs."""
    if (camera.width, camera.height) == (width, height):
        return camera
    if abs((width / height) / (camera.width / camera.height) - 1.0) > _ASPECT_TOL:
        raise ReconInputError(
            f"image is {width}x{height} but its camera is {camera.width}x{camera.height} (different aspect ratio)", path
        )
    log.warning(
        "%s: image is %dx%d, camera says %dx%d; rescaling intrinsics", path, width, height, camera.width, camera.height
    )
    return camera.resized(width, height)


def load_views(
    paths: list[Path],
    mask_paths: list[Path] | None = None,
    cameras: list[Camera] | None = None,
    downscale: float = 1.0,
    max_size: int | None = None,
    same_size: bool = False,
    alpha_masks: bool = True,
) -> LoadedViews:
    """Load ``paths`` (and masks), check sizes, resize, and fit ``cameras`` to the returned images.

    ``same_size`` requires every image to have the size of the first one (image folders without cameras).
    Masks come from ``mask_paths`` when given, else from the alpha channels when ``alpha_masks`` and every
    image has a not-fully-opaque alpha channel.
    """
    check_unique(paths)
    images: list[np.ndarray] = []
    alphas: list[np.ndarray | None] = []
    masks: list[np.ndarray] = []
    out_cams: list[Camera] = []
    sizes: list[tuple[int, int]] = []
    for i, path in enumerate(paths):
        rgb, alpha = load_image(path)
        h, w = rgb.shape[:2]
        if same_size and sizes and (w, h) != sizes[0]:
            w0, h0 = sizes[0]
            raise ReconInputError(
                f"image is {w}x{h} but {paths[0].name} is {w0}x{h0}; all images must have the same size", path
            )
        sizes.append((w, h))
        tw, th = target_size(w, h, downscale, max_size)
        images.append(resize_image(rgb, tw, th))
        alphas.append(None if alpha is None else resize_image(alpha, tw, th))
        if cameras is not None:
            out_cams.append(fit_camera(cameras[i], w, h, path).resized(tw, th))
        if mask_paths is not None:
            mask = load_mask(mask_paths[i])
            if mask.shape != (h, w):
                raise ReconInputError(
                    f"mask is {mask.shape[1]}x{mask.shape[0]} but image {path.name} is {w}x{h}", mask_paths[i]
                )
            masks.append(np.clip(resize_image(mask, tw, th), 0.0, 1.0))
    out_masks: list[np.ndarray] | None = None
    if mask_paths is not None:
        out_masks = masks
    elif alpha_masks and alphas and all(a is not None for a in alphas) and any(float(a.min()) < 1.0 for a in alphas):
        out_masks = [np.clip(a, 0.0, 1.0) for a in alphas]  # type: ignore[arg-type]
    return LoadedViews(
        images=images, masks=out_masks, cameras=out_cams if cameras is not None else None, original_sizes=sizes
    )


def check_count(n: int, source: Path, min_views: int, what: str = "images") -> None:
    """ReconInputError when fewer than ``min_views`` views were found."""
    if n < min_views:
        raise ReconInputError(f"found {n} {what}; need at least {min_views}", source)


def _match_masks(images: list[Path], masks_dir: Path) -> list[Path]:
    """The mask file for each image, matched by stem; error naming the first image without one."""
    if not masks_dir.exists():
        raise ReconInputError("mask folder does not exist", masks_dir)
    if not masks_dir.is_dir():
        raise ReconInputError("mask folder is not a folder", masks_dir)
    by_stem: dict[str, Path] = {}
    for p in list_images(masks_dir):
        by_stem.setdefault(p.stem, p)
        by_stem.setdefault(p.stem.lower(), p)
    out = []
    for img in images:
        # Accept masks/IMG_1.png, masks/IMG_1.jpg.png (some tools keep the image extension) and case changes.
        cand = by_stem.get(img.stem) or by_stem.get(img.name) or by_stem.get(img.stem.lower())
        if cand is None:
            raise ReconInputError(f"no mask for image {img.name} (expected {img.stem}.png)", masks_dir)
        out.append(cand)
    return out


def read_image_folder(
    folder: str | Path,
    masks_dir: str | Path | None = None,
    downscale: float = 1.0,
    max_size: int | None = None,
    min_views: int = MIN_VIEWS,
) -> ViewSet:
    """Read every image directly in ``folder`` (naturally sorted) into a ViewSet without cameras.

    A folder with no images but an ``images`` subfolder is read as scene/images (+ scene/masks).
    Masks: ``masks_dir`` (default: a ``masks`` subfolder when there is one), else alpha channels.
    ``downscale`` divides the image size (2 = half); ``max_size`` caps the longer side. All images must
    have one size. meta: ``exif_focal_px`` (per image, pixels of the returned images, or None),
    ``image_paths``, ``original_size`` (w, h before resizing).
    """
    folder = Path(folder)
    kind = file_kind(folder)
    if kind == "missing":
        raise ReconInputError("image folder does not exist", folder)
    if kind != "folder":
        raise ReconInputError(f"not a folder (expected a folder of images; this is a {kind})", folder)
    root = folder
    skipped: list[tuple[Path, str]] = []
    paths = list_images(folder, skipped)
    if not paths and not skipped and (folder / "images").is_dir() and list_images(folder / "images", []):
        folder = folder / "images"  # scene/images (+ scene/masks) layout
        paths = list_images(folder, skipped)
    paths = readable_images(paths, skipped)
    for p, why in skipped:
        log.warning("%s: skipped: %s", p, why)
    if len(paths) < min_views and skipped:
        bad = "; ".join(f"{p.name} ({why})" for p, why in skipped)
        raise ReconInputError(
            f"found {len(paths)} readable images, need at least {min_views}; cannot read {bad}", folder
        )
    if not paths:
        raise ReconInputError("no images found (looked for .png/.jpg/.jpeg files)", folder)
    check_count(len(paths), folder, min_views)
    if masks_dir is None:
        for cand in (folder / "masks", root / "masks"):
            if cand.is_dir():
                masks_dir = cand  # a masks/ folder beside the images is used without being asked
                log.info("using masks from %s", masks_dir)
                break
    mask_paths = _match_masks(paths, Path(masks_dir)) if masks_dir is not None else None
    loaded = load_views(paths, mask_paths=mask_paths, downscale=downscale, max_size=max_size, same_size=True)
    w0, h0 = loaded.original_sizes[0]
    th, tw = loaded.images[0].shape[:2]
    focals = []
    for p in paths:
        f = exif_focal_px(p, w0, h0)
        focals.append(None if f is None else f * tw / w0)
    return ViewSet(
        names=[p.name for p in paths],
        images=loaded.images,
        cameras=None,
        masks=loaded.masks,
        source=folder,
        meta={"exif_focal_px": focals, "image_paths": [str(p) for p in paths], "original_size": (w0, h0)},
    )
