"""Settings of the mesh and hybrid representations (extraction, colours, hybrid fine-tuning)."""

from __future__ import annotations

from dataclasses import dataclass

MESH_METHODS = ("tsdf", "poisson")


@dataclass
class MeshConfig:
    """``method``: tsdf (fused depth renders) or poisson (oriented points); ``faces``: decimation target;
    ``color_steps``: Adam (L1) steps after the least-squares vertex-colour fit; hybrid: fine-tuning steps of the
    Gaussians in front of the mesh, how far behind the surface (x scene scale) Gaussians still show, and the
    pruning threshold (pixels' worth a Gaussian must add to some input/orbit view)."""

    method: str = "tsdf"
    faces: int = 50000
    color_steps: int = 0
    hybrid_iterations: int = 150
    hybrid_depth_tolerance: float = 0.3
    hybrid_min_weight: float = 1.0
