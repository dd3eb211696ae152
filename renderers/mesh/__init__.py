"""Meshes: extraction from Gaussians (open3d TSDF / Poisson), ray-cast rendering with differentiable vertex
colours, Gaussian + mesh hybrid compositing, mesh files (PLY, OBJ, GLB)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from renderers.mesh.model import MeshModel, RayHits

__all__ = ["MeshModel", "RayHits", "load_run_model"]


def load_run_model(run_dir: str | Path) -> Any:
    """The model of a "mesh" run (MeshModel from mesh.ply) or a "hybrid" run (HybridModel: splats.ply + mesh.ply)."""
    from recon.errors import ReconInputError
    from recon.io.jsonfile import read_json_object

    run_dir = Path(run_dir)
    cfg = read_json_object(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    rep = cfg.get("representation", "mesh")
    if rep == "mesh":
        return MeshModel.load(run_dir / "mesh.ply")
    if rep == "hybrid":
        from renderers.mesh.hybrid import HybridModel

        return HybridModel.load(run_dir)
    raise ReconInputError(f"representation {rep!r} is not a mesh run", run_dir / "config.json")
