"""One camera type for the whole project, and conversions at the edges.

Convention (DESIGN.md): OpenCV camera frame (x right, y down, z forward); ``viewmat`` is the 4x4
world-to-camera matrix (as gsplat expects); pixel centres sit at +0.5, so the centre of the top-left
pixel is (0.5, 0.5). Other conventions (OpenGL camera-to-world of transforms.json, COLMAP qvec/tvec,
3x4 projection matrices of DTU/SpaRe) are converted here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

# OpenCV <-> OpenGL camera axes: flip y and z.
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def _as_f64(a: np.ndarray | list, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"expected shape {shape}, got {arr.shape}")
    return arr


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 pinhole intrinsics matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> 3x3 rotation matrix (COLMAP's convention)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> unit quaternion (w, x, y, z) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    m00, m01, m02 = R[0]
    m10, m11, m12 = R[1]
    m20, m21, m22 = R[2]
    # Symmetric 4x4 whose top eigenvector is the quaternion (Bar-Itzhack), robust near 180 degrees.
    Kmat = (
        np.array(
            [
                [m00 - m11 - m22, 0, 0, 0],
                [m01 + m10, m11 - m00 - m22, 0, 0],
                [m02 + m20, m12 + m21, m22 - m00 - m11, 0],
                [m21 - m12, m02 - m20, m10 - m01, m00 + m11 + m22],
            ]
        )
        / 3.0
    )
    vals, vecs = np.linalg.eigh(Kmat)
    x, y, z, w = vecs[:, np.argmax(vals)]
    q = np.array([w, x, y, z])
    return -q if q[0] < 0 else q


def orthonormality_error(M: np.ndarray) -> float:
    """Largest entry of |M^T M - I| for a 3x3 matrix: 0 for a rotation or reflection, inf when not finite."""
    M = np.asarray(M, dtype=np.float64)
    if not np.all(np.isfinite(M)):
        return float("inf")
    with np.errstate(over="ignore", invalid="ignore"):
        err = np.abs(M.T @ M - np.eye(3)).max()
    return float(err) if np.isfinite(err) else float("inf")


def nearest_rotation(M: np.ndarray) -> np.ndarray:
    """The rotation closest to ``M`` in the Frobenius norm (polar decomposition by SVD; det forced to +1)."""
    U, _, Vt = np.linalg.svd(np.asarray(M, dtype=np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    return U @ D @ Vt


def nearest_point_to_rays(origins: np.ndarray, dirs: np.ndarray) -> np.ndarray | None:
    """Least-squares point closest to all rays (origins, unit dirs: Nx3); None when they are (nearly) parallel.

    Used to find what a rig of cameras looks at (optical axes) or where an object sits (rays through mask centres).
    """
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for o, d in zip(np.asarray(origins, dtype=np.float64), np.asarray(dirs, dtype=np.float64)):
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ o
    ev = np.linalg.eigvalsh(A)
    if ev[0] < 1e-3 * ev[-1]:
        return None
    return np.linalg.solve(A, b)


@dataclass(eq=False)
class Camera:
    """Pinhole camera: intrinsics ``K`` (3x3), world-to-camera ``viewmat`` (4x4, OpenCV axes), image size."""

    K: np.ndarray
    viewmat: np.ndarray
    width: int
    height: int
    name: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.K = _as_f64(self.K, (3, 3))
        self.viewmat = _as_f64(self.viewmat, (4, 4))
        self.width = int(self.width)
        self.height = int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")

    # ----------------------------------------------------------------- basic properties
    @property
    def R(self) -> np.ndarray:
        """World-to-camera rotation."""
        return self.viewmat[:3, :3]

    @property
    def t(self) -> np.ndarray:
        """World-to-camera translation."""
        return self.viewmat[:3, 3]

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.R.T @ self.t

    @property
    def c2w(self) -> np.ndarray:
        """Camera-to-world 4x4 in OpenCV axes."""
        return np.linalg.inv(self.viewmat)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians."""
        return 2.0 * float(np.arctan(self.height / (2.0 * self.fy)))

    # ----------------------------------------------------------------- OpenGL c2w (transforms.json)
    @classmethod
    def from_opengl_c2w(cls, c2w_gl: np.ndarray, K: np.ndarray, width: int, height: int, name: str = "") -> Camera:
        """From an OpenGL/Blender camera-to-world matrix (x right, y up, z backward), as in transforms.json."""
        c2w_gl = _as_f64(c2w_gl, (4, 4))
        c2w_cv = c2w_gl @ _CV_TO_GL
        return cls(K=K, viewmat=np.linalg.inv(c2w_cv), width=width, height=height, name=name)

    def to_opengl_c2w(self) -> np.ndarray:
        """OpenGL/Blender camera-to-world matrix, as written to transforms.json."""
        return self.c2w @ _CV_TO_GL

    # ----------------------------------------------------------------- COLMAP
    @classmethod
    def from_colmap(
        cls, qvec: np.ndarray, tvec: np.ndarray, K: np.ndarray, width: int, height: int, name: str = ""
    ) -> Camera:
        """From COLMAP's world-to-camera quaternion (w, x, y, z) and translation (OpenCV axes already)."""
        viewmat = np.eye(4)
        viewmat[:3, :3] = qvec_to_rotmat(qvec)
        viewmat[:3, 3] = _as_f64(tvec, (3,))
        return cls(K=K, viewmat=viewmat, width=width, height=height, name=name)

    def to_colmap(self) -> tuple[np.ndarray, np.ndarray]:
        """COLMAP (qvec wxyz, tvec) of the world-to-camera transform."""
        return rotmat_to_qvec(self.R), self.t.copy()

    # ----------------------------------------------------------------- 3x4 projection (DTU / SpaRe)
    @classmethod
    def from_projection(cls, P: np.ndarray, width: int, height: int, name: str = "") -> Camera:
        """From a 3x4 projection matrix P = K [R | t] (any scale), decomposed with OpenCV."""
        P = _as_f64(P, (3, 4))
        K, R, c_h = cv2.decomposeProjectionMatrix(P)[:3]
        K = K / K[2, 2]
        # decomposeProjectionMatrix can return a K with negative diagonal; fold signs into R.
        signs = np.diag(np.sign(np.diag(K)))
        K = K @ signs
        R = signs @ R
        if np.linalg.det(R) < 0:  # P was given with a negative overall scale
            R = -R
        center = (c_h[:3] / c_h[3]).reshape(3)
        return cls.from_rotation_center(R, center, K, width, height, name=name)

    def to_projection(self) -> np.ndarray:
        """3x4 projection matrix K [R | t]."""
        return self.K @ self.viewmat[:3, :]

    # ----------------------------------------------------------------- construction helpers
    @classmethod
    def from_rotation_center(
        cls,
        R: np.ndarray,
        center: np.ndarray,
        K: np.ndarray,
        width: int,
        height: int,
        name: str = "",
        extra: dict | None = None,
    ) -> Camera:
        """Camera with world-to-camera rotation ``R`` (rows: the camera axes in world coordinates) at the world
        point ``center``: viewmat [R | -R center]."""
        viewmat = np.eye(4)
        viewmat[:3, :3] = R
        viewmat[:3, 3] = -R @ center
        return cls(K=K, viewmat=viewmat, width=width, height=height, name=name, extra=dict(extra or {}))

    @classmethod
    def look_at(
        cls,
        eye: np.ndarray,
        target: np.ndarray,
        up: np.ndarray,
        K: np.ndarray,
        width: int,
        height: int,
        name: str = "",
    ) -> Camera:
        """Camera at ``eye`` looking at ``target``; ``up`` is the world direction that appears up in the image."""
        eye = _as_f64(eye, (3,))
        forward = _as_f64(target, (3,)) - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, _as_f64(up, (3,)))
        if np.linalg.norm(right) < 1e-9:
            raise ValueError("look_at: up is parallel to the viewing direction")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        R = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        return cls.from_rotation_center(R, eye, K, width, height, name=name)

    def scaled(self, factor: float) -> Camera:
        """Same camera for an image resized by ``factor`` (0.5 halves width and height).

        The size is rounded to whole pixels and K follows the rounded size (as :meth:`resized`), so the
        camera matches the image that a resize to that size produces.
        """
        w = max(1, int(round(self.width * factor)))
        h = max(1, int(round(self.height * factor)))
        return self.resized(w, h)

    def resized(self, width: int, height: int) -> Camera:
        """Same camera for an image resized to exactly ``width`` x ``height`` (pixel-centre convention kept)."""
        K = self.K.copy()
        K[0] *= width / self.width
        K[1] *= height / self.height
        return Camera(
            K=K, viewmat=self.viewmat.copy(), width=width, height=height, name=self.name, extra=dict(self.extra)
        )

    def motion_from(self, ref: Camera) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) taking points from ``ref``'s camera frame into this camera's: X = R X_ref + t (two-view
        stereo's relative pose)."""
        R = self.R @ ref.R.T
        return R, self.t - R @ ref.t

    # ----------------------------------------------------------------- projection
    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """Nx3 world points -> Nx3 camera-frame points."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return points @ self.R.T + self.t

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nx3 world points -> (Nx2 pixel coordinates, N depths along the optical axis).

        Pixel coordinates follow the +0.5 centre convention: a point on the optical axis lands at (cx, cy).
        Points with depth <= 0 get NaN pixel coordinates.
        """
        pc = self.world_to_camera(points)
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (pc[:, :2] / z[:, None]) @ self.K[:2, :2].T + self.K[:2, 2]
        uv[z <= 0] = np.nan
        return uv, z

    def unproject(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Pixel coordinates (Nx2) and depths along the optical axis (N) -> Nx3 world points."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        depth = np.asarray(depth, dtype=np.float64).reshape(-1)
        rays = self.pixel_rays_camera(uv)
        pc = rays * depth[:, None]
        return (pc - self.t) @ self.R

    def pixel_rays_camera(self, uv: np.ndarray) -> np.ndarray:
        """Camera-frame ray directions with z = 1 for pixel coordinates uv (Nx2)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        Kinv = np.linalg.inv(self.K)
        homog = np.concatenate([uv, np.ones((len(uv), 1))], axis=1)
        # einsum, not @: multi-threaded BLAS on Nx3 arrays stalls badly next to open3d's ray-casting threads
        return np.einsum("ij,nj->ni", Kinv, homog)

    def pixel_grid(self) -> np.ndarray:
        """HxWx2 pixel-centre coordinates (u, v), u = x + 0.5, v = y + 0.5."""
        xs = np.arange(self.width) + 0.5
        ys = np.arange(self.height) + 0.5
        u, v = np.meshgrid(xs, ys)
        return np.stack([u, v], axis=-1)

    def world_directions(self, uv: np.ndarray) -> np.ndarray:
        """Unit world directions (Nx3) of the rays through pixel coordinates uv (Nx2).

        K is inverted in closed form (with skew) and everything goes through einsum, not BLAS: multi-threaded
        BLAS on Nx3 arrays stalls badly next to open3d's ray-casting threads (10x here)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        K = self.K
        y = (uv[:, 1] - K[1, 2]) / K[1, 1]
        x = (uv[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
        dc = np.stack([x, y, np.ones_like(x)], axis=1)
        dw = np.einsum("ij,jk->ik", dc, self.R)  # R^T applied to each row
        return dw / np.sqrt(np.einsum("ij,ij->i", dw, dw))[:, None]

    def rays_world(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel world rays through the pixel centres: (origins HxWx3, unit directions HxWx3)."""
        dirs = self.world_directions(self.pixel_grid().reshape(-1, 2))
        shape = (self.height, self.width, 3)
        return np.broadcast_to(self.center, shape).copy(), dirs.reshape(shape)

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        """JSON-friendly dict (used by cameras.json in run folders)."""
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "K": self.K.tolist(),
            "viewmat": self.viewmat.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(K=d["K"], viewmat=d["viewmat"], width=d["width"], height=d["height"], name=d.get("name", ""))
