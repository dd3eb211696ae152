"""3D Gaussians: model (parameters, optimisers, rendering), densify/prune strategy,
PLY import/export and .splat export."""

from renderers.gaussians.model import (
    DEFAULT_LRS,
    SH_C0,
    GaussianModel,
    means_lr_scheduler,
)
from renderers.gaussians.ply import read_ply, write_ply
from renderers.gaussians.splat_format import read_splat, write_splat
from renderers.gaussians.strategy import DensifyConfig, DensifyStrategy, prune_mask

__all__ = [
    "DEFAULT_LRS",
    "SH_C0",
    "DensifyConfig",
    "DensifyStrategy",
    "GaussianModel",
    "means_lr_scheduler",
    "prune_mask",
    "read_ply",
    "read_splat",
    "write_ply",
    "write_splat",
]
