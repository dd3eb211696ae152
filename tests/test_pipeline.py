"""End-to-end: `recon reconstruct` on a tiny generated scene, outputs, export, and bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from recon.bench.evaluate import score_run
from recon.bench.synth import make_scene
from recon.config import ReconstructConfig, make_config
from recon.pipeline import reconstruct
from renderers.gaussians.ply import read_ply

RECON = [sys.executable, "-c", "from apps.cli import main; main()"]


def short_config(iterations: int, *, points: int, hull_resolution: int, **settings: Any) -> ReconstructConfig:
    """The fast preset for a short run on a tiny 3-view scene: ``points`` start points, a coarse hull, and further
    ``settings`` by dotted path (``short_config(12, points=800, hull_resolution=40, **{"loss.multiview": 0.5})``)."""
    return make_config(
        "fast",
        iterations=iterations,
        track=3,
        settings={"init.points": points, "init.hull_resolution": hull_resolution, **settings},
    )


@pytest.fixture(scope="module")
def tiny_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "run"
    cfg = short_config(
        60,
        points=1500,
        hull_resolution=48,
        **{
            "densify.refine_start_iter": 20,
            "densify.refine_every": 20,
            "train.sh_raise_every": 20,
        },
    )
    summary = reconstruct(tiny_scene, out, cfg)
    return out, summary


def test_run_folder_has_every_output(tiny_run: tuple[Path, dict]) -> None:
    out, summary = tiny_run
    for name in ("splats.ply", "cameras.json", "metrics.json", "run.log", "config.json"):
        assert (out / name).is_file(), name
    renders = sorted((out / "renders").glob("*.png"))
    assert len(renders) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_gaussians"] == read_ply(out / "splats.ply").num_gaussians
    assert set(metrics["timings"]) >= {"load_s", "init_s", "train_s", "total_s"}
    cams = json.loads((out / "cameras.json").read_text())["cameras"]
    assert len(cams) == 3 and cams[0]["width"] == 96
    assert json.loads((out / "config.json").read_text())["iterations"] == 60
    assert "train PSNR" in (out / "run.log").read_text()
    assert not list(out.parent.glob(".*.partial")), "temporary folder left behind"


def test_training_fits_the_input_views(tiny_run: tuple[Path, dict]) -> None:
    _, summary = tiny_run
    # 60 steps from a visual-hull init on a tiny object scene: well above what an empty render scores.
    assert summary["train_psnr"] > 20.0
    assert summary["pruned_floaters"] >= 0


def test_test_views_score_and_ply_round_trip_renders(tiny_run: tuple[Path, dict], tiny_scene: Path) -> None:
    out, _ = tiny_run
    scores = score_run(out, tiny_scene, track=3)
    assert len(scores.psnr) == 10
    assert 12.0 < scores.mean["masked_psnr"] < 60.0
    from recon.io.spare import read_spare_scene
    from renderers.gaussians.ply import write_ply

    model = read_ply(out / "splats.ply")
    write_ply(out.parent / "again.ply", model)
    again = read_ply(out.parent / "again.ply")
    cam = read_spare_scene(tiny_scene, track=3, split="test").cameras[0]
    a = model.render(cam, background=torch.zeros(3), render_mode="RGB").rgb
    b = again.render(cam, background=torch.zeros(3), render_mode="RGB").rgb
    assert torch.equal(a, b)


def test_existing_output_is_not_overwritten(tiny_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = subprocess.run(
        RECON + ["reconstruct", str(tiny_scene), "--out", str(out), "--iterations", "2"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "exists and is not empty" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_unposed_featureless_folder_gives_one_clear_line(tmp_path: Path) -> None:
    """Plain images go through pose estimation; uniform images cannot be posed: one clear line, exit 2."""
    from recon.io.images import save_image

    folder = tmp_path / "photos"
    for i in range(3):
        save_image(folder / f"IMG_{i}.png", np.full((24, 32, 3), 0.2 * i, dtype=np.float32))
    proc = subprocess.run(
        RECON + ["reconstruct", str(folder), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("recon: error:") and "photos" in lines[-1]
    assert "pose estimation failed" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_unposed_folder_is_posed_and_reconstructed(tmp_path: Path) -> None:
    """A plain folder of photos (no cameras): poses estimated, an unmatchable image named and skipped."""
    from recon.io.images import save_image
    from recon.io.spare import read_spare_scene

    scene = tmp_path / "scene"
    make_scene(scene, seed=101, width=240, height=180, views=[17, 19, 21], depth=False)
    views = read_spare_scene(scene, split="all")
    folder = tmp_path / "photos"
    for k, img in enumerate(views.images):
        save_image(folder / f"IMG_{k}.png", img)
    save_image(folder / "IMG_9.png", np.random.default_rng(0).random((180, 240, 3)).astype(np.float32))
    out = tmp_path / "run"
    proc = subprocess.run(
        RECON + ["reconstruct", str(folder), "--out", str(out), "--iterations", "20"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "IMG_9.png" in proc.stderr and "could not register" in proc.stderr
    cams = json.loads((out / "cameras.json").read_text())["cameras"]
    assert sorted(c["name"] for c in cams) == ["IMG_0.png", "IMG_1.png", "IMG_2.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["poses"]["failed"] == ["IMG_9.png"] and metrics["poses"]["refined"] is True
    assert sorted(metrics["train_psnr_per_view"]) == ["IMG_0.png", "IMG_1.png", "IMG_2.png"]
    assert "poorly_fitting_views" in metrics["poses"]
    assert "IMG_9.png" in (out / "run.log").read_text()
    # no EXIF and only 3 views: the estimated focal is flagged, with the setting that fixes it
    assert "estimated from only 3 photos" in proc.stderr and "--set poses.hfov_deg=" in proc.stderr


def test_a_given_field_of_view_reaches_the_pose_estimator_as_a_held_focal(monkeypatch: pytest.MonkeyPatch) -> None:
    import recon.poses
    from recon.io.types import ViewSet
    from recon.pipeline import estimate_cameras
    from recon.poses import PoseResult, Similarity

    seen: dict = {}

    def fake(views: ViewSet, method: str, focal_px: float | None = None, seed: int = 0) -> PoseResult:
        from recon.cameras import Camera, intrinsics

        seen["focal_px"] = focal_px
        K = intrinsics(100.0, 100.0, 50, 40)
        cams = [Camera(K=K, viewmat=np.eye(4), width=100, height=80, name=n) for n in views.names]
        ident = Similarity(1.0, np.eye(3), np.zeros(3))
        info = {"focal_prior": "given" if focal_px else "none", "seconds": 0.1}
        return PoseResult(cams, list(views.names), [], np.zeros((0, 3)), np.zeros((0, 3)), ident, "auto", info)

    monkeypatch.setattr(recon.poses, "estimate_poses", fake)
    images = [np.zeros((80, 100, 3), np.float32)] * 3
    views = ViewSet(names=["a", "b", "c"], images=images, cameras=None, source="x", meta={})
    estimate_cameras(views, make_config("fast", settings={"poses.hfov_deg": 90.0}))
    assert seen["focal_px"] == pytest.approx(50.0)  # 90 deg across 100 px
    estimate_cameras(views, make_config("fast"))
    assert seen["focal_px"] is None
    with pytest.raises(ValueError, match="poses.hfov_deg"):
        make_config("fast", settings={"poses.hfov_deg": 400.0})


def test_a_view_fitting_far_worse_than_the_others_is_named() -> None:
    from recon.pipeline import poorly_fitting_views

    fits = {"a.png": 37.0, "b.png": 36.5, "c.png": 38.0, "d.png": 30.5, "e.png": 33.5}
    assert poorly_fitting_views(fits) == {"d.png": pytest.approx(6.25)}
    assert poorly_fitting_views(fits, gap_db=3.0) == {"d.png": pytest.approx(6.25), "e.png": pytest.approx(3.25)}
    assert poorly_fitting_views({"a.png": 20.0, "b.png": 40.0}) == {}  # two views: no majority to compare with


def test_missing_input_and_unknown_preset(tmp_path: Path) -> None:
    proc = subprocess.run(
        RECON + ["reconstruct", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        RECON + ["reconstruct", str(tmp_path), "--out", str(tmp_path / "o"), "--preset", "turbo"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "turbo" in proc.stderr


def test_export_splat_and_bad_suffix(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = tiny_run
    n = read_ply(out / "splats.ply").num_gaussians
    proc = subprocess.run(
        RECON + ["export", str(out), "--to", str(tmp_path / "m.splat")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.splat").stat().st_size == 32 * n
    proc = subprocess.run(RECON + ["export", str(out), "--to", str(tmp_path / "m.obj")], capture_output=True, text=True)
    assert proc.returncode == 2 and ".obj" in proc.stderr


def test_every_subcommand_is_listed() -> None:
    proc = subprocess.run(RECON + ["--help"], capture_output=True, text=True)
    for cmd in ("reconstruct", "view", "bench", "leaderboard", "make-scene", "export"):
        assert cmd in proc.stdout


def _object_start(scene: Path, config: ReconstructConfig) -> tuple:
    """(views, cameras, masks, Initialisation) of a posed, masked scene, as the pipeline starts a run."""
    from recon.pipeline import initialise, load_inputs, object_masks, require_poses

    views = load_inputs(scene, config)
    cameras = require_poses(views)
    masks = object_masks(views)
    return views, cameras, masks, initialise(views, cameras, masks, config)


@pytest.mark.parametrize("refine_poses", [False, True])
def test_object_training_with_the_multiview_term_and_sparse_binocular_renders(
    tiny_scene: Path, refine_poses: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The multi-view photometric term runs with fixed and with refined cameras, and ``loss.binocular_every``
    renders the binocular partner on every n-th step only."""
    from recon.pipeline import train

    config = short_config(
        12,
        points=800,
        hull_resolution=40,
        **{
            "loss.binocular_every": 3,
            "loss.multiview": 0.5,
            "loss.multiview_pixels": 500,
        },
    )
    views, cameras, masks, init = _object_start(tiny_scene, config)
    renders = []
    original = type(init.model).render

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        renders.append(kwargs.get("render_mode"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(init.model), "render", counting)
    result = train(init, views, cameras, masks, config, refine_poses=refine_poses)
    assert config.loss.multiview > 0 and all(np.isfinite(h["loss"]) for h in result.history)
    assert renders.count("RGB+ED") == 12 and renders.count("RGB") == 4  # the partner on steps 3, 6, 9, 12
    assert (result.cameras is not None) == refine_poses


def test_flatten_trains_flatter_gaussians(tiny_scene: Path) -> None:
    """``loss.flatten`` reaches the trainer: after the same short run from the same start, the smallest scale of
    each Gaussian is a smaller share of its middle one than without the term."""
    from recon.pipeline import train

    def min_over_mid(flatten: float) -> float:
        config = short_config(40, points=600, hull_resolution=40, **{"loss.flatten": flatten})
        views, cameras, masks, init = _object_start(tiny_scene, config)
        train(init, views, cameras, masks, config)
        scales = init.model.splats["scales"].detach().sort(dim=-1).values
        return float(torch.exp(scales[:, 0] - scales[:, 1]).median())

    flat, free = min_over_mid(1.0), min_over_mid(0.0)
    assert flat < 0.8 * free


def test_a_hull_only_start_decays_opacity_at_the_hull_rate(tiny_scene: Path) -> None:
    """``train.hull_opacity_decay`` applies where the visual hull alone starts the run, ``train.opacity_decay``
    where stereo depth does."""
    from recon.training import FieldTrainer

    config = short_config(
        4,
        points=400,
        hull_resolution=32,
        **{
            "init.object_stereo": 0.0,
            "train.opacity_decay": 0.01,
            "train.hull_opacity_decay": 0.2,
            "densify.refine_start_iter": 1000,
        },
    )
    views, cameras, masks, init = _object_start(tiny_scene, config)
    assert init.hull is not None and init.stereo is None and init.hull_only
    trainer = FieldTrainer(init, views, cameras, masks, config, seed=0)
    assert trainer.opacity_decay == 0.2
    # a start that does not say the hull alone made it (a stereo start, the hybrid stage's fine-tune): 1%
    other_start = type(init)(init.model, init.hull, init.scene_scale, init.bounds)
    assert FieldTrainer(other_start, views, cameras, masks, config, seed=0).opacity_decay == 0.01


def test_the_hull_rate_holds_per_pass_over_the_views() -> None:
    from recon.training import hull_decay

    config = make_config("fast", settings={"train.hull_opacity_decay": 0.03})
    assert hull_decay(config, 2) == hull_decay(config, 3) == 0.03
    assert hull_decay(config, 8) == pytest.approx(0.03 * 3 / 8)


def test_gaussians_no_view_draws_are_removed_at_the_end_and_renders_stay_the_same(tiny_scene: Path) -> None:
    """The trainer's finish drops the Gaussians whose opacity decayed under 1/255 (no rasteriser draws them):
    the model keeps only what renders, and every input view renders exactly as before the prune."""
    from recon.training import FieldTrainer

    config = short_config(
        30,
        points=600,
        hull_resolution=40,
        **{
            "train.opacity_decay": 0.08,
            "train.hull_opacity_decay": 0.08,
        },
    )
    views, cameras, masks, init = _object_start(tiny_scene, config)
    trainer = FieldTrainer(init, views, cameras, masks, config, seed=0)
    for step in range(1, config.iterations + 1):
        trainer.update(step, trainer.losses(step))
    model = trainer.model
    undrawn = model.undrawn()
    assert undrawn is not None and 0 < int(undrawn.sum()) < model.num_gaussians
    with torch.no_grad():
        before = [model.render(cam).rgb.clone() for cam in cameras]
    n = model.num_gaussians
    result = trainer.finish(1.0)
    assert result.undrawn_pruned == int(undrawn.sum()) and model.num_gaussians == n - result.undrawn_pruned
    assert bool((model.opacities >= 1.0 / 255.0).all())
    with torch.no_grad():
        for cam, rgb in zip(cameras, before, strict=True):
            assert torch.equal(model.render(cam).rgb, rgb)


def test_neural_primitives_never_call_a_row_undrawn() -> None:
    """A decoder adds a per-view opacity offset, so a low base opacity does not mean the row is never drawn."""
    from renderers.gaussians import GaussianModel
    from renderers.neural import NeuralPrimitives

    g = GaussianModel.from_points(np.random.default_rng(0).normal(size=(8, 3)), np.full((8, 3), 0.5), init_opacity=1e-4)
    assert g.undrawn() is not None and bool(g.undrawn().all())
    assert NeuralPrimitives.from_gaussians(g, feature_dim=4, seed=0).undrawn() is None


def test_the_novel_opacity_term_renders_a_tilted_view_every_nth_step(
    tiny_scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``loss.novel_opacity`` reaches the trainer: every ``loss.novel_opacity_every``-th step also renders the
    training camera tilted about the point the inputs look at."""
    from recon.training import FieldTrainer

    config = short_config(
        6,
        points=400,
        hull_resolution=32,
        **{
            "loss.novel_opacity": 0.5,
            "loss.novel_opacity_every": 3,
        },
    )
    views, cameras, masks, init = _object_start(tiny_scene, config)
    seen: list[str] = []
    original = type(init.model).render

    def recording(self, cams, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(getattr(cams, "name", ""))
        return original(self, cams, *args, **kwargs)

    monkeypatch.setattr(type(init.model), "render", recording)
    trainer = FieldTrainer(init, views, cameras, masks, config, seed=0)
    for step in range(1, config.iterations + 1):
        output = trainer.losses(step)
        assert torch.isfinite(output.loss)
        trainer.update(step, output)
    tilted = [n for n in seen if n.endswith("-tilted")]
    assert len(tilted) == 2  # steps 3 and 6
