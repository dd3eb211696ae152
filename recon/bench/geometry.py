"""Geometry scores of a reconstructed mesh against a ground-truth mesh: Chamfer distance and F-score.

Both surfaces are sampled uniformly by area (open3d) and compared with nearest-neighbour distances (KD-tree):
accuracy = mean distance from predicted samples to the GT surface samples, completeness = the reverse,
Chamfer = their mean; F-score@tau = harmonic mean of precision (share of predicted samples within tau of GT)
and recall (share of GT samples within tau of the prediction). tau defaults to 1% of the GT bounding-box
diagonal, as in the benchmark's acceptance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class GeometryScores:
    chamfer: float  # (accuracy + completeness) / 2, scene units
    accuracy: float  # mean distance prediction -> GT
    completeness: float  # mean distance GT -> prediction
    precision: float
    recall: float
    fscore: float
    threshold: float  # tau, scene units
    gt_diagonal: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniformly distributed over the mesh surface (by area), reproducible for a seed."""
    import open3d as o3d

    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise ValueError("cannot sample a mesh without triangles")
    o3d.utility.random.seed(int(seed))
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32)))
    return np.asarray(mesh.sample_points_uniformly(number_of_points=int(n)).points)


def point_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from every point of ``a`` to its nearest point of ``b``."""
    from scipy.spatial import cKDTree

    return cKDTree(b).query(a, k=1)[0]


def mesh_scores(
    pred: tuple[np.ndarray, np.ndarray],
    gt: tuple[np.ndarray, np.ndarray],
    n_points: int = 100_000,
    threshold: float | None = None,
    threshold_frac: float = 0.01,
    seed: int = 0,
) -> GeometryScores:
    """Chamfer distance and F-score of mesh ``pred`` = (vertices, triangles) against ``gt``.

    ``threshold`` (scene units) defaults to ``threshold_frac`` x the GT bounding-box diagonal.
    """
    gv = np.asarray(gt[0], dtype=np.float64)
    diag = float(np.linalg.norm(gv.max(axis=0) - gv.min(axis=0)))
    tau = float(threshold) if threshold is not None else threshold_frac * diag
    p = sample_surface(pred[0], pred[1], n_points, seed)
    g = sample_surface(gt[0], gt[1], n_points, seed)  # same seed: a mesh against itself scores exactly 0 / 1
    d_pg = point_distances(p, g)
    d_gp = point_distances(g, p)
    precision = float(np.mean(d_pg < tau))
    recall = float(np.mean(d_gp < tau))
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    acc, comp = float(d_pg.mean()), float(d_gp.mean())
    return GeometryScores(
        chamfer=0.5 * (acc + comp),
        accuracy=acc,
        completeness=comp,
        precision=precision,
        recall=recall,
        fscore=f,
        threshold=tau,
        gt_diagonal=diag,
    )
