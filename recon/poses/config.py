"""Settings of pose estimation for unposed photos and of the photometric pose refinement during training."""

from __future__ import annotations

from dataclasses import dataclass

POSE_METHODS = ("auto", "own", "colmap")


@dataclass
class PoseConfig:
    """``method``: auto (pycolmap's incremental mapper set for a few views; its global mapper where that leaves
    views out), own (built-in SfM) or colmap (pycolmap's defaults); ``refine``: per-camera SE(3) corrections
    trained with the model (zero-initialised, learning rate ``lr``), moving from ``refine_start`` x the
    iterations; ``hfov_deg``: the photos' horizontal field of view, held like an EXIF focal (and overriding
    one), for photos without EXIF: three photos that all look at one point barely fix a focal (DTU scan24's
    3 views without it: focal 18% off, 5-6 deg wrong; with it: 1.1 deg)."""

    method: str = "auto"
    hfov_deg: float | None = None
    refine: bool = True
    lr: float = 2e-4
    refine_start: float = 0.1
