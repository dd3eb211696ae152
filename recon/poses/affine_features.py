"""Affine-simulated SIFT (ASIFT) keypoints for wide-baseline photos, in the form a COLMAP database stores.

SIFT is invariant to scale and in-plane rotation but not to the foreshortening a surface undergoes when the camera
moves far around it: two of a few photos taken 20-45 degrees apart share few SIFT matches. ASIFT (Morel & Yu 2009)
detects SIFT on the image warped by a set of simulated camera tilts and maps the keypoints back, so a surface seen
obliquely in one photo is also described as if seen head on. OpenCV's ``cv2.AffineFeature`` does the simulation.

On the DTU scan24 RegNeRF 3-view set (views 25, 22, 28 at 400x300) the matches that are correct under the true
cameras rose from 8 / 27 / 0 (plain SIFT, pairs 25-22, 25-28, 22-28) to 201 / 338 / 37 (maximum tilt 3). Used by
``recon.poses.colmap_runner.SPARSE_AFFINE``, which benchmarks/poses_real.py measures; ``--poses auto`` does not
use it: COLMAP's mapper registered views wrongly from the extra matches (docs/architecture.md).
"""

from __future__ import annotations

import cv2
import numpy as np


def _gray_u8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    return img


def affine_sift(
    image: np.ndarray, max_tilt: float = 3.0, max_features: int = 8192, contrast: float = 0.004
) -> tuple[np.ndarray, np.ndarray]:
    """ASIFT keypoints of ``image`` (HxW or HxWx3, uint8 or float in [0, 1]).

    Returns (keypoints Nx4 float32: x, y in COLMAP's convention (pixel centres at +0.5), scale, orientation in
    radians; descriptors Nx128 uint8 as COLMAP stores SIFT: RootSIFT (L1-normalised, square-rooted) scaled by 512
    and clipped). The ``max_features`` strongest keypoints (by detector response) over all simulated tilts are
    kept. ``max_tilt`` <= 1 simulates no tilt (plain SIFT with the same contrast threshold and cap).
    """
    gray = _gray_u8(image)
    sift = cv2.SIFT_create(contrastThreshold=contrast)
    detector = cv2.AffineFeature_create(sift, maxTilt=max(1, int(round(max_tilt)))) if max_tilt > 1 else sift
    kps, desc = detector.detectAndCompute(gray, None)
    if desc is None or not kps:
        return np.zeros((0, 4), np.float32), np.zeros((0, 128), np.uint8)
    response = np.array([k.response for k in kps], dtype=np.float64)
    keep = np.argsort(-response, kind="stable")[:max_features]
    pts = np.array([(kps[i].pt[0] + 0.5, kps[i].pt[1] + 0.5, kps[i].size / 2, np.radians(kps[i].angle)) for i in keep])
    d = desc[keep].astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-12)
    d = np.sqrt(d)
    return pts.astype(np.float32), np.clip(np.round(d * 512.0), 0, 255).astype(np.uint8)
