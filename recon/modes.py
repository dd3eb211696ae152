"""Object or scene: what a capture is, decided from the data, and what each mode changes.

object: the input comes with object masks (mask files, RGBA alpha): train on the object only, with a mask loss,
  a visual-hull initialisation and floater pruning outside the hull.
scene: everything else (forward-facing captures, rooms, photos with background): train on the whole image, no
  masks and no hull; start from the points the data offers (SfM/COLMAP points, the pose estimator's points)
  or from points spread through the input cameras' frusta between the near and far depths (LLFF gives them;
  else a range around the rig's look-at distance), coloured from the pixels they project to.

``--mode object`` on photos without masks segments them automatically (OpenCV); when the segmentation finds no
single object the run falls back to scene mode and says so. The decision and its reason go to run.log and
metrics.json. Automatic segmentation is never the default: on real photos it can mask the subject away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from recon.cameras import Camera
from recon.config import ReconstructConfig
from recon.io.types import ViewSet
from recon.rig import look_at_point
from recon.run_checks import MaskDecision, decide_masks

MODES = ("auto", "object", "scene")
MIN_DATA_POINTS = 100  # fewer sparse points than this are not worth starting from
NEAR_FAR_AROUND_TARGET = (0.25, 2.5)  # x the median look-at distance, when the data gives no depth range


@dataclass
class ModeDecision:
    """The mode, why, and the masks object mode uses (None in scene mode)."""

    mode: str
    reason: str
    masks: list[np.ndarray] | None = None
    mask_decision: MaskDecision | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "reason": self.reason}
        if self.mask_decision is not None:
            out["masks"] = self.mask_decision.to_dict()
        return out


def scene_config(config: ReconstructConfig) -> ReconstructConfig:
    """``config`` for scene mode: no masks, no hull, no hull pruning, no mask loss, a fixed black background."""
    return replace(config, init=replace(config.init, visual_hull=False),
                   loss=replace(config.loss, use_masks=False, prune_outside_hull=False, mask=0.0),
                   train=replace(config.train, random_background=False))


def decide_mode(views: ViewSet, config: ReconstructConfig) -> ModeDecision:
    """Object or scene for ``views`` (see the module docstring); runs the automatic segmentation only for
    ``--mode object`` without masks."""
    from priors.masks import foreground_masks

    wants_masks = config.loss.use_masks or config.init.visual_hull
    if config.mode == "scene" or not wants_masks:
        why = "--mode scene" if config.mode == "scene" else f"the {config.preset} preset uses no masks"
        return ModeDecision("scene", why)
    names = list(views.names)
    if views.masks is not None:
        masks = [np.asarray(m, dtype=np.float32) for m in views.masks]
        md = decide_masks(names, masks, from_input=True)
        return ModeDecision("object", "the input comes with object masks", masks, md)
    if config.mode == "auto":
        return ModeDecision("scene", "the photos come without object masks (give masks, or --mode object to "
                                     "segment them automatically)")
    masks = foreground_masks(views.images, None)
    md = decide_masks(names, masks, from_input=False)
    if not md.use:
        return ModeDecision("scene", md.reason, None, md)
    return ModeDecision("object", "--mode object: automatic segmentation found one object", masks, md)


def data_points(views: ViewSet) -> tuple[np.ndarray, np.ndarray] | None:
    """(xyz, rgb) sparse points the input or the pose estimator provides, when there are enough of them."""
    pts = views.meta.get("points3d")
    if pts is None:
        return None
    xyz, rgb = np.asarray(pts[0], dtype=np.float64).reshape(-1, 3), np.asarray(pts[1], dtype=np.float64).reshape(-1, 3)
    finite = np.isfinite(xyz).all(axis=1)
    if int(finite.sum()) < MIN_DATA_POINTS:
        return None
    return xyz[finite], np.clip(rgb[finite], 0.0, 1.0)


def depth_range(views: ViewSet, cameras: list[Camera]) -> tuple[float, float]:
    """(near, far) of the scene: the data's own (LLFF bounds) or a range around the rig's look-at distance."""
    nf = views.meta.get("near_far")
    if nf is not None and len(nf):
        arr = np.asarray(nf, dtype=np.float64).reshape(-1, 2)
        near, far = float(np.min(arr[:, 0])), float(np.max(arr[:, 1]))
        if math.isfinite(near) and math.isfinite(far) and 0 < near < far:
            return near, far
    target = look_at_point(cameras)
    depths = [float((c.R @ target + c.t)[2]) for c in cameras]
    d = float(np.median([z for z in depths if z > 0] or [1.0]))
    return NEAR_FAR_AROUND_TARGET[0] * d, NEAR_FAR_AROUND_TARGET[1] * d


def frustum_points(views: ViewSet, cameras: list[Camera], n: int, rng: np.random.Generator,
                   near_far: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points through random pixels of random input views, at depths uniform in disparity between near
    and far (forward-facing scenes put most content near), coloured from their pixel."""
    near, far = near_far
    k = rng.integers(0, len(cameras), size=n)
    out_xyz = np.empty((n, 3))
    out_rgb = np.empty((n, 3))
    for v in np.unique(k):
        sel = np.flatnonzero(k == v)
        cam, img = cameras[v], views.images[v]
        h, w = img.shape[:2]
        px = rng.integers(0, w, size=len(sel))
        py = rng.integers(0, h, size=len(sel))
        disparity = rng.uniform(1.0 / far, 1.0 / near, size=len(sel))
        uv = np.stack([px + 0.5, py + 0.5], axis=1) * [cam.width / w, cam.height / h]
        out_xyz[sel] = cam.unproject(uv, 1.0 / disparity)
        out_rgb[sel] = img[py, px]
    return out_xyz, out_rgb


def scene_bounds_of_points(xyz: np.ndarray) -> np.ndarray:
    """A box holding most of the points (2nd to 98th percentile per axis): the scene scale of scene mode."""
    return np.stack([np.percentile(xyz, 2, axis=0), np.percentile(xyz, 98, axis=0)])
