"""Pick the right reader for a path by what is on disk, so the CLI takes any supported input as one argument.

Order: the datasets' own layouts first (Blender/NeRF-synthetic transforms_train.json; LLFF poses_bounds.npy;
DTU in the IDR/NeuS or RegNeRF layout), then a transforms.json (the file, or a folder holding one); a COLMAP
model (cameras.bin/.txt in the folder or in sparse/0 beneath it); a SpaRe-style scene (recon.io.spare); else a
plain image folder.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recon.errors import ReconInputError
from recon.io.blender import is_blender_scene, read_blender
from recon.io.colmap import find_colmap_model, read_colmap
from recon.io.dtu import is_dtu_idr_scene, is_dtu_rect_scene, read_dtu
from recon.io.files import file_kind, not_regular_message
from recon.io.image_folder import list_images, read_image_folder
from recon.io.images import is_image_file, resize_image, target_size
from recon.io.llff import is_llff_scene, read_llff
from recon.io.spare import is_scene as is_spare_scene
from recon.io.spare import read_spare_scene
from recon.io.transforms_json import find_transforms_json, read_transforms
from recon.io.types import ViewSet

# The datasets' own layouts, checked before the generic ones: (name, probe, reader).
_LAYOUTS: tuple[tuple[str, Callable[[Path], bool], Callable[..., ViewSet]], ...] = (
    ("blender", is_blender_scene, read_blender),
    ("llff", is_llff_scene, read_llff),
    ("dtu", lambda p: is_dtu_idr_scene(p) or is_dtu_rect_scene(p), read_dtu),
)


def detect_format(path: str | Path) -> str:
    """One of "blender", "llff", "dtu", "transforms", "colmap", "spare", "images" for ``path``;
    ReconInputError when nothing fits."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "missing":
        raise ReconInputError("input does not exist", path)
    if kind not in ("file", "folder"):  # /dev/null, a FIFO, a broken link: nothing to read, and reads could block
        raise ReconInputError(not_regular_message(kind, "input"), path)
    if kind == "file":
        if path.suffix.lower() == ".json":
            return "transforms"
        if is_image_file(path):
            raise ReconInputError("expected a folder of images, not a single image", path)
        raise ReconInputError(
            "unsupported input file (expected a folder of images, a transforms.json, a COLMAP model folder "
            "or a SpaRe-style scene)",
            path,
        )
    for name, probe, _ in _LAYOUTS:
        if probe(path):
            return name
    if find_transforms_json(path) is not None:
        return "transforms"
    if find_colmap_model(path) is not None:
        return "colmap"
    if is_spare_scene(path):
        return "spare"
    unreadable: list = []  # broken links etc. with image names: the image-folder reader names them
    if list_images(path, unreadable) or unreadable or ((path / "images").is_dir() and list_images(path / "images", [])):
        return "images"
    raise ReconInputError(
        "no images, transforms.json, COLMAP model (cameras.bin/txt, sparse/0), LLFF/DTU/Blender or SpaRe-style "
        "scene found",
        path,
    )


def _defaults(*fns: Callable[..., Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fn in fns:
        for name, p in inspect.signature(fn).parameters.items():
            if p.default is not inspect.Parameter.empty:
                out.setdefault(name, p.default)
    return out


_SIZE_OPTIONS = ("downscale", "max_size")


def resize_views(views: ViewSet, downscale: float = 1.0, max_size: int | None = None) -> ViewSet:
    """Views resized as the readers' ``downscale``/``max_size`` would (for readers without those options)."""
    h, w = views.images[0].shape[:2]
    tw, th = target_size(w, h, downscale, max_size)
    if (tw, th) == (w, h):
        return views
    meta = dict(views.meta)
    if meta.get("exif_focal_px") is not None:
        meta["exif_focal_px"] = [None if f is None else f * tw / w for f in meta["exif_focal_px"]]
    out = [resize_image(img, *target_size(img.shape[1], img.shape[0], downscale, max_size)) for img in views.images]
    masks = None
    if views.masks is not None:
        masks = [np.clip(resize_image(m, im.shape[1], im.shape[0]), 0.0, 1.0) for m, im in zip(views.masks, out)]
    cams = None
    if views.cameras is not None:
        cams = [c.resized(im.shape[1], im.shape[0]) for c, im in zip(views.cameras, out)]
    return ViewSet(names=list(views.names), images=out, cameras=cams, masks=masks, source=views.source, meta=meta)


def _call(fn: Callable[..., ViewSet], first: Any, opts: dict[str, Any]) -> ViewSet:
    """Call a reader with the options it accepts.

    ``downscale``/``max_size`` are applied after reading when the reader does not take them. Any other
    option the reader does not take is dropped when it is None or its default value in the other readers
    (so a caller can always pass e.g. masks_dir=None), and is a user error otherwise.
    """
    params = inspect.signature(fn).parameters
    neutral = _defaults(read_transforms, read_colmap, read_image_folder)
    post = {k: opts[k] for k in _SIZE_OPTIONS if k in opts and k not in params and opts[k] is not None}
    rest = {k: v for k, v in opts.items() if k not in post}
    unknown = [
        k for k, v in rest.items() if k not in params and v is not None and not (k in neutral and v == neutral[k])
    ]
    if unknown:
        raise ReconInputError(f"option(s) {', '.join(unknown)} do not apply to this kind of input", first)
    if post:
        target_size(1, 1, **post)  # validate the options before the (possibly slow) read
    views = fn(first, **{k: v for k, v in rest.items() if k in params})
    return resize_views(views, **post) if post else views


def read_views(path: str | Path, **opts: Any) -> ViewSet:
    """Read any supported input into a ViewSet, choosing the reader by what is on disk.

    ``opts`` go to the chosen reader (e.g. downscale, max_size, masks_dir, images_dir, split_file, track,
    split). ``downscale`` (divide the size, >= 1) and ``max_size`` (cap on the longer side) work for every
    kind of input; any other option the chosen reader does not take must be None or left at its default.
    """
    path = Path(path)
    kind = detect_format(path)
    readers = {name: reader for name, _, reader in _LAYOUTS}
    readers.update(transforms=read_transforms, colmap=read_colmap, spare=read_spare_scene, images=read_image_folder)
    return _call(readers[kind], path, opts)
