"""reconstruct(): read views -> masks -> visual hull -> Gaussians -> train with sparse-view priors -> run folder.

Each stage is a plain function with typed inputs and outputs so the benchmark, tests and other front ends can run
or replace any of them. Poses come from whatever reader provided them (transforms.json, COLMAP, SpaRe scenes);
plain image folders go through the pose estimator (recon.poses), and estimated poses are refined
photometrically during training.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon import metrics, modes
from recon.cameras import Camera
from recon.config import ReconstructConfig
from recon.errors import ReconInputError
from recon.io.atomic import atomic_output_dir
from recon.io.images import save_image
from recon.io.types import ViewSet
from recon.representations import load_model, mesh_stage, neural_model_from_init, representation  # noqa: F401 (stage functions, public)
from recon.rig import scene_bounds, scene_scale
from recon.run_checks import SUSPECT_VIEW_DB, ViewEvidence, black_renders, diagnose_views, poorly_fitting_views  # noqa: F401 (public)
from recon.run_folder import RunFolder
from recon.training import (  # noqa: F401 (public: the trainer's pieces)
    CoTraining,
    FieldTrainer,
    TrainResult,
    data_background,
    half_resolution,
    resolve_device,
)
from renderers.types import Renderer, TrainableSplats

log = logging.getLogger("recon")

ProgressFn = Callable[[int, int, dict[str, float]], None]
# Live-view hook: called as snapshot(step, model, stats) every `snapshot_every` steps (e.g. to stream splats to a
# viewer).
SnapshotFn = Callable[[int, "TrainableSplats", dict[str, float]], None]
# Extra training loss: called as extra_loss(step, model) every step; None means "nothing this step".
ExtraLossFn = Callable[[int, "TrainableSplats"], "torch.Tensor | None"]


# ----------------------------------------------------------------------------- stage 1: inputs
def load_inputs(path: str | Path | ViewSet, config: ReconstructConfig) -> ViewSet:
    """Read the views at ``path`` (any supported layout; or views already read, e.g. a protocol's inputs) and
    downscale so the longest side <= max_side."""
    from recon.io.detect import read_views, resize_views

    if isinstance(path, ViewSet):
        return resize_views(path, max_size=config.max_side)
    opts: dict[str, Any] = {"max_size": config.max_side}
    if config.track is not None:
        opts["track"] = config.track
    return read_views(path, **opts)


def require_poses(views: ViewSet) -> list[Camera]:
    """The views' cameras, or a clear error when the input has none."""
    if views.cameras is None:
        raise ReconInputError("these images have no cameras (run the pose estimator first)", views.source)
    return views.cameras


def estimate_cameras(views: ViewSet, config: ReconstructConfig) -> tuple[ViewSet, dict[str, Any]]:
    """Cameras for an unposed ViewSet: the registered views with their estimated cameras, and a summary.

    Views that cannot be registered are named in a warning (run.log and stderr) and left out; fewer than 2
    registered views is a ReconInputError (raised by the estimator).
    """
    from recon.poses import estimate_poses
    from recon.poses.estimate import DEFAULT_HFOV_DEG, focal_from_hfov, hfov_from_focal

    hfov = config.poses.hfov_deg
    focal = None if hfov is None else focal_from_hfov(views.images[0].shape[1], hfov)
    result = estimate_poses(views, method=config.poses.method, focal_px=focal, seed=config.seed)
    if result.failed:
        msg = f"could not register {len(result.failed)} of {len(views)} images, continuing without them: " + ", ".join(
            result.failed
        )
        log.warning(msg)
    keep = [views.names.index(n) for n in result.registered]
    out = views.subset(keep)
    out.cameras = result.cameras
    if len(result.xyz):
        out.meta["points3d"] = (result.xyz, result.rgb)  # the SfM points: where a scene-mode run starts
    info = {
        "method": result.method,
        "registered": result.registered,
        "failed": result.failed,
        "normalisation": result.normalisation.matrix().tolist(),
        **{
            k: v
            for k, v in result.info.items()
            if k in ("rms_px", "view_rms_px", "points", "focal_px", "seconds", "focal_prior")
        },
    }
    log.info(
        "poses (%s): %d/%d views registered, focal %.1f px, %.1f s",
        result.method,
        len(keep),
        len(views),
        result.cameras[0].fx,
        result.info.get("seconds", 0.0),
    )
    if result.info.get("focal_prior") == "none":
        if "own" in result.method:
            how = f"by the built-in bundle adjustment from a {DEFAULT_HFOV_DEG:.0f} deg field-of-view start"
        else:
            how = "by pycolmap's bundle adjustment"
        log.info("poses: the photos carry no EXIF focal length: it was estimated %s", how)
        if len(keep) <= 3:
            log.warning(
                "poses: the focal length (%.0f px, %.0f deg field of view) was estimated from only %d photos, which "
                "fix it poorly; if the views look distorted or misaligned, give the field of view: "
                "--set poses.hfov_deg=DEG",
                result.cameras[0].fx,
                hfov_from_focal(result.cameras[0].width, result.cameras[0].fx),
                len(keep),
            )
    return out, info


# ----------------------------------------------------------------------------- stage 2: masks
def object_masks(views: ViewSet) -> list[np.ndarray]:
    """Masks from the input (alpha or mask folder), else automatic OpenCV foreground segmentation."""
    from priors.masks import foreground_masks

    if views.masks is not None:
        return [np.asarray(m, dtype=np.float32) for m in views.masks]
    return foreground_masks(views.images, None)


# ----------------------------------------------------------------------------- stage 3: initialisation
@dataclass
class Initialisation:
    model: TrainableSplats  # Gaussians from the hull; a representation's create() may replace it
    hull: Any | None  # priors.visual_hull.VisualHull
    scene_scale: float
    bounds: np.ndarray  # [2,3] min/max corner of the working volume
    stereo: list[Any] | None = None  # priors.stereo.StereoDepth per input view, for the depth loss
    # the visual hull alone started the Gaussians (object mode without stereo): the run decays opacities at
    # train.hull_opacity_decay (recon.training.hull_decay)
    hull_only: bool = False


def initialise(
    views: ViewSet, cameras: list[Camera], masks: list[np.ndarray] | None, config: ReconstructConfig
) -> Initialisation:
    """Gaussians from the visual hull of the masks (coloured from the images); without a hull (scene mode) from
    the data's sparse points or points in the input frusta (``init.scene_points`` "data"), or at random in the
    cameras' box ("random", vanilla 3DGS)."""
    from renderers.gaussians import GaussianModel

    rng = np.random.default_rng(config.seed)
    hull = None
    stereo = None
    if config.init.visual_hull and masks is not None:
        from priors.visual_hull import carve_visual_hull

        hull = carve_visual_hull(masks, cameras, resolution=config.init.hull_resolution)
        if hull.is_empty:
            hull = None  # the caller switches to scene mode and says why
    if hull is not None:
        pts = hull.points(config.init.points, rng=rng)
        bounds = np.asarray(hull.bounds, dtype=np.float64)
        n_stereo = int(round(config.init.object_stereo * config.init.points))
        assert masks is not None  # a hull is carved from masks
        start = (
            modes.object_stereo_start(views, cameras, masks, hull, n_stereo, rng, config.stereo)
            if n_stereo > 0
            else None
        )
        keep = len(pts) - (0 if start is None else len(start.xyz))  # stereo points replace as many hull samples
        rgb = hull.colors_from_images(pts[:keep], views.images, cameras, masks=masks)  # per point: only those kept
        if start is not None:  # its depths supervise the run
            pts = torch.cat([pts[:keep].to(torch.float32), torch.as_tensor(start.xyz, dtype=torch.float32)])
            rgb = np.concatenate([np.asarray(rgb), start.rgb])
            stereo = start.stereo
            log.info("object init: %s and %d hull points", start.how, keep)
    else:
        start = (
            modes.scene_start(views, cameras, config.init.points, rng, config.stereo)
            if config.init.scene_points == "data"
            else None
        )
        if start is not None:
            pts, rgb, stereo = start.xyz, start.rgb, start.stereo
            bounds = modes.scene_bounds_of_points(pts)
            log.info("scene init: %d points: %s", len(pts), start.how)
        else:  # as vanilla 3DGS: uniform in the box the cameras look at (coloured from the views: measured worse)
            bounds = scene_bounds(cameras)
            pts = rng.uniform(bounds[0], bounds[1], size=(config.init.points, 3))
            rgb = rng.uniform(0.0, 1.0, size=(config.init.points, 3))
    model = GaussianModel.from_points(pts, rgb, sh_degree=config.train.sh_degree, init_opacity=config.init.opacity)
    return Initialisation(
        model=model,
        hull=hull,
        scene_scale=scene_scale(bounds),
        bounds=bounds,
        stereo=stereo,
        hull_only=hull is not None and stereo is None,
    )


# ----------------------------------------------------------------------------- stage 4: training
def train(
    init: Initialisation,
    views: ViewSet,
    cameras: list[Camera],
    masks: list[np.ndarray] | None,
    config: ReconstructConfig,
    progress: ProgressFn | None = None,
    snapshot: SnapshotFn | None = None,
    snapshot_every: int = 50,
    refine_poses: bool = False,
    extra_loss: ExtraLossFn | None = None,
) -> TrainResult:
    """Optimise the Gaussians against the input views (L1 + D-SSIM, mask loss, sparse-view regularisers).

    ``refine_poses`` also optimises a zero-initialised SE(3) correction per camera (for estimated poses);
    the refined cameras come back in ``TrainResult.cameras``. ``extra_loss(step, model)`` (e.g. a diffusion
    prior on pseudo views) is added to the loss whenever it returns a tensor. With ``train.co_fields`` 2 a
    second field trains beside the first from the same start and the two are co-regularised (CoR-GS:
    ``priors.co_regularization``); the first is the result.
    """
    torch.manual_seed(config.seed)
    trainer = FieldTrainer(init, views, cameras, masks, config, seed=config.seed, refine_poses=refine_poses)
    co = CoTraining(trainer, init, views, cameras, masks, config, refine_poses) if config.train.co_fields > 1 else None
    start = time.perf_counter()
    for step in range(1, config.iterations + 1):
        main = trainer.losses(step)
        if extra_loss is not None:
            extra = extra_loss(step, trainer.model)
            if extra is not None:
                main.loss = main.loss + extra
        if co is not None:
            co.step(step, main)
        rec = trainer.update(step, main)
        if co is not None:
            co.after_update(step)
        if rec is not None:
            if progress is not None:
                progress(step, config.iterations, rec)
            if snapshot is not None and (step % snapshot_every == 0 or step == config.iterations):
                snapshot(step, trainer.model, rec)
    result = trainer.finish(time.perf_counter() - start)
    if co is not None:
        result.co_pruned = co.pruned
    return result


# ----------------------------------------------------------------------------- prior stage
def diffusion_prior_loss(
    views: ViewSet, cameras: list[Camera], masks: list[np.ndarray] | None, config: ReconstructConfig, tmp: Path
) -> tuple[ExtraLossFn, Callable[[], dict[str, Any]]]:
    """prior "diffusion": (extra_loss for :func:`train`, report() -> dict for metrics.json).

    The loss renders pseudo views around the inputs, repairs them with the diffusion model and supervises the
    renders with the repaired images; the repaired images and timings go into ``tmp`` (the run folder).
    """
    from priors.diffusion import DiffusionGuidance, load_repair_model

    t = time.perf_counter()
    repair_model = load_repair_model(config.diffusion.weights, device=resolve_device(config.device))
    load_s = time.perf_counter() - t
    settings = config.diffusion
    guidance = DiffusionGuidance(
        repair_model,
        views.images,
        masks if config.loss.use_masks else None,
        cameras,
        settings,
        iterations=config.iterations,
        scene_scale=scene_scale(scene_bounds(cameras)),
        out_dir=RunFolder(tmp).prior_dir,
        seed=config.seed,
        lambda_dssim=config.loss.dssim,
    )
    log.info(
        "diffusion prior: %s (%d parameters), %d pseudo views from step %d",
        config.diffusion.weights or "bundled repair-small",
        repair_model.num_parameters,
        settings.views,
        guidance.start,
    )

    def report() -> dict[str, Any]:
        return {"weights": config.diffusion.weights or "bundled", "load_s": round(load_s, 3), **guidance.report()}

    return guidance, report


# ----------------------------------------------------------------------------- stage 5: outputs
def render_views(model: Renderer, cameras: list[Camera], background: float | Sequence[float] = 0.0) -> list[np.ndarray]:
    """RGB renders (HxWx3 float32) of ``cameras`` over a uniform background, a grey level or an RGB triple
    (any representation)."""
    bg = torch.as_tensor(background, dtype=torch.float32).expand(3).clone()
    with torch.no_grad():
        outs = [model.render(c, background=bg, render_mode="RGB") for c in cameras]
    return [o.rgb.detach().clamp(0, 1).cpu().numpy() for o in outs]


def load_run_model(run_dir: str | Path) -> Renderer:
    """The model a run folder holds (any representation): ``recon.representations.load_model``."""
    return load_model(RunFolder(run_dir))


def train_metrics(renders: list[np.ndarray], views: ViewSet, masks: list[np.ndarray] | None) -> dict[str, float]:
    """Train-view PSNR (full image over black where masks exist, RegNeRF convention) and SSIM."""
    ps, ss = [], []
    for k, r in enumerate(renders):
        m = None if masks is None else torch.from_numpy(np.asarray(masks[k], dtype=np.float32))
        p, s = metrics.image_psnr_ssim(torch.from_numpy(r), torch.from_numpy(views.images[k]), m)
        ps.append(p)
        ss.append(s)
    return {
        "train_psnr": float(np.mean(ps)),
        "train_ssim": float(np.mean(ss)),
        "train_psnr_per_view": {n: float(p) for n, p in zip(views.names, ps)},
    }


def write_run_folder(
    tmp: Path,
    model: Renderer,
    views: ViewSet,
    cameras: list[Camera],
    masks: list[np.ndarray] | None,
    config: ReconstructConfig,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """The model's files (splats.ply, mesh.ply...), cameras.json, renders/ and config.json inside ``tmp``.

    Returns ``summary`` with the train metrics added; the caller completes it (timings) as metrics.json."""
    summary = dict(summary)
    run = RunFolder(tmp)
    summary["files"] = list(model.save_run_files(tmp))
    run.write_cameras(cameras)
    scored_masks = masks if config.loss.use_masks else None
    # over the background training used when no masks were: the data's own (data_background)
    renders = render_views(model, cameras, background=0.0 if scored_masks is not None else data_background(views))
    for name, img in zip(views.names, renders):
        save_image(run.render_path(name), img)
    summary.update(train_metrics(renders, views, scored_masks))
    summary["train_psnr_over"] = (
        "the object masks (RegNeRF convention: both images masked, whole-image mean)"
        if scored_masks is not None
        else "the whole image"
    )
    black = black_renders(list(views.names), renders, views.images, scored_masks)
    summary["black_renders"] = black
    if black:
        log.warning(
            "the renders of %d of %d input views are black where the photos are not (%s): the training "
            "did not fit them; check the masks and poses in run.log",
            len(black),
            len(views),
            ", ".join(black),
        )
    summary["representation"] = config.representation
    summary["num_gaussians"] = int(getattr(model, "num_gaussians", 0))
    run.write_config(config)
    return summary


def _for_terminal(record: logging.LogRecord) -> bool:
    """Warnings, and the few info lines marked ``extra={"terminal": True}`` (the object/scene decision)."""
    return record.levelno >= logging.WARNING or getattr(record, "terminal", False)


class _TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kind = "warning: " if record.levelno >= logging.WARNING else ""
        return f"recon: {kind}{record.getMessage()}"


def reconstruct(
    source: str | Path | ViewSet,
    out: str | Path,
    config: ReconstructConfig,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    snapshot: SnapshotFn | None = None,
) -> dict[str, Any]:
    """The main job: reconstruct ``source`` (a path in any supported layout, or views already read) into the run
    folder ``out`` (written atomically). Returns metrics."""
    out = Path(out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    given_views = isinstance(source, ViewSet)
    where = f"{len(source)} views of {source.source}" if given_views else str(source)  # type: ignore[arg-type]
    with atomic_output_dir(out, overwrite=overwrite, protect=[] if given_views else [source]) as tmp:
        handler = logging.FileHandler(RunFolder(tmp).log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        terminal = logging.StreamHandler(sys.stderr)  # warnings reach the terminal, not only run.log
        terminal.addFilter(_for_terminal)
        terminal.setFormatter(_TerminalFormatter())
        log.addHandler(handler)
        log.addHandler(terminal)
        log.setLevel(logging.INFO)
        try:
            log.info("recon reconstruct %s -> %s (preset %s, seed %d)", where, out, config.preset, config.seed)
            log.info("torch %s, %s, %d threads", torch.__version__, platform.machine(), torch.get_num_threads())
            t = time.perf_counter()
            views = load_inputs(source, config)
            timings["load_s"] = time.perf_counter() - t
            pose_info: dict[str, Any] | None = None
            if views.cameras is None:
                t = time.perf_counter()
                views, pose_info = estimate_cameras(views, config)
                timings["poses_s"] = time.perf_counter() - t
            cameras = require_poses(views)
            log.info("%d views %dx%d from %s", len(views), cameras[0].width, cameras[0].height, where)
            t = time.perf_counter()
            decision = modes.decide_mode(views, config)
            for msg in decision.mask_decision.warnings if decision.mask_decision is not None else []:
                log.warning(msg)
            masks = decision.masks
            if decision.mode == "scene":
                config = modes.scene_config(config)
            log.info("%s mode: %s", decision.mode, decision.reason, extra={"terminal": True})
            timings["masks_s"] = time.perf_counter() - t
            t = time.perf_counter()
            init = initialise(views, cameras, masks, config)
            if decision.mode == "object" and init.hull is None and config.init.visual_hull:
                log.warning(
                    "the visual hull of the masks is empty (the masks disagree with the cameras: wrong "
                    "masks or poses?); switching to scene mode: the whole images are used, without masks"
                )
                decision = modes.ModeDecision(
                    "scene", "the visual hull of the masks came out empty", None, decision.mask_decision
                )
                config = modes.scene_config(config)
                masks = None
                init = initialise(views, cameras, masks, config)
            timings["init_s"] = time.perf_counter() - t
            log.info("initialised %d Gaussians (scene scale %.3f)", init.model.num_gaussians, init.scene_scale)
            if config.steps_per_view > 0:
                config = config.for_views(len(views), scene=decision.mode == "scene")
                log.info("%d training steps (%d views, %s mode)", config.iterations, len(views), decision.mode)
            kind = representation(config.representation)
            init.model = kind.create(init, config)
            extra_loss, prior_report = None, None
            if config.prior == "diffusion":
                t = time.perf_counter()
                extra_loss, prior_report = diffusion_prior_loss(views, cameras, masks, config, tmp)
                timings["prior_setup_s"] = time.perf_counter() - t
            refine = pose_info is not None and config.poses.refine
            result = train(
                init,
                views,
                cameras,
                masks,
                config,
                progress=progress,
                snapshot=snapshot,
                refine_poses=refine,
                extra_loss=extra_loss,
            )
            timings["train_s"] = result.seconds
            model = init.model
            if result.undrawn_pruned:
                log.info("removed %d Gaussians no view draws (opacity under 1/255)", result.undrawn_pruned)
            mesh_info: dict[str, Any] | None = None
            if kind.after_training is not None:
                t = time.perf_counter()
                if kind.keep_trained_gaussians:  # the Gaussians the mesh came from (viewer, export)
                    model.save_run_files(tmp)
                model, mesh_info = kind.after_training(
                    model, init, views, result.cameras or cameras, masks, config, progress=progress
                )
                timings["mesh_s"] = time.perf_counter() - t
            if result.cameras is not None:
                cameras = result.cameras
                log.info(
                    "photometric pose refinement: corrections %s deg",
                    ", ".join(f"{x:.2f}" for x in result.pose_correction_deg or []),
                )
            for rec in result.history[:: max(1, len(result.history) // 20)]:
                log.info("step %(step)d loss %(loss).4f psnr %(psnr).2f gaussians %(gaussians)d", rec)
            t = time.perf_counter()
            summary: dict[str, Any] = {
                "source": where,
                "views": list(views.names),
                "preset": config.preset,
                "seed": config.seed,
                "iterations": config.iterations,
                "pruned_floaters": result.pruned_floaters,
                "pruned_undrawn": result.undrawn_pruned,
                "final_loss": result.history[-1]["loss"] if result.history else None,
            }
            if config.densify.proximity > 0:
                summary["unpooled"] = result.unpooled  # Gaussians proximity-guided unpooling added
            if config.train.co_fields > 1:
                summary["co_pruned"] = result.co_pruned  # Gaussians of the result field the other did not match
            if pose_info is not None:
                pose_info["refined"] = result.cameras is not None
                pose_info["correction_deg"] = result.pose_correction_deg
                summary["poses"] = pose_info
            summary["mode"] = decision.to_dict()
            if decision.mask_decision is not None:
                summary["masks"] = decision.mask_decision.to_dict()
            if mesh_info is not None:
                summary["mesh"] = mesh_info
            if prior_report is not None:
                summary["prior"] = prior_report()
            summary = write_run_folder(tmp, model, views, cameras, masks, config, summary)
            timings["write_s"] = time.perf_counter() - t
            diagnosis = diagnose_views(
                ViewEvidence(
                    train_psnr=summary["train_psnr_per_view"],
                    mask_coverage=decision.mask_decision.coverage
                    if masks is not None and decision.mask_decision
                    else None,
                    mask_source=decision.mask_decision.source if decision.mask_decision is not None else None,
                    pose_method=pose_info["method"] if pose_info is not None else None,
                    pose_residual_px=(pose_info or {}).get("view_rms_px"),
                    pose_rms_px=(pose_info or {}).get("rms_px"),
                    pose_correction_deg=dict(zip(views.names, result.pose_correction_deg or [])) or None,
                    black=summary["black_renders"],
                )
            )
            summary["diagnosis"] = {"poorly_fitting_views": diagnosis.suspects, "likely_causes": diagnosis.causes}
            if pose_info is not None:
                pose_info["poorly_fitting_views"] = diagnosis.suspects
            for msg in diagnosis.warnings:
                log.warning(msg)
            timings["total_s"] = time.perf_counter() - t0
            summary["timings"] = timings
            RunFolder(tmp).write_metrics(summary)
            log.info(
                "done in %.1f s: %s, train PSNR %.2f dB, %d Gaussians",
                timings["total_s"],
                config.representation,
                summary["train_psnr"],
                summary["num_gaussians"],
            )
        finally:
            log.removeHandler(handler)
            log.removeHandler(terminal)
            handler.close()
    return summary
