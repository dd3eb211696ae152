"""The interactive viewer's scene and GUI on a viser server: run-folder layers, render-from-view, live training.

:func:`load_run` reads what a run folder holds (splats.ply, cameras.json and, when they can be found, the input
images, the benchmark scene's test cameras and mesh.ply / points.ply). :class:`Viewer` puts it on a viser
server as toggleable layers, with splat scale / opacity-threshold sliders, a "render from this view" button
that renders the browser's camera with the project's own renderer (colour + depth, savable), and live-training
hooks (``progress`` / ``snapshot``) that stream splats, a loss curve and the Gaussian count while training.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.io.jsonfile import read_json_object
from renderers.gaussians.model import GaussianModel
from apps.viewer.layers import (
    add_frustums,
    camera_from_view,
    camera_pose,
    frustum_scale,
    splat_arrays,
)

log = logging.getLogger("recon")

HOME_BACK_OFF = 0.8  # the first view: the first input camera moved a little towards the object (its own frustum behind)
RUN_HINT = "is this a run folder from `recon reconstruct`?"


# ----------------------------------------------------------------------------- run folder contents
@dataclass
class RunContents:
    """Everything the viewer can show from one run folder."""

    run_dir: Path
    model: GaussianModel
    cameras: list[Camera]
    images: list[np.ndarray | None]
    test_cameras: list[Camera] = field(default_factory=list)
    test_images: list[np.ndarray | None] = field(default_factory=list)
    points: tuple[np.ndarray, np.ndarray] | None = None  # (xyz [N,3], rgb [N,3] in [0,1])
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None  # vertices, faces, vertex rgb
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    masks: list[np.ndarray] | None = None  # input masks, when the source had them (for a visual hull)


def _read_json(path: Path, required: bool) -> dict:
    if not path.exists():
        if required:
            raise ReconInputError(f"missing ({RUN_HINT})", path)
        return {}
    return read_json_object(path)


def read_run_cameras(path: Path) -> list[Camera]:
    """The cameras of a run folder's cameras.json; ReconInputError naming the file when malformed."""
    data = _read_json(path, required=True)
    try:
        cams = [Camera.from_dict(d) for d in data["cameras"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ReconInputError(f"malformed camera list ({type(exc).__name__}: {exc})", path) from None
    if not cams:
        raise ReconInputError("holds no cameras", path)
    return cams


def _source_views(source: Path, config: dict, split: str) -> Any:
    from recon.io.detect import read_views

    opts: dict[str, Any] = {"max_size": config.get("max_side")}
    if config.get("track") is not None or split != "train":
        opts["track"] = config.get("track") or 3
    if split != "train":
        opts["split"] = split
    return read_views(source, **opts)


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(path))
    if len(mesh.triangles) == 0:
        log.warning("%s: no triangles; mesh layer left out", path)
        return None
    colors = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.triangles, dtype=np.int32), colors


def _read_points(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    import open3d as o3d

    pcd = o3d.io.read_point_cloud(str(path))
    if len(pcd.points) == 0:
        return None
    xyz = np.asarray(pcd.points, dtype=np.float32)
    rgb = np.asarray(pcd.colors, dtype=np.float32) if pcd.has_colors() else np.full_like(xyz, 0.6)
    return xyz, rgb


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", with_source: bool = True) -> RunContents:
    """Read a run folder for viewing; ReconInputError with a one-line message when it is missing or broken.

    Input images come from the run's source (metrics.json ``source``) when it can still be read, else from
    ``renders/``; test cameras come from the source when it is a benchmark (SpaRe-style) scene.
    """
    from renderers.gaussians.ply import read_ply

    run = Path(run_dir)
    if not run.exists():
        raise ReconInputError("run folder not found", run)
    if not run.is_dir():
        raise ReconInputError(f"not a folder ({RUN_HINT})", run)
    if not (run / "splats.ply").exists():
        raise ReconInputError(f"no splats.ply here ({RUN_HINT})", run)
    model = read_ply(run / "splats.ply", device=device)
    if model.num_gaussians == 0:
        raise ReconInputError("splats.ply holds no Gaussians", run / "splats.ply")
    cameras = read_run_cameras(run / "cameras.json")
    metrics = _read_json(run / "metrics.json", required=False)
    config = _read_json(run / "config.json", required=False)
    out = RunContents(run_dir=run, model=model, cameras=cameras, images=[None] * len(cameras),
                      metrics=metrics, config=config)
    for k, cam in enumerate(cameras):
        render = run / "renders" / f"{cam.name}.png"
        if render.exists():
            from recon.io.images import load_image

            out.images[k] = load_image(render)[0]
    source = Path(metrics["source"]) if isinstance(metrics.get("source"), str) else None
    if with_source and source is not None and source.exists():
        try:
            views = _source_views(source, config, "train")
            by_name = {n: i for i, n in enumerate(views.names)}
            for k, cam in enumerate(cameras):
                if cam.name in by_name:
                    out.images[k] = views.images[by_name[cam.name]]
            if views.masks is not None and len(views.names) == len(cameras):
                out.masks = list(views.masks)
            if (views.meta or {}).get("format") == "spare":
                tests = _source_views(source, config, "test")
                out.test_cameras = list(tests.cameras or [])
                out.test_images = list(tests.images)
        except (ReconInputError, ValueError, OSError) as exc:
            log.warning("viewer: could not read the run's source %s (%s); showing renders instead", source, exc)
    if (run / "mesh.ply").exists():
        out.mesh = _read_mesh(run / "mesh.ply")
    if (run / "points.ply").exists():
        out.points = _read_points(run / "points.ply")
    return out


# ----------------------------------------------------------------------------- image helpers
def depth_to_color(depth: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Expected depth HxW -> uint8 HxWx3 turbo colours (near = red, far = blue), black where nothing was hit."""
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    hit = (d > 0) if alpha is None else (np.asarray(alpha) > 0.5) & (d > 0)
    out = np.zeros((*d.shape, 3), np.uint8)
    if hit.any():
        lo, hi = np.percentile(d[hit], [2, 98])
        t = np.clip((d - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
        col = cv2.applyColorMap(((1.0 - t) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
        out[hit] = col[hit]
    return out


def curve_image(values: list[float], width: int = 320, height: int = 120) -> np.ndarray:
    """A small uint8 plot of ``values`` (log scale when all positive), white on dark grey."""
    import cv2

    img = np.full((height, width, 3), 32, np.uint8)
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return img
    if (v > 0).all():
        v = np.log10(v)
    lo, hi = float(v.min()), float(v.max())
    x = np.linspace(4, width - 5, len(v))
    y = height - 5 - (v - lo) / max(hi - lo, 1e-12) * (height - 10)
    pts = np.stack([x, y], axis=1).round().astype(np.int32)[None]
    cv2.polylines(img, pts, isClosed=False, color=(240, 240, 240), thickness=1, lineType=cv2.LINE_AA)
    return img


# ----------------------------------------------------------------------------- the viewer
class Viewer:
    """Layers + GUI for one viser server. Thread-safe enough for a training thread to call the live hooks."""

    def __init__(self, server: Any, device: str | torch.device | None = None, max_render_side: int = 640) -> None:
        self.server = server
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.max_render_side = max_render_side
        self.model: GaussianModel | None = None
        self.contents: RunContents | None = None
        self.splat_handle: Any = None
        self.num_shown = 0
        self.last_render: dict[str, np.ndarray] | None = None
        self.saved: list[Path] = []
        self.history: list[dict[str, float]] = []
        self._layers: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._home: Camera | None = None
        self._aimed: set[int] = set()
        self._build_gui()
        server.on_client_connect(self._on_connect)

    # ------------------------------------------------------------- GUI
    def _build_gui(self) -> None:
        gui = self.server.gui
        self.gui_info = gui.add_markdown("**recon viewer** — no scene loaded yet")
        with gui.add_folder("Layers"):
            self.gui_layers = {
                "splats": gui.add_checkbox("Gaussians", initial_value=True),
                "cameras": gui.add_checkbox("Input cameras", initial_value=True),
                "test_cameras": gui.add_checkbox("Test cameras", initial_value=True),
                "mesh": gui.add_checkbox("Mesh", initial_value=True),
                "points": gui.add_checkbox("Points (hull / SfM)", initial_value=False),
            }
        for key, box in self.gui_layers.items():
            box.on_update(lambda _e, key=key: self._apply_visibility(key))
        with gui.add_folder("Splats"):
            self.gui_scale = gui.add_slider("Splat scale", min=0.1, max=3.0, step=0.05, initial_value=1.0)
            self.gui_opacity = gui.add_slider("Opacity threshold", min=0.0, max=1.0, step=0.01, initial_value=0.0)
            self.gui_count = gui.add_markdown("0 Gaussians shown")
        self.gui_scale.on_update(lambda _e: self.refresh_splats())
        self.gui_opacity.on_update(lambda _e: self.refresh_splats())
        with gui.add_folder("Render"):
            self.gui_render = gui.add_button("Render from this view")
            self.gui_save = gui.add_button("Save render")
            self.gui_render_rgb = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="render", visible=False)
            self.gui_render_depth = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="depth", visible=False)
        self.gui_render.on_click(lambda event: self.render_client_view(event.client))
        self.gui_save.on_click(lambda _event: self.save_render())
        with gui.add_folder("Training"):
            self.gui_train = gui.add_markdown("not training")
            self.gui_curve = gui.add_image(curve_image([]), label="loss", visible=False)

    def _apply_visibility(self, key: str) -> None:
        visible = bool(self.gui_layers[key].value)
        handles = [self.splat_handle] if key == "splats" else self._layers.get(key, [])
        for h in handles:
            if h is not None:
                h.visible = visible

    def _on_connect(self, client: Any) -> None:
        if self._home is not None:
            self.fly_to(client, self._home, back_off=HOME_BACK_OFF)

    # ------------------------------------------------------------- layers
    def show_run(self, contents: RunContents, points: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Put a run folder's layers on the scene (replacing what was there)."""
        self.contents = contents
        self.model = contents.model.to(self.device)
        scene = self.server.scene
        for handles in self._layers.values():
            for h in handles:
                h.remove()
        self._layers = {}
        self.refresh_splats()
        size = frustum_scale(contents.cameras + contents.test_cameras)
        self._layers["cameras"] = add_frustums(scene, "/cameras/input", contents.cameras, contents.images,
                                               color=(30, 90, 230), scale=size, on_click=self.fly_to)
        if contents.test_cameras:
            self._layers["test_cameras"] = add_frustums(
                scene, "/cameras/test", contents.test_cameras, contents.test_images or None,
                color=(230, 60, 40), scale=size * 0.8, on_click=self.fly_to)
        if contents.mesh is not None:
            self._layers["mesh"] = [self._add_mesh(*contents.mesh)]
        pts = points if points is not None else contents.points
        if pts is not None:
            xyz, rgb = pts
            self._layers["points"] = [scene.add_point_cloud(
                "/points", points=np.asarray(xyz, np.float32), colors=np.asarray(rgb, np.float32),
                point_size=size * 0.02)]
        for key, box in self.gui_layers.items():
            box.disabled = key != "splats" and not self._layers.get(key)  # nothing to show for that layer
            self._apply_visibility(key)
        m = contents.metrics
        psnr = m.get("train_psnr")
        self.gui_info.content = (
            f"**{contents.run_dir.name}** — {self.model.num_gaussians} Gaussians, {len(contents.cameras)} input / "
            f"{len(contents.test_cameras)} test cameras" + (f", train PSNR {psnr:.2f} dB" if psnr else "")
        )
        self._home = contents.cameras[0]
        for client in self.server.get_clients().values():
            self.fly_to(client, self._home, back_off=HOME_BACK_OFF)

    def _add_mesh(self, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> Any:
        if colors is not None:
            import trimesh

            mesh = trimesh.Trimesh(vertices, faces, vertex_colors=(np.clip(colors, 0, 1) * 255).astype(np.uint8),
                                   process=False)
            return self.server.scene.add_mesh_trimesh("/mesh", mesh)
        return self.server.scene.add_mesh_simple("/mesh", vertices, faces, color=(200, 200, 200))

    def refresh_splats(self) -> None:
        """Re-upload the Gaussians with the current scale and opacity threshold."""
        with self._lock:
            if self.model is None:
                return
            arr = splat_arrays(self.model, scale=float(self.gui_scale.value),
                               min_opacity=float(self.gui_opacity.value))
            visible = bool(self.gui_layers["splats"].value)
            self.splat_handle = self.server.scene.add_gaussian_splats(
                "/splats", centers=arr.centers, covariances=arr.covariances, rgbs=arr.rgbs,
                opacities=arr.opacities, visible=visible)
            self.num_shown = len(arr)
            self.gui_count.content = f"{self.num_shown} of {self.model.num_gaussians} Gaussians shown"

    # ------------------------------------------------------------- cameras and renders
    def fly_to(self, client: Any, cam: Camera, back_off: float = 1.0) -> None:
        """Move a browser client's view to ``cam``, orbiting about the point on its axis nearest the Gaussians.

        ``back_off`` > 1 steps back along the axis (the home view: the camera's own frustum stays in sight).
        """
        if client is None:
            return
        wxyz, pos = camera_pose(cam)
        target = self._look_target(cam)
        pos = target + (pos - target) * float(back_off)
        with client.atomic():
            client.camera.fov = cam.fov_y
            client.camera.wxyz = wxyz
            client.camera.position = pos
            client.camera.look_at = target
            client.camera.up_direction = -cam.R[1]

    def _look_target(self, cam: Camera) -> np.ndarray:
        """A point on the camera's optical axis at the distance of the Gaussians' centre."""
        if self.model is None:
            return cam.center + cam.R[2]
        centre = self.model.means.detach().float().mean(0).cpu().numpy()
        dist = max(float((centre - cam.center) @ cam.R[2]), 1e-3)
        return cam.center + dist * cam.R[2]

    def view_camera(self, client: Any) -> Camera:
        """The Camera a browser client is looking through (size capped at ``max_render_side``)."""
        cam = client.camera
        w, h = int(cam.image_width), int(cam.image_height)
        f = min(1.0, self.max_render_side / max(w, h, 1))
        return camera_from_view(cam.wxyz, cam.position, cam.fov, max(1, round(w * f)), max(1, round(h * f)))

    @torch.no_grad()
    def render(self, cam: Camera) -> dict[str, np.ndarray]:
        """Render ``cam`` with the project's renderer: uint8 rgb, float depth, uint8 depth colours."""
        if self.model is None:
            raise RuntimeError("no Gaussians loaded")
        with self._lock:
            out = self.model.render(cam, background=[0.0, 0.0, 0.0], render_mode="RGB+ED")
        rgb = out.rgb_uint8()
        depth = out.depth.float().cpu().numpy()
        alpha = out.alpha.float().cpu().numpy()
        return {"rgb": rgb, "depth": depth, "depth_rgb": depth_to_color(depth, alpha), "alpha": alpha}

    def render_client_view(self, client: Any) -> dict[str, np.ndarray] | None:
        """The "render from this view" button: the clicking client's camera (else any client's, else the first
        input camera), shown in the GUI."""
        if client is None:
            clients = list(self.server.get_clients().values())
            client = clients[0] if clients else None
        if client is not None:
            cam = self.view_camera(client)
        elif self.contents is not None:
            cam = self.contents.cameras[0]
        else:
            return None
        result = self.render(cam)
        self.last_render = result
        self.gui_render_rgb.image = result["rgb"]
        self.gui_render_depth.image = result["depth_rgb"]
        self.gui_render_rgb.visible = self.gui_render_depth.visible = True
        return result

    def save_render(self, folder: str | Path | None = None) -> Path | None:
        """Write the last render (colour and depth colours) as PNGs into ``folder`` (default RUN/viewer/)."""
        from recon.io.images import save_image

        if self.last_render is None:
            self.render_client_view(None)
        if self.last_render is None:
            return None
        if folder is None:
            base = self.contents.run_dir if self.contents is not None else Path.cwd()
            folder = base / "viewer"
        folder = Path(folder)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        k = len(self.saved)
        path = folder / f"render_{stamp}_{k:02d}.png"
        save_image(path, self.last_render["rgb"])
        save_image(folder / f"render_{stamp}_{k:02d}_depth.png", self.last_render["depth_rgb"])
        self.saved.append(path)
        for client in self.server.get_clients().values():
            client.add_notification("Render saved", str(path), auto_close_seconds=5.0)
        return path

    # ------------------------------------------------------------- live training
    def progress(self, step: int, total: int, stats: dict[str, float]) -> None:
        """Training progress hook (step, total, stats): loss curve and counters in the GUI."""
        self.history.append({"step": float(step), **{k: float(v) for k, v in stats.items()}})
        self.gui_train.content = (
            f"step {step}/{total} · loss {stats.get('loss', 0.0):.4f} · PSNR {stats.get('psnr', 0.0):.2f} dB · "
            f"{int(stats.get('gaussians', 0))} Gaussians"
        )
        self.gui_curve.image = curve_image([h["loss"] for h in self.history if "loss" in h])
        self.gui_curve.visible = True

    def snapshot(self, step: int, model: GaussianModel, stats: dict[str, float]) -> None:
        """Training snapshot hook (step, model, stats): stream the current splats to the browser."""
        with torch.no_grad():
            copy = model.to_gaussians() if hasattr(model, "to_gaussians") else model.copy()
        self.model = copy.to(self.device)
        self.refresh_splats()
        if self._home is None and self.model.num_gaussians:
            self.gui_info.content = f"**training** — step {step}, {model.num_gaussians} Gaussians"
            centre = self.model.means.detach().float().mean(0).cpu().numpy()
            for client in self.server.get_clients().values():
                if client.client_id not in self._aimed:  # point each browser at the object once
                    client.camera.look_at = centre
                    self._aimed.add(client.client_id)
