"""Incremental structure from motion for a handful of views: tracks from verified pair matches, a seed pair,
PnP registration (relative-pose fallback for views with too few 2D-3D matches), triangulation and bundle
adjustment after every added view. Every seed pair is tried when there are few views."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from recon.poses.bundle_adjustment import Observations, bundle_adjust, reprojection_errors
from recon.poses.features import Features
from recon.poses.matching import PairMatches, normalise

log = logging.getLogger(__name__)


@dataclass
class Tracks:
    """Feature tracks: for track k, obs[k] is a list of (image, keypoint index)."""

    obs: list[list[tuple[int, int]]]

    @classmethod
    def build(cls, features: list[Features], pairs: list[PairMatches]) -> "Tracks":
        """Union-find over verified matches; tracks seeing one image twice are dropped (ambiguous)."""
        offsets = np.cumsum([0] + [len(f) for f in features])
        parent = np.arange(offsets[-1])

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for p in pairs:
            for a, b in p.idx:
                ra, rb = find(offsets[p.i] + a), find(offsets[p.j] + b)
                if ra != rb:
                    parent[rb] = ra
        groups: dict[int, list[tuple[int, int]]] = {}
        img_of = np.searchsorted(offsets, np.arange(offsets[-1]), side="right") - 1
        used = set()
        for p in pairs:
            for a, b in p.idx:
                for node in (offsets[p.i] + a, offsets[p.j] + b):
                    if node in used:
                        continue
                    used.add(node)
                    im = int(img_of[node])
                    groups.setdefault(find(node), []).append((im, int(node - offsets[im])))
        obs = [g for g in groups.values() if len(g) >= 2 and len({im for im, _ in g}) == len(g)]
        return cls(obs)


@dataclass
class Model:
    """A (partial) reconstruction: registered camera poses and triangulated tracks."""

    cams: dict[int, np.ndarray] = field(default_factory=dict)  # image -> (rvec | t)
    xyz: dict[int, np.ndarray] = field(default_factory=dict)  # track -> point
    Ks: np.ndarray | None = None
    rms_px: float = float("inf")

    def P(self, im: int) -> np.ndarray:
        R = cv2.Rodrigues(self.cams[im][:3])[0]
        return np.hstack([R, self.cams[im][3:].reshape(3, 1)])


def _pose_vec(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.concatenate([cv2.Rodrigues(R)[0].ravel(), np.asarray(t, dtype=np.float64).ravel()])


class IncrementalSfM:
    """Builds a Model from features, verified pairs and per-image intrinsics."""

    def __init__(self, features: list[Features], pairs: list[PairMatches], Ks: np.ndarray,
                 reproj_px: float = 4.0, min_angle_deg: float = 1.0, min_pnp: int = 8) -> None:
        self.f = features
        self.pairs = {(p.i, p.j): p for p in pairs}
        self.Ks = Ks
        self.tracks = Tracks.build(features, pairs)
        self.reproj_px = reproj_px
        self.min_angle = min_angle_deg
        self.min_pnp = min_pnp
        self.n = len(features)

    # ------------------------------------------------------------------ triangulation
    def _triangulate(self, m: Model, retriangulate: bool = False) -> None:
        for k, obs in enumerate(self.tracks.obs):
            if k in m.xyz and not retriangulate:
                continue
            vis = [(im, kp) for im, kp in obs if im in m.cams]
            if len(vis) < 2:
                continue
            A = []
            rays, centres = [], []
            for im, kp in vis:
                x = normalise(self.f[im].xy[kp][None], self.Ks[im])[0]
                P = m.P(im)
                A.append(x[0] * P[2] - P[0])
                A.append(x[1] * P[2] - P[1])
                R = P[:, :3]
                rays.append(R.T @ np.array([x[0], x[1], 1.0]))
                centres.append(-R.T @ P[:, 3])
            X = np.linalg.svd(np.asarray(A))[2][-1]
            if abs(X[3]) < 1e-12:
                continue
            X = X[:3] / X[3]
            ok = True
            for im, kp in vis:
                P = m.P(im)
                pc = P[:, :3] @ X + P[:, 3]
                if pc[2] <= 0:
                    ok = False
                    break
                uv = self.Ks[im] @ (pc / pc[2])
                if np.linalg.norm(uv[:2] - self.f[im].xy[kp]) > self.reproj_px:
                    ok = False
                    break
            if not ok:
                m.xyz.pop(k, None)
                continue
            d = [(X - c) / np.linalg.norm(X - c) for c in centres]
            max_ang = max(np.degrees(np.arccos(np.clip(d[a] @ d[b], -1, 1)))
                          for a in range(len(d)) for b in range(a + 1, len(d)))
            if max_ang < self.min_angle:
                m.xyz.pop(k, None)
                continue
            m.xyz[k] = X

    # ------------------------------------------------------------------ bundle adjustment
    def _observations(self, m: Model) -> tuple[Observations, list[int], list[int]]:
        cam_list = sorted(m.cams)
        cam_pos = {im: c for c, im in enumerate(cam_list)}
        trk_list = sorted(m.xyz)
        cam, pt, xy = [], [], []
        for p, k in enumerate(trk_list):
            for im, kp in self.tracks.obs[k]:
                if im in cam_pos:
                    cam.append(cam_pos[im])
                    pt.append(p)
                    xy.append(self.f[im].xy[kp])
        return Observations(np.array(cam, int), np.array(pt, int), np.array(xy).reshape(-1, 2)), cam_list, trk_list

    def adjust(self, m: Model, refine_focal: bool = False, fixed: int | None = None) -> None:
        """Bundle adjustment of everything in ``m``, then drop observations' points with large errors."""
        for _round in range(2):
            obs, cam_list, trk_list = self._observations(m)
            if len(trk_list) < 6:
                return
            cams = np.stack([m.cams[im] for im in cam_list])
            pts = np.stack([m.xyz[k] for k in trk_list])
            Ks = self.Ks[cam_list]
            fixed_idx = [cam_list.index(fixed if fixed is not None else cam_list[0])]
            cams, pts, Ks_new = bundle_adjust(cams, Ks, pts, obs, fixed=fixed_idx, refine_focal=refine_focal,
                                              max_nfev=300 if refine_focal else 60)
            for c, im in enumerate(cam_list):
                m.cams[im] = cams[c]
            if refine_focal:
                s = Ks_new[0, 0, 0] / Ks[0, 0, 0]
                log.debug("focal refined %.1f -> %.1f px", Ks[0, 0, 0], Ks_new[0, 0, 0])
                self.Ks[:, 0, 0] *= s
                self.Ks[:, 1, 1] *= s
            err = reprojection_errors(cams, self.Ks[cam_list], pts, obs)
            bad = set(obs.pt[err > self.reproj_px].tolist())
            for p, k in enumerate(trk_list):
                if p in bad:
                    m.xyz.pop(k)
                else:
                    m.xyz[k] = pts[p]
            good = err[np.isfinite(err) & (err <= self.reproj_px)]
            m.rms_px = float(np.sqrt(np.mean(good ** 2))) if len(good) else float("inf")
            if not bad:
                break

    # ------------------------------------------------------------------ registration
    def _correspondences(self, m: Model, im: int) -> tuple[np.ndarray, np.ndarray]:
        X, x = [], []
        for k, obs in enumerate(self.tracks.obs):
            if k not in m.xyz:
                continue
            for j, kp in obs:
                if j == im:
                    X.append(m.xyz[k])
                    x.append(self.f[im].xy[kp])
        return np.array(X).reshape(-1, 3), np.array(x).reshape(-1, 2)

    def _register_pnp(self, m: Model, im: int) -> bool:
        X, x = self._correspondences(m, im)
        if len(X) < self.min_pnp:
            return False
        ok, rvec, tvec, inl = cv2.solvePnPRansac(X, x - 0.5, self.Ks[im], None, iterationsCount=2000,
                                                 reprojectionError=self.reproj_px, confidence=0.9999,
                                                 flags=cv2.SOLVEPNP_SQPNP)
        if not ok or inl is None or len(inl) < self.min_pnp or len(inl) < 0.3 * len(X):
            return False
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(X[inl], x[inl] - 0.5, self.Ks[im], None, rvec, tvec)
        m.cams[im] = np.concatenate([rvec.ravel(), tvec.ravel()])
        log.debug("registered image %d by PnP (%d/%d inliers)", im, len(inl), len(X))
        return True

    def _register_relative(self, m: Model, im: int) -> bool:
        """Pose from the essential matrix with a registered view; scale from that view's triangulated points."""
        best = None
        for (a, b), p in self.pairs.items():
            if im not in (a, b):
                continue
            other = b if a == im else a
            if other not in m.cams or (best is not None and len(p) <= len(best[0])):
                continue
            best = (p, other)
        if best is None:
            return False
        p, other = best
        # x_b = R x_a + t; express as other -> im
        if p.i == other:
            R, t, idx_o, idx_n = p.R, p.t, p.idx[:, 0], p.idx[:, 1]
        else:
            R, t = p.R.T, -p.R.T @ p.t
            idx_o, idx_n = p.idx[:, 1], p.idx[:, 0]
        # depths of the other view's keypoints that have a 3D point
        kp_to_X = {}
        for k, obs in enumerate(self.tracks.obs):
            if k in m.xyz:
                for j, kp in obs:
                    if j == other:
                        kp_to_X[kp] = m.xyz[k]
        Po = m.P(other)
        xo = normalise(self.f[other].xy[idx_o], self.Ks[other])
        xn = normalise(self.f[im].xy[idx_n], self.Ks[im])
        Xu = cv2.triangulatePoints(np.eye(3, 4), np.hstack([R, t.reshape(3, 1)]), xo.T, xn.T)
        Xu = (Xu[:3] / Xu[3]).T  # in the other camera's frame, unit baseline
        ratios = []
        for n_, ko in enumerate(idx_o):
            if ko in kp_to_X and Xu[n_, 2] > 0:
                z_true = (Po[:, :3] @ kp_to_X[ko] + Po[:, 3])[2]
                if z_true > 0:
                    ratios.append(z_true / Xu[n_, 2])
        if len(ratios) < 3:
            return False
        s = float(np.median(ratios))
        R_new = R @ Po[:, :3]
        t_new = R @ Po[:, 3] + s * t
        # validate: the scale samples must agree (a wrong relative pose scatters them)
        spread = float(np.median(np.abs(np.log(np.asarray(ratios) / s))))
        if spread > 0.15:
            log.debug("image %d: relative pose to %d rejected (scale spread %.2f)", im, other, spread)
            return False
        m.cams[im] = _pose_vec(R_new, t_new)
        log.debug("registered image %d from its relative pose to %d (%d scale samples)", im, other, len(ratios))
        return True

    # ------------------------------------------------------------------ driver
    def run(self, seed: tuple[int, int]) -> Model:
        """Reconstruct from ``seed`` pair; registers as many of the other views as it can."""
        p = self.pairs[seed]
        m = Model(Ks=self.Ks)
        m.cams[p.i] = np.zeros(6)
        m.cams[p.j] = _pose_vec(p.R, p.t)
        self._triangulate(m)
        self.adjust(m, fixed=p.i)
        if len(m.xyz) < 6:
            return m
        while len(m.cams) < self.n:
            todo = [im for im in range(self.n) if im not in m.cams]
            counts = {im: len(self._correspondences(m, im)[0]) for im in todo}
            added = False
            for im in sorted(todo, key=lambda k: -counts[k]):
                if self._register_pnp(m, im) or self._register_relative(m, im):
                    added = True
                    break
            if not added:
                break
            self._triangulate(m)
            self.adjust(m, fixed=p.i)
            # a view added on weak evidence that ends up with almost no support is taken out again
        self._triangulate(m, retriangulate=False)
        return m
