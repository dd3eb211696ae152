"""Triangle meshes of the primitives that synthetic scenes are made of, with analytic vertex normals.

Every builder returns a :class:`Mesh` in the primitive's local frame (z up, resting on z = 0 unless said
otherwise). Sharp creases (box edges, a cup's rim) are made of separate vertex strips so that interpolated
normals stay smooth inside a face and crisp across an edge. Triangle winding is not relied upon: the
renderer turns every normal towards the viewer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Mesh:
    """Vertices (Nx3 float64), triangles (Mx3 int32) and unit vertex normals (Nx3 float64)."""

    vertices: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> Mesh:
        """The mesh moved by x -> R x + t."""
        return Mesh(self.vertices @ rotation.T + translation, self.triangles.copy(), self.normals @ rotation.T)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices.min(axis=0), self.vertices.max(axis=0)


def merge(meshes: list[Mesh]) -> Mesh:
    """One mesh made of several (vertex indices shifted)."""
    verts, tris, norms, offset = [], [], [], 0
    for m in meshes:
        verts.append(m.vertices)
        norms.append(m.normals)
        tris.append(m.triangles + offset)
        offset += len(m.vertices)
    return Mesh(np.concatenate(verts), np.concatenate(tris).astype(np.int32), np.concatenate(norms))


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def grid_mesh(points: np.ndarray, normals: np.ndarray, wrap_u: bool = False, wrap_v: bool = False) -> Mesh:
    """Triangulate a (nu, nv, 3) grid of points; ``wrap_*`` closes the grid along that axis."""
    nu, nv = points.shape[:2]
    idx = np.arange(nu * nv).reshape(nu, nv)
    if wrap_u:
        idx = np.concatenate([idx, idx[:1]], axis=0)
    if wrap_v:
        idx = np.concatenate([idx, idx[:, :1]], axis=1)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]).astype(np.int32)
    return Mesh(points.reshape(-1, 3).astype(np.float64), tris, _unit(normals.reshape(-1, 3)).astype(np.float64))


def _spow(x: np.ndarray, e: float) -> np.ndarray:
    """Signed power sign(x) |x|^e, the building block of superquadrics."""
    return np.sign(x) * np.abs(x) ** e


def superquadric(a: float, b: float, c: float, e1: float, e2: float, nu: int = 49, nv: int = 96) -> Mesh:
    """Superellipsoid with semi-axes (a, b, c) and shape exponents e1 (latitude) and e2 (longitude).

    e = 1 gives an ellipsoid, e -> 0 a box, e = 2 an octahedron-like shape. Centred at the origin.
    Odd ``nu`` and ``nv`` divisible by 4 put grid lines on the equator and the axes, where boxy shapes
    have their edges and extremes.
    """
    u = np.linspace(-np.pi / 2, np.pi / 2, nu)[:, None]
    v = np.linspace(-np.pi, np.pi, nv, endpoint=False)[None, :]
    cu, su, cv, sv = np.cos(u), np.sin(u), np.cos(v), np.sin(v)
    pts = np.stack(
        np.broadcast_arrays(
            a * _spow(cu, e1) * _spow(cv, e2), b * _spow(cu, e1) * _spow(sv, e2), c * _spow(su, e1) + 0 * cv
        ),
        axis=-1,
    )
    nrm = np.stack(
        np.broadcast_arrays(
            _spow(cu, 2 - e1) * _spow(cv, 2 - e2) / a,
            _spow(cu, 2 - e1) * _spow(sv, 2 - e2) / b,
            _spow(su, 2 - e1) / c + 0 * cv,
        ),
        axis=-1,
    )
    # At the poles the analytic normal vanishes; point it along the axis instead.
    pole = np.linalg.norm(nrm, axis=-1) < 1e-9
    nrm[pole] = np.array([0.0, 0.0, 1.0]) * np.sign(pts[pole][:, 2:3] + 1e-12)
    return grid_mesh(pts, nrm, wrap_v=True)


def box(sx: float, sy: float, sz: float) -> Mesh:
    """Axis-aligned box of full size (sx, sy, sz), centred at the origin, one vertex quad per face."""
    faces = []
    h = np.array([sx, sy, sz]) / 2
    for axis in range(3):
        for sign in (-1.0, 1.0):
            i, j = [k for k in range(3) if k != axis]
            corners = np.zeros((2, 2, 3))
            for a, sa in enumerate((-1.0, 1.0)):
                for b, sb in enumerate((-1.0, 1.0)):
                    corners[a, b, axis] = sign * h[axis]
                    corners[a, b, i] = sa * h[i]
                    corners[a, b, j] = sb * h[j]
            n = np.zeros((2, 2, 3))
            n[..., axis] = sign
            faces.append(grid_mesh(corners, n))
    return merge(faces)


def torus(major: float, minor: float, nu: int = 72, nv: int = 36) -> Mesh:
    """Torus around the z axis, centred at the origin (its hole is the concavity)."""
    u = np.linspace(0, 2 * np.pi, nu, endpoint=False)[:, None]
    v = np.linspace(0, 2 * np.pi, nv, endpoint=False)[None, :]
    ring = major + minor * np.cos(v)
    pts = np.stack(np.broadcast_arrays(ring * np.cos(u), ring * np.sin(u), minor * np.sin(v) + 0 * u), axis=-1)
    nrm = np.stack(np.broadcast_arrays(np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v) + 0 * u), axis=-1)
    return grid_mesh(pts, nrm, wrap_u=True, wrap_v=True)


def lathe(segments: list[np.ndarray], n_theta: int = 72) -> Mesh:
    """Surface of revolution around z of a profile made of polylines of (r, z) points.

    Each polyline is smooth inside; the joints between polylines are sharp creases.
    """
    theta = np.linspace(0, 2 * np.pi, n_theta, endpoint=False)
    ct, st = np.cos(theta)[None, :], np.sin(theta)[None, :]
    parts = []
    for seg in segments:
        seg = np.asarray(seg, dtype=np.float64)
        tangent = np.gradient(seg, axis=0)
        n2 = _unit(np.stack([tangent[:, 1], -tangent[:, 0]], axis=1))  # tangent rotated by -90 degrees
        r, z = seg[:, :1], seg[:, 1:]
        pts = np.stack(np.broadcast_arrays(r * ct, r * st, z + 0 * ct), axis=-1)
        nrm = np.stack(np.broadcast_arrays(n2[:, :1] * ct, n2[:, :1] * st, n2[:, 1:] + 0 * ct), axis=-1)
        parts.append(grid_mesh(pts, nrm, wrap_v=True))
    return merge(parts)


def _line(p0: tuple[float, float], p1: tuple[float, float], n: int = 2) -> np.ndarray:
    return np.linspace(np.asarray(p0, float), np.asarray(p1, float), n)


def cylinder(radius: float, height: float, n_theta: int = 48) -> Mesh:
    """Closed cylinder standing on z = 0 (a thin rod when ``radius`` is small)."""
    return lathe(
        [_line((0, 0), (radius, 0)), _line((radius, 0), (radius, height), 8), _line((radius, height), (0, height))],
        n_theta,
    )


def cup(radius_bottom: float, radius_top: float, height: float, wall: float, bowl: float = 0.0) -> Mesh:
    """Open cup/bowl with walls of thickness ``wall`` standing on z = 0: a deep concavity.

    ``bowl`` in [0, 1] bends the side wall outwards (0: straight conical cup, 1: round bowl).
    """
    s = np.linspace(0.0, 1.0, 24)
    bulge = bowl * np.sin(np.pi * s) * 0.25 * height
    r_out = radius_bottom + (radius_top - radius_bottom) * np.sqrt(s) ** (1 + bowl) + bulge
    z_out = height * s
    outer = np.stack([r_out, z_out], 1)
    inner = np.stack([r_out[::-1] - wall, np.maximum(z_out[::-1], wall)], 1)
    inner[-1, 1] = wall
    return lathe(
        [
            _line((0, 0), (radius_bottom, 0)),
            outer,
            _line((r_out[-1], height), (r_out[-1] - wall, height)),
            inner,
            _line((inner[-1, 0], wall), (0, wall)),
        ]
    )


def cone(radius: float, height: float) -> Mesh:
    """Closed cone standing on z = 0."""
    return lathe([_line((0, 0), (radius, 0)), _line((radius, 0), (0, height), 12)])
