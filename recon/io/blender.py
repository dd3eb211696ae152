"""Read Blender/NeRF-synthetic scenes (``transforms_{train,val,test}.json`` + RGBA renders) by split.

The transforms.json reader does the parsing (OpenGL poses, ``camera_angle_x``, extension-less ``file_path``
such as ``./train/r_0``, alpha -> mask); this module picks the split's file, composites the RGB on a chosen
background (the RGB under alpha 0 is whatever Blender left there; the protocols score on white) and records
each frame's number (``r_26`` -> 26) so protocols can select frames by id, e.g. DietNeRF's 8 training views.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recon.errors import ReconInputError
from recon.io.files import file_kind, not_regular_message
from recon.io.transforms_json import read_transforms
from recon.io.types import ViewSet

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_TRAILING_INT = re.compile(r"(\d+)$")


def split_file(scene: Path, split: str) -> Path:
    """``transforms_{split}.json`` of a Blender scene folder."""
    return Path(scene) / f"transforms_{split}.json"


def is_blender_scene(path: str | Path) -> bool:
    """True for a folder with transforms_train.json (the NeRF-synthetic layout; plain transforms.json is not)."""
    return file_kind(split_file(Path(path), "train")) not in ("missing", "folder")


def frame_ids(names: Sequence[str]) -> list[int] | None:
    """The number ending each frame name (r_26 -> 26); None unless every name has one and they are distinct."""
    ids = [int(m.group(1)) if (m := _TRAILING_INT.search(n)) else None for n in names]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        return None
    return ids  # type: ignore[return-value]


def _background(background: Sequence[float]) -> np.ndarray:
    try:
        bg = np.asarray(background, dtype=np.float32).reshape(3)
    except (TypeError, ValueError):
        raise ReconInputError(f"background must be 3 numbers in [0, 1], got {background!r}") from None
    if not np.all((bg >= 0.0) & (bg <= 1.0)):
        raise ReconInputError(f"background must be 3 numbers in [0, 1], got {background!r}")
    return bg


def composite(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``rgb`` over ``background`` with coverage ``alpha`` (straight, not premultiplied, as Blender's PNGs)."""
    a = alpha[:, :, None].astype(np.float32)
    return (rgb * a + background * (1.0 - a)).astype(np.float32)


def read_blender(
    path: str | Path,
    split: str = "train",
    background: Sequence[float] = (1.0, 1.0, 1.0),
    downscale: float = 1.0,
    max_size: int | None = None,
) -> ViewSet:
    """Read one split of a Blender scene folder: images composited on ``background``, masks = alpha.

    Views come in the JSON's frame order, named by file stem (r_26). meta: layout "blender", split,
    frame_ids (the number in each name, or None when a name has none), background, and the transforms
    reader's image_paths and transforms_path.
    """
    scene = Path(path)
    kind = file_kind(scene)
    if kind != "folder":
        raise ReconInputError(
            not_regular_message(kind, "Blender scene folder")
            if kind != "file"
            else "expected a Blender scene folder (with transforms_train.json)",
            scene,
        )
    if split not in SPLITS:
        raise ReconInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}", scene)
    bg = _background(background)
    json_path = split_file(scene, split)
    if file_kind(json_path) == "missing":
        have = [s for s in SPLITS if file_kind(split_file(scene, s)) != "missing"]
        raise ReconInputError(f"no transforms_{split}.json (splits here: {', '.join(have) or 'none'})", scene)
    views = read_transforms(json_path, downscale=downscale, max_size=max_size)
    if views.masks is None:
        log.warning("%s: the images have no transparency; read as opaque (no masks)", json_path)
        images = views.images
    else:
        images = [composite(rgb, a, bg) for rgb, a in zip(views.images, views.masks)]
    names = [Path(p).stem for p in views.meta["image_paths"]]
    ids = frame_ids(names)
    if ids is None:
        log.warning("%s: frame names without a distinct trailing number; meta['frame_ids'] is None", json_path)
    meta = {**views.meta, "layout": "blender", "split": split, "frame_ids": ids, "background": bg.tolist()}
    return ViewSet(names=names, images=images, cameras=views.cameras, masks=views.masks, source=scene, meta=meta)
