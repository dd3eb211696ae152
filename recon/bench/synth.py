"""Synthesize SpaRe-style object scenes without any download (``recon make-scene``).

A scene is 2-4 procedurally textured objects (superquadrics, boxes, tori, cups/bowls, cones, thin rods and
plates: thin parts and concavities) standing on a textured platform, seen by a DTU-like rig of 49-64 cameras
on a spherical cap (rows at several elevations, all looking at the objects' centre). Images are ray cast with
open3d's ``RaycastingScene``: Lambert shading from one fixed light with a shadow ray, plus ambient, on a
plain background. Ground truth per view: object mask (the objects only; the platform is visible in the image
but not part of the mask) and depth (camera-frame z, OpenCV axes). Everything is determined by the seed.

Splits (0-based view indices, file number = index + 1): a 3-view track (a central camera of the middle row
and one camera on each side of it, 2-3 positions away, like RegNeRF's DTU views 25, 22, 28), a 9-view track
(those 3 plus 3 spread over the top row and 3 over the bottom row) and 10 test views, spread over the cap
by farthest-point sampling and disjoint from all input views. The on-disk layout is described in
:mod:`recon.io.spare`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open3d as o3d

from recon.bench import shapes
from recon.bench.shapes import Mesh
from recon.bench.textures import Texture, make_texture, random_texture
from recon.cameras import Camera, intrinsics
from recon.errors import ReconInputError
from recon.io.spare import write_spare_scene

GENERATOR_VERSION = "synth-1"
N_TEST_VIEWS = 10
MIN_CAMERAS, MAX_CAMERAS = 49, 64
HFOV_DEG = 46.0
ELEVATIONS_DEG = (64.0, 51.0, 38.0, 25.0, 12.0)  # rows, top to bottom
AZIMUTH_SPAN_DEG = 50.0  # each row covers [-span, +span] around the cap's centre
PLATFORM_RADIUS = 1.0
PLATFORM_THICKNESS = 0.08
PLACE_RADIUS = 0.72  # objects stand inside this disc
FRAME_MARGIN = 0.06  # objects keep this fraction of the image's short side away from the borders
AMBIENT, DIFFUSE = 0.4, 0.72
BACKGROUNDS = {"dark": (0.04, 0.04, 0.05), "white": (0.97, 0.97, 0.97)}
MAIN_KINDS = ("superquadric", "box", "cup", "torus")
DETAIL_KINDS = ("torus", "cup", "rod", "plate")
ALL_KINDS = ("superquadric", "box", "cup", "torus", "rod", "plate", "cone")


@dataclass
class SceneObject:
    """One mesh in world coordinates with its solid texture, evaluated in the object's local frame."""

    kind: str
    mesh: Mesh
    texture: Texture
    rotation: np.ndarray  # local -> world
    translation: np.ndarray
    params: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "position": [round(float(x), 4) for x in self.translation],
            "params": {k: round(float(v), 4) for k, v in self.params.items()},
            "texture": self.texture.describe(),
        }


@dataclass
class SynthScene:
    """A rendered scene in memory: every camera's image, mask, depth (and, on request, 3D hit points)."""

    name: str
    seed: int
    cameras: list[Camera]
    images: list[np.ndarray]  # HxWx3 float32 [0, 1]
    masks: list[np.ndarray]  # HxW bool, objects only
    depths: list[np.ndarray]  # HxW float32 camera-frame z, 0 where no surface
    splits: dict[str, dict]
    meta: dict
    points: list[np.ndarray] | None = None  # HxWx3 float64 world hit points (NaN where no surface)


# ----------------------------------------------------------------------------------------- geometry
def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _make_shape(kind: str, rng: np.random.Generator, main: bool) -> tuple[Mesh, np.ndarray, dict]:
    """A primitive of ``kind`` resting on z = 0 in its own frame: (mesh, local tilt rotation, params)."""
    big = 1.25 if main else 1.0
    tilt = np.eye(3)
    if kind == "superquadric":
        p = {
            "a": rng.uniform(0.16, 0.3) * big,
            "b": rng.uniform(0.16, 0.3) * big,
            "c": rng.uniform(0.15, 0.32) * big,
            "e1": float(rng.choice([0.3, 0.6, 1.0, 1.5])),
            "e2": float(rng.choice([0.3, 0.6, 1.0, 1.5])),
        }
        mesh = shapes.superquadric(p["a"], p["b"], p["c"], p["e1"], p["e2"])
        mesh = mesh.transformed(np.eye(3), np.array([0.0, 0.0, p["c"]]))
    elif kind == "box":
        p = {
            "sx": rng.uniform(0.22, 0.45) * big,
            "sy": rng.uniform(0.22, 0.45) * big,
            "sz": rng.uniform(0.15, 0.45) * big,
        }
        mesh = shapes.box(p["sx"], p["sy"], p["sz"]).transformed(np.eye(3), np.array([0.0, 0.0, p["sz"] / 2]))
    elif kind == "torus":
        p = {
            "major": rng.uniform(0.17, 0.27) * big,
            "minor": rng.uniform(0.045, 0.09) * big,
            "standing": float(rng.random() < 0.6),
        }
        mesh = shapes.torus(p["major"], p["minor"])
        if p["standing"]:  # stood on its rim: the hole faces the cameras
            tilt = _rot_x(np.pi / 2)
            mesh = mesh.transformed(tilt, np.array([0.0, 0.0, p["major"] + p["minor"] - 0.01]))
        else:
            mesh = mesh.transformed(np.eye(3), np.array([0.0, 0.0, p["minor"]]))
    elif kind == "cup":
        bowl = float(rng.random() < 0.4)
        rb = rng.uniform(0.09, 0.16) * big
        p = {
            "radius_bottom": rb,
            "radius_top": rb + rng.uniform(0.03, 0.12) * (1 + bowl),
            "height": rng.uniform(0.2, 0.38) * big * (0.7 if bowl else 1.0),
            "wall": rng.uniform(0.015, 0.03),
            "bowl": bowl * rng.uniform(0.5, 1.0),
        }
        mesh = shapes.cup(p["radius_bottom"], p["radius_top"], p["height"], p["wall"], p["bowl"])
    elif kind == "rod":
        p = {"radius": rng.uniform(0.012, 0.025), "height": rng.uniform(0.35, 0.65), "tilt": rng.uniform(0.0, 0.3)}
        tilt = _rot_x(p["tilt"])
        mesh = shapes.cylinder(p["radius"], p["height"], 24).transformed(tilt, np.zeros(3))
    elif kind == "plate":
        p = {"width": rng.uniform(0.28, 0.45), "height": rng.uniform(0.22, 0.4), "thickness": rng.uniform(0.015, 0.03)}
        mesh = shapes.box(p["width"], p["thickness"], p["height"]).transformed(
            np.eye(3), np.array([0.0, 0.0, p["height"] / 2])
        )
    elif kind == "cone":
        p = {"radius": rng.uniform(0.1, 0.2) * big, "height": rng.uniform(0.25, 0.5) * big}
        mesh = shapes.cone(p["radius"], p["height"])
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return mesh, tilt, p


def _build_objects(rng: np.random.Generator) -> tuple[SceneObject, list[SceneObject]]:
    """The platform and 2-4 objects placed on it without overlaps."""
    plat_mesh = shapes.cylinder(PLATFORM_RADIUS, PLATFORM_THICKNESS, 128).transformed(
        np.eye(3), np.array([0.0, 0.0, -PLATFORM_THICKNESS])
    )
    plat_tex = make_texture(str(rng.choice(["wood", "marble", "granite", "checker"])), rng, rng.uniform(0.25, 0.4))
    platform = SceneObject(
        "platform",
        plat_mesh,
        plat_tex,
        np.eye(3),
        np.zeros(3),
        {"radius": PLATFORM_RADIUS, "thickness": PLATFORM_THICKNESS},
    )

    n = int(rng.integers(2, 5))
    kinds = [str(rng.choice(MAIN_KINDS)), str(rng.choice(DETAIL_KINDS))]
    kinds += [str(rng.choice(ALL_KINDS)) for _ in range(n - 2)]
    families = ["procedural", "photo"] + [None] * (n - 2)
    rng.shuffle(families)
    objects: list[SceneObject] = []
    placed: list[tuple[np.ndarray, float]] = []
    for k, kind in enumerate(kinds):
        mesh, tilt, params = _make_shape(kind, rng, main=(k == 0))
        yaw = rng.uniform(0, 2 * np.pi)
        rot = _rot_z(yaw)
        spot, scale = None, 1.0
        for _shrink in range(10 if k < 2 else 4):  # if it does not fit anywhere, try it smaller
            footprint = scale * float(np.linalg.norm((mesh.vertices @ rot.T)[:, :2], axis=1).max())
            r_max = max(PLACE_RADIUS - footprint, 0.0) * (0.35 if k == 0 else 1.0)
            for _attempt in range(200):
                r, a = r_max * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
                xy = np.array([r * np.cos(a), r * np.sin(a)])
                if all(np.linalg.norm(xy - c) > footprint + f + 0.03 for c, f in placed):
                    spot = xy
                    break
            if spot is not None:
                break
            scale *= 0.8
        if spot is None:
            continue
        if scale != 1.0:  # uniform scaling about the origin keeps the shape resting on z = 0
            mesh = Mesh(mesh.vertices * scale, mesh.triangles, mesh.normals)
            params["scale"] = scale
        placed.append((spot, footprint))
        t = np.array([spot[0], spot[1], 0.0])
        tex = random_texture(rng, scale=rng.uniform(0.22, 0.4), family=families[k])
        objects.append(SceneObject(kind, mesh.transformed(rot, t), tex, rot @ tilt, t, {**params, "yaw": yaw}))
    return platform, objects


# ----------------------------------------------------------------------------------------- rig and splits
def _row_counts(n: int) -> list[int]:
    """Split ``n`` cameras over the rows in proportion to each row's circumference."""
    w = np.cos(np.radians(ELEVATIONS_DEG))
    share = n * w / w.sum()
    counts = np.floor(share).astype(int)
    for k in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    return [int(c) for c in counts]


def _build_rig(
    rng: np.random.Generator, n: int, width: int, height: int, target: np.ndarray, points: np.ndarray
) -> tuple[list[Camera], list[list[int]], float]:
    """Cameras on a spherical cap around ``target``, row by row (snake order, as a robot arm would go).

    The cap radius is the smallest at which every camera sees all of ``points`` (the objects) with a
    margin, so the objects fill the frames as in DTU. Returns (cameras, rows of indices, radius).
    """
    fx = (width / 2) / np.tan(np.radians(HFOV_DEG) / 2)
    K = intrinsics(fx, fx, width / 2, height / 2)
    dirs, scales, rows = [], [], []
    for r, (elev, count) in enumerate(zip(ELEVATIONS_DEG, _row_counts(n))):
        az = np.linspace(-AZIMUTH_SPAN_DEG, AZIMUTH_SPAN_DEG, count)
        if r % 2:
            az = az[::-1]
        rows.append(list(range(len(dirs), len(dirs) + count)))
        for a in az:
            e = np.radians(elev + rng.uniform(-1.0, 1.0))
            a = np.radians(a + rng.uniform(-1.0, 1.0))
            dirs.append(np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)]))
            scales.append(rng.uniform(0.98, 1.02))
    up = np.array([0.0, 0.0, 1.0])

    def rig(radius: float) -> list[Camera]:
        return [
            Camera.look_at(target + radius * s * d, target, up, K, width, height, name=f"cam_{i + 1:03d}")
            for i, (d, s) in enumerate(zip(dirs, scales))
        ]

    def fits(radius: float) -> bool:
        m = FRAME_MARGIN * min(width, height)
        for cam in rig(radius):
            uv, z = cam.project(points)
            if np.any(z <= 0) or np.any(uv < m) or np.any(uv[:, 0] > width - m) or np.any(uv[:, 1] > height - m):
                return False
        return True

    lo, hi = 0.5, 1.0
    while not fits(hi):
        lo, hi = hi, hi * 1.5
    for _ in range(20):  # bisection on the radius
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return rig(hi), rows, hi


def _spread(row: list[int], rng: np.random.Generator) -> list[int]:
    """Three distinct cameras of a row: near its left end, its middle and near its right end (seeded jitter)."""
    n = len(row)
    left = int(np.clip(round(0.15 * (n - 1)) + rng.integers(-1, 2), 0, n - 3))
    right = int(np.clip(n - 1 - round(0.15 * (n - 1)) + rng.integers(-1, 2), left + 2, n - 1))
    mid = int(np.clip((left + right) // 2 + rng.integers(-1, 2), left + 1, right - 1))
    return [row[left], row[mid], row[right]]


def _choose_splits(rows: list[list[int]], cameras: list[Camera], rng: np.random.Generator) -> dict[str, dict]:
    """3-view and 9-view input views and 10 shared test views (0-based indices)."""
    mid = rows[len(rows) // 2]
    c = len(mid) // 2 + int(rng.integers(-1, 2))
    step = max(2, round(len(mid) / 4))
    track3 = [mid[c], mid[c - step], mid[c + step]]
    track9 = track3 + _spread(rows[0], rng) + _spread(rows[-1], rng)
    centres = np.stack([cam.center for cam in cameras])
    candidates = [i for i in range(len(cameras)) if i not in track9]
    tests = [int(rng.choice(candidates))]
    dist = np.linalg.norm(centres[candidates] - centres[tests[0]], axis=1)
    # Farthest-point sampling: test views cover the whole cap (also far from the input views).
    inputs_dist = np.min(np.linalg.norm(centres[candidates][:, None] - centres[track9][None], axis=2), axis=1)
    while len(tests) < N_TEST_VIEWS:
        score = np.minimum(dist, 1.5 * inputs_dist)
        score[[candidates.index(t) for t in tests]] = -1.0
        nxt = candidates[int(np.argmax(score))]
        tests.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(centres[candidates] - centres[nxt], axis=1))
    tests = sorted(tests)
    return {
        "track3": {"input_views": track3, "test_views": tests},
        "track9": {"input_views": track9, "test_views": tests},
    }


# ----------------------------------------------------------------------------------------- rendering
def _edge_pixels(
    gid: np.ndarray, depth: np.ndarray, rgb: np.ndarray, rel_jump: float = 0.03, contrast: float = 0.12
) -> np.ndarray:
    """HxW bool: pixels whose 4-neighbourhood sees another geometry, a depth jump or a colour edge
    (texture or shadow boundary); both sides of an edge are flagged."""
    edge = np.zeros(gid.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        ga, gb, da, db = gid[tuple(a)], gid[tuple(b)], depth[tuple(a)], depth[tuple(b)]
        diff = (ga != gb) | (np.abs(da - db) > rel_jump * np.maximum(da, db))
        diff |= np.abs(rgb[tuple(a)] - rgb[tuple(b)]).max(axis=-1) > contrast
        edge[tuple(a)] |= diff
        edge[tuple(b)] |= diff
    return edge


class Renderer:
    """Ray caster for a platform + objects: shaded RGB, object mask, depth and hit points per camera."""

    def __init__(
        self, platform: SceneObject, objects: list[SceneObject], light_dir: np.ndarray, background: np.ndarray
    ) -> None:
        self.items = [platform] + list(objects)  # geometry id = position in this list
        self.scene = o3d.t.geometry.RaycastingScene()
        for item in self.items:
            self.scene.add_triangles(item.mesh.vertices.astype(np.float32), item.mesh.triangles.astype(np.uint32))
        self.light = light_dir / np.linalg.norm(light_dir)
        self.background = np.asarray(background, dtype=np.float32)

    def _cast(self, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
        rays = np.concatenate([origins, dirs], axis=1).astype(np.float32)
        out = self.scene.cast_rays(o3d.core.Tensor(rays))
        return {k: v.numpy() for k, v in out.items()}

    def shade(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rgb Nx3 float32, t N float64 (inf on miss), geometry id N (-1 on miss), world points Nx3)."""
        hit_info = self._cast(origins, dirs)
        t = hit_info["t_hit"].astype(np.float64)
        hit = np.isfinite(t)
        gid = np.where(hit, hit_info["geometry_ids"].astype(np.int64), -1)
        points = origins + np.where(hit, t, 0.0)[:, None] * dirs
        rgb = np.broadcast_to(self.background, (len(t), 3)).copy()
        if not hit.any():
            return rgb, t, gid, points
        h = np.flatnonzero(hit)
        prim = hit_info["primitive_ids"][h].astype(np.int64)
        uv = hit_info["primitive_uvs"][h].astype(np.float64)
        normals = np.zeros((len(h), 3))
        albedo = np.zeros((len(h), 3), dtype=np.float32)
        for g, item in enumerate(self.items):
            sel = gid[h] == g
            if not sel.any():
                continue
            tri = item.mesh.triangles[prim[sel]]
            vn = item.mesh.normals
            w = uv[sel]
            n = (1 - w[:, :1] - w[:, 1:]) * vn[tri[:, 0]] + w[:, :1] * vn[tri[:, 1]] + w[:, 1:] * vn[tri[:, 2]]
            normals[sel] = n
            local = np.einsum("ij,jk->ik", points[h[sel]] - item.translation, item.rotation)  # world -> object
            albedo[sel] = item.texture(local)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        facing = np.sum(normals * dirs[h], axis=1) > 0
        normals[facing] *= -1.0  # towards the viewer
        ndotl = np.clip(np.einsum("ij,j->i", normals, self.light), 0.0, None)
        lit = ndotl > 0
        visible = np.zeros(len(h), dtype=bool)
        if lit.any():
            so = points[h[lit]] + 2e-3 * normals[lit]
            shadow_rays = np.concatenate([so, np.broadcast_to(self.light, so.shape)], axis=1).astype(np.float32)
            occluded = self.scene.test_occlusions(o3d.core.Tensor(shadow_rays)).numpy()
            visible[np.flatnonzero(lit)] = ~occluded
        sky = 0.8 + 0.2 * normals[:, 2]  # a touch of hemisphere light so shadowed faces keep their shape
        light = AMBIENT * sky + DIFFUSE * ndotl * visible
        rgb[h] = albedo * light[:, None].astype(np.float32)
        return np.clip(rgb, 0.0, 1.0), t, gid, points

    def render(self, cam: Camera, antialias: int = 2) -> dict[str, np.ndarray]:
        """rgb (HxWx3 float32), mask (HxW bool, objects only), depth (HxW float32 z), points (HxWx3, NaN miss).

        Mask, depth and points come from the ray through each pixel centre (exact ground truth). With
        ``antialias`` s > 1, pixels on a silhouette, depth or colour edge get the mean colour of s x s
        sub-pixel rays, as a camera's pixel would integrate (edges are a small share of the pixels).
        """
        H, W = cam.height, cam.width
        grid = cam.pixel_grid().reshape(-1, 2)
        d = cam.world_directions(grid)
        o = np.broadcast_to(cam.center, d.shape)
        rgb, t, gid, points = self.shade(o, d)
        hit = np.isfinite(t)
        depth = np.zeros(H * W)
        depth[hit] = t[hit] * np.einsum("ij,j->i", d[hit], cam.R[2])
        points[~hit] = np.nan
        if antialias > 1:
            edges = _edge_pixels(gid.reshape(H, W), depth.reshape(H, W), rgb.reshape(H, W, 3)).ravel()
            idx = np.flatnonzero(edges)
            if len(idx):
                s = int(antialias)
                offs = (np.arange(s) + 0.5) / s - 0.5
                acc = np.zeros((len(idx), 3))
                for oy in offs:
                    for ox in offs:
                        dirs = cam.world_directions(grid[idx] + np.array([ox, oy]))
                        acc += self.shade(o[: len(idx)], dirs)[0]
                rgb[idx] = (acc / (s * s)).astype(np.float32)
        return {
            "rgb": rgb.reshape(H, W, 3).astype(np.float32),
            "mask": (gid > 0).reshape(H, W),
            "depth": depth.reshape(H, W).astype(np.float32),
            "points": points.reshape(H, W, 3),
        }


# ----------------------------------------------------------------------------------------- entry points
def _validate(seed: int, width: int, height: int, n_cameras: int) -> None:
    if seed < 0:
        raise ReconInputError(f"seed must be >= 0, got {seed}")
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise ReconInputError(f"image size must be within 16..4096 pixels per side, got {width}x{height}")
    if not MIN_CAMERAS <= n_cameras <= MAX_CAMERAS:
        raise ReconInputError(
            f"number of cameras must be {MIN_CAMERAS}-{MAX_CAMERAS} (a DTU-like rig), got {n_cameras}"
        )


def synthesize(
    seed: int = 0,
    width: int = 400,
    height: int = 300,
    n_cameras: int = 49,
    *,
    views: list[int] | str | None = None,
    antialias: int = 2,
    keep_points: bool = False,
) -> SynthScene:
    """Build and render a scene in memory.

    ``views``: None renders every camera; a list renders only those indices; "splits" renders only the
    views some split uses (input views of both tracks and the test views). Views not rendered are None.
    ``keep_points`` also returns the world-space hit point of every pixel-centre ray.
    """
    _validate(seed, width, height, n_cameras)
    rng = np.random.default_rng(seed)
    platform, objects = _build_objects(rng)
    verts = np.concatenate([o.mesh.vertices for o in objects])
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    target = (lo + hi) / 2
    cameras, rows, radius = _build_rig(rng, n_cameras, width, height, target, verts[::7])
    splits = _choose_splits(rows, cameras, rng)
    light_az, light_el = np.radians(rng.uniform(-60, 60)), np.radians(rng.uniform(40, 70))
    light = np.array([np.cos(light_el) * np.cos(light_az), np.cos(light_el) * np.sin(light_az), np.sin(light_el)])
    bg_name = str(rng.choice(sorted(BACKGROUNDS)))
    renderer = Renderer(platform, objects, light, np.array(BACKGROUNDS[bg_name]))

    if views is None:
        todo = list(range(n_cameras))
    elif isinstance(views, str):
        if views != "splits":
            raise ValueError(f"views must be None, a list of indices or 'splits', got {views!r}")
        todo = sorted({i for e in splits.values() for key in ("input_views", "test_views") for i in e[key]})
    else:
        todo = sorted(set(int(v) for v in views))
        if todo and not (0 <= todo[0] and todo[-1] < n_cameras):
            raise ValueError(f"view indices must be within 0..{n_cameras - 1}")
    images, masks, depths, points = ([None] * n_cameras for _ in range(4))
    for i in todo:
        out = renderer.render(cameras[i], antialias)
        images[i], masks[i], depths[i] = out["rgb"], out["mask"], out["depth"]
        if keep_points:
            points[i] = out["points"]
    name = f"synth_{seed}"
    meta = {
        "generator": {"module": __name__, "version": GENERATOR_VERSION, "seed": seed, "antialias": antialias},
        "mask_meaning": "objects only; the platform is visible in the images but not masked",
        "background": {"name": bg_name, "rgb": list(BACKGROUNDS[bg_name])},
        "light": {"direction": [round(float(x), 6) for x in light], "ambient": AMBIENT, "diffuse": DIFFUSE},
        "rig": {
            "rows": rows,
            "elevations_deg": list(ELEVATIONS_DEG),
            "azimuth_span_deg": AZIMUTH_SPAN_DEG,
            "radius": round(radius, 6),
            "target": [round(float(x), 6) for x in target],
            "hfov_deg": HFOV_DEG,
        },
        "objects": [o.describe() for o in objects],
        "platform": platform.describe(),
        "object_bounds": {"min": lo.round(6).tolist(), "max": hi.round(6).tolist()},
    }
    return SynthScene(name, seed, cameras, images, masks, depths, splits, meta, points if keep_points else None)


def make_scene(
    out: str | Path,
    seed: int = 0,
    width: int = 400,
    height: int = 300,
    n_cameras: int = 49,
    *,
    views: list[int] | str | None = None,
    antialias: int = 2,
    overwrite: bool = False,
    name: str | None = None,
    depth: bool = True,
) -> Path:
    """Synthesize a scene and write it to ``out`` (layout: :mod:`recon.io.spare`); returns ``out``.

    ``views`` (see :func:`synthesize`) writes only some views' images, e.g. "splits" for a small bundled
    sample; the rig and the splits stay complete. ``depth=False`` leaves out the depth maps. ``out`` must
    not exist or be empty unless ``overwrite``. The write is atomic: a failure leaves no partial scene.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReconInputError("output path exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ReconInputError("output folder exists and is not empty", out)
    sc = synthesize(seed, width, height, n_cameras, views=views, antialias=antialias)
    done = [i for i in range(n_cameras) if sc.images[i] is not None]
    return write_spare_scene(
        out,
        sc.cameras,
        {i: sc.images[i] for i in done},
        name=name or sc.name,
        masks={i: sc.masks[i] for i in done},
        depths={i: sc.depths[i] for i in done} if depth else None,
        splits=sc.splits,
        dataset="synthetic",
        meta=sc.meta,
        overwrite=overwrite,
    )


def ground_truth_mesh(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The objects of scene ``seed`` as one mesh (vertices [V,3] float64, triangles [F,3] int64), no platform.

    Rebuilt from the seed without rendering (the objects are drawn first from the seed's generator, so the
    image size and camera count do not change them), in the world frame of the scene's cameras.
    """
    if seed < 0:
        raise ReconInputError(f"seed must be >= 0, got {seed}")
    _platform, objects = _build_objects(np.random.default_rng(seed))
    verts, tris, offset = [], [], 0
    for obj in objects:
        verts.append(np.asarray(obj.mesh.vertices, dtype=np.float64))
        tris.append(np.asarray(obj.mesh.triangles, dtype=np.int64) + offset)
        offset += len(obj.mesh.vertices)
    return np.concatenate(verts), np.concatenate(tris)
