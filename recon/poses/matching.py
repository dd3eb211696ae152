"""Pairwise matching: mutual nearest neighbours + Lowe's ratio test, verified by an essential matrix (MAGSAC)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class PairMatches:
    """Verified matches of images i < j: idx (Mx2 keypoint indices), relative pose x_j = R x_i + t (|t| = 1)."""

    i: int
    j: int
    idx: np.ndarray
    R: np.ndarray
    t: np.ndarray
    angle_deg: float  # median triangulation angle of the inliers (how good the pair is for initialisation)

    def __len__(self) -> int:
        return len(self.idx)


def mutual_ratio_matches(d1: np.ndarray, d2: np.ndarray, ratio: float = 0.85) -> np.ndarray:
    """Mx2 indices (into d1, d2) of mutual nearest neighbours that also pass the ratio test both ways."""
    if len(d1) < 2 or len(d2) < 2:
        return np.zeros((0, 2), dtype=int)
    bf = cv2.BFMatcher(cv2.NORM_L2)
    fwd = bf.knnMatch(d1, d2, k=2)
    bwd = bf.knnMatch(d2, d1, k=2)
    best_b = np.full(len(d2), -1)
    ok_b = np.zeros(len(d2), dtype=bool)
    for m in bwd:
        if len(m) == 2:
            best_b[m[0].queryIdx] = m[0].trainIdx
            ok_b[m[0].queryIdx] = m[0].distance < ratio * m[1].distance
    out = []
    for m in fwd:
        if len(m) < 2:
            continue
        a, b = m[0].queryIdx, m[0].trainIdx
        if m[0].distance < ratio * m[1].distance and best_b[b] == a and ok_b[b]:
            out.append((a, b))
    return np.array(out, dtype=int).reshape(-1, 2)


def normalise(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> normalised image coordinates (z = 1)."""
    return (xy - K[:2, 2]) / np.array([K[0, 0], K[1, 1]])


def triangulation_angles(x1: np.ndarray, x2: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Angle (deg) between the two rays of each correspondence (normalised coordinates), x2 ~ R x1 + t."""
    c2 = -R.T @ t  # camera-2 centre in camera-1 coordinates
    P1 = cv2.triangulatePoints(np.eye(3, 4), np.hstack([R, t.reshape(3, 1)]), x1.T, x2.T)
    X = (P1[:3] / P1[3]).T
    a, b = X, X - c2
    cos = np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def guided_matches(
    x1: np.ndarray, x2: np.ndarray, d1: np.ndarray, d2: np.ndarray, E: np.ndarray, thresh: float, ratio: float = 0.9
) -> np.ndarray:
    """Re-match all keypoints under the epipolar constraint of ``E`` (normalised coordinates, Sampson distance
    below ``thresh``): mutual best descriptor among the epipolar candidates, with a ratio test among them.
    Repetitive textures (checkerboards) defeat the plain ratio test; restricted to the epipolar band they match.
    Descriptor distances are computed only for the candidate pairs inside the band (a few percent of all)."""
    if len(x1) == 0 or len(x2) == 0:
        return np.zeros((0, 2), dtype=int)
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], axis=1).astype(np.float32)
    h2 = np.concatenate([x2, np.ones((len(x2), 1))], axis=1).astype(np.float32)
    E32 = E.astype(np.float32)
    Ex1 = h1 @ E32.T  # rows: E x1
    Etx2 = h2 @ E32  # rows: E^T x2
    num = Ex1 @ h2.T  # [n1, n2] x2^T E x1
    den = (Ex1[:, 0:1] ** 2 + Ex1[:, 1:2] ** 2) + (Etx2[:, 0] ** 2 + Etx2[:, 1] ** 2)[None, :]
    ii, jj = np.nonzero(num * num < np.float32(thresh**2) * den)
    if len(ii) == 0:
        return np.zeros((0, 2), dtype=int)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * np.einsum("nd,nd->n", d1[ii], d2[jj]), 0.0))
    # best and second best per row (ii is sorted by np.nonzero; order by distance within rows)
    o = np.lexsort((dist, ii))
    ii, jj, dist = ii[o], jj[o], dist[o]
    first = np.ones(len(ii), dtype=bool)
    first[1:] = ii[1:] != ii[:-1]
    start = np.flatnonzero(first)
    nxt = start + 1
    has2 = (nxt < len(ii)) & (ii[np.minimum(nxt, len(ii) - 1)] == ii[start])
    second = np.full(len(start), np.inf)
    second[has2] = dist[nxt[has2]]
    r_i, r_j, r_d = ii[start], jj[start], dist[start]
    # best per column
    o2 = np.lexsort((dist, jj))
    jfirst = np.ones(len(jj), dtype=bool)
    jfirst[1:] = jj[o2][1:] != jj[o2][:-1]
    col_best = np.full(len(x2), -1)
    col_best[jj[o2][jfirst]] = ii[o2][jfirst]
    keep = (col_best[r_j] == r_i) & (r_d < ratio * second)
    return np.stack([r_i[keep], r_j[keep]], axis=1).astype(int)


def verify_pair(
    i: int,
    j: int,
    xy1: np.ndarray,
    xy2: np.ndarray,
    idx: np.ndarray,
    K1: np.ndarray,
    K2: np.ndarray,
    thresh_px: float = 1.5,
    min_inliers: int = 12,
    seed: int = 0,
    guided: tuple[np.ndarray, np.ndarray] | None = None,
) -> PairMatches | None:
    """Essential-matrix MAGSAC on the putative matches ``idx``; None when too few inliers survive.

    With ``guided`` = (descriptors 1, descriptors 2), the pair is re-matched along the epipolar lines of the
    first estimate and verified again (kept when it gives more inliers)."""
    if len(idx) < max(min_inliers, 8):
        return None
    x1 = normalise(xy1[idx[:, 0]], K1)
    x2 = normalise(xy2[idx[:, 1]], K2)
    f = 0.5 * (K1[0, 0] + K2[0, 0])
    cv2.setRNGSeed(seed)
    E, mask = cv2.findEssentialMat(
        x1, x2, np.eye(3), method=cv2.USAC_MAGSAC, prob=0.9999, threshold=thresh_px / f, maxIters=10000
    )
    if E is None or mask is None:
        return None
    if E.shape[0] > 3:
        E = E[:3]
    inl = mask.ravel().astype(bool)
    if inl.sum() < min_inliers:
        return None
    n, R, t, mask2 = cv2.recoverPose(E, x1[inl], x2[inl], np.eye(3))
    keep = np.flatnonzero(inl)[mask2.ravel() > 0]
    if len(keep) < min_inliers:
        return None
    t = t.ravel() / np.linalg.norm(t)
    if guided is not None:
        g = guided_matches(normalise(xy1, K1), normalise(xy2, K2), guided[0], guided[1], E, thresh_px / f)
        if len(g) > len(keep):
            return verify_pair(i, j, xy1, xy2, g, K1, K2, thresh_px, min_inliers, seed, guided=None)
    ang = triangulation_angles(x1[keep], x2[keep], R, t)
    return PairMatches(i, j, idx[keep], R, t, float(np.median(ang)))
