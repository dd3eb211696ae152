"""Cycle-consistency filtering of a view graph (recon.poses.view_graph) on toy rotations."""

from __future__ import annotations

import numpy as np
import pytest

from recon.poses.view_graph import cycle_consistent, rotation_angle_deg, triangle_errors


def _rot(axis: tuple[float, float, float], deg: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(deg)
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def _graph(n: int, seed: int = 0) -> tuple[list[np.ndarray], dict[tuple[int, int], np.ndarray]]:
    """World-to-camera rotations of n cameras and the exact relative rotations cam_j_from_cam_i of every pair."""
    rng = np.random.default_rng(seed)
    Rs = [_rot(tuple(rng.normal(size=3)), float(rng.uniform(0, 90))) for _ in range(n)]
    return Rs, {(i, j): Rs[j] @ Rs[i].T for i in range(n) for j in range(i + 1, n)}


def test_exact_graph_closes_every_triangle_and_keeps_every_pair() -> None:
    _, rel = _graph(5)
    assert max(triangle_errors(rel).values()) < 1e-4 and len(triangle_errors(rel)) == 10
    assert cycle_consistent(rel, {e: 100.0 for e in rel}) == sorted(rel)


def test_one_wrong_pair_of_a_triangle_goes_and_takes_no_good_pair_with_it() -> None:
    """DTU scan24's case: three views, the 80-degree pair matched wrongly with the fewest matches."""
    _, rel = _graph(3)
    rel[(1, 2)] = _rot((0, 1, 0), 40) @ rel[(1, 2)]
    kept = cycle_consistent(rel, {(0, 1): 61, (0, 2): 61, (1, 2): 20})
    assert kept == [(0, 1), (0, 2)]
    assert cycle_consistent(rel, {(0, 1): 61, (0, 2): 61, (1, 2): 20}, tol_deg=50) == sorted(rel)  # within tolerance
    # one triangle cannot say which pair is wrong: the weakest goes even when the error sits in another
    _, rel = _graph(3)
    rel[(0, 1)] = _rot((0, 1, 0), 40) @ rel[(0, 1)]
    assert cycle_consistent(rel, {(0, 1): 61, (0, 2): 61, (1, 2): 20}) == [(0, 1), (0, 2)]


def test_wrong_pair_outvoted_by_other_triangles_even_when_it_is_the_strongest() -> None:
    _, rel = _graph(5, seed=3)
    rel[(1, 3)] = _rot((1, 0, 0), 30) @ rel[(1, 3)]
    weight = {e: 50.0 for e in rel}
    weight[(1, 3)] = 500.0
    kept = cycle_consistent(rel, weight)
    assert (1, 3) not in kept and len(kept) == len(rel) - 1


def test_unconfirmed_pairs_need_enough_matches() -> None:
    """Pairs in no triangle (a chain) are kept only with at least ``min_unconfirmed`` matches."""
    _, rel = _graph(4)
    chain = {e: rel[e] for e in [(0, 1), (1, 2), (2, 3)]}
    w = {(0, 1): 80.0, (1, 2): 30.0, (2, 3): 60.0}
    assert cycle_consistent(chain, w) == sorted(chain)
    assert cycle_consistent(chain, w, min_unconfirmed=50) == [(0, 1), (2, 3)]
    # a pair confirmed by a triangle stays whatever its count
    tri = {e: rel[e] for e in [(0, 1), (1, 2), (0, 2)]}
    assert cycle_consistent(tri, {(0, 1): 5.0, (1, 2): 5.0, (0, 2): 5.0}, min_unconfirmed=50) == sorted(tri)


@pytest.mark.parametrize("deg", [0.0, 3.0, 90.0, 179.0])
def test_rotation_angle(deg: float) -> None:
    assert rotation_angle_deg(_rot((1, 2, 3), deg)) == pytest.approx(deg, abs=1e-4)
