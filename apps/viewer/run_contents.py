"""What the viewer shows of one run folder, whatever representation it holds.

The model comes from ``recon.representations.load_model`` (Gaussians, mesh, hybrid or neural) and the run's
common files from ``recon.run_folder.RunFolder``, so the viewer knows no model file format of its own. From
the model follow the layers: the Gaussians to draw as splats (the model's own, a neural model baked to
Gaussians, or for a mesh run the Gaussians its mesh was fused from), the mesh (mesh and hybrid runs), and the
content's points for framing. The input images come from the run's source when it can still
be read (else renders/), test cameras from the source when it is a benchmark scene.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.run_folder import POINTS, RUN_HINT, RunFolder
from renderers.gaussians.model import GaussianModel

log = logging.getLogger("recon")


@dataclass
class RunContents:
    """Everything the viewer can show from one run folder."""

    run_dir: Path
    model: Any  # what renders: GaussianModel, MeshModel, HybridModel or NeuralPrimitives
    cameras: list[Camera]
    images: list[np.ndarray | None]
    representation: str = "gaussians"
    gaussians: GaussianModel | None = None  # the splat layer
    test_cameras: list[Camera] = field(default_factory=list)
    test_images: list[np.ndarray | None] = field(default_factory=list)
    points: tuple[np.ndarray, np.ndarray] | None = None  # (xyz [N,3], rgb [N,3] in [0,1])
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None  # vertices, faces, vertex rgb
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    masks: list[np.ndarray] | None = None  # input masks, when the source had them (for a visual hull)

    def content_points(self) -> np.ndarray | None:
        """Where the reconstruction is ([N,3]): mesh vertices, else Gaussian centres (for framing)."""
        if self.mesh is not None:
            return np.asarray(self.mesh[0])
        if self.gaussians is not None:
            return self.gaussians.means.detach().float().cpu().numpy()
        return None


@torch.no_grad()
def display_gaussians(model: Any, run_dir: Path | None = None) -> GaussianModel | None:
    """The Gaussians to draw for ``model``: its own (Gaussians, hybrid), a neural model baked to Gaussians
    (what its splats.ply holds), for a mesh the Gaussians it was fused from (the run's splats.ply, when kept)."""
    from renderers.mesh import MeshModel

    if isinstance(model, GaussianModel):
        return model
    if isinstance(getattr(model, "gaussians", None), GaussianModel):  # HybridModel
        return model.gaussians
    if hasattr(model, "to_gaussians"):  # NeuralPrimitives
        return model.to_gaussians()
    if isinstance(model, MeshModel) and run_dir is not None and RunFolder(run_dir).splats.exists():
        from renderers.gaussians.ply import read_ply

        return read_ply(RunFolder(run_dir).splats)
    return None


def mesh_arrays(model: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(vertices, faces, vertex colours) of a MeshModel or of a hybrid's mesh; None for splat-only models."""
    from renderers.mesh import MeshModel

    mesh = model if isinstance(model, MeshModel) else getattr(model, "mesh", None)
    if not isinstance(mesh, MeshModel):
        return None
    v, f, c = mesh.numpy()
    return v.astype(np.float32), f.astype(np.int32), c


def render_device(model: Any, preferred: torch.device) -> torch.device:
    """Where ``model`` can render: hybrids need the CPU kernels (per-pixel far depth, which gsplat lacks) and
    meshes are ray cast by open3d on the CPU; splat models go to ``preferred``."""
    from renderers.mesh import MeshModel
    from renderers.mesh.hybrid import HybridModel

    return torch.device("cpu") if isinstance(model, (MeshModel, HybridModel)) else preferred


def _source_views(source: Path, config: dict, split: str) -> Any:
    from recon.io.detect import read_views

    opts: dict[str, Any] = {"max_size": config.get("max_side")}
    if config.get("track") is not None or split != "train":
        opts["track"] = config.get("track") or 3
    if split != "train":
        opts["split"] = split
    return read_views(source, **opts)


def _read_points(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    import open3d as o3d

    pcd = o3d.io.read_point_cloud(str(path))
    if len(pcd.points) == 0:
        return None
    xyz = np.asarray(pcd.points, dtype=np.float32)
    rgb = np.asarray(pcd.colors, dtype=np.float32) if pcd.has_colors() else np.full_like(xyz, 0.6)
    return xyz, rgb


def load_run(run_dir: str | Path, with_source: bool = True) -> RunContents:
    """Read a run folder for viewing; ReconInputError with a one-line message when it is missing or broken."""
    from recon.representations import load_model

    run = RunFolder(run_dir)
    if not run.path.exists():
        raise ReconInputError("run folder not found", run.path)
    if not run.path.is_dir():
        raise ReconInputError(f"not a folder ({RUN_HINT})", run.path)
    if not run.config_file.exists() and not run.splats.exists():
        raise ReconInputError(f"no splats.ply here ({RUN_HINT})", run.path)
    config = run.read_config_dict()
    model = load_model(run)
    gaussians = display_gaussians(model, run.path)
    if gaussians is not None and gaussians.num_gaussians == 0 and mesh_arrays(model) is None:
        raise ReconInputError("splats.ply holds no Gaussians", run.splats)
    cameras = run.read_cameras()
    metrics = run.read_metrics()
    out = RunContents(
        run_dir=run.path,
        model=model,
        cameras=cameras,
        images=[None] * len(cameras),
        representation=run.representation(),
        gaussians=gaussians,
        mesh=mesh_arrays(model),
        metrics=metrics,
        config=config,
    )
    for k, cam in enumerate(cameras):
        render = run.render_path(cam.name)
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
    if (run / POINTS).exists():
        out.points = _read_points(run / POINTS)
    return out
