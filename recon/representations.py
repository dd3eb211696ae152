"""The registry of representations: what the pipeline does differently for each, in one place.

An entry says how to make the model to train from the initialisation (``create``), what runs after training
(``after_training``: the mesh extraction, the hybrid's pruning and fine-tuning), how to load the model a run
folder holds (``load``) and how to describe a finished run in one phrase (``describe``). Adding a
representation = a package under ``renderers/`` whose model satisfies ``renderers.types.Renderer`` (and
``TrainableSplats`` if it trains through ``recon.pipeline.train``) + one entry in :data:`REPRESENTATIONS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from recon.cameras import Camera
from recon.config import ReconstructConfig
from recon.errors import ReconInputError
from recon.io.types import ViewSet
from recon.run_folder import RunFolder
from renderers.types import Renderer

if TYPE_CHECKING:
    from recon.pipeline import Initialisation, ProgressFn

log = logging.getLogger("recon")

AfterTraining = Callable[..., "tuple[Renderer, dict[str, Any]]"]


@dataclass(frozen=True)
class Representation:
    """One representation's hooks (see the module docstring)."""

    name: str
    create: Callable[[Initialisation, ReconstructConfig], Any]
    load: Callable[[RunFolder], Renderer]
    describe: Callable[[dict[str, Any]], str]
    after_training: AfterTraining | None = None
    keep_trained_gaussians: bool = False  # also write the trained Gaussians (splats.ply) before after_training


def _gaussians_from_init(init: Initialisation, config: ReconstructConfig) -> Any:
    return init.model


def neural_model_from_init(init: Initialisation, config: ReconstructConfig) -> Any:
    """representation "neural": neural primitives initialised from the hull-initialised Gaussians ``init.model``.

    The returned model trains through :func:`train` exactly like a GaussianModel (render, splats, means,
    opacities, make_optimizers, num_gaussians, active_sh_degree, to) and saves itself with ``save_run_files``.
    """
    from renderers.neural import NeuralPrimitives, PruneSchedule

    model = NeuralPrimitives.from_gaussians(
        init.model, feature_dim=config.neural.feature_dim, seed=config.seed, hidden=config.neural.hidden
    )
    if config.neural.sparsity > 0:
        start = int(config.neural.prune_start * config.iterations)
        end = max(start, int(config.neural.prune_end * config.iterations))
        model.prune_schedule = PruneSchedule(config.neural.sparsity, start, end, every=max(1, config.iterations // 100))
    return model


def extract_mesh_stage(
    model: Any,
    init: Initialisation,
    views: ViewSet,
    cameras: list[Camera],
    masks: list[np.ndarray] | None,
    config: ReconstructConfig,
    progress: ProgressFn | None = None,
) -> tuple[Any, dict[str, Any]]:
    """representation "mesh", after Gaussian training: a mesh extracted from the trained Gaussians (TSDF or
    Poisson), cleaned and coloured from the input views. Returns (MeshModel, info dict)."""
    from renderers.mesh.extract import extract_mesh

    use_masks = masks if config.loss.use_masks else None
    t = time.perf_counter()
    mesh = extract_mesh(model, cameras, masks=use_masks, method=config.mesh.method, target_faces=config.mesh.faces)
    info: dict[str, Any] = {
        "method": config.mesh.method,
        "extraction": mesh.extraction.to_dict(),
        "faces": mesh.num_faces,
        "vertices": mesh.num_vertices,
        "extract_s": time.perf_counter() - t,
    }
    t = time.perf_counter()
    info["color_fit_l1"] = mesh.fit_colors(views.images, cameras, use_masks, steps=config.mesh.color_steps)
    info["color_fit_s"] = time.perf_counter() - t
    log.info(
        "mesh (%s): %d faces, %d vertices, colour fit L1 %.4f, %.1f s",
        config.mesh.method,
        mesh.num_faces,
        mesh.num_vertices,
        info["color_fit_l1"],
        info["extract_s"] + info["color_fit_s"],
    )
    return mesh, info


def hybrid_stage(
    model: Any,
    init: Initialisation,
    views: ViewSet,
    cameras: list[Camera],
    masks: list[np.ndarray] | None,
    config: ReconstructConfig,
    progress: ProgressFn | None = None,
) -> tuple[Any, dict[str, Any]]:
    """representation "hybrid", after Gaussian training: the mesh of :func:`extract_mesh_stage` as an opaque
    surface plus the Gaussians in front of it, fine-tuned ``config.mesh.hybrid_iterations`` steps with
    ``recon.pipeline.train``. Returns (HybridModel, info dict)."""
    from recon.pipeline import Initialisation, train
    from recon.rig import orbit_cameras
    from renderers.gaussians.model import DEFAULT_LRS
    from renderers.gaussians.strategy import remove
    from renderers.mesh.hybrid import HybridModel

    mesh, info = extract_mesh_stage(model, init, views, cameras, masks, config, progress)
    # hybrid: drop the Gaussians the opaque mesh hides (seen from the inputs and an orbit around them) or that
    # add next to nothing in front of it, then fine-tune the rest with the mesh colours. On the CPU: the
    # compositing needs the CPU rasteriser's per-pixel far limit (gsplat has none).
    hybrid = HybridModel(model.to("cpu"), mesh, depth_tolerance=config.mesh.hybrid_depth_tolerance * init.scene_scale)
    views_for_pruning = list(cameras) + orbit_cameras(cameras)
    info["gaussians_before"] = hybrid.num_gaussians
    info["depth_tolerance"] = hybrid.depth_tolerance
    t = time.perf_counter()
    hidden = hybrid.hidden_mask(views_for_pruning, min_weight=config.mesh.hybrid_min_weight)
    if int((~hidden).sum()) > 0:
        remove(hybrid.gaussians, None, hidden)
    info["gaussians_pruned"] = int(hidden.sum())
    info["prune_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if config.mesh.hybrid_iterations > 0:
        lrs = {**config.train.lrs, "means": config.train.lrs.get("means", DEFAULT_LRS["means"]) * 0.1}
        tune = replace(
            config,
            iterations=config.mesh.hybrid_iterations,
            device="cpu",
            train=replace(config.train, coarse_until=0.0, sh_raise_every=1, lrs=lrs),
            densify=replace(config.densify, refine_stop_frac=0.0),
        )  # no densification: the mesh covers it
        stage_init = Initialisation(model=hybrid, hull=init.hull, scene_scale=init.scene_scale, bounds=init.bounds)
        res = train(stage_init, views, cameras, masks, tune, progress=progress)
        hybrid = stage_init.model
        info["hybrid_final_loss"] = res.history[-1]["loss"] if res.history else None
        info["pruned_floaters"] = res.pruned_floaters
    info["finetune_s"] = time.perf_counter() - t
    info["gaussians_after"] = hybrid.num_gaussians
    log.info(
        "hybrid: %d -> %d Gaussians in front of the mesh, fine-tuned %d steps in %.1f s",
        info["gaussians_before"],
        info["gaussians_after"],
        config.mesh.hybrid_iterations,
        info["finetune_s"],
    )
    return hybrid, info


def _load_gaussians(run: RunFolder) -> Renderer:
    from renderers.gaussians.ply import read_ply

    return read_ply(run.splats)


def _load_mesh(run: RunFolder) -> Renderer:
    from renderers.mesh import MeshModel

    return MeshModel.load(run.mesh)


def _load_hybrid(run: RunFolder) -> Renderer:
    from renderers.mesh.hybrid import HybridModel

    return HybridModel.load(run.path)


def _load_neural(run: RunFolder) -> Renderer:
    from renderers.neural import load_run_model

    return load_run_model(run.path)


def _faces(summary: dict[str, Any]) -> str:
    return f"{summary.get('mesh', {}).get('faces', '?')} mesh faces"


REPRESENTATIONS: dict[str, Representation] = {
    "gaussians": Representation(
        "gaussians", _gaussians_from_init, _load_gaussians, lambda s: f"{s['num_gaussians']} Gaussians"
    ),
    "mesh": Representation(
        "mesh", _gaussians_from_init, _load_mesh, _faces, after_training=extract_mesh_stage, keep_trained_gaussians=True
    ),
    "hybrid": Representation(
        "hybrid",
        _gaussians_from_init,
        _load_hybrid,
        lambda s: f"{_faces(s)} + {s['num_gaussians']} Gaussians",
        after_training=hybrid_stage,
    ),
    "neural": Representation(
        "neural", neural_model_from_init, _load_neural, lambda s: f"{s['num_gaussians']} neural primitives"
    ),
}


def representation(name: str, where: Any = None) -> Representation:
    """The registry entry for ``name``; ReconInputError naming ``where`` (e.g. a config.json) when unknown."""
    try:
        return REPRESENTATIONS[name]
    except KeyError:
        raise ReconInputError(f"unknown representation {name!r} (known: {', '.join(REPRESENTATIONS)})", where) from None


def load_model(run: RunFolder | Any) -> Renderer:
    """The model a run folder holds, by its config.json representation (Gaussians when it does not say)."""
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    run.require()
    return representation(run.representation(), run.config_file).load(run)


def mesh_stage(
    model: Any,
    init: Initialisation,
    views: ViewSet,
    cameras: list[Camera],
    masks: list[np.ndarray] | None,
    config: ReconstructConfig,
    progress: ProgressFn | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The after-training stage of ``config.representation`` (mesh or hybrid); ValueError for one without."""
    stage = representation(config.representation).after_training
    if stage is None:
        raise ValueError(f"representation {config.representation!r} has no after-training stage")
    return stage(model, init, views, cameras, masks, config, progress=progress)
