"""Local features for pose estimation: SIFT keypoints (OpenCV) with RootSIFT descriptors and their colours."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Features:
    """Keypoints of one image: xy (Nx2, pixel centres at +0.5), descriptors (NxD float32), rgb (Nx3 in [0,1]),
    ``strong``: keypoints that pass the usual contrast threshold (precisely localised; used for the final
    bundle adjustment), the others only help views register."""

    xy: np.ndarray
    desc: np.ndarray
    rgb: np.ndarray
    strong: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.xy)


def _gray_u8(image: np.ndarray) -> np.ndarray:
    img = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return (img * 255.0 + 0.5).astype(np.uint8)


def detect(
    image: np.ndarray, max_features: int = 8000, contrast: float = 0.004, strong_contrast: float = 0.01
) -> Features:
    """SIFT on ``image`` (HxWx3 float [0,1]). Small images are upsampled 2x first (more, finer keypoints).

    The low ``contrast`` threshold roughly doubles the correct matches across wide viewpoint changes (what
    registers low-elevation views); keypoints above ``strong_contrast`` (OpenCV's usual 0.04 scaled for our
    2x upsampling) are flagged ``strong``: low-contrast keypoints are localised less precisely.

    Descriptors are RootSIFT (L1-normalised, square-rooted): Euclidean distance then compares them by the
    Hellinger kernel, which matches more reliably than raw SIFT (Arandjelovic & Zisserman 2012).
    """
    gray = _gray_u8(image)
    h, w = gray.shape
    up = 2.0 if max(h, w) < 800 else 1.0
    src = cv2.resize(gray, (int(w * up), int(h * up)), interpolation=cv2.INTER_CUBIC) if up != 1.0 else gray
    sift = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=contrast)
    kps, desc = sift.detectAndCompute(src, None)
    if desc is None or not kps:
        return Features(
            np.zeros((0, 2)), np.zeros((0, 128), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, dtype=bool)
        )
    # OpenCV puts the centre of pixel (0,0) at (0,0); ours is at (0.5, 0.5).
    xy = (np.array([k.pt for k in kps], dtype=np.float64) + 0.5) / up
    desc = desc.astype(np.float32)
    desc /= np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
    desc = np.sqrt(desc)
    ij = np.clip(np.floor(xy).astype(int), 0, [w - 1, h - 1])
    rgb = (
        np.asarray(image, dtype=np.float32)[ij[:, 1], ij[:, 0]]
        if np.asarray(image).ndim == 3
        else np.repeat(np.asarray(image, np.float32)[ij[:, 1], ij[:, 0], None], 3, axis=1)
    )
    # OpenCV keeps a keypoint when |contrast| * nOctaveLayers(3) >= contrastThreshold; response = |contrast|
    strong = np.array([k.response for k in kps]) * 3.0 >= strong_contrast
    return Features(xy, desc, rgb, strong)
