"""The in-memory result of every reader: a set of views (images, optional cameras and masks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.cameras import Camera

#: ``meta`` entries the readers keep per view (one item per image, in view order).
PER_VIEW_META = ("exif_focal_px", "image_paths", "mask_paths", "near_far", "frame_ids", "indices", "depth_ranges")


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
        """The views at ``indices``, in that order; per-view entries of ``meta`` (:data:`PER_VIEW_META`, one
        item per view) are subset with them, the rest is copied."""
        meta = {k: _subset_entry(k, v, indices, len(self)) for k, v in self.meta.items()}
        return ViewSet(
            names=[self.names[i] for i in indices],
            images=[self.images[i] for i in indices],
            cameras=None if self.cameras is None else [self.cameras[i] for i in indices],
            masks=None if self.masks is None else [self.masks[i] for i in indices],
            source=self.source,
            meta=meta,
        )


def _subset_entry(key: str, value: object, indices: list[int], n: int) -> object:
    """A per-view meta entry restricted to ``indices``; anything else unchanged."""
    if key in PER_VIEW_META and isinstance(value, (list, tuple)) and len(value) == n:
        return [value[i] for i in indices]
    return value
