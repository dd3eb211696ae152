"""Neural primitives: per-primitive features decoded by a small shared (prunable) MLP, splatted like Gaussians."""

from renderers.neural.mlp import DecoderMLP, PruneSchedule, PruningAdam
from renderers.neural.model import NeuralPrimitives, visible_mask
from renderers.neural.run_files import load_model, load_run_model, save_model, save_run_files

__all__ = [
    "DecoderMLP",
    "NeuralPrimitives",
    "PruneSchedule",
    "PruningAdam",
    "load_model",
    "load_run_model",
    "save_model",
    "save_run_files",
    "visible_mask",
]
