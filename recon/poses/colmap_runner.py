"""pycolmap's incremental SfM on a ViewSet's images: COLMAP's defaults, or settings relaxed for 3-9 views.

pycolmap is imported inside the functions and only after cv2 (importing pycolmap first crashed once here).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2  # before pycolmap: see the module docstring
import numpy as np

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.images import save_image
from recon.io.types import ViewSet
from recon.poses.result import PoseResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColmapSettings:
    """The options that matter for a few views. The defaults are COLMAP's own; :data:`SPARSE` relaxes them.

    ``min_num_matches``: verified matches a pair needs to count; ``init_min_num_inliers`` / ``init_min_tri_angle``:
    the seed pair; ``abs_pose_min_num_inliers``: PnP inliers to register a view; ``ignore_two_view_tracks``:
    COLMAP drops points seen by two views only (most points of a 3-view set); ``fix_focal``: a given focal is
    held (otherwise it is a starting value refined by bundle adjustment); ``camera_model`` without a given focal;
    ``min_side``: smaller images are upsampled (bicubic) so their long side reaches it before SIFT (small images
    hold few features at SIFT's scales: a DTU view at 400x300 gives ~600, upsampled 2x ~5000); the cameras are
    scaled back. ``min_support`` / ``min_support_rel``: a registered view seeing fewer 3D points than these (absolute,
    and relative to the median view) is dropped and reported as failed: on DTU scan37 (9 views) the one view
    registered wrong (19 deg) saw 13 points, the others 133-1164; a wrong camera hurts more than a missing one.
    SPARSE uses the absolute limit only: 0.25 x the median dropped the 3 right but less-seen views of every
    generated 9-view set. ``affine_tilt`` > 0: the keypoints are affine-simulated SIFT computed here
    (:func:`recon.poses.affine_features.affine_sift`, simulated tilts up to this, the ``max_features`` strongest,
    contrast threshold ``peak_threshold``) and imported into COLMAP's database instead of COLMAP's own SIFT;
    matching, verification and mapping stay COLMAP's (:data:`SPARSE_AFFINE`).
    """

    min_side: int = 0
    max_features: int = 8192
    peak_threshold: float = 0.02 / 3
    domain_size_pooling: bool = False
    max_ratio: float = 0.8
    min_num_matches: int = 15
    init_min_num_inliers: int = 100
    init_min_tri_angle: float = 16.0
    abs_pose_min_num_inliers: int = 30
    ignore_two_view_tracks: bool = True
    guided_matching: bool = False
    fix_focal: bool = False
    camera_model: str = "SIMPLE_RADIAL"
    multiple_models: bool = True
    ba_max_iterations: int = -1
    min_support: int = 0
    min_support_rel: float = 0.0
    num_threads: int = -1
    affine_tilt: float = 0.0
    mapper: str = "incremental"
    ransac_max_error: float = 4.0


DEFAULT = ColmapSettings()
SPARSE = ColmapSettings(
    min_side=640,
    max_features=4096,
    peak_threshold=0.002,
    max_ratio=0.9,
    min_num_matches=10,
    init_min_num_inliers=30,
    init_min_tri_angle=4.0,
    abs_pose_min_num_inliers=15,
    ignore_two_view_tracks=False,
    fix_focal=True,
    camera_model="SIMPLE_PINHOLE",
    multiple_models=False,
    min_support=30,
)
# SPARSE on affine-simulated SIFT: what ``--poses auto`` tries when plain SIFT leaves views out (wide baselines)
SPARSE_AFFINE = replace(SPARSE, affine_tilt=3.0, peak_threshold=0.004, max_features=8192)
SPARSE_GLOBAL = replace(SPARSE, mapper="global", ransac_max_error=2.0)


def _shared_focal(views: ViewSet, focal_px: float | None) -> float | None:
    """The focal given, else the EXIF focal when every photo has the same one."""
    if focal_px is not None:
        return focal_px
    exif = views.meta.get("exif_focal_px") or []
    if exif and all(f is not None for f in exif) and max(exif) - min(exif) < 1e-3 * max(exif):
        return float(exif[0])
    return None


def _import_affine_features(db: Path, img_dir: Path, reader: object, s: ColmapSettings) -> None:
    """Register the images of ``img_dir`` in the database ``db`` (one shared camera) with affine-simulated SIFT
    keypoints and descriptors computed here, in place of COLMAP's feature extraction."""
    import pycolmap

    from recon.poses.affine_features import affine_sift

    pycolmap.Database.open(db).close()  # import_images needs the database file to exist
    pycolmap.import_images(db, img_dir, camera_mode=pycolmap.CameraMode.SINGLE, options=reader)
    database = pycolmap.Database.open(db)
    try:
        for image in database.read_all_images():
            bgr = cv2.imread(str(img_dir / image.name), cv2.IMREAD_GRAYSCALE)
            kps, desc = affine_sift(bgr, max_tilt=s.affine_tilt, max_features=s.max_features, contrast=s.peak_threshold)
            database.write_keypoints(image.image_id, kps)
            database.write_descriptors(
                image.image_id, pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.SIFT, desc)
            )
    finally:
        database.close()


#: inlier matches a pair needs when no triangle of pairs confirms its relative rotation: on the real development
#: data the wrong pairs had 20-41 (Blender lego's repeated studs, DTU views 80 deg apart), the unconfirmed right
#: pairs of DTU's 3-view sets 61-100; a view held only by weaker pairs is left out rather than placed wrong
MIN_UNCONFIRMED_INLIERS = 50


def _relative_rotation(g: object, K1: np.ndarray, K2: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray | None:
    """cam2_from_cam1's rotation of a verified pair: its essential matrix (from the fundamental matrix where the
    pair was verified as uncalibrated), decomposed with the cheirality test on its inlier matches. Done here with
    OpenCV because pycolmap's estimate_two_view_geometry_pose gave different rotations from run to run."""
    import pycolmap

    calibrated = g.config == pycolmap.TwoViewGeometryConfiguration.CALIBRATED  # type: ignore[attr-defined]
    E = g.E if calibrated else K2.T @ g.F @ K1  # type: ignore[attr-defined]
    if E is None or not np.isfinite(E).all() or np.abs(E).sum() == 0:
        return None
    n1 = cv2.undistortPoints(x1.reshape(-1, 1, 2), K1, None).reshape(-1, 2)
    n2 = cv2.undistortPoints(x2.reshape(-1, 1, 2), K2, None).reshape(-1, 2)
    _, R, _, _ = cv2.recoverPose(E, n1, n2, np.eye(3))
    return R


def _drop_inconsistent_pairs(db: Path, tol_deg: float = 5.0, min_unconfirmed: int = MIN_UNCONFIRMED_INLIERS) -> None:
    """Delete from the database the verified pairs that the triangles of pairs reject, and the weak ones no
    triangle confirms (:func:`recon.poses.view_graph.cycle_consistent`); relative poses are decomposed here
    from the pairs' essential matrices (:func:`_relative_rotation`)."""
    import pycolmap

    from recon.poses.view_graph import cycle_consistent

    database = pycolmap.Database.open(db)
    try:
        cams = {c.camera_id: c for c in database.read_all_cameras()}
        images = {im.image_id: im for im in database.read_all_images()}
        pair_ids, geoms = database.read_two_view_geometries()
        K = {i: cams[im.camera_id].calibration_matrix() for i, im in images.items()}
        keypoints = {i: database.read_keypoints(i)[:, :2].astype(np.float64) for i in images}  # once per image
        rot, weight, ids = {}, {}, {}
        for pid, g in zip(pair_ids, geoms):
            i1, i2 = pycolmap.pair_id_to_image_pair(pid)
            if len(g.inlier_matches) < 5:
                continue
            K1, K2 = K[i1], K[i2]
            m = g.inlier_matches
            x1, x2 = keypoints[i1][m[:, 0]], keypoints[i2][m[:, 1]]
            R = _relative_rotation(g, K1, K2, x1, x2)
            if R is None:
                continue
            e = (int(i1), int(i2))
            rot[e], weight[e], ids[e] = R, float(len(m)), (i1, i2)
        kept = set(cycle_consistent(rot, weight, tol_deg, min_unconfirmed))
        for e in rot:
            if e not in kept:
                log.debug("pycolmap: pair %s dropped (cycle consistency)", e)
                database.delete_two_view_geometry(*ids[e])
    finally:
        database.close()


def _global_mapping(db: Path, img_dir: Path, out: Path, s: ColmapSettings, calibrate: bool) -> dict:
    """COLMAP's global SfM (GLOMAP: rotation averaging, then camera and point positions at once, then bundle
    adjustment) with two-view tracks kept: with 3-9 views most points are seen by two views only, and a view
    needs no 3D points in common with a seed pair to be placed (the incremental mapper's PnP does)."""
    import pycolmap

    if calibrate:  # focal lengths from the fundamental matrices of the pairs, before rotation averaging
        pycolmap.calibrate_view_graph(db)
    _drop_inconsistent_pairs(db)
    opts = pycolmap.GlobalPipelineOptions()
    opts.num_threads = s.num_threads
    opts.random_seed = 0
    opts.min_num_matches = s.min_num_matches
    opts.min_model_size = 2
    opts.multiple_models = s.multiple_models
    m = opts.mapper
    m.num_threads = s.num_threads
    m.random_seed = 0
    m.track_min_num_views_per_track = 2
    m.global_positioning.min_num_view_per_track = 2
    m.global_positioning.use_gpu = False
    m.global_positioning.random_seed = 0
    m.rotation_averaging.random_seed = 0
    m.bundle_adjustment.min_track_length = 2
    m.bundle_adjustment.ceres.use_gpu = False
    m.bundle_adjustment.refine_focal_length = not s.fix_focal or calibrate
    m.bundle_adjustment.refine_extra_params = False
    m.retriangulation.ignore_two_view_tracks = s.ignore_two_view_tracks
    return pycolmap.global_mapping(db, img_dir, out, options=opts)


def colmap_poses(
    views: ViewSet, focal_px: float | None = None, settings: ColmapSettings = DEFAULT, method: str = "colmap"
) -> PoseResult:
    """Run pycolmap (SIFT, exhaustive matching, incremental mapping, one shared camera) on ``views``' images.

    The images are written as PNG to a temporary folder (the ViewSet's images, already resized), so the
    cameras match them. ``focal_px`` (else a shared EXIF focal) starts, or with ``settings.fix_focal`` fixes,
    the focal. The largest model is kept; views outside it are reported as failed.
    """
    import pycolmap

    # COLMAP's progress log and its error lines ("Global mapping failed"...) stay silent: failures are reported
    # here, in words naming the photos
    pycolmap.logging.minloglevel = max(int(pycolmap.logging.minloglevel), 3)
    from recon.poses.align import transform_camera
    from recon.poses.normalize import normalisation

    t0 = time.perf_counter()
    s = settings
    focal = _shared_focal(views, focal_px)
    with tempfile.TemporaryDirectory(prefix="recon_colmap_") as tmp:
        tmp_p = Path(tmp)
        img_dir = tmp_p / "images"
        names = [f"{k:03d}_{Path(n).stem}.png" for k, n in enumerate(views.names)]
        h0, w0 = views.images[0].shape[:2]
        up = max(1.0, s.min_side / max(h0, w0))
        for n, img in zip(names, views.images):
            if up > 1.0:
                size = (round(img.shape[1] * up), round(img.shape[0] * up))
                img = np.clip(cv2.resize(img, size, interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
            save_image(img_dir / n, img)
        db = tmp_p / "database.db"
        reader = pycolmap.ImageReaderOptions()
        h, w = round(h0 * up), round(w0 * up)
        if focal is not None:
            reader.camera_model = "SIMPLE_PINHOLE"
            reader.camera_params = f"{focal * w / w0},{w / 2},{h / 2}"
        else:
            reader.camera_model = s.camera_model
        if s.affine_tilt > 0:
            _import_affine_features(db, img_dir, reader, s)
        else:
            extract = pycolmap.FeatureExtractionOptions()
            extract.num_threads = s.num_threads
            extract.sift.max_num_features = s.max_features
            extract.sift.domain_size_pooling = s.domain_size_pooling
            extract.sift.peak_threshold = s.peak_threshold
            # the images enter the database one by one in name order first: extraction on several threads
            # otherwise numbers them in finishing order, and RANSAC's random draws follow the numbering
            pycolmap.Database.open(db).close()
            pycolmap.import_images(db, img_dir, camera_mode=pycolmap.CameraMode.SINGLE, options=reader)
            pycolmap.extract_features(
                db,
                img_dir,
                camera_mode=pycolmap.CameraMode.SINGLE,
                reader_options=reader,
                extraction_options=extract,
                device=pycolmap.Device.cpu,
            )
        match = pycolmap.FeatureMatchingOptions()
        # one thread: RANSAC's generator is seeded per worker thread, so with several the draws a pair gets depend
        # on which thread takes it, and the verified pairs (hence the poses) changed from run to run
        match.num_threads = 1
        match.guided_matching = s.guided_matching
        match.sift.max_ratio = s.max_ratio
        verify = pycolmap.TwoViewGeometryOptions()
        verify.min_num_inliers = s.min_num_matches
        verify.ransac.max_error = s.ransac_max_error
        verify.ransac.random_seed = 0  # the same pairs verified the same way on every run
        pycolmap.match_exhaustive(db, matching_options=match, verification_options=verify, device=pycolmap.Device.cpu)
        opts = pycolmap.IncrementalPipelineOptions()
        opts.num_threads = s.num_threads
        opts.random_seed = 0
        opts.min_num_matches = s.min_num_matches
        opts.multiple_models = s.multiple_models
        opts.ba_global_max_num_iterations = s.ba_max_iterations
        opts.ba_local_max_num_iterations = s.ba_max_iterations
        opts.mapper.init_min_num_inliers = s.init_min_num_inliers
        opts.mapper.init_min_tri_angle = s.init_min_tri_angle
        opts.mapper.abs_pose_min_num_inliers = s.abs_pose_min_num_inliers
        opts.triangulation.ignore_two_view_tracks = s.ignore_two_view_tracks
        if focal is not None and s.fix_focal:
            opts.ba_refine_focal_length = False
            opts.mapper.abs_pose_refine_focal_length = False
        try:
            if s.mapper == "global":
                models = _global_mapping(db, img_dir, tmp_p / "sparse", s, calibrate=focal is None)
            else:
                models = pycolmap.incremental_mapping(db, img_dir, tmp_p / "sparse", options=opts)
        except Exception as exc:  # pycolmap raises on degenerate inputs; report as a failure
            log.warning("pycolmap failed: %s", exc)
            models = {}
        if not models:
            raise ReconInputError(f"pycolmap could not reconstruct any pair of the {len(views)} images", views.source)
        rec = max(models.values(), key=lambda r: r.num_reg_images())
        by_name = {}
        support = {im.name: im.num_points3D for im in rec.images.values() if im.has_pose}
        limit = max(s.min_support, s.min_support_rel * float(np.median(list(support.values())))) if support else 0.0
        weak = [n for n, k in support.items() if k < limit]
        if len(support) - len(weak) >= 2:
            for n in weak:
                log.info("pycolmap: view %s dropped: it sees only %d 3D points (limit %.0f)", n, support[n], limit)
                support.pop(n)
        for image in rec.images.values():
            if image.name not in support:
                continue
            cam = rec.cameras[image.camera_id]
            f, cx, cy = cam.focal_length_x, cam.principal_point_x, cam.principal_point_y
            fy = cam.focal_length_y
            V = np.eye(4)
            V[:3, :] = image.cam_from_world().matrix()
            # COLMAP's pixel centres are at +0.5 too, so K carries over unchanged
            by_name[image.name] = Camera(
                K=intrinsics(f, fy, cx, cy), viewmat=V, width=cam.width, height=cam.height, name=image.name
            )
        xyz = np.array([p.xyz for p in rec.points3D.values()]).reshape(-1, 3)
        rgb = np.array([p.color for p in rec.points3D.values()], dtype=np.float32).reshape(-1, 3) / 255.0
        rms = float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else float("nan")
    reg_idx = [k for k, n in enumerate(names) if n in by_name]
    if len(reg_idx) < 2:
        raise ReconInputError(f"pycolmap registered fewer than 2 of the {len(views)} images", views.source)
    raw = []
    for k in reg_idx:
        hk, wk = views.images[k].shape[:2]
        c = by_name[names[k]].resized(wk, hk)  # back from the upsampled images, if they were
        c.name = views.names[k]
        c.extra["index"] = k
        raw.append(c)
    norm = normalisation([c.viewmat for c in raw], xyz)
    cams = [transform_camera(c, norm) for c in raw]
    return PoseResult(
        cameras=cams,
        registered=[views.names[k] for k in reg_idx],
        failed=[views.names[k] for k in range(len(views)) if k not in reg_idx],
        xyz=norm.apply(xyz),
        rgb=rgb,
        normalisation=norm,
        method=method,
        info={
            "seconds": time.perf_counter() - t0,
            "focal_px": float(raw[0].fx),
            "rms_px": rms,
            "points": len(xyz),
            "focal_prior": "given" if focal is not None else "none",
            "support": [support[names[k]] for k in reg_idx],  # 3D points each registered view sees
        },
    )


#: starting horizontal fields of view (deg) of the global mapper when no focal is known: wide (phones), normal and
#: long; bundle adjustment refines each start (on DTU's 3 views, 31 deg true, starts from 0.5x to 1.5x the true
#: focal ended within 5% of it, except one that ended 35% off with a clearly higher RMS)
FOCAL_SWEEP_HFOV_DEG = (60.0, 45.0, 32.0)


def global_poses(
    views: ViewSet,
    focal_px: float | None = None,
    settings: ColmapSettings = SPARSE_GLOBAL,
    method: str = "global",
    focal_starts: list[float] | None = None,
) -> PoseResult:
    """COLMAP's global mapper on ``views`` (:func:`colmap_poses` with ``settings.mapper == "global"``).

    A focal given (argument or shared EXIF) is used as ``settings`` say (SPARSE_GLOBAL holds it). Without one the
    mapper runs from each start of :data:`FOCAL_SWEEP_HFOV_DEG`, or from ``focal_starts`` (e.g. the focal another
    reconstruction of the same photos found), with the focal refined by bundle adjustment, and the run
    registering the most views, then with the lowest reprojection RMS, wins: COLMAP's own focal calibration from
    fundamental matrices fails for cameras that all look at one point (DTU, turntable captures), a degenerate
    configuration for it, and a single start can settle in a distorted solution (DTU scan24 from 1.0x the true
    focal: 35% off at 0.77 px RMS; from 0.5-0.85x and 1.5x: within 2% at 0.55-0.59 px). Raises ReconInputError
    when no start reconstructs a pair."""
    known = _shared_focal(views, focal_px)
    if known is not None:
        return colmap_poses(views, known, settings, method)
    w = views.images[0].shape[1]
    starts = focal_starts or [0.5 * w / float(np.tan(np.radians(h) / 2)) for h in FOCAL_SWEEP_HFOV_DEG]
    free = replace(settings, fix_focal=False)
    best: PoseResult | None = None
    for start in starts:
        try:
            r = colmap_poses(views, start, free, method)
        except ReconInputError as exc:
            log.debug("global mapper from a %.0f px focal: %s", start, exc)
            continue
        r.info.update({"focal_prior": "none", "focal_start_px": start})
        log.debug(
            "global mapper from a %.0f px focal: %d views, rms %.3f px", start, len(r.registered), r.info["rms_px"]
        )
        if best is None or (len(r.registered), -r.info["rms_px"]) > (len(best.registered), -best.info["rms_px"]):
            best = r
    if best is None:
        raise ReconInputError(
            f"pycolmap's global mapper could not reconstruct any pair of the {len(views)} images", views.source
        )
    return best
