"""Settings of pose estimation for unposed photos and of the photometric pose refinement during training."""

from __future__ import annotations

from dataclasses import dataclass

POSE_METHODS = ("auto", "own", "colmap")


@dataclass
class PoseConfig:
    """``method``: auto (pycolmap's incremental mapper set for a few views; its global mapper where that leaves
    views out), own (built-in SfM) or colmap (pycolmap's defaults); ``refine``: per-camera SE(3) corrections
    trained with the model (zero-initialised, learning rate ``lr``), moving from ``refine_start`` x the
    iterations."""

    method: str = "auto"
    refine: bool = True
    lr: float = 2e-4
    refine_start: float = 0.1
