"""estimate_poses(): cameras for an unposed ViewSet (features -> matching -> incremental SfM -> BA -> normalise)."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.types import ViewSet
from recon.poses.align import Similarity, transform_camera
from recon.poses.features import detect
from recon.poses.incremental import IncrementalSfM, Model
from recon.poses.matching import PairMatches, mutual_ratio_matches, verify_pair
from recon.poses.normalize import normalisation

log = logging.getLogger(__name__)

DEFAULT_HFOV_DEG = 50.0  # used when a photo has no EXIF focal length; refined by bundle adjustment
FOCAL_SEARCH_HFOV_DEG = (40.0, 50.0, 60.0, 70.0)  # tried (best reprojection error wins) when no focal is known


@dataclass
class PoseResult:
    """Estimated cameras (one per registered view, in ``registered`` order), failures, sparse points.

    ``normalisation`` maps the SfM frame to the returned (normalised) frame; points are in the latter.
    """

    cameras: list[Camera]
    registered: list[str]
    failed: list[str]
    xyz: np.ndarray
    rgb: np.ndarray
    normalisation: Similarity
    method: str = "auto"
    info: dict = field(default_factory=dict)


def focal_from_hfov(width: int, hfov_deg: float) -> float:
    return 0.5 * width / math.tan(math.radians(hfov_deg) / 2)


def _intrinsics(views: ViewSet, focal_px: float | None, hfov_deg: float) -> tuple[np.ndarray, bool]:
    """Per-view K and whether a focal prior (argument or EXIF) was known."""
    exif = views.meta.get("exif_focal_px") or [None] * len(views)
    Ks, known = [], True
    for k, img in enumerate(views.images):
        h, w = img.shape[:2]
        f = focal_px if focal_px is not None else exif[k]
        if f is None:
            known = False
            f = focal_from_hfov(w, hfov_deg)
        Ks.append(intrinsics(f, f, w / 2, h / 2))
    return np.stack(Ks), known


def match_all(features: list, Ks: np.ndarray, ratio: float = 0.9, thresh_px: float = 1.5,
              min_inliers: int = 20, seed: int = 0) -> list[PairMatches]:
    """Verified matches for every pair of views (few views: exhaustive matching is cheap)."""
    pairs = []
    n = len(features)
    for i in range(n):
        for j in range(i + 1, n):
            idx = mutual_ratio_matches(features[i].desc, features[j].desc, ratio)
            p = verify_pair(i, j, features[i].xy, features[j].xy, idx, Ks[i], Ks[j], thresh_px, min_inliers, seed,
                            guided=(features[i].desc, features[j].desc))
            if p is not None:
                pairs.append(p)
            log.debug("pair %d-%d: %d putative, %d verified", i, j, len(idx), 0 if p is None else len(p))
    return pairs


def _rot_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def consistent_pairs(pairs: list[PairMatches], tol_deg: float = 5.0) -> list[PairMatches]:
    """Drop pairs whose relative rotation disagrees with every triangle they are part of (a wrong essential
    matrix, e.g. from a repetitive texture); pairs in no triangle are kept."""
    R = {(p.i, p.j): p.R for p in pairs}

    def rel(a: int, b: int) -> np.ndarray | None:  # rotation taking camera a's axes to camera b's
        if (a, b) in R:
            return R[(a, b)]
        if (b, a) in R:
            return R[(b, a)].T
        return None

    nodes = sorted({p.i for p in pairs} | {p.j for p in pairs})
    keep = []
    for p in pairs:
        tri, good = 0, 0
        for k in nodes:
            if k in (p.i, p.j):
                continue
            rik, rkj = rel(p.i, k), rel(k, p.j)
            if rik is None or rkj is None:
                continue
            tri += 1
            if _rot_deg(rkj @ rik @ p.R.T) < tol_deg:
                good += 1
        if tri == 0 or good > 0:
            keep.append(p)
        else:
            log.debug("pair %d-%d dropped: inconsistent with all %d triangles", p.i, p.j, tri)
    return keep


def _seed_order(pairs: list[PairMatches], n_views: int) -> list[tuple[int, int]]:
    """Candidate seed pairs, best first: many inliers and a useful triangulation angle."""
    def score(p: PairMatches) -> float:
        return len(p) * min(1.0, p.angle_deg / 4.0)
    ranked = sorted(pairs, key=score, reverse=True)
    limit = len(ranked) if n_views <= 4 else 2
    return [(p.i, p.j) for p in ranked[:limit]]


def _better(a: Model | None, b: Model) -> bool:
    if a is None:
        return True
    if len(b.cams) != len(a.cams):
        return len(b.cams) > len(a.cams)
    return b.rms_px < a.rms_px


def _sfm(features: list, pairs: list[PairMatches], Ks: np.ndarray, refine_focal: bool) -> tuple[Model | None, np.ndarray, IncrementalSfM | None]:
    best, best_K, best_sfm = None, Ks, None
    n = len({p.i for p in pairs} | {p.j for p in pairs})  # views that can register at all
    for seed in _seed_order(pairs, n):
        for reproj, min_pnp in ((4.0, 12), (6.0, 8)):  # honest relaxation: wider thresholds only if needed
            sfm = IncrementalSfM(features, pairs, Ks.copy(), reproj_px=reproj, min_pnp=min_pnp)
            m = sfm.run(seed)
            if len(m.cams) >= 2 and len(m.xyz) >= 6:
                sfm.adjust(m, refine_focal=refine_focal, fixed=seed[0])
                if refine_focal:
                    sfm._triangulate(m)
                    sfm.adjust(m, refine_focal=True, fixed=seed[0])
            if len(m.cams) >= 2 and _better(best, m):
                best, best_K, best_sfm = m, sfm.Ks.copy(), sfm
            if len(m.cams) == n:
                break
        if best is not None and len(best.cams) == n and best.rms_px < 1.0:
            break
    return best, best_K, best_sfm


def drop_weak_views(sfm: IncrementalSfM, model: Model, min_obs: int = 30, rel: float = 0.25) -> list[int]:
    """Remove registered views that too few triangulated points support (fewer than ``min_obs`` or than
    ``rel`` x the median view's count): a view placed from a handful of matches is more often wrong than
    right, and a wrong camera hurts the reconstruction more than a missing one. Returns the removed views."""
    obs, cam_list, _ = sfm._observations(model)
    counts = np.bincount(obs.cam, minlength=len(cam_list))
    limit = max(min_obs, rel * float(np.median(counts)))
    weak = [im for c, im in enumerate(cam_list) if counts[c] < limit]
    if len(cam_list) - len(weak) < 2:
        return []
    for im in weak:
        log.debug("view %d dropped: only %d supporting observations (limit %.0f)", im, counts[cam_list.index(im)], limit)
        model.cams.pop(im)
    return weak


def estimate_poses(
    views: ViewSet,
    method: str = "auto",
    focal_px: float | None = None,
    hfov_deg: float | None = None,
    max_features: int = 8000,
    seed: int = 0,
) -> PoseResult:
    """Cameras for the views of an unposed ViewSet.

    ``method``: "auto" (this module's SfM) or "colmap" (pycolmap on the same images). ``focal_px`` overrides
    the per-image EXIF focal (``views.meta["exif_focal_px"]``); without either, a search over a few fields
    of view followed by focal refinement in bundle adjustment. Views that cannot be registered are listed in
    ``failed``; raises ReconInputError when fewer than 2 views can be registered.
    """
    t0 = time.perf_counter()
    if method == "colmap":
        from recon.poses.colmap_runner import colmap_poses

        return colmap_poses(views, focal_px=focal_px)
    if method != "auto":
        raise ValueError(f"unknown pose method {method!r} (auto or colmap)")
    Ks, known = _intrinsics(views, focal_px, hfov_deg or DEFAULT_HFOV_DEG)
    features = [detect(img, max_features=max_features) for img in views.images]
    pairs = consistent_pairs(match_all(features, Ks, seed=seed))
    info: dict = {"features": [len(f) for f in features],
                  "pairs": {f"{views.names[p.i]}|{views.names[p.j]}": len(p) for p in pairs},
                  "focal_prior": "given" if known else "none"}
    model, K_final, sfm = None, Ks, None
    if pairs:
        if known or hfov_deg is not None:
            model, K_final, sfm = _sfm(features, pairs, Ks, refine_focal=not known)
        else:
            # default field of view first; the other candidates only when it leaves views out or fits badly
            for hf in sorted(FOCAL_SEARCH_HFOV_DEG, key=lambda h: abs(h - DEFAULT_HFOV_DEG)):
                if model is not None and len(model.cams) == len({p.i for p in pairs} | {p.j for p in pairs}) \
                        and model.rms_px < 1.0:
                    break
                K_try, _ = _intrinsics(views, None, hf)
                m, K_m, s = _sfm(features, pairs, K_try, refine_focal=True)
                if m is not None:
                    log.debug("hfov %.0f: %d views, rms %.3f px, f %.1f", hf, len(m.cams), m.rms_px, K_m[0, 0, 0])
                if m is not None and _better(model, m):
                    model, K_final, sfm = m, K_m, s
    if model is None or len(model.cams) < 2:
        raise ReconInputError(
            f"pose estimation failed: could not register at least 2 of the {len(views)} images "
            f"(too few matching features between them)", views.source)
    assert sfm is not None
    if drop_weak_views(sfm, model):
        sfm._triangulate(model)
        sfm.adjust(model, refine_focal=not known, fixed=min(model.cams))
        K_final = sfm.Ks.copy()
    reg = sorted(model.cams)
    failed = [views.names[i] for i in range(len(views)) if i not in model.cams]
    raw = []
    for i in reg:
        V = np.eye(4)
        V[:3, :3] = cv2.Rodrigues(model.cams[i][:3])[0]
        V[:3, 3] = model.cams[i][3:]
        h, w = views.images[i].shape[:2]
        raw.append(Camera(K=K_final[i], viewmat=V, width=w, height=h, name=views.names[i]))
    keys = sorted(model.xyz)
    xyz = np.stack([model.xyz[k] for k in keys]) if keys else np.zeros((0, 3))
    rgb = np.zeros((len(keys), 3), dtype=np.float32)
    for n_, k in enumerate(keys):
        cols = [features[im].rgb[kp] for im, kp in sfm.tracks.obs[k] if im in model.cams]
        rgb[n_] = np.mean(cols, axis=0)
    norm = normalisation([c.viewmat for c in raw], xyz)
    cams = [transform_camera(c, norm) for c in raw]
    for c, i in zip(cams, reg):
        c.extra["index"] = i
    info.update({"rms_px": model.rms_px, "points": len(keys), "focal_px": float(K_final[reg[0]][0, 0]),
                 "seconds": time.perf_counter() - t0})
    return PoseResult(cameras=cams, registered=[views.names[i] for i in reg], failed=failed, xyz=norm.apply(xyz),
                      rgb=rgb, normalisation=norm, method="auto", info=info)
