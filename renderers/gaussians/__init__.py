"""3D Gaussians: model (parameters, optimisers, rendering, checkpoints), densify/prune strategy,
PLY import/export and .splat export."""
from renderers.gaussians.model import (
    DEFAULT_LRS,
    SH_C0,
    Checkpoint,
    GaussianModel,
    load_checkpoint,
    means_lr_scheduler,
    save_checkpoint,
)
from renderers.gaussians.ply import read_ply, write_ply
from renderers.gaussians.splat_format import read_splat, write_splat
from renderers.gaussians.strategy import DensifyConfig, DensifyStrategy, prune_mask

__all__ = [
    "DEFAULT_LRS",
    "SH_C0",
    "Checkpoint",
    "DensifyConfig",
    "DensifyStrategy",
    "GaussianModel",
    "load_checkpoint",
    "means_lr_scheduler",
    "prune_mask",
    "read_ply",
    "read_splat",
    "save_checkpoint",
    "write_ply",
    "write_splat",
]
