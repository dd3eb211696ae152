"""Camera conversions: OpenGL c2w, COLMAP, 3x4 projection, look-at, projection and the pixel-centre convention."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.cameras import Camera, intrinsics, qvec_to_rotmat, rotmat_to_qvec

W, H = 64, 48


def random_camera(rng: np.random.Generator, skew: float = 0.0) -> Camera:
    R = Rotation.random(random_state=rng).as_matrix()
    viewmat = np.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = rng.normal(size=3)
    K = np.array([[70.0 + rng.uniform(0, 10), skew, 31.7], [0.0, 68.0, 24.3], [0.0, 0.0, 1.0]])
    return Camera(K=K, viewmat=viewmat, width=W, height=H, name="c")


def assert_same_camera(a: Camera, b: Camera, tol: float = 1e-9) -> None:
    np.testing.assert_allclose(a.K, b.K, atol=tol * max(1.0, np.abs(a.K).max()))
    np.testing.assert_allclose(a.viewmat, b.viewmat, atol=tol)
    assert (a.width, a.height) == (b.width, b.height)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def test_opengl_round_trip(rng):
    for _ in range(5):
        cam = random_camera(rng)
        back = Camera.from_opengl_c2w(cam.to_opengl_c2w(), cam.K, W, H)
        assert_same_camera(cam, back)


def test_opengl_axes():
    # OpenGL camera at the origin with identity c2w looks down -z with y up.
    cam = Camera.from_opengl_c2w(np.eye(4), intrinsics(50, 50, 32, 24), W, H)
    uv, z = cam.project(np.array([[0.0, 0.0, -5.0], [0.0, 1.0, -5.0], [1.0, 0.0, -5.0]]))
    np.testing.assert_allclose(uv[0], [32, 24])
    assert z[0] == pytest.approx(5.0)
    assert uv[1, 1] < 24  # world +y (up) appears above the centre (smaller v)
    assert uv[2, 0] > 32  # world +x appears right of the centre


def test_colmap_round_trip(rng):
    for _ in range(5):
        cam = random_camera(rng)
        q, t = cam.to_colmap()
        assert q[0] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
        assert_same_camera(cam, Camera.from_colmap(q, t, cam.K, W, H))


def test_qvec_matches_scipy_and_handles_180_degrees(rng):
    mats = [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]), np.eye(3)]
    mats += [Rotation.from_rotvec(np.pi * np.array([1.0, 1.0, 0.0]) / np.sqrt(2)).as_matrix()]
    mats += [Rotation.random(random_state=rng).as_matrix() for _ in range(5)]
    for R in mats:
        q = rotmat_to_qvec(R)
        np.testing.assert_allclose(qvec_to_rotmat(q), R, atol=1e-12)
        x, y, z, w = Rotation.from_matrix(R).as_quat()
        ref = np.array([w, x, y, z])
        assert min(np.abs(q - ref).max(), np.abs(q + ref).max()) < 1e-9


@pytest.mark.parametrize("scale", [1.0, -1.0, -3.7, 1e-4, 2.5e5, -1e5])
@pytest.mark.parametrize("skew", [0.0, 0.6])
def test_projection_round_trip_any_scale(rng, scale, skew):
    cam = random_camera(rng, skew=skew)
    back = Camera.from_projection(cam.to_projection() * scale, W, H)
    assert_same_camera(cam, back, tol=1e-8)
    assert np.linalg.det(back.R) == pytest.approx(1.0)


def test_projection_matrix_projects_like_camera(rng):
    cam = random_camera(rng)
    pts = cam.unproject(rng.uniform([0, 0], [W, H], size=(10, 2)), rng.uniform(1, 5, size=10))
    homog = np.c_[pts, np.ones(len(pts))] @ cam.to_projection().T
    np.testing.assert_allclose(homog[:, :2] / homog[:, 2:], cam.project(pts)[0], atol=1e-9)


def test_project_unproject_round_trip(rng):
    cam = random_camera(rng, skew=0.3)
    uv = rng.uniform([0, 0], [W, H], size=(20, 2))
    depth = rng.uniform(0.5, 10.0, size=20)
    pts = cam.unproject(uv, depth)
    uv2, d2 = cam.project(pts)
    np.testing.assert_allclose(uv2, uv, atol=1e-9)
    np.testing.assert_allclose(d2, depth, atol=1e-9)


def test_points_behind_camera_are_nan(rng):
    cam = random_camera(rng)
    behind = cam.center - 2.0 * cam.R[2]  # opposite to the viewing direction
    uv, z = cam.project(behind[None])
    assert z[0] < 0 and np.all(np.isnan(uv))


def test_pixel_centre_convention(rng):
    cam = random_camera(rng)
    on_axis = cam.center + 3.0 * cam.R[2]  # third row of R = optical axis in world coordinates
    uv, z = cam.project(on_axis[None])
    np.testing.assert_allclose(uv[0], [cam.cx, cam.cy], atol=1e-9)
    assert z[0] == pytest.approx(3.0)
    grid = cam.pixel_grid()
    assert grid.shape == (H, W, 2)
    np.testing.assert_allclose(grid[0, 0], [0.5, 0.5])
    np.testing.assert_allclose(grid[H - 1, W - 1], [W - 0.5, H - 0.5])
    origins, dirs = cam.rays_world()
    np.testing.assert_allclose(origins[3, 5], cam.center)
    # The ray through pixel (x=5, y=3) hits points that project to its centre.
    uv5, _ = cam.project((cam.center + 2.0 * dirs[3, 5])[None])
    np.testing.assert_allclose(uv5[0], [5.5, 3.5], atol=1e-9)


def test_from_rotation_center_rebuilds_the_camera(rng):
    cam = random_camera(rng)
    cam.extra["source"] = "x"
    again = Camera.from_rotation_center(cam.R, cam.center, cam.K, W, H, name="c", extra=cam.extra)
    np.testing.assert_allclose(again.viewmat, cam.viewmat, atol=1e-12)
    np.testing.assert_allclose(again.center, cam.center, atol=1e-12)
    assert again.extra == cam.extra and again.extra is not cam.extra  # a copy, not the caller's dict


def test_look_at():
    K = intrinsics(60, 60, W / 2, H / 2)
    eye, target, up = np.array([3.0, 1.0, 2.0]), np.array([0.0, 0.5, 0.0]), np.array([0.0, 1.0, 0.0])
    cam = Camera.look_at(eye, target, up, K, W, H)
    np.testing.assert_allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(cam.R) == pytest.approx(1.0)
    np.testing.assert_allclose(cam.center, eye, atol=1e-12)
    uv, z = cam.project(np.stack([target, target + 0.1 * up]))
    np.testing.assert_allclose(uv[0], [W / 2, H / 2], atol=1e-9)
    assert z[0] == pytest.approx(np.linalg.norm(target - eye))
    assert uv[1, 1] < H / 2  # "up" appears above the centre
    with pytest.raises(ValueError):
        Camera.look_at(eye, target, target - eye, K, W, H)


def test_resized_and_scaled_follow_pixel_edges(rng):
    cam = random_camera(rng)
    pts = cam.unproject(rng.uniform([0, 0], [W, H], size=(8, 2)), rng.uniform(1, 4, size=8))
    uv, _ = cam.project(pts)
    small = cam.resized(16, 12)
    np.testing.assert_allclose(small.project(pts)[0], uv * [16 / W, 12 / H], atol=1e-9)
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (W // 2, H // 2)
    np.testing.assert_allclose(half.project(pts)[0], uv * 0.5, atol=1e-9)
    np.testing.assert_allclose(half.viewmat, cam.viewmat)
    # A factor that does not give whole pixels: K follows the rounded size, like resized().
    odd = cam.scaled(0.3)
    assert (odd.width, odd.height) == (round(W * 0.3), round(H * 0.3))
    assert_same_camera(odd, cam.resized(odd.width, odd.height))
    assert cam.K[0, 0] != small.K[0, 0]  # the originals were not modified in place
    np.testing.assert_allclose(cam.resized(W, H).K, cam.K)


def test_dict_round_trip_and_properties(rng):
    cam = random_camera(rng)
    back = Camera.from_dict(cam.to_dict())
    assert_same_camera(cam, back, tol=0)
    assert back.name == "c"
    np.testing.assert_allclose(cam.c2w @ cam.viewmat, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(cam.world_to_camera(cam.center[None]), 0.0, atol=1e-12)
    assert cam.fov_y == pytest.approx(2 * np.arctan(H / (2 * cam.fy)))


def test_bad_shapes_and_sizes():
    with pytest.raises(ValueError):
        Camera(K=np.eye(2), viewmat=np.eye(4), width=4, height=4)
    with pytest.raises(ValueError):
        Camera(K=np.eye(3), viewmat=np.eye(4), width=0, height=4)


# ------------------------------------------------------------------------------------------------ input checks
def test_orthonormality_error_and_nearest_rotation():
    from recon.cameras import nearest_rotation, orthonormality_error

    rng = np.random.default_rng(0)
    R = qvec_to_rotmat(rng.standard_normal(4))
    assert orthonormality_error(R) < 1e-14
    assert orthonormality_error(2 * R) == pytest.approx(3.0)
    assert orthonormality_error(np.full((3, 3), np.nan)) == float("inf")
    assert orthonormality_error(np.full((3, 3), 1e300)) == float("inf")
    noisy = R + 1e-4 * rng.standard_normal((3, 3))
    fixed = nearest_rotation(noisy)
    assert orthonormality_error(fixed) < 1e-14 and np.linalg.det(fixed) > 0
    assert np.abs(fixed - R).max() < 1e-3
    assert np.linalg.det(nearest_rotation(-R)) > 0  # a reflection comes back as a rotation


def test_checked_camera_limits():
    from recon.errors import ReconInputError
    from recon.io.camera_checks import checked_camera

    K = intrinsics(30.0, 30.0, 16.0, 12.0)
    cam = Camera.look_at([0.0, 0.0, -3.0], [0, 0, 0], [0, -1, 0], K, 32, 24)
    assert checked_camera(cam, "cam", "f") is cam  # exact input is passed through untouched
    bad = {
        "skew": (lambda c: c.K.__setitem__((0, 1), 0.5), "intrinsics are skewed"),
        "fov": (lambda c: c.K.__setitem__((0, 0), 1.0), "horizontal field of view .* is outside"),
        "nan": (lambda c: c.viewmat.__setitem__((0, 3), np.nan), "pose is not finite"),
        "far": (lambda c: c.viewmat.__setitem__((2, 3), 1e9), "translation .* beyond"),
        "mirror": (lambda c: c.viewmat.__setitem__((0, slice(0, 3)), -c.viewmat[0, :3]), "reflection"),
        "sheared": (lambda c: c.viewmat.__setitem__((0, 1), c.viewmat[0, 1] + 0.01), "not orthonormal"),
    }
    for edit, message in bad.values():
        c = Camera(K=K.copy(), viewmat=cam.viewmat.copy(), width=32, height=24)
        edit(c)
        with pytest.raises(ReconInputError, match=f"f: cam: .*{message}"):
            checked_camera(c, "cam", "f")
    c = Camera(K=K.copy(), viewmat=cam.viewmat.copy(), width=32, height=24)
    c.viewmat[:3, :3] += 1e-5
    fixed = checked_camera(c, "cam", "f")
    assert np.abs(fixed.R.T @ fixed.R - np.eye(3)).max() < 1e-12
    np.testing.assert_allclose(fixed.center, c.center, atol=1e-12)
