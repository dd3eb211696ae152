"""What every renderer returns: colour, coverage and expected depth for one camera (or a batch of cameras).

Renderers (Gaussians, meshes, neural primitives) all hand back a :class:`RenderOutput`, so the pipeline,
losses, metrics and compositing code never care which representation produced the pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass
class RenderOutput:
    """Rendered images, float32 tensors on the renderer's device.

    rgb:   [H, W, 3] in [0, 1] (background already composited, if one was given)
    alpha: [H, W] accumulated opacity in [0, 1]
    depth: [H, W] expected depth along the optical axis (alpha-normalised; 0 where nothing was hit),
           or None when the renderer was asked for colour only
    meta:  renderer-specific extras (for Gaussians: the rasterizer's meta with ``means2d``, ``radii``...)

    A batched output (several cameras rendered at once) carries a leading camera dimension on every tensor;
    ``out[i]`` returns camera ``i`` as an unbatched RenderOutput (meta is shared, not sliced).
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rgb.shape[-1] != 3:
            raise ValueError(f"rgb must end in 3 channels, got shape {tuple(self.rgb.shape)}")
        if self.alpha.shape != self.rgb.shape[:-1]:
            raise ValueError(f"alpha shape {tuple(self.alpha.shape)} does not match rgb {tuple(self.rgb.shape)}")
        if self.depth is not None and self.depth.shape != self.alpha.shape:
            raise ValueError(f"depth shape {tuple(self.depth.shape)} does not match alpha {tuple(self.alpha.shape)}")

    @property
    def batched(self) -> bool:
        """True when the tensors carry a leading camera dimension."""
        return self.rgb.dim() == 4

    def __len__(self) -> int:
        if not self.batched:
            raise TypeError("an unbatched RenderOutput has no length")
        return int(self.rgb.shape[0])

    def __getitem__(self, i: int) -> "RenderOutput":
        """Camera ``i`` of a batched output."""
        if not self.batched:
            raise TypeError("only a batched RenderOutput can be indexed")
        return RenderOutput(
            rgb=self.rgb[i],
            alpha=self.alpha[i],
            depth=None if self.depth is None else self.depth[i],
            meta=self.meta,
        )

    def unbind(self) -> list["RenderOutput"]:
        """One unbatched RenderOutput per camera."""
        return [self[i] for i in range(len(self))]

    def detach(self) -> "RenderOutput":
        """Same images without autograd history (meta dropped: it holds graph tensors)."""
        return RenderOutput(
            rgb=self.rgb.detach(),
            alpha=self.alpha.detach(),
            depth=None if self.depth is None else self.depth.detach(),
        )

    def rgb_uint8(self) -> np.ndarray:
        """Colour as uint8 numpy ([H,W,3] or [C,H,W,3]), rounded and clipped, ready for PNG."""
        arr = self.rgb.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        return arr.cpu().numpy()
