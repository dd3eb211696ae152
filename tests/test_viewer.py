"""The viser viewer: layers from a run folder, GUI controls, errors, port fallback, and a real headless browser.

The browser tests open the viewer of a short reconstruction of the bundled sample in Debian's chromium
(driven by selenium through the system chromedriver, software WebGL) and compare screenshots. They skip, with
the reason, only when chromium/chromedriver are not installed. The screenshot is kept as an artifact in
``$RECON_TEST_ARTIFACTS`` (default: the test's temporary folder) as ``viewer_sample.png``.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.viewer import open_viewer
from recon.cameras import Camera
from recon.config import make_config
from recon.errors import ReconInputError
from recon.pipeline import reconstruct
from renderers.gaussians.model import GaussianModel
from apps.viewer.scene import load_run
from apps.viewer.layers import camera_from_view, camera_pose, splat_arrays

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)


@pytest.fixture(scope="module")
def live_training(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A short reconstruction of the bundled sample streamed into a live viewer (as `reconstruct --view`)."""
    from apps.viewer import start_live

    out = tmp_path_factory.mktemp("viewer") / "run"
    cfg = make_config("fast", iterations=100, track=3, max_side=160, init_points=1500, hull_resolution=40,
                      refine_start=30, refine_every=30, sh_raise_every=50)
    viewer = start_live(port=_free_port(), say=lambda _s: None)
    seen: list[int] = []

    def snapshot(step: int, model: GaussianModel, stats: dict) -> None:
        viewer.snapshot(step, model, stats)
        seen.append(viewer.num_shown)

    try:
        reconstruct(SAMPLE, out, cfg, progress=viewer.progress, snapshot=snapshot)
        info = {"snapshots": seen, "train_text": viewer.gui_train.content, "curve": viewer.gui_curve.image.copy(),
                "history": list(viewer.history)}
    finally:
        viewer.server.stop()
    return out, info


@pytest.fixture(scope="module")
def sample_run(live_training: tuple[Path, dict]) -> Path:
    """The run folder of that reconstruction (real splats.ply, cameras.json, renders/, metrics.json)."""
    return live_training[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- conversions (no browser)
def test_covariances_are_r_s_s_rt_and_threshold_filters() -> None:
    rng = np.random.default_rng(0)
    model = GaussianModel.from_points(rng.normal(size=(50, 3)), rng.uniform(size=(50, 3)), sh_degree=1)
    model.splats["quats"].data = torch.tensor(rng.normal(size=(50, 4)), dtype=torch.float32)
    model.splats["opacities"].data = torch.linspace(-3, 3, 50)
    arr = splat_arrays(model, scale=2.0)
    cov = arr.covariances
    assert cov.shape == (50, 3, 3) and np.allclose(cov, cov.transpose(0, 2, 1), atol=1e-6)
    eig = np.sort(np.linalg.eigvalsh(cov), axis=1)
    want = np.sort((model.scales.detach().numpy() * 2.0) ** 2, axis=1)
    assert np.allclose(eig, want, rtol=1e-3, atol=1e-8)
    assert np.allclose(arr.rgbs, model.base_colors.detach().numpy(), atol=1e-6)
    half = splat_arrays(model, min_opacity=0.5)
    assert len(half) == int((model.opacities > 0.5).sum()) and 0 < len(half) < 50
    assert half.opacities.min() >= 0.5


def test_browser_camera_round_trip() -> None:
    K = np.array([[120.0, 0, 80], [0, 120.0, 60], [0, 0, 1]])
    cam = Camera.look_at(np.array([2.0, -1.0, 1.5]), np.zeros(3), np.array([0, 0, 1.0]), K, 160, 120)
    wxyz, pos = camera_pose(cam)
    back = camera_from_view(wxyz, pos, cam.fov_y, 160, 120)
    assert np.allclose(back.viewmat, cam.viewmat, atol=1e-9)
    assert np.allclose(back.K, cam.K, atol=1e-9)


# ----------------------------------------------------------------------------- run folders and server
def test_missing_or_broken_run_folder_is_a_clear_error(tmp_path: Path, sample_run: Path) -> None:
    with pytest.raises(ReconInputError, match="run folder not found"):
        load_run(tmp_path / "nope")
    with pytest.raises(ReconInputError, match="no splats.ply"):
        load_run(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(sample_run, broken)
    (broken / "cameras.json").write_text("{not json")
    with pytest.raises(ReconInputError, match=r"cameras\.json: not valid JSON"):
        load_run(broken)
    (broken / "splats.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 5\n")
    with pytest.raises(ReconInputError, match="splats.ply"):
        load_run(broken)


def test_cli_view_of_a_missing_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from apps.cli import main; main()", "view", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"recon: error: {tmp_path / 'x'}: run folder not found"


def test_viewer_listens_on_localhost_unless_told_otherwise() -> None:
    from apps.viewer import start_server
    from recon.errors import ReconInputError

    said: list[str] = []
    server = start_server(port=0, say=said.append)
    try:
        assert server.get_host() == "127.0.0.1"
        assert not any("authentication" in s for s in said)
    finally:
        server.stop()
    server = start_server(port=0, host="0.0.0.0", say=said.append)
    try:
        assert server.get_host() == "0.0.0.0"
        assert any("without authentication" in s for s in said), said
    finally:
        server.stop()
    for bad in (-1, 65536):
        with pytest.raises(ReconInputError, match="--port"):
            start_server(port=bad)


def test_run_layers_and_port_in_use_moves_on(sample_run: Path) -> None:
    contents = load_run(sample_run)
    assert len(contents.cameras) == 3 and all(im is not None for im in contents.images)
    assert len(contents.test_cameras) == 10  # the sample is a benchmark scene: its test cameras are shown
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    said: list[str] = []
    try:
        viewer = open_viewer(sample_run, port=port, say=said.append)
    finally:
        busy.close()
    try:
        assert viewer.server.get_port() != port
        assert any(f"port {port} is in use" in s for s in said), said
        assert any(f":{viewer.server.get_port()}" in s for s in said), said
        assert viewer.num_shown == contents.model.num_gaussians
        scene = viewer.server.scene
        assert scene.get_handle_by_name("/splats") is not None
        assert scene.get_handle_by_name("/cameras/input/000") is not None
        assert scene.get_handle_by_name("/cameras/test/009") is not None
        assert scene.get_handle_by_name("/points") is not None  # the visual hull of the masks
        # GUI controls driven through viser's API change the scene.
        viewer.gui_opacity.value = 0.6
        assert 0 < viewer.num_shown < contents.model.num_gaussians
        viewer.gui_layers["cameras"].value = False
        assert scene.get_handle_by_name("/cameras/input/000").visible is False
        # The render button without a browser renders the first input camera, with depth; save writes PNGs.
        viewer.gui_render.value = True
        assert viewer.last_render is not None
        rgb, depth = viewer.last_render["rgb"], viewer.last_render["depth"]
        assert rgb.shape == (120, 160, 3) and rgb.max() > 50 and (depth > 0).mean() > 0.02
        viewer.gui_save.value = True
        assert viewer.saved and viewer.saved[-1].exists()
    finally:
        viewer.server.stop()


def test_live_mode_streams_training(live_training: tuple[Path, dict]) -> None:
    out, info = live_training
    assert len(info["snapshots"]) >= 2 and all(n > 0 for n in info["snapshots"])  # steps 50 and 100
    assert "step 100/100" in info["train_text"] and "Gaussians" in info["train_text"]
    assert len(info["history"]) == 10  # one record every 10 steps
    assert info["curve"].std() > 0  # the loss curve was drawn
    assert (out / "splats.ply").exists()


# ----------------------------------------------------------------------------- real browser
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--window-size=1280,720",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _screenshot(driver) -> np.ndarray:
    import cv2

    png = driver.get_screenshot_as_png()
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def _settled(driver, wait: float = 1.5) -> np.ndarray:
    """A screenshot once two consecutive ones agree (WebGL drew the latest scene)."""
    prev = _screenshot(driver)
    deadline = time.time() + 15
    while time.time() < deadline:
        time.sleep(wait)
        cur = _screenshot(driver)
        if np.abs(cur.astype(np.int16) - prev).mean() < 0.2:
            return cur
        prev = cur
    return prev


@pytest.fixture(scope="module")
def live_page(sample_run: Path, browser):
    viewer = open_viewer(sample_run, port=_free_port(), say=lambda _s: None)
    browser.get(f"http://localhost:{viewer.server.get_port()}")
    deadline = time.time() + 20
    while not viewer.server.get_clients() and time.time() < deadline:
        time.sleep(0.2)
    assert viewer.server.get_clients(), "the browser never connected to the viewer"
    yield viewer, browser
    viewer.server.stop()


def _scene_region(img: np.ndarray) -> np.ndarray:
    """Where the object is drawn in the home view: the middle of the canvas, left of the GUI panel."""
    h, w = img.shape[:2]
    return img[h // 5: 4 * h // 5, w // 5: int(0.7 * w)].astype(np.float32)


def test_browser_draws_the_splats_and_the_gui(live_page) -> None:
    viewer, driver = live_page
    from selenium.webdriver.common.by import By

    shot = _settled(driver)
    out = Path(os.environ.get("RECON_TEST_ARTIFACTS", viewer.contents.run_dir.parent))
    out.mkdir(parents=True, exist_ok=True)
    import cv2

    cv2.imwrite(str(out / "viewer_sample.png"), shot[..., ::-1])
    assert driver.find_elements(By.XPATH, "//*[contains(text(), 'Render from this view')]"), "no GUI panel"
    assert driver.find_elements(By.XPATH, "//*[contains(text(), 'Opacity threshold')]"), "no GUI panel"
    viewer.splat_handle.visible = False  # the same scene without the splats
    empty = _settled(driver)
    viewer.splat_handle.visible = True
    diff = np.abs(_scene_region(shot) - _scene_region(empty)).mean(axis=2)
    assert (diff > 30).mean() > 0.05, f"splats barely change the picture ({(diff > 30).mean():.3f})"
    # The splats are colourful (the sample's textures), the empty scene is mostly the white background.
    assert _scene_region(shot).std() > _scene_region(empty).std() + 5


def test_gui_control_changes_the_browser_scene(live_page) -> None:
    viewer, driver = live_page

    def ticked() -> int:
        return sum(b.is_selected() for b in driver.find_elements("xpath", "//input[@type='checkbox']"))

    before = _settled(driver)
    ticked_before = ticked()
    viewer.gui_layers["splats"].value = False  # the "Gaussians" checkbox, set through viser's API
    assert viewer.splat_handle.visible is False
    hidden = _settled(driver)
    assert ticked() == ticked_before - 1  # the browser's checkbox followed
    viewer.gui_layers["splats"].value = True
    viewer.gui_scale.value = 0.3  # the "Splat scale" slider: smaller splats, gaps open, the picture changes
    small = _settled(driver)
    viewer.gui_scale.value = 1.0

    def changed(a: np.ndarray, b: np.ndarray) -> float:
        return float((np.abs(_scene_region(a) - _scene_region(b)).mean(axis=2) > 30).mean())

    assert changed(before, hidden) > 0.05
    assert changed(before, small) > 0.01
    # "Render from this view" renders the browser's own camera with the project's renderer.
    client = next(iter(viewer.server.get_clients().values()))
    out = viewer.render_client_view(client)
    h, w = out["rgb"].shape[:2]
    assert abs(w / h - client.camera.aspect) < 0.02
    assert (out["alpha"] > 0.5).mean() > 0.05 and viewer.gui_render_rgb.visible
