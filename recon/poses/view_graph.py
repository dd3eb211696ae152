"""Cycle-consistency filtering of a view graph: drop image pairs whose relative rotation no triangle confirms.

With 3-9 photos a wrong pair (matches on a repeated texture, or two views 80 degrees apart matched by chance)
is common, and rotation averaging over so few edges cannot outvote it: on DTU scan24's three RegNeRF views the
one wrong pair (20 matches, 138 degrees off) made COLMAP's rotation averaging reject all three pairs. Around
each triangle of pairs the relative rotations must compose to the identity; a pair that is in inconsistent
triangles only is suspect, and the weakest such pair (fewest inlier matches) is dropped first, one at a time,
so that one bad pair does not take its two good neighbours with it.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np

log = logging.getLogger(__name__)

Edge = tuple[int, int]


def rotation_angle_deg(R: np.ndarray) -> float:
    """The angle of a rotation matrix, in degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def relative_rotation(rot: dict[Edge, np.ndarray], a: int, b: int) -> np.ndarray | None:
    """Rotation taking camera a's frame to camera b's (``rot[(i, j)]`` is cam_j_from_cam_i's rotation)."""
    if (a, b) in rot:
        return rot[(a, b)]
    if (b, a) in rot:
        return rot[(b, a)].T
    return None


def triangle_errors(rot: dict[Edge, np.ndarray]) -> dict[tuple[int, int, int], float]:
    """Cycle error (deg) of every triangle i < j < k whose three pairs are all in ``rot``."""
    nodes = sorted({v for e in rot for v in e})
    out = {}
    for i, j, k in itertools.combinations(nodes, 3):
        rij, rjk, rik = relative_rotation(rot, i, j), relative_rotation(rot, j, k), relative_rotation(rot, i, k)
        if rij is None or rjk is None or rik is None:
            continue
        out[(i, j, k)] = rotation_angle_deg(rik.T @ rjk @ rij)
    return out


def triangle_votes(rot: dict[Edge, np.ndarray], tol_deg: float) -> tuple[dict[Edge, int], dict[Edge, int]]:
    """Per pair of ``rot``: how many of its triangles close within ``tol_deg`` (good) and how many do not (bad)."""
    good: dict[Edge, int] = {e: 0 for e in rot}
    bad: dict[Edge, int] = {e: 0 for e in rot}
    for (i, j, k), err in triangle_errors(rot).items():
        for a, b in ((i, j), (j, k), (i, k)):
            e = (a, b) if (a, b) in rot else (b, a)
            if err <= tol_deg:
                good[e] += 1
            else:
                bad[e] += 1
    return good, bad


def cycle_consistent(
    rot: dict[Edge, np.ndarray], weight: dict[Edge, float], tol_deg: float = 5.0, min_unconfirmed: float = 0.0
) -> list[Edge]:
    """Pairs kept after dropping, one at a time and weakest first, each pair that sits in at least one
    triangle and in no triangle closing within ``tol_deg``; then the pairs no triangle confirms (nothing
    speaks for or against them) are kept only with a weight of at least ``min_unconfirmed``.
    ``rot[(i, j)]``: rotation of cam_j_from_cam_i; ``weight``: e.g. inlier counts."""
    rot = dict(rot)
    while True:
        good, bad = triangle_votes(rot, tol_deg)
        suspects = [e for e in rot if bad[e] > 0 and good[e] == 0]
        if not suspects:
            weak = [e for e in rot if good[e] == 0 and weight.get(e, 0.0) < min_unconfirmed]
            for e in weak:
                log.debug(
                    "pair %s dropped: no triangle confirms it and it has only %.0f matches", e, weight.get(e, 0.0)
                )
            return sorted(e for e in rot if e not in weak)
        worst = min(suspects, key=lambda e: (weight.get(e, 0.0), e))
        log.debug("pair %s dropped: in %d inconsistent triangles, no consistent one", worst, bad[worst])
        rot.pop(worst)
