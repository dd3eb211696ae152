"""What every renderer returns and is: :class:`RenderOutput` (colour, coverage, expected depth for one camera
or a batch), the :class:`Renderer` protocol every representation satisfies, and :class:`TrainableSplats`, what
the trainer and the densify strategy need of a splat set.

Renderers (Gaussians, meshes, neural primitives, the hybrid) all hand back a RenderOutput, so the pipeline,
losses, metrics and compositing code never care which representation produced the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn


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

    def __getitem__(self, i: int) -> RenderOutput:
        """Camera ``i`` of a batched output."""
        if not self.batched:
            raise TypeError("only a batched RenderOutput can be indexed")
        return RenderOutput(
            rgb=self.rgb[i],
            alpha=self.alpha[i],
            depth=None if self.depth is None else self.depth[i],
            meta=self.meta,
        )

    def unbind(self) -> list[RenderOutput]:
        """One unbatched RenderOutput per camera."""
        return [self[i] for i in range(len(self))]

    def detach(self) -> RenderOutput:
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


@runtime_checkable
class Renderer(Protocol):
    """Anything a run can hold: renders cameras into a RenderOutput and writes its own run-folder files."""

    def render(
        self,
        cameras: Any,
        width: int | None = None,
        height: int | None = None,
        background: Any = None,
        render_mode: str = "RGB+ED",
        **kwargs: Any,
    ) -> RenderOutput:
        """One camera -> unbatched output; a list of cameras of one size -> batched output."""
        ...

    def save_run_files(self, folder: Path) -> list[str]:
        """Write the representation's files into a run folder; returns their names."""
        ...


@runtime_checkable
class TrainableSplats(Renderer, Protocol):
    """A splat set the trainer and the densify strategy can optimise: per-primitive rows in ``splats`` (every
    key has one row per primitive; the strategy clones, splits and prunes all of them), activations, one
    optimiser per row parameter, and an SH degree the trainer raises step by step."""

    splats: nn.ParameterDict
    sh_degree: int
    active_sh_degree: int

    @property
    def num_gaussians(self) -> int: ...

    @property
    def means(self) -> Tensor: ...

    @property
    def quats(self) -> Tensor: ...

    @property
    def scales(self) -> Tensor: ...

    @property
    def opacities(self) -> Tensor: ...

    def undrawn(self) -> Tensor | None: ...

    def make_optimizers(
        self, lrs: dict[str, float] | None = None, scene_scale: float = 1.0, batch_size: int = 1
    ) -> dict[str, torch.optim.Optimizer]: ...
