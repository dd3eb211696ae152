"""The viewer's scene and GUI on a viser server: a run's layers, camera go-tos, render-from-view, live training.

:class:`Viewer` puts a :class:`~apps.viewer.run_contents.RunContents` on a viser server as toggleable layers
(Gaussians, mesh, input and test cameras, points), with splat scale / opacity-threshold sliders, "go to
input/test camera N", a "render from this view" button that renders the browser's camera with the run's own
model (colour + depth, savable), and live-training hooks (``progress`` / ``snapshot``) that stream splats, a
loss curve and the Gaussian count while training. Every browser opens on the first input camera's own view.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from apps.viewer.framing import ViewPose, content_bounds, view_from_bounds, view_from_camera, world_up
from apps.viewer.layers import add_frustums, add_mesh, camera_from_view, frustum_scale, splat_arrays
from apps.viewer.run_contents import RunContents, display_gaussians, render_device
from recon.cameras import Camera
from renderers.gaussians.model import GaussianModel

NO_CAMERA = "(no cameras)"
CAMERA_KINDS = {"input": "cameras", "test": "test_cameras"}  # go-to kind -> layer key


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
        self.device = (
            torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.max_render_side = max_render_side
        self.model: Any = None  # renders "render from this view": the run's own model (any representation)
        self.gaussians: GaussianModel | None = None  # drawn as splats
        self.contents: RunContents | None = None
        self.splat_handle: Any = None
        self.num_shown = 0
        self.last_render: dict[str, np.ndarray] | None = None
        self.saved: list[Path] = []
        self.history: list[dict[str, float]] = []
        self.home: ViewPose | None = None
        self.up = np.array([0.0, 0.0, 1.0])
        self.cameras: dict[str, list[Camera]] = {kind: [] for kind in CAMERA_KINDS}
        self._centre: np.ndarray | None = None
        self._camera_choices: dict[str, tuple[str, int]] = {}
        self._inside: set[tuple[str, int]] = set()  # frustums hidden because a browser's view sits inside them
        self._inside_radius = 0.0
        self._inside_lock = threading.Lock()
        self._layers: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
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
                "mesh": gui.add_checkbox("Mesh", initial_value=True),
                "cameras": gui.add_checkbox("Input cameras", initial_value=True),
                "test_cameras": gui.add_checkbox("Test cameras", initial_value=True),
                "points": gui.add_checkbox("Points (hull / SfM)", initial_value=False),
            }
        for key, box in self.gui_layers.items():
            box.on_update(lambda _e, key=key: self._apply_visibility(key))
        with gui.add_folder("Cameras"):
            self.gui_camera = gui.add_dropdown("Camera", options=(NO_CAMERA,), initial_value=NO_CAMERA)
            self.gui_goto = gui.add_button("Go to camera", disabled=True)
            self.gui_home = gui.add_button("Start view", disabled=True)
        self.gui_goto.on_click(lambda _e: self.go_to_choice(self.gui_camera.value))
        self.gui_home.on_click(lambda _e: self.go_home())
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
        if key == "splats":
            if self.splat_handle is not None:
                self.splat_handle.visible = visible
            return
        kind = next((kind for kind, layer in CAMERA_KINDS.items() if layer == key), None)
        for k, h in enumerate(self._layers.get(key, [])):
            h.visible = visible and (kind, k) not in self._inside

    def _on_connect(self, client: Any) -> None:
        client.camera.on_update(self._on_camera_update)
        if self.home is not None:
            self.set_view(client, self.home)
            self._on_camera_update(None)

    # ------------------------------------------------------------- layers
    def show_run(self, contents: RunContents, points: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Put a run folder's layers on the scene (replacing what was there) and open every view on its first
        input camera."""
        self.contents = contents
        self.model = contents.model.to(render_device(contents.model, self.device))
        self.gaussians = contents.gaussians  # only drawn (as numpy arrays): stays where it was loaded
        scene = self.server.scene
        for handles in self._layers.values():
            for h in handles:
                h.remove()
        self._layers = {}
        self._inside = set()
        # a mesh run's Gaussians are where its mesh came from: offered, not shown
        self.gui_layers["splats"].value = self.gaussians is not None and contents.representation != "mesh"
        self.refresh_splats()
        self.cameras = {"input": list(contents.cameras), "test": list(contents.test_cameras)}
        size = frustum_scale(contents.cameras + contents.test_cameras)
        self._inside_radius = 0.5 * size
        self._layers["cameras"] = add_frustums(
            scene,
            "/cameras/input",
            contents.cameras,
            contents.images,
            color=(30, 90, 230),
            scale=size,
            on_click=lambda client, cam: self._clicked(client, "input", cam),
        )
        if contents.test_cameras:
            self._layers["test_cameras"] = add_frustums(
                scene,
                "/cameras/test",
                contents.test_cameras,
                contents.test_images or None,
                color=(230, 60, 40),
                scale=size * 0.8,
                on_click=lambda client, cam: self._clicked(client, "test", cam),
            )
        if contents.mesh is not None:
            self._layers["mesh"] = [add_mesh(scene, "/mesh", *contents.mesh)]
        pts = points if points is not None else contents.points
        if pts is not None:
            xyz, rgb = pts
            self._layers["points"] = [
                scene.add_point_cloud(
                    "/points",
                    points=np.asarray(xyz, np.float32),
                    colors=np.asarray(rgb, np.float32),
                    point_size=size * 0.02,
                )
            ]
        for key, box in self.gui_layers.items():
            has = self.gaussians is not None if key == "splats" else bool(self._layers.get(key))
            box.disabled = not has  # nothing to show for that layer
        self._camera_choices = {
            f"{kind} camera {k}" + (f" ({cam.name})" if cam.name else ""): (kind, k)
            for kind, cams in self.cameras.items()
            for k, cam in enumerate(cams)
        }
        self.gui_camera.options = tuple(self._camera_choices) or (NO_CAMERA,)
        self.gui_goto.disabled = not self._camera_choices
        self.gui_info.content = self._describe(contents)
        self._frame(contents)
        for key in self.gui_layers:
            self._apply_visibility(key)

    def _describe(self, contents: RunContents) -> str:
        parts = [f"**{contents.run_dir.name}** — {contents.representation}"]
        if contents.mesh is not None:
            parts.append(f"mesh of {len(contents.mesh[1])} faces")
        count = getattr(contents.model, "num_gaussians", None)
        if count is not None:
            baked = hasattr(contents.model, "to_gaussians")
            parts.append(f"{count} " + ("neural primitives (drawn baked to Gaussians)" if baked else "Gaussians"))
        parts.append(f"{len(contents.cameras)} input / {len(contents.test_cameras)} test cameras")
        psnr = contents.metrics.get("train_psnr")
        if isinstance(psnr, (int, float)):
            parts.append(f"train PSNR {psnr:.2f} dB")
        return ", ".join(parts)

    def _frame(self, contents: RunContents) -> None:
        """The start view: the first input camera's own (it sees the object from outside), else the content's
        bounds; the world up from the cameras; every connected browser goes there, new ones start there."""
        self.up = world_up(contents.cameras)
        self.server.scene.set_up_direction(tuple(float(x) for x in self.up))
        bounds = content_bounds(contents.content_points())
        self._centre = None if bounds is None else 0.5 * (bounds[0] + bounds[1])
        if contents.cameras:
            self.home = view_from_camera(contents.cameras[0], self.up, self._centre)
        elif bounds is not None:
            self.home = view_from_bounds(*bounds, self.up)
        else:
            return
        initial = self.server.initial_camera
        initial.position, initial.look_at = self.home.position, self.home.look_at
        initial.up, initial.fov = self.home.up, self.home.fov
        self.gui_home.disabled = False
        self.go_home()

    def refresh_splats(self) -> None:
        """Re-upload the Gaussians with the current scale and opacity threshold."""
        with self._lock:
            if self.gaussians is None:
                if self.splat_handle is not None:
                    self.splat_handle.remove()
                    self.splat_handle = None
                self.num_shown = 0
                self.gui_count.content = "no Gaussians in this run"
                return
            arr = splat_arrays(
                self.gaussians, scale=float(self.gui_scale.value), min_opacity=float(self.gui_opacity.value)
            )
            visible = bool(self.gui_layers["splats"].value)
            self.splat_handle = self.server.scene.add_gaussian_splats(
                "/splats",
                centers=arr.centers,
                covariances=arr.covariances,
                rgbs=arr.rgbs,
                opacities=arr.opacities,
                visible=visible,
            )
            self.num_shown = len(arr)
            self.gui_count.content = f"{self.num_shown} of {self.gaussians.num_gaussians} Gaussians shown"

    # ------------------------------------------------------------- where the browsers look
    def set_view(self, client: Any, view: ViewPose) -> None:
        """Move one browser's camera to ``view`` (orientation follows from position, look-at point and up)."""
        if client is None:
            return
        with client.atomic():
            client.camera.fov = view.fov
            client.camera.up_direction = view.up
            client.camera.position = view.position
            client.camera.look_at = view.look_at

    def view_of(self, kind: str, index: int) -> ViewPose:
        """The view through input (``kind="input"``) or test camera ``index``."""
        return view_from_camera(self.cameras[kind][index], self.up, self._centre)

    def go_to(self, kind: str, index: int, clients: list[Any] | None = None) -> ViewPose:
        """Move every connected browser (or ``clients``) to input/test camera ``index``."""
        view = self.view_of(kind, index)
        for client in clients if clients is not None else list(self.server.get_clients().values()):
            self.set_view(client, view)
        self._on_camera_update(None)
        label = next((name for name, choice in self._camera_choices.items() if choice == (kind, index)), None)
        if label is not None and self.gui_camera.value != label:  # the dropdown names where the view is
            self.gui_camera.value = label
        return view

    def go_to_choice(self, label: str) -> ViewPose | None:
        """The "Go to camera" button: the camera picked in the dropdown."""
        choice = self._camera_choices.get(label)
        return None if choice is None else self.go_to(*choice)

    def go_home(self) -> None:
        """Every connected browser back to the start view."""
        if self.home is None:
            return
        for client in list(self.server.get_clients().values()):
            self.set_view(client, self.home)
        self._on_camera_update(None)

    def _clicked(self, client: Any, kind: str, cam: Camera) -> None:
        index = next(k for k, c in enumerate(self.cameras[kind]) if c is cam)
        self.go_to(kind, index, clients=[client])

    def _on_camera_update(self, _camera: Any) -> None:
        """Hide the frustums a browser's view sits inside (a camera's own frustum, its photo on it, would fill
        the view through it); show them again once every browser has moved away."""
        positions = []
        for client in list(self.server.get_clients().values()):
            try:
                positions.append(np.asarray(client.camera.position, dtype=np.float64))
            except AssertionError:  # a browser that has not sent its camera yet
                continue
        inside = {
            (kind, k)
            for kind, cams in self.cameras.items()
            for k, cam in enumerate(cams)
            if any(np.linalg.norm(p - cam.center) < self._inside_radius for p in positions)
        }
        with self._inside_lock:
            changed = inside ^ self._inside
            self._inside = inside
            for kind in {kind for kind, _k in changed}:
                self._apply_visibility(CAMERA_KINDS[kind])

    # ------------------------------------------------------------- renders
    def view_camera(self, client: Any) -> Camera:
        """The Camera a browser client is looking through (size capped at ``max_render_side``)."""
        cam = client.camera
        w, h = int(cam.image_width), int(cam.image_height)
        f = min(1.0, self.max_render_side / max(w, h, 1))
        return camera_from_view(cam.wxyz, cam.position, cam.fov, max(1, round(w * f)), max(1, round(h * f)))

    @torch.no_grad()
    def render(self, cam: Camera) -> dict[str, np.ndarray]:
        """Render ``cam`` with the run's model: uint8 rgb, float depth, uint8 depth colours, alpha."""
        if self.model is None:
            raise RuntimeError("nothing loaded to render")
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

    def snapshot(self, step: int, model: Any, stats: dict[str, float]) -> None:
        """Training snapshot hook (step, model, stats): stream a copy of the current splats to the browser
        (render-from-view renders that copy: the model itself is being trained in another thread)."""
        with torch.no_grad():
            shown = display_gaussians(model)
            if shown is None:
                return
            if shown is model or shown is getattr(model, "gaussians", None):
                shown = shown.copy()
        self.gaussians = shown
        self.model = self.gaussians
        self.refresh_splats()
        if self.home is None and self.gaussians.num_gaussians:
            self.gui_info.content = f"**training** — step {step}, {model.num_gaussians} Gaussians"
            bounds = content_bounds(self.gaussians.means.detach().float().cpu().numpy())
            if bounds is None:
                return
            view = view_from_bounds(*bounds, self.up)
            for client in list(self.server.get_clients().values()):
                if client.client_id not in self._aimed:  # frame each browser on the object once
                    self.set_view(client, view)
                    self._aimed.add(client.client_id)
