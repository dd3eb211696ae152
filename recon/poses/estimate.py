"""estimate_poses(): cameras for an unposed ViewSet (features -> matching -> incremental SfM -> BA -> normalise)."""

from __future__ import annotations

import copy
import logging
import math
import time

import cv2
import numpy as np

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.types import ViewSet
from recon.poses.align import transform_camera
from recon.poses.features import detect
from recon.poses.incremental import IncrementalSfM, Model, check_deadline
from recon.poses.matching import PairMatches, mutual_ratio_matches, verify_pair
from recon.poses.normalize import normalisation
from recon.poses.result import PoseResult
from recon.poses.view_graph import triangle_votes

log = logging.getLogger(__name__)

DEFAULT_HFOV_DEG = 50.0  # used when a photo has no EXIF focal length; refined by bundle adjustment


def focal_from_hfov(width: int, hfov_deg: float) -> float:
    return 0.5 * width / math.tan(math.radians(hfov_deg) / 2)


def hfov_from_focal(width: int, focal_px: float) -> float:
    """The horizontal field of view (deg) of a ``width``-pixel image at ``focal_px``: focal_from_hfov's inverse."""
    return math.degrees(2 * math.atan(0.5 * width / focal_px))


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


def match_all(
    features: list,
    Ks: np.ndarray,
    ratio: float = 0.9,
    thresh_px: float = 1.5,
    min_inliers: int = 20,
    seed: int = 0,
    putative: dict[tuple[int, int], np.ndarray] | None = None,
    deadline: float | None = None,
) -> list[PairMatches]:
    """Verified matches for every pair of views (few views: exhaustive matching is cheap). The plain
    putative matches of every pair are stored in ``putative`` when given (PnP registration uses them)."""
    pairs = []
    n = len(features)
    for i in range(n):
        for j in range(i + 1, n):
            check_deadline(deadline)
            idx = mutual_ratio_matches(features[i].desc, features[j].desc, ratio)
            if putative is not None:
                putative[(i, j)] = idx
            # no guided re-matching here: under a wrong essential matrix (planar / periodic scenes) it gathers
            # wrong matches; the SfM re-matches every registered pair under its poses instead (relink)
            p = verify_pair(i, j, features[i].xy, features[j].xy, idx, Ks[i], Ks[j], thresh_px, min_inliers, seed)
            if p is not None:
                pairs.append(p)
            log.debug("pair %d-%d: %d putative, %d verified", i, j, len(idx), 0 if p is None else len(p))
    return pairs


def consistent_pairs(pairs: list[PairMatches], tol_deg: float = 5.0) -> list[PairMatches]:
    """Drop pairs whose relative rotation disagrees with every triangle they are part of (a wrong essential
    matrix, e.g. from a repetitive texture), all at once; pairs in no triangle are kept
    (:func:`recon.poses.view_graph.triangle_votes`; the pycolmap path drops them one at a time instead)."""
    good, bad = triangle_votes({(p.i, p.j): p.R for p in pairs}, tol_deg)
    keep = []
    for p in pairs:
        if good[(p.i, p.j)] > 0 or bad[(p.i, p.j)] == 0:
            keep.append(p)
        else:
            log.debug("pair %d-%d dropped: inconsistent with all %d triangles", p.i, p.j, bad[(p.i, p.j)])
    return keep


def _seed_order(pairs: list[PairMatches], n_views: int) -> list[tuple[int, int]]:
    """Candidate seed pairs, best first: many inliers and a wide triangulation angle (a narrow pair's essential
    matrix is ill-determined on planar-dominated scenes, and later re-matching can lock its error in)."""

    def score(p: PairMatches) -> float:
        return len(p) * min(1.0, p.angle_deg / 16.0)

    ranked = sorted(pairs, key=score, reverse=True)
    limit = len(ranked) if n_views <= 4 else 2
    return [(p.i, p.j) for p in ranked[:limit]]


def _better(a: Model | None, b: Model) -> bool:
    if a is None:
        return True
    if len(b.cams) != len(a.cams):
        return len(b.cams) > len(a.cams)
    return b.rms_px < a.rms_px


def _sfm(
    features: list,
    pairs: list[PairMatches],
    Ks: np.ndarray,
    refine_focal: bool,
    putative: dict[tuple[int, int], np.ndarray],
    reachable: int | None = None,
    deadline: float | None = None,
) -> tuple[Model | None, np.ndarray, IncrementalSfM | None]:
    """Incremental SfM from the best seed pairs; stops at the first seed that registers ``reachable`` views
    (those in any verified pair; default all) with a sub-pixel fit."""
    best, best_K, best_sfm = None, Ks, None
    n = len(features) if reachable is None else reachable
    for seed in _seed_order(pairs, n):
        sfm = IncrementalSfM(features, pairs, Ks.copy(), reproj_px=4.0, min_pnp=15, putative=putative)
        sfm.deadline = deadline
        m = sfm.run(seed)  # focal held while views come in; freed below once all are in
        if len(m.cams) >= 2 and m.n_points >= 6:
            sfm.adjust(m, refine_focal=refine_focal, fixed=seed[0])
            if refine_focal:
                sfm._triangulate(m)
                sfm.adjust(m, refine_focal=True, fixed=seed[0])
        log.debug("seed %s: %d views, rms %.3f px", seed, len(m.cams), m.rms_px)
        if len(m.cams) >= 2 and _better(best, m):
            best, best_K, best_sfm = m, sfm.Ks.copy(), sfm
        if best is not None and len(best.cams) >= n and best.rms_px < 1.0:
            break  # another seed will not bring in views that match no other view
    return best, best_K, best_sfm


def focal_search(sfm: IncrementalSfM, model: Model, scales: tuple[float, ...] = (0.94, 1.06, 1.12)) -> Model:
    """Shared focal without a prior, a guard against a local optimum: the reconstruction is also re-fitted from a
    few other focal scales (adjust poses, re-match every pair, adjust with the focal free) and the candidate
    with the lowest reprojection RMS among those keeping >= 80% of the observations wins. Returns the chosen
    model (``sfm`` is left with its tracks and intrinsics)."""

    def state(m: Model) -> tuple:
        return copy.deepcopy(m), sfm.Ks.copy(), dict(sfm.matches), sfm.tracks

    fixed = min(model.cams)
    cands = [(1.0, state(model), len(sfm._observations(model)[0].cam))]
    base_m, K0, matches0, tracks0 = cands[0][1]
    for sc in scales:
        m = copy.deepcopy(base_m)
        sfm.Ks = K0.copy()
        sfm.Ks[:, :2, :2] *= sc
        sfm.matches, sfm.tracks = dict(matches0), tracks0
        sfm._triangulate(m, retriangulate=True)
        sfm.adjust(m, fixed=fixed)
        sfm.relink(m, strong_only=True)
        sfm.adjust(m, refine_focal=True, fixed=fixed)
        n_obs = len(sfm._observations(m)[0].cam)
        log.debug("focal x%.2f -> %.1f px: rms %.3f px, %d observations", sc, sfm.Ks[0, 0, 0], m.rms_px, n_obs)
        cands.append((sc, state(m), n_obs))
    most = max(c[2] for c in cands)
    ok = [c for c in cands if c[2] >= 0.8 * most and len(c[1][0].cams) == len(model.cams)]
    _, (m, K, matches, tracks), _ = min(ok, key=lambda c: c[1][0].rms_px)
    sfm.Ks, sfm.matches, sfm.tracks = K, matches, tracks
    return m


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
        log.debug(
            "view %d dropped: only %d supporting observations (limit %.0f)", im, counts[cam_list.index(im)], limit
        )
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

    ``method``: "auto" (pycolmap's incremental mapper with settings for a few views,
    :data:`recon.poses.colmap_runner.SPARSE`; where it fails or leaves views out, pycolmap's global mapper on a
    cycle-checked view graph, :func:`recon.poses.colmap_runner.global_poses`; the result registering more views
    wins, ties to the incremental one), "own" (this module's incremental SfM, no time limit) or "colmap" (pycolmap
    with COLMAP's defaults). ``focal_px`` overrides the per-image EXIF focal (``views.meta["exif_focal_px"]``).
    On the real development data (benchmarks/poses_real.py) the global mapper placed the third view of DTU's
    3-view sets that the incremental one leaves out (it needs points seen by all three views), while the own
    SfM, the earlier fallback, was slow and never registered a view pycolmap had not, there or on the generated
    scenes. Raises ReconInputError when fewer than 2 views can be registered.
    """
    if method == "colmap":
        from recon.poses.colmap_runner import colmap_poses

        return colmap_poses(views, focal_px=focal_px)
    if method == "own":
        return own_sfm_poses(views, focal_px, hfov_deg, max_features, seed)
    if method != "auto":
        raise ValueError(f"unknown pose method {method!r} (auto, own or colmap)")
    from recon.poses.colmap_runner import SPARSE, SPARSE_GLOBAL, colmap_poses, global_poses

    t0 = time.perf_counter()
    first: PoseResult | None = None
    try:
        first = colmap_poses(views, focal_px=focal_px, settings=SPARSE, method="auto (pycolmap)")
    except ReconInputError as exc:
        log.info("poses: pycolmap's incremental mapper registered no pair (%s); trying its global mapper", exc)
    if first is not None and not first.failed:
        return first
    if first is not None:
        log.info("poses: pycolmap's incremental mapper left out %s; trying its global mapper", ", ".join(first.failed))
    second: PoseResult | None = None
    # the focal the incremental mapper found from >= 3 views starts the global one (one run instead of a sweep)
    starts = [float(first.cameras[0].fx)] if first is not None and len(first.registered) >= 3 else None
    try:
        second = global_poses(views, focal_px, SPARSE_GLOBAL, "auto (pycolmap global)", focal_starts=starts)
    except ReconInputError:
        if first is None:
            raise ReconInputError(
                f"pose estimation failed: neither of pycolmap's mappers could register a pair of the {len(views)} "
                "images (too few matching features between them; try --poses own)",
                views.source,
            ) from None
    best = second if second is not None and (first is None or len(second.registered) > len(first.registered)) else first
    assert best is not None
    best.info["seconds"] = time.perf_counter() - t0
    best.info["tried"] = ["pycolmap incremental", "pycolmap global"]
    return best


def own_sfm_poses(
    views: ViewSet,
    focal_px: float | None = None,
    hfov_deg: float | None = None,
    max_features: int = 8000,
    seed: int = 0,
    budget_s: float | None = None,
) -> PoseResult:
    """This module's SfM (features -> matching -> incremental SfM -> BA -> normalise) on an unposed ViewSet.

    ``focal_px`` overrides the per-image EXIF focal (``views.meta["exif_focal_px"]``); without either,
    ``hfov_deg`` (default 50 deg) gives the starting focal. It is held while the views register (two or three
    views constrain it weakly; freed that early it once wandered 429 -> 374 px, truth 471) and freed (one shared
    scale) once all are in: final bundle adjustment, then ``focal_search``.
    Views register by PnP on 2D-3D matches (see recon.poses.incremental). Views that cannot be registered
    are listed in ``failed``; raises ReconInputError when fewer than 2 views can be registered, and
    recon.poses.incremental.OutOfTime when it runs longer than ``budget_s`` seconds.
    """
    t0 = time.perf_counter()
    deadline = None if budget_s is None else t0 + budget_s
    Ks, known = _intrinsics(views, focal_px, hfov_deg or DEFAULT_HFOV_DEG)
    features = [detect(img, max_features=max_features) for img in views.images]
    putative: dict[tuple[int, int], np.ndarray] = {}
    verified = match_all(features, Ks, seed=seed, putative=putative, deadline=deadline)
    pairs = consistent_pairs(verified)
    info: dict = {
        "features": [len(f) for f in features],
        "pairs": {f"{views.names[p.i]}|{views.names[p.j]}": len(p) for p in verified},
        "focal_prior": "given" if known else "none",
    }
    model, K_final, sfm = None, Ks, None
    # pairs consistent with their triangles first; all verified pairs when that leaves views out (in a
    # single triangle one wrong pair makes all three look inconsistent)
    reachable = len({p.i for p in verified} | {p.j for p in verified})
    for cand in [pairs, verified] if len(pairs) < len(verified) else [verified]:
        if not cand or (model is not None and len(model.cams) >= reachable):
            continue
        m, K_m, s_ = _sfm(
            features, cand, Ks, refine_focal=not known, putative=putative, reachable=reachable, deadline=deadline
        )
        if m is not None and _better(model, m):
            model, K_final, sfm = m, K_m, s_
    if model is not None and sfm is not None and not known and len(model.cams) >= 3:
        model = focal_search(sfm, model)
        K_final = sfm.Ks.copy()
    if model is None or len(model.cams) < 2:
        raise ReconInputError(
            f"pose estimation failed: could not register at least 2 of the {len(views)} images "
            f"(too few matching features between them)",
            views.source,
        )
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
    keys = np.flatnonzero(model.valid)
    xyz = model.xyz[keys]
    T = sfm.tracks
    reg_mask = np.zeros(len(views), dtype=bool)
    reg_mask[reg] = True
    sel = reg_mask[T.im] & model.valid[T.track]
    offs = np.cumsum([0] + [len(f) for f in features])
    col = np.concatenate([f.rgb for f in features])[offs[T.im[sel]] + T.kp[sel]]
    pos = np.full(T.n, -1)
    pos[keys] = np.arange(len(keys))
    sums = np.zeros((len(keys), 3))
    np.add.at(sums, pos[T.track[sel]], col)
    rgb = (sums / np.maximum(np.bincount(pos[T.track[sel]], minlength=len(keys)), 1)[:, None]).astype(np.float32)
    norm = normalisation([c.viewmat for c in raw], xyz)
    cams = [transform_camera(c, norm) for c in raw]
    for c, i in zip(cams, reg):
        c.extra["index"] = i
    info.update(
        {
            "rms_px": model.rms_px,
            "points": len(keys),
            "focal_px": float(K_final[reg[0]][0, 0]),
            "seconds": time.perf_counter() - t0,
        }
    )
    return PoseResult(
        cameras=cams,
        registered=[views.names[i] for i in reg],
        failed=failed,
        xyz=norm.apply(xyz),
        rgb=rgb,
        normalisation=norm,
        method="own",
        info=info,
    )
