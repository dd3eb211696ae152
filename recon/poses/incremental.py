"""Incremental structure from motion for a handful of views, vectorised with numpy.

Tracks come from verified pair matches (connected components over keypoints). From a seed pair, views are
added one at a time by PnP RANSAC on 2D-3D correspondences gathered from the tracks *and* from the plain
(unverified) putative matches to every registered view: a pose from 3D points is not fooled by the planar /
periodic structures that make two-view essential matrices ambiguous, so views whose pairs all failed
verification (e.g. low-elevation views of a checkerboard floor) still register. After each added view the
matches of every registered pair are re-derived under the epipolar geometry of the current poses (guided
matching), tracks are rebuilt, everything is re-triangulated and bundle adjusted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from recon.poses.bundle_adjustment import (
    Observations,
    bundle_adjust,
    reprojection_errors,
)
from recon.poses.features import Features
from recon.poses.matching import PairMatches, guided_matches, normalise

log = logging.getLogger(__name__)


@dataclass
class Tracks:
    """Feature tracks as flat observation arrays (track id, image, keypoint) and per-image keypoint -> track."""

    track: np.ndarray
    im: np.ndarray
    kp: np.ndarray
    n: int
    lookup: list[np.ndarray]

    @classmethod
    def build(cls, n_kp: list[int], matches: dict[tuple[int, int], np.ndarray]) -> Tracks:
        """Connected components of the match graph; a track seeing one image twice is dropped (ambiguous)."""
        offsets = np.cumsum([0] + list(n_kp))
        total = int(offsets[-1])
        a = [offsets[i] + idx[:, 0] for (i, j), idx in matches.items() if len(idx)]
        b = [offsets[j] + idx[:, 1] for (i, j), idx in matches.items() if len(idx)]
        lookup = [np.full(n, -1, dtype=np.int64) for n in n_kp]
        if not a:
            return cls(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), 0, lookup)
        a, b = np.concatenate(a), np.concatenate(b)
        g = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(total, total))
        _, label = connected_components(g, directed=False)
        used = np.zeros(total, dtype=bool)
        used[a] = True
        used[b] = True
        nodes = np.flatnonzero(used)
        lab = label[nodes]
        img = np.searchsorted(offsets, nodes, side="right") - 1
        size = np.bincount(lab, minlength=label.max() + 1)
        pair_key = np.unique(lab.astype(np.int64) * (len(n_kp) + 1) + img)
        distinct = np.bincount(pair_key // (len(n_kp) + 1), minlength=label.max() + 1)
        good = (size >= 2) & (distinct == size)
        keep = good[lab]
        new_id = np.full(label.max() + 1, -1, dtype=np.int64)
        new_id[good] = np.arange(int(good.sum()))
        track, im = new_id[lab[keep]], img[keep]
        kp = nodes[keep] - offsets[im]
        order = np.argsort(track, kind="stable")
        track, im, kp = track[order], im[order], kp[order]
        for i in range(len(n_kp)):
            s = im == i
            lookup[i][kp[s]] = track[s]
        return cls(track, im, kp, int(good.sum()), lookup)


@dataclass
class Model:
    """A (partial) reconstruction: registered camera poses and triangulated tracks (``valid`` ones)."""

    cams: dict[int, np.ndarray] = field(default_factory=dict)  # image -> (rvec | t)
    xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    rms_px: float = float("inf")

    def P(self, im: int) -> np.ndarray:
        R = cv2.Rodrigues(self.cams[im][:3])[0]
        return np.hstack([R, self.cams[im][3:].reshape(3, 1)])

    @property
    def n_points(self) -> int:
        return int(self.valid.sum())


def _pose_vec(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.concatenate([cv2.Rodrigues(R)[0].ravel(), np.asarray(t, dtype=np.float64).ravel()])


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])


class OutOfTime(Exception):
    """The SfM ran past its deadline (``IncrementalSfM.deadline``, a time.perf_counter() value)."""


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise OutOfTime


class IncrementalSfM:
    """Builds a Model from features, verified pairs, putative matches of all pairs and per-image intrinsics."""

    def __init__(
        self,
        features: list[Features],
        pairs: list[PairMatches],
        Ks: np.ndarray,
        reproj_px: float = 4.0,
        min_angle_deg: float = 1.0,
        min_pnp: int = 12,
        putative: dict[tuple[int, int], np.ndarray] | None = None,
        relink_px: float = 2.0,
        min_support: int = 40,
    ) -> None:
        self.f = features
        self.pairs = {(p.i, p.j): p for p in pairs}
        self.putative = putative or {}
        self.matches: dict[tuple[int, int], np.ndarray] = {k: p.idx for k, p in self.pairs.items()}
        self.Ks = Ks
        self.reproj_px = reproj_px
        self.relink_px = relink_px
        self.min_angle = min_angle_deg
        self.min_pnp = min_pnp
        self.min_support = min_support
        self.n = len(features)
        self.tracks = Tracks.build([len(f) for f in features], self.matches)
        self.deadline: float | None = None  # time.perf_counter() value past which run/adjust raise OutOfTime

    def _rebuild(self, m: Model) -> None:
        """New tracks from ``self.matches``; every point is triangulated again."""
        self.tracks = Tracks.build([len(f) for f in self.f], self.matches)
        m.xyz = np.zeros((self.tracks.n, 3))
        m.valid = np.zeros(self.tracks.n, dtype=bool)
        self._triangulate(m, retriangulate=True)

    # ------------------------------------------------------------------ triangulation
    def _triangulate(self, m: Model, retriangulate: bool = False) -> None:
        """Linear (DLT) triangulation of every track seen by >= 2 registered views, batched over tracks;
        points behind a camera, reprojecting worse than ``reproj_px`` or with a tiny ray angle are invalid."""
        T = self.tracks
        if len(m.xyz) != T.n:
            m.xyz, m.valid = np.zeros((T.n, 3)), np.zeros(T.n, dtype=bool)
        if T.n == 0:
            return
        reg = np.zeros(self.n, dtype=bool)
        reg[list(m.cams)] = True
        sel = reg[T.im]
        cnt = np.bincount(T.track[sel], minlength=T.n)
        todo = cnt >= 2
        if not retriangulate:
            todo &= ~m.valid
        sel &= todo[T.track]
        if not sel.any():
            return
        tr, im, kp = T.track[sel], T.im[sel], T.kp[sel]
        Ps = np.zeros((self.n, 3, 4))
        for i in m.cams:
            Ps[i] = m.P(i)
        xy = np.concatenate([self.f[i].xy for i in range(self.n)])[np.cumsum([0] + [len(f) for f in self.f])[im] + kp]
        K = self.Ks[im]
        x = (xy[:, 0] - K[:, 0, 2]) / K[:, 0, 0]
        y = (xy[:, 1] - K[:, 1, 2]) / K[:, 1, 1]
        P = Ps[im]
        r1 = x[:, None] * P[:, 2] - P[:, 0]
        r2 = y[:, None] * P[:, 2] - P[:, 1]
        AtA = np.zeros((T.n, 4, 4))
        np.add.at(AtA, tr, r1[:, :, None] * r1[:, None, :] + r2[:, :, None] * r2[:, None, :])
        ids = np.flatnonzero(todo)
        _, vec = np.linalg.eigh(AtA[ids])
        Xh = vec[:, :, 0]
        ok = np.abs(Xh[:, 3]) > 1e-12
        X = np.zeros((T.n, 3))
        X[ids[ok]] = Xh[ok, :3] / Xh[ok, 3:4]
        good = np.zeros(T.n, dtype=bool)
        good[ids[ok]] = True
        # per-observation checks
        Xo = X[tr]
        pc = np.einsum("nij,nj->ni", P[:, :, :3], Xo) + P[:, :, 3]
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = K[:, 0, 0] * pc[:, 0] / z + K[:, 0, 2]
            v = K[:, 1, 1] * pc[:, 1] / z + K[:, 1, 2]
        err = np.hypot(u - xy[:, 0], v - xy[:, 1])
        bad_obs = ~(z > 0) | ~(err <= self.reproj_px)
        bad = np.zeros(T.n, dtype=bool)
        np.logical_or.at(bad, tr, bad_obs)
        # ray angle: largest angle between any ray and the track's first ray (>= half the largest pairwise)
        R = P[:, :, :3]
        centre = -np.einsum("nji,nj->ni", R, P[:, :, 3])
        d = Xo - centre
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        first = np.zeros(T.n, dtype=np.int64)
        first[tr[::-1]] = np.arange(len(tr))[::-1]
        cos = np.sum(d * d[first[tr]], axis=1)
        min_cos = np.ones(T.n)
        np.minimum.at(min_cos, tr, cos)
        small = np.degrees(np.arccos(np.clip(min_cos, -1, 1))) < self.min_angle
        new_ok = good & ~bad & ~small
        m.xyz[todo] = X[todo]
        m.valid[todo] = new_ok[todo]

    # ------------------------------------------------------------------ bundle adjustment
    def _observations(self, m: Model) -> tuple[Observations, list[int], list[int]]:
        cam_list = sorted(m.cams)
        cam_pos = np.full(self.n, -1)
        cam_pos[cam_list] = np.arange(len(cam_list))
        trk_list = np.flatnonzero(m.valid)
        pt_pos = np.full(max(self.tracks.n, 1), -1)
        pt_pos[trk_list] = np.arange(len(trk_list))
        T = self.tracks
        sel = (cam_pos[T.im] >= 0) & m.valid[T.track] if T.n else np.zeros(0, dtype=bool)
        offs = np.cumsum([0] + [len(f) for f in self.f])
        xy_all = np.concatenate([f.xy for f in self.f]) if offs[-1] else np.zeros((0, 2))
        xy = xy_all[offs[T.im[sel]] + T.kp[sel]]
        return (Observations(cam_pos[T.im[sel]], pt_pos[T.track[sel]], xy.reshape(-1, 2)), cam_list, trk_list.tolist())

    def adjust(self, m: Model, refine_focal: bool = False, fixed: int | None = None) -> None:
        check_deadline(self.deadline)
        """Bundle adjustment of everything in ``m``, then drop points with an observation erring too much."""
        for _round in range(2):
            obs, cam_list, trk_list = self._observations(m)
            if len(trk_list) < 6:
                return
            trk = np.asarray(trk_list)
            cams = np.stack([m.cams[im] for im in cam_list])
            pts = m.xyz[trk]
            Ks = self.Ks[cam_list]
            fixed_idx = [cam_list.index(fixed if fixed is not None and fixed in m.cams else cam_list[0])]
            cams, pts, Ks_new = bundle_adjust(
                cams, Ks, pts, obs, fixed=fixed_idx, refine_focal=refine_focal, max_nfev=200 if refine_focal else 60
            )
            for c, im in enumerate(cam_list):
                m.cams[im] = cams[c]
            if refine_focal:
                s = Ks_new[0, 0, 0] / Ks[0, 0, 0]
                log.debug("focal refined %.1f -> %.1f px", Ks[0, 0, 0], Ks_new[0, 0, 0])
                self.Ks[:, 0, 0] *= s
                self.Ks[:, 1, 1] *= s
            err = reprojection_errors(cams, self.Ks[cam_list], pts, obs)
            bad_pt = np.zeros(len(trk), dtype=bool)
            bad_pt[obs.pt[~(err <= self.reproj_px)]] = True
            m.xyz[trk] = pts
            m.valid[trk[bad_pt]] = False
            good = err[np.isfinite(err) & (err <= self.reproj_px)]
            m.rms_px = float(np.sqrt(np.mean(good**2))) if len(good) else float("inf")
            if not bad_pt.any():
                break

    # ------------------------------------------------------------------ registration
    def _correspondences(self, m: Model, im: int, putative: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """2D-3D correspondences of view ``im``: its track observations with a point, plus (``putative``)
        its unverified matches to keypoints of registered views that have a point. Unique (keypoint, point)."""
        T = self.tracks
        kps, trks = [], []
        if T.n:
            s = (T.im == im) & m.valid[T.track]
            kps.append(T.kp[s])
            trks.append(T.track[s])
        if putative:
            for (a, b), idx in self.putative.items():
                if im not in (a, b):
                    continue
                other = b if a == im else a
                if other not in m.cams or not len(idx):
                    continue
                k_im, k_o = (idx[:, 0], idx[:, 1]) if a == im else (idx[:, 1], idx[:, 0])
                t = self.tracks.lookup[other][k_o]
                ok = t >= 0
                ok[ok] = m.valid[t[ok]]
                kps.append(k_im[ok])
                trks.append(t[ok])
        if not kps:
            return np.zeros((0, 3)), np.zeros((0, 2))
        pairs = np.unique(np.stack([np.concatenate(kps), np.concatenate(trks)], axis=1), axis=0)
        return m.xyz[pairs[:, 1]], self.f[im].xy[pairs[:, 0]]

    def _register_pnp(self, m: Model, im: int, reproj_px: float, min_pnp: int) -> bool:
        X, x = self._correspondences(m, im)
        if len(X) < min_pnp:
            return False
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            X,
            x,
            self.Ks[im],
            None,
            iterationsCount=20000,
            reprojectionError=reproj_px,
            confidence=0.99999,
            flags=cv2.SOLVEPNP_AP3P,
        )
        if not ok or inl is None or len(inl) < max(min_pnp, 6):
            log.debug(
                "image %d: PnP failed (%d correspondences, %s inliers)", im, len(X), None if inl is None else len(inl)
            )
            return False
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(X[inl], x[inl], self.Ks[im], None, rvec, tvec)
        # honest acceptance: enough inliers after refinement, spread over the image (not a handful in a corner)
        proj = cv2.projectPoints(X, rvec, tvec, self.Ks[im], None)[0].reshape(-1, 2)
        R = cv2.Rodrigues(rvec)[0]
        front = (X @ R.T + tvec.ravel())[:, 2] > 0
        inl = np.flatnonzero((np.linalg.norm(proj - x, axis=1) <= reproj_px) & front)
        spread = np.ptp(x[inl], axis=0) if len(inl) else np.zeros(2)
        w, h = 2 * self.Ks[im][0, 2], 2 * self.Ks[im][1, 2]
        if len(inl) < min_pnp or spread[0] < 0.1 * w or spread[1] < 0.1 * h:
            log.debug("image %d: PnP rejected (%d inliers of %d, spread %s)", im, len(inl), len(X), spread)
            return False
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
        if p.i == other:  # x_b = R x_a + t; express as other -> im
            R, t, idx_o, idx_n = p.R, p.t, p.idx[:, 0], p.idx[:, 1]
        else:
            R, t = p.R.T, -p.R.T @ p.t
            idx_o, idx_n = p.idx[:, 1], p.idx[:, 0]
        Po = m.P(other)
        xo = normalise(self.f[other].xy[idx_o], self.Ks[other])
        xn = normalise(self.f[im].xy[idx_n], self.Ks[im])
        Xu = cv2.triangulatePoints(np.eye(3, 4), np.hstack([R, t.reshape(3, 1)]), xo.T, xn.T)
        Xu = (Xu[:3] / Xu[3]).T  # in the other camera's frame, unit baseline
        trk = self.tracks.lookup[other][idx_o]
        has = trk >= 0
        has[has] = m.valid[trk[has]]
        z_true = (m.xyz[trk[has]] @ Po[:, :3].T + Po[:, 3])[:, 2] if has.any() else np.zeros(0)
        z_unit = Xu[has, 2]
        ok = (z_true > 0) & (z_unit > 0)
        ratios = z_true[ok] / z_unit[ok]
        if len(ratios) < 3:
            return False
        s = float(np.median(ratios))
        spread = float(np.median(np.abs(np.log(ratios / s))))  # a wrong relative pose scatters the samples
        if spread > 0.15:
            log.debug("image %d: relative pose to %d rejected (scale spread %.2f)", im, other, spread)
            return False
        m.cams[im] = _pose_vec(R @ Po[:, :3], R @ Po[:, 3] + s * t)
        log.debug("registered image %d from its relative pose to %d (%d scale samples)", im, other, len(ratios))
        return True

    # ------------------------------------------------------------------ re-matching under known poses
    def relink(
        self, m: Model, views: list[int] | None = None, px: float | None = None, strong_only: bool = False
    ) -> None:
        """Matches of registered pairs (those involving ``views``, else all) re-derived from the current poses:
        guided (epipolar-restricted) matches within ``relink_px`` of the epipolar lines. Tracks are rebuilt."""
        reg = sorted(m.cams)
        for ai, a in enumerate(reg):
            for b in reg[ai + 1 :]:
                if views is not None and a not in views and b not in views:
                    continue
                Pa, Pb = m.P(a), m.P(b)
                R = Pb[:, :3] @ Pa[:, :3].T
                t = Pb[:, 3] - R @ Pa[:, 3]
                n = np.linalg.norm(t)
                if n < 1e-12:
                    continue
                E = _skew(t / n) @ R
                f = 0.5 * (self.Ks[a][0, 0] + self.Ks[b][0, 0])
                fa, fb = self.f[a], self.f[b]
                ia = np.flatnonzero(fa.strong) if strong_only and fa.strong is not None else np.arange(len(fa))
                ib = np.flatnonzero(fb.strong) if strong_only and fb.strong is not None else np.arange(len(fb))
                g = guided_matches(
                    normalise(fa.xy[ia], self.Ks[a]),
                    normalise(fb.xy[ib], self.Ks[b]),
                    fa.desc[ia],
                    fb.desc[ib],
                    E,
                    (px or self.relink_px) / f,
                )
                self.matches[(a, b)] = np.stack([ia[g[:, 0]], ib[g[:, 1]]], axis=1)
        self._rebuild(m)

    def support(self, m: Model) -> dict[int, int]:
        """Observations of valid points per registered view."""
        obs, cam_list, _ = self._observations(m)
        counts = np.bincount(obs.cam, minlength=len(cam_list))
        return {im: int(counts[c]) for c, im in enumerate(cam_list)}

    def remove(self, m: Model, im: int) -> None:
        """Take view ``im`` out of the model (its matches too) and re-triangulate."""
        m.cams.pop(im)
        for k in [k for k in self.matches if im in k and k not in self.pairs]:
            self.matches.pop(k)
        for k in [k for k in self.pairs if im in k]:
            self.matches[k] = self.pairs[k].idx
        self._rebuild(m)

    # ------------------------------------------------------------------ driver
    def run(self, seed: tuple[int, int]) -> Model:
        """Reconstruct from ``seed`` pair; registers as many of the other views as it can. The focal is held
        (the caller frees it once all views are in: few views constrain it weakly)."""
        p = self.pairs[seed]
        m = Model()
        m.cams[p.i] = np.zeros(6)
        m.cams[p.j] = _pose_vec(p.R, p.t)
        self._triangulate(m)
        self.adjust(m, fixed=p.i)
        if m.n_points < 6:
            return m
        rejected: set[int] = set()  # placed, but unsupported after re-matching: retried once more views are in
        while len(m.cams) < self.n:
            check_deadline(self.deadline)
            todo = [im for im in range(self.n) if im not in m.cams and im not in rejected]
            counts = {im: len(self._correspondences(m, im, putative=False)[0]) for im in todo}
            added = None
            # honest relaxation: the wider PnP threshold / fewer inliers only when no view passes the strict one
            for reproj, min_pnp in ((self.reproj_px, self.min_pnp), (1.5 * self.reproj_px, (2 * self.min_pnp) // 3)):
                for im in sorted(todo, key=lambda k: -counts[k]):
                    if self._register_pnp(m, im, reproj, min_pnp) or self._register_relative(m, im):
                        added = im
                        break
                if added is not None:
                    break
            if added is None:
                break
            self._triangulate(m)
            self.adjust(m, fixed=p.i)
            self.relink(m, views=[added])
            self.adjust(m, fixed=p.i)
            support = self.support(m).get(added, 0)
            if support < self.min_support:
                log.debug("image %d removed again: %d supporting observations after re-matching", added, support)
                self.remove(m, added)
                rejected.add(added)
            else:
                rejected.clear()
        if len(m.cams) > 2:  # final: precisely localised keypoints only
            self.relink(m, strong_only=True)
            self.adjust(m, fixed=p.i)
        return m
