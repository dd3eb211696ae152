"""Object or scene: what a capture is, decided from the data, and what each mode changes.

object: the input comes with object masks (mask files, RGBA alpha): train on the object only, with a mask loss,
  a visual-hull initialisation and floater pruning outside the hull.
scene: everything else (forward-facing captures, rooms, photos with background): train on the whole image, no
  masks and no hull; start from where stereo between the input views is confident (priors.stereo) plus a
  backdrop at the far depth where it is not, with the points the data offers added (SfM/COLMAP points, the
  pose estimator's points); without stereo from those points alone, or from points spread through the input
  cameras' frusta between the near and far depths the data gives (LLFF), coloured from their pixels and seen by
  2+ views; else, as vanilla 3DGS, at random in the box the cameras look at.

Photos without masks (``--mode auto``, the default) are a scene: measured on DTU (dtu3, 500 steps, both
scenes), scene mode starting from stereo scores 17.15 dB masked PSNR where object mode on the salient
segmenter's masks scores 14.79 dB (a visual hull from imperfect automatic masks cuts the object). ``--mode
object`` segments with the best segmenter installed (``priors.segmentation``: U^2-Net-p shipped in a registry
package and run by onnxruntime when installed, else OpenCV) and uses object mode only when it is confident of
one object in most views (``recon.run_checks.decide_masks``), else falls back to scene mode. The classical OpenCV
segmenter masked real subjects away (DTU IoU 0.14-0.22 against 0.78-0.89 for the salient one,
benchmarks/masks_real.py). The decision and its reason go to the terminal, run.log and metrics.json.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from priors.stereo import StereoSettings
from recon.cameras import Camera
from recon.config import ReconstructConfig
from recon.io.types import ViewSet
from recon.rig import scene_bounds as rig_bounds
from recon.run_checks import MaskDecision, decide_masks

log = logging.getLogger("recon")

MODES = ("auto", "object", "scene")
MIN_DATA_POINTS = 100  # fewer sparse points than this are not worth starting from


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
    """``config`` for scene mode: no masks, no hull, no hull pruning, no mask loss, a fixed (not random)
    background (the data's own, ``pipeline.data_background``: white for Blender scenes, else black),
    densification stopped at ``densify.scene_refine_stop_frac`` and half resolution until
    ``train.scene_coarse_until`` when set, no multi-view photometric term (the
    whole unmasked photo, lighting changes and all, would be compared), and ``loss.scene_novel_opacity`` as the
    weight of the opaque-from-new-directions term when set."""
    densify = config.densify
    if densify.scene_refine_stop_frac is not None:
        densify = replace(densify, refine_stop_frac=densify.scene_refine_stop_frac)
    train = replace(config.train, random_background=False)
    if train.scene_coarse_until is not None:
        train = replace(train, coarse_until=train.scene_coarse_until)
    loss = replace(config.loss, use_masks=False, prune_outside_hull=False, mask=0.0, multiview=0.0)
    if loss.scene_novel_opacity is not None:
        loss = replace(loss, novel_opacity=loss.scene_novel_opacity)
    return replace(config, densify=densify, init=replace(config.init, visual_hull=False), loss=loss, train=train)


def decide_mode(views: ViewSet, config: ReconstructConfig) -> ModeDecision:
    """Object or scene for ``views`` (see the module docstring); segments photos without masks only when asked
    (``--mode object``)."""
    from priors.segmentation import make_segmenter

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
        return ModeDecision(
            "scene",
            "the photos come without object masks: the whole image is reconstructed, from stereo between the "
            "views (give masks, or --mode object to segment them automatically)",
        )
    segmenter = make_segmenter("auto")
    found = [segmenter.segment(img) for img in views.images]
    masks = [f.mask for f in found]
    md = decide_masks(names, masks, from_input=False, confidence=[f.confidence for f in found])
    if not md.use:
        return ModeDecision("scene", md.reason, None, md)
    mean_conf = float(np.mean([f.confidence for f in found]))
    return ModeDecision(
        "object",
        f"--mode object: automatic segmentation ({segmenter.name}) found one object (confidence {mean_conf:.2f}, "
        f"masks cover {100 * float(np.mean(list(md.coverage.values()))):.0f}% of the pixels on average)",
        masks,
        md,
    )


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


@dataclass
class SceneStart:
    """Where a scene-mode run starts: points (xyz, rgb), what they are, and the stereo depth maps behind them
    (priors.stereo.StereoDepth per input view; None when the points do not come from stereo)."""

    xyz: np.ndarray
    rgb: np.ndarray
    how: str
    stereo: list[Any] | None = None


def scene_start(
    views: ViewSet, cameras: list[Camera], n: int, rng: np.random.Generator, stereo: StereoSettings | None = None
) -> SceneStart | None:
    """Where a scene-mode run starts when the data says something: points where stereo between the input views
    is confident (with the input's own sparse points added when it has them), else the sparse points alone,
    else points in the input frusta between the data's near and far depths; None when the data gives none of
    these (the caller starts as vanilla 3DGS)."""
    found = data_points(views)
    start = stereo_start(views, cameras, n, rng, stereo)
    if start is not None and found is not None:
        start.xyz = np.concatenate([start.xyz, found[0]])
        start.rgb = np.concatenate([start.rgb, found[1]])
        start.how += f" and {len(found[0])} sparse points from the input"
    if start is not None:
        return start
    if found is not None:
        return SceneStart(*found, "sparse points from the input")
    near_far = data_depth_range(views)
    if near_far is not None:
        xyz, rgb = frustum_points(views, cameras, n, rng, near_far)
        return SceneStart(xyz, rgb, f"points seen by 2+ input views, depths {near_far[0]:.3g}-{near_far[1]:.3g}")
    return None


BACKDROP_SHARE = 0.25  # of the stereo start's points: placed at the far depth where stereo found nothing


def stereo_start(
    views: ViewSet, cameras: list[Camera], n: int, rng: np.random.Generator, stereo: StereoSettings | None = None
) -> SceneStart | None:
    """``n`` coloured points: most where plane-sweep stereo between the input views is confident and
    consistent (priors.stereo), the rest (``BACKDROP_SHARE``) a backdrop at the far end of the depth range
    through pixels stereo could not place (untextured walls, sky, table tops), so that what no two views agree
    on is explained from behind the scene rather than by floaters in front of it. None when stereo finds too
    few points (one view, no texture, no overlap). The depth range comes from the data when it gives one (LLFF
    near/far; the unit sphere of normalised IDR/NeuS cameras), else from the box the cameras look at.
    ``stereo``: the sweep's settings (default ``StereoSettings()``)."""
    from priors.stereo import describe, stereo_depths, stereo_points, untrusted_backdrop

    if len(cameras) < 2:
        return None
    near_far: tuple[float, float] | list[tuple[float, float]] | None = data_depth_range(views)
    if near_far is not None:
        near_far = (0.9 * near_far[0], 1.1 * near_far[1])
    elif views.meta.get("normalised"):  # IDR/NeuS: the object of interest is inside the unit sphere
        dist = [float(np.linalg.norm(c.center)) for c in cameras]
        near_far = [(max(0.05 * d, d - 1.0), d + 1.0) for d in dist]
    bounds = rig_bounds(cameras)
    try:
        depths = stereo_depths(views.images, cameras, bounds, settings=stereo, near_far=near_far)
    except ValueError:
        return None
    n_back = int(round(BACKDROP_SHARE * n))
    xyz, rgb = stereo_points(depths, views.images, n - n_back, rng)
    if len(xyz) < MIN_DATA_POINTS:
        return None
    bxyz, brgb = untrusted_backdrop(depths, views.images, n_back, rng)
    how = f"{len(xyz)} stereo points ({describe(depths)}) and a backdrop of {len(bxyz)}"
    return SceneStart(np.concatenate([xyz, bxyz]), np.concatenate([rgb, brgb]), how, depths)


# Object-mode stereo starts a run only where it placed at least this share of the masked pixels: views far
# apart (lego's 3 views around the object: 5%) match in a few patches, and sampling a start there concentrates it
# (lego 3 views -0.16 dB), while DTU's 3 nearby views place 25-29% and lego's 8 views 34% (between 5% and 25% on
# a log scale).
MIN_OBJECT_STEREO_COVERAGE = 0.1


def object_stereo_start(
    views: ViewSet,
    cameras: list[Camera],
    masks: list[np.ndarray],
    hull: Any,
    n: int,
    rng: np.random.Generator,
    stereo: StereoSettings | None = None,
) -> SceneStart | None:
    """Up to ``n`` coloured points where plane-sweep stereo between the input views is confident inside the
    object masks and the (dilated) visual hull, and the stereo depths with their confidence zeroed outside the
    masks (for the depth loss). The hull bounds the sweep. A hull from a few views that look from nearby
    directions is a long extrusion of the silhouette (DTU's 3 views): stereo places the surface inside it. None
    when stereo places less than ``MIN_OBJECT_STEREO_COVERAGE`` of the masked pixels or nothing in the hull."""
    from priors.stereo import stereo_depths, stereo_points

    if len(cameras) < 2 or n <= 0:
        return None
    try:
        depths = stereo_depths(views.images, cameras, np.asarray(hull.bounds, dtype=np.float64), settings=stereo)
    except ValueError:
        return None
    object_px = trusted_px = 0
    for sd, mask in zip(depths, masks):
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != sd.depth.shape:
            m = cv2.resize(m, (sd.depth.shape[1], sd.depth.shape[0]), interpolation=cv2.INTER_AREA)
        inside = m >= 0.5
        sd.confidence = np.where(inside, sd.confidence, 0.0).astype(np.float32)
        sd.depth = np.where(inside, sd.depth, 0.0).astype(np.float32)
        object_px += int(inside.sum())
        trusted_px += int(sd.valid.sum())
    coverage = trusted_px / max(1, object_px)
    if coverage < MIN_OBJECT_STEREO_COVERAGE:
        log.info(
            "object init: stereo placed only %.0f%% of the object's pixels (views too far apart to match): "
            "the visual hull alone starts the run (with a faster opacity decay, train.hull_opacity_decay)",
            100 * coverage,
        )
        return None
    xyz, rgb = stereo_points(depths, views.images, 4 * n, rng)
    keep = hull.contains(xyz).cpu().numpy() if len(xyz) else np.zeros(0, dtype=bool)
    xyz, rgb = xyz[keep][:n], rgb[keep][:n]
    if len(xyz) == 0:
        return None
    how = f"{len(xyz)} stereo points in the hull (confident depth on {100 * coverage:.0f}% of the object's pixels)"
    return SceneStart(xyz, rgb, how, depths)


def data_depth_range(views: ViewSet) -> tuple[float, float] | None:
    """(near, far) the data gives (LLFF's poses_bounds), or None."""
    nf = views.meta.get("near_far")
    if nf is not None and len(nf):
        arr = np.asarray(nf, dtype=np.float64).reshape(-1, 2)
        near, far = float(np.min(arr[:, 0])), float(np.max(arr[:, 1]))
        if math.isfinite(near) and math.isfinite(far) and 0 < near < far:
            return near, far
    return None


def frustum_points(
    views: ViewSet,
    cameras: list[Camera],
    n: int,
    rng: np.random.Generator,
    near_far: tuple[float, float],
    min_views: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points through random pixels of random input views, at depths uniform in disparity between near
    and far (forward-facing scenes put most content near), coloured from their pixel, kept only where at least
    ``min_views`` input cameras see them: what one view alone sees cannot be placed, and points right in front
    of one camera become the floaters that hide the scene from every other view."""
    need = min(min_views, len(cameras))
    xyz, rgb = _frustum_samples(views, cameras, 4 * n, rng, near_far)
    seen = np.zeros(len(xyz), dtype=int)
    for cam in cameras:
        uv, z = cam.project(xyz)
        seen += (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    keep = np.flatnonzero(seen >= need)
    if len(keep) < n // 4:  # the views barely overlap: keep what there is
        keep = np.arange(len(xyz))
    keep = keep[:n]
    return xyz[keep], rgb[keep]


def _frustum_samples(
    views: ViewSet, cameras: list[Camera], n: int, rng: np.random.Generator, near_far: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
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
    """A box holding most of the points (2nd to 98th percentile per axis)."""
    return np.stack([np.percentile(xyz, 2, axis=0), np.percentile(xyz, 98, axis=0)])
