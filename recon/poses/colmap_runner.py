"""``--poses colmap``: pycolmap's incremental SfM on the same images, as a reference to compare against."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.images import save_image
from recon.io.types import ViewSet
from recon.poses.result import PoseResult

log = logging.getLogger(__name__)


def colmap_poses(views: ViewSet, focal_px: float | None = None) -> PoseResult:
    """Run pycolmap (SIFT, exhaustive matching, incremental mapping, one shared camera) on ``views``' images.

    The images are written as PNG to a temporary folder (the ViewSet's images, already resized), so the
    cameras match them. The largest model is kept; views outside it are reported as failed.
    """
    import pycolmap

    from recon.poses.align import transform_camera
    from recon.poses.normalize import normalisation

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recon_colmap_") as tmp:
        tmp_p = Path(tmp)
        img_dir = tmp_p / "images"
        names = [f"{k:03d}_{Path(n).stem}.png" for k, n in enumerate(views.names)]
        for n, img in zip(names, views.images):
            save_image(img_dir / n, img)
        db = tmp_p / "database.db"
        reader = pycolmap.ImageReaderOptions()
        h, w = views.images[0].shape[:2]
        if focal_px is not None:
            reader.camera_model = "SIMPLE_PINHOLE"
            reader.camera_params = f"{focal_px},{w / 2},{h / 2}"
        pycolmap.extract_features(
            db, img_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader, device=pycolmap.Device.cpu
        )
        pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
        opts = pycolmap.IncrementalPipelineOptions()
        try:
            models = pycolmap.incremental_mapping(db, img_dir, tmp_p / "sparse", options=opts)
        except Exception as exc:  # pycolmap raises on degenerate inputs; report as a failure
            log.warning("pycolmap failed: %s", exc)
            models = {}
        if not models:
            raise ReconInputError(f"pycolmap could not reconstruct any pair of the {len(views)} images", views.source)
        rec = max(models.values(), key=lambda r: r.num_reg_images())
        by_name = {}
        for image in rec.images.values():
            if not image.has_pose:
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
    reg_idx = [k for k, n in enumerate(names) if n in by_name]
    if len(reg_idx) < 2:
        raise ReconInputError(f"pycolmap registered fewer than 2 of the {len(views)} images", views.source)
    raw = []
    for k in reg_idx:
        c = by_name[names[k]]
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
        method="colmap",
        info={"seconds": time.perf_counter() - t0, "focal_px": float(raw[0].fx)},
    )
