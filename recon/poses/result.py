"""What a pose estimator returns (its own module, so the estimators need not import each other)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recon.cameras import Camera
from recon.poses.align import Similarity


@dataclass
class PoseResult:
    """Estimated cameras (one per registered view, in ``registered`` order), failures, sparse points.

    ``normalisation`` maps the SfM frame to the returned (normalised) frame; points are in the latter.
    """

    cameras: list[Camera]
    registered: list[str]
    failed: list[str]
    xyz: np.ndarray
    rgb: np.ndarray
    normalisation: Similarity
    method: str = "auto"
    info: dict = field(default_factory=dict)
