"""Meshes: extraction from Gaussians (open3d TSDF / Poisson), ray-cast rendering with differentiable vertex
colours, Gaussian + mesh hybrid compositing, mesh files (PLY, OBJ, GLB). A run folder's mesh or hybrid is
loaded through ``recon.representations.load_model``."""

from __future__ import annotations

from renderers.mesh.model import MeshModel, RayHits

__all__ = ["MeshModel", "RayHits"]
