"""recon.rig: one definition of the rig's look-at point, up, frame, working volume and orbits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recon.cameras import Camera, intrinsics
from recon.rig import look_at_point, meeting_point, orbit_cameras, rig_frame, rig_up, scene_bounds, scene_scale


def _ring(n: int = 6, radius: float = 4.0, height: float = 1.0, target=(0.2, -0.1, 0.3)) -> list[Camera]:
    K = intrinsics(100.0, 100.0, 40.0, 30.0)
    t = np.asarray(target)
    return [
        Camera.look_at(t + [radius * math.cos(a), radius * math.sin(a), height], t, [0, 0, 1], K, 80, 60)
        for a in np.linspace(0, 2 * math.pi, n, endpoint=False)
    ]


def test_look_at_point_up_and_frame_of_a_ring() -> None:
    cams = _ring()
    assert look_at_point(cams) == pytest.approx([0.2, -0.1, 0.3], abs=1e-9)
    assert rig_up(cams) == pytest.approx([0, 0, 1], abs=1e-9)
    frame = rig_frame(cams, toward="first")
    assert frame.radius == pytest.approx(math.hypot(4.0, 1.0))
    assert abs(frame.x @ frame.up) < 1e-12 and abs(np.linalg.norm(frame.y) - 1) < 1e-12
    az, el = frame.angles(cams[0].center)
    assert az == pytest.approx(0.0, abs=1e-9) and el == pytest.approx(math.atan2(1.0, 4.0))
    assert frame.target + frame.radius * frame.direction(az, el) == pytest.approx(cams[0].center)


def test_parallel_axes_look_ahead_of_the_mean_camera() -> None:
    centres = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    axes = np.tile([0.0, 0, 1], (3, 1))
    assert meeting_point(centres, axes) == pytest.approx([1.0, 0.0, 1.0])  # median distance from the origin: 1


def test_scene_bounds_and_scale() -> None:
    cams = _ring()
    b = scene_bounds(cams)
    half = math.hypot(4.0, 1.0) * 40.0 / 100.0
    assert b[0] == pytest.approx(np.array([0.2, -0.1, 0.3]) - half) and b[1] == pytest.approx(
        np.array([0.2, -0.1, 0.3]) + half
    )
    assert scene_scale(b) == pytest.approx(half * math.sqrt(3))


def test_orbit_cameras_span_the_elevation_range_and_look_at_the_target() -> None:
    cams = _ring()
    orbit = orbit_cameras(cams, n_azimuth=4, n_elevation=2)
    assert len(orbit) == 8
    for c in orbit:
        assert np.linalg.norm(c.center - look_at_point(cams)) == pytest.approx(math.hypot(4.0, 1.0))
        assert c.project(np.array([[0.2, -0.1, 0.3]]))[0][0] == pytest.approx([40.0, 30.0], abs=1e-6)


def test_rays_world_matches_unproject() -> None:
    cam = _ring()[1]
    origins, dirs = cam.rays_world()
    assert origins.shape == dirs.shape == (60, 80, 3)
    pts = cam.unproject(cam.pixel_grid().reshape(-1, 2), np.full(80 * 60, 2.5))
    expected = pts - cam.center
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.abs(dirs.reshape(-1, 3) - expected).max() < 1e-12
