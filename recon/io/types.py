"""The in-memory result of every reader: a set of views (images, optional cameras and masks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.cameras import Camera


@dataclass
class ViewSet:
    """Images of one object, as read from disk.

    images: HxWx3 float32 in [0, 1]; masks: HxW float32 in [0, 1] (1 = object) or None;
    cameras: one Camera per image, or None when the source has no poses (the pose estimator fills them).
    """

    names: list[str]
    images: list[np.ndarray]
    cameras: list[Camera] | None = None
    masks: list[np.ndarray] | None = None
    source: Path | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: list[int]) -> ViewSet:
        """The views at ``indices``, in that order."""
        return ViewSet(
            names=[self.names[i] for i in indices],
            images=[self.images[i] for i in indices],
            cameras=None if self.cameras is None else [self.cameras[i] for i in indices],
            masks=None if self.masks is None else [self.masks[i] for i in indices],
            source=self.source,
            meta=dict(self.meta),
        )
