"""Render a GaussianModel into a list of Cameras, batching cameras of one size (detached outputs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recon.cameras import Camera
from renderers.gaussians.model import GaussianModel
from renderers.types import RenderOutput


@torch.no_grad()
def render_cameras(
    model: GaussianModel,
    cameras: Sequence[Camera],
    background: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    render_mode: str = "RGB+ED",
    batch_size: int = 4,
) -> list[RenderOutput]:
    """One detached, unbatched RenderOutput per camera, in order; cameras of one size are batched together."""
    outputs: list[RenderOutput | None] = [None] * len(cameras)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, cam in enumerate(cameras):
        by_size.setdefault((cam.width, cam.height), []).append(i)
    for indices in by_size.values():
        for start in range(0, len(indices), max(1, batch_size)):
            chunk = indices[start : start + max(1, batch_size)]
            out = model.render([cameras[i] for i in chunk], background=background, render_mode=render_mode)
            for j, i in enumerate(chunk):
                outputs[i] = out[j].detach()
    return [o for o in outputs if o is not None]
