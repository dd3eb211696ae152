"""Synthetic SpaRe-style scenes: determinism, splits, ground truth and camera accuracy, shapes, textures, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from recon.bench import shapes, synth
from recon.bench.synth import make_scene, synthesize
from recon.bench.textures import KINDS, make_texture
from recon.errors import ReconInputError
from recon.io.spare import read_depth, read_spare_scene

W, H = 80, 60


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("synth") / "s5", seed=5, width=W, height=H)


@pytest.fixture(scope="module")
def in_memory():
    return synthesize(5, W, H, 49, keep_points=True)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_files(scene_dir, tmp_path):
    again = make_scene(tmp_path / "again", seed=5, width=W, height=H)
    a, b = _files(scene_dir), _files(again)
    assert len(a) == 1 + 49 * 4 + 2  # scene.json, 49 x (image, mask, depth, camera), two split files
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)


def test_different_seed_gives_different_scene(in_memory):
    other = synthesize(6, W, H, 49, views=[0, 20])
    assert other.meta["objects"] != in_memory.meta["objects"]
    assert np.abs(other.images[20] - in_memory.images[20]).mean() > 0.02
    assert not np.allclose(other.cameras[20].viewmat, in_memory.cameras[20].viewmat)


def test_scene_content_varies_across_seeds():
    kinds, textures, counts = set(), set(), set()
    for seed in range(12):
        meta = synthesize(seed, 32, 24, 49, views=[]).meta
        counts.add(len(meta["objects"]))
        kinds |= {o["kind"] for o in meta["objects"]}
        textures |= {o["texture"]["kind"] for o in meta["objects"]}
        assert 2 <= len(meta["objects"]) <= 4
        # every scene has a thin part or a concavity
        assert {o["kind"] for o in meta["objects"]} & {"torus", "cup", "rod", "plate"}
    assert len(counts) >= 2 and len(kinds) >= 6 and len(textures) >= 7


# ----------------------------------------------------------------------------------------- splits and rig
@pytest.mark.parametrize("seed, n", [(0, 49), (1, 49), (2, 55), (3, 64)])
def test_splits_are_valid(seed, n):
    sc = synthesize(seed, 32, 24, n, views=[])
    t3, t9 = sc.splits["track3"], sc.splits["track9"]
    assert len(set(t3["input_views"])) == 3 and len(set(t9["input_views"])) == 9
    assert t9["input_views"][:3] == t3["input_views"]  # the 9-view track extends the 3-view track
    assert t3["test_views"] == t9["test_views"]
    tests = t3["test_views"]
    assert len(set(tests)) == 10 and not set(tests) & set(t9["input_views"])
    assert all(0 <= i < n for i in tests + t9["input_views"])
    rows = sc.meta["rig"]["rows"]
    assert sorted(i for r in rows for i in r) == list(range(n))
    assert all(i in rows[len(rows) // 2] for i in t3["input_views"])  # central row, like DTU 25/22/28
    # the 3 input views are spread: neighbours of the central view at least 2 cameras apart
    mid = rows[len(rows) // 2]
    pos = sorted(mid.index(i) for i in t3["input_views"])
    assert pos[1] - pos[0] >= 2 and pos[2] - pos[1] >= 2


def test_rig_is_a_spherical_cap_looking_at_the_objects(in_memory):
    cams = in_memory.cameras
    target = np.array(in_memory.meta["rig"]["target"])
    dist = np.array([np.linalg.norm(c.center - target) for c in cams])
    assert dist.max() / dist.min() < 1.05
    for c in cams:
        uv, z = c.project(target[None])
        assert z[0] > 0 and np.allclose(uv[0], [W / 2, H / 2], atol=1e-6)  # optical axis through the target
        assert c.center[2] > target[2]  # above the platform, looking down
    hfov = 2 * np.degrees(np.arctan(W / 2 / cams[0].fx))
    assert 40 <= hfov <= 50


def test_number_of_cameras_and_argument_errors(tmp_path):
    assert len(synthesize(0, 32, 24, 64, views=[]).cameras) == 64
    for kwargs in ({"n_cameras": 48}, {"n_cameras": 65}, {"width": 8}, {"seed": -1}):
        with pytest.raises(ReconInputError):
            synthesize(**{"seed": 0, "width": 32, "height": 24, "n_cameras": 49, **kwargs})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(ReconInputError, match="not empty"):
        make_scene(tmp_path / "full", seed=0, width=32, height=24)
    assert (tmp_path / "full" / "x").read_text() == "keep me"


# ----------------------------------------------------------------------------------------- ground truth
def test_written_scene_reads_back(scene_dir, in_memory):
    train = read_spare_scene(scene_dir, track=3)
    assert len(train) == 3 and train.meta["indices"] == in_memory.splits["track3"]["input_views"]
    test = read_spare_scene(scene_dir, track=9, split="test")
    assert len(test) == 10
    everything = read_spare_scene(scene_dir, split="all")
    assert len(everything) == 49
    for k in (0, 20):
        np.testing.assert_allclose(everything.images[k], in_memory.images[k], atol=1 / 255 + 1e-6)
        np.testing.assert_array_equal(everything.masks[k] > 0.5, in_memory.masks[k])


def test_reprojection_of_gt_depth_is_within_half_a_pixel(scene_dir, in_memory):
    """Acceptance: cameras read back from disk put the ray caster's hit points where it found them."""
    vs = read_spare_scene(scene_dir, split="all")
    worst_self, worst_cross = 0.0, 0.0
    for k, cam in enumerate(vs.cameras):
        i = cam.extra["index"]
        hits = in_memory.points[i]
        valid = np.isfinite(hits[..., 0])
        # 1) the recorded 3D hit points project back onto their pixel centres
        uv, _ = cam.project(hits[valid])
        worst_self = max(worst_self, float(np.abs(uv - cam.pixel_grid()[valid]).max()))
        # 2) GT depth from disk, unprojected with the read camera, lands in another view where the
        #    generator's own camera puts the true hit point
        depth = read_depth(vs.meta["depth_paths"][k], vs.meta["depth_scale"])
        np.testing.assert_array_equal(depth > 0, valid)
        world = cam.unproject(cam.pixel_grid()[valid], depth[valid])
        j = (i + 7) % 49
        uv_read, _ = vs.cameras[j].project(world)
        uv_true, _ = in_memory.cameras[j].project(hits[valid])
        worst_cross = max(worst_cross, float(np.abs(uv_read - uv_true).max()))
    assert worst_self < 0.5 and worst_cross < 0.5
    assert worst_self < 1e-3 and worst_cross < 0.05  # in practice far below the acceptance bound


def test_masks_cover_objects_only_and_fit_in_frame(in_memory):
    for img, mask, depth in zip(in_memory.images, in_memory.masks, in_memory.depths):
        assert 0.02 < mask.mean() < 0.6
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        assert np.all(depth[mask] > 0)
        platform = (depth > 0) & ~mask  # visible platform: in the image and depth, not in the mask
        assert platform.mean() > 0.05
        bg = np.array(in_memory.meta["background"]["rgb"], dtype=np.float32)
        empty = depth == 0
        inner = empty.copy()  # away from silhouettes, whose pixels are anti-aliased mixtures
        inner[1:] &= empty[:-1]
        inner[:-1] &= empty[1:]
        inner[:, 1:] &= empty[:, :-1]
        inner[:, :-1] &= empty[:, 1:]
        assert inner.any() and np.allclose(img[inner], bg, atol=1e-6)


def test_depth_is_camera_z(in_memory):
    cam = in_memory.cameras[3]
    hits = in_memory.points[3]
    valid = np.isfinite(hits[..., 0])
    z = cam.world_to_camera(hits[valid])[:, 2]
    np.testing.assert_allclose(in_memory.depths[3][valid], z, rtol=1e-5)


def test_sample_views_only(tmp_path):
    out = make_scene(tmp_path / "s", seed=1, width=40, height=30, views="splits", depth=False)
    names = sorted(p.name for p in (out / "images").iterdir())
    sc = synthesize(1, 40, 30, 49, views=[])
    used = sorted(set(sc.splits["track9"]["input_views"] + sc.splits["track9"]["test_views"]))
    assert names == [f"cam_{i + 1:03d}_3_0000.png" for i in used]
    assert not (out / "depth").exists()
    assert len(read_spare_scene(out, track=9)) == 9


def test_cli_make_scene(tmp_path, capsys):
    from apps.cli import main

    with pytest.raises(SystemExit) as exc:
        main(
            [
                "make-scene",
                "--seed",
                "3",
                "--out",
                str(tmp_path / "c"),
                "--width",
                "40",
                "--height",
                "30",
                "--cameras",
                "52",
            ]
        )
    assert exc.value.code in (0, None)
    vs = read_spare_scene(tmp_path / "c", split="all")
    assert len(vs) == 52 and vs.images[0].shape == (30, 40, 3)


# ----------------------------------------------------------------------------------------- shapes and textures
def _cast_down(mesh: shapes.Mesh, x: float, y: float) -> float:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(mesh.vertices.astype(np.float32), mesh.triangles.astype(np.uint32))
    ray = np.array([[x, y, 5.0, 0.0, 0.0, -1.0]], dtype=np.float32)
    t = scene.cast_rays(o3d.core.Tensor(ray))["t_hit"].numpy()[0]
    return 5.0 - float(t)


def test_cup_is_concave_and_torus_has_a_hole():
    cup = shapes.cup(0.1, 0.15, 0.3, 0.02)
    assert abs(_cast_down(cup, 0.0, 0.0) - 0.02) < 1e-4  # looking into the cup hits the inner bottom
    torus = shapes.torus(0.25, 0.06)
    assert _cast_down(torus, 0.0, 0.0) == -np.inf  # through the hole
    assert abs(_cast_down(torus, 0.25, 0.0) - 0.06) < 1e-3


@pytest.mark.parametrize(
    "mesh",
    [
        shapes.superquadric(0.3, 0.2, 0.25, 0.4, 1.5),
        shapes.box(0.3, 0.2, 0.1),
        shapes.torus(0.3, 0.1),
        shapes.cylinder(0.05, 0.5),
        shapes.cup(0.1, 0.15, 0.3, 0.02, 0.7),
        shapes.cone(0.2, 0.4),
    ],
)
def test_vertex_normals_agree_with_faces(mesh):
    v, t = mesh.vertices, mesh.triangles
    face_n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    area = np.linalg.norm(face_n, axis=1)
    ok = area > 1e-10
    face_n = face_n[ok] / area[ok, None]
    vert_n = mesh.normals[t[ok]].mean(axis=1)
    agreement = np.abs(np.sum(face_n * vert_n, axis=1))  # winding is not relied upon, direction is
    assert np.allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-6)
    assert np.median(agreement) > 0.95


def test_superquadric_spans_its_semi_axes():
    lo, hi = shapes.superquadric(0.3, 0.2, 0.25, 0.3, 0.3).bounds()
    np.testing.assert_allclose(hi, [0.3, 0.2, 0.25], atol=1e-6)
    np.testing.assert_allclose(lo, [-0.3, -0.2, -0.25], atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_textures_are_deterministic_varied_and_solid(kind):
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (4000, 3))
    a = make_texture(kind, np.random.default_rng(3), 0.3)(pts)
    b = make_texture(kind, np.random.default_rng(3), 0.3)(pts)
    c = make_texture(kind, np.random.default_rng(4), 0.3)(pts)
    assert a.shape == (4000, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)  # same generator state, same texture
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert a.std(axis=0).max() > 0.03  # a pattern, not a flat colour
    # a solid texture: the colour depends on the 3D point only (same point, same colour)
    assert np.array_equal(make_texture(kind, np.random.default_rng(3), 0.3)(pts[:10]), a[:10])


def test_row_counts_sum_and_shrink_with_elevation():
    for n in (49, 57, 64):
        counts = synth._row_counts(n)
        assert sum(counts) == n and counts == sorted(counts)


def test_bundled_sample_is_a_complete_small_scene():
    root = Path(__file__).resolve().parents[1] / "data" / "sample"
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 600 * 1024
    for track, n_in in ((3, 3), (9, 9)):
        train = read_spare_scene(root, track=track)
        test = read_spare_scene(root, track=track, split="test")
        assert len(train) == n_in and len(test) == 10 and train.masks is not None
        assert all(p is not None for p in train.meta["depth_paths"] + test.meta["depth_paths"])
    assert train.meta["n_cameras"] == 49 and train.meta["scene"] == "sample"
