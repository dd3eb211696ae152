"""The repair model's guide: the nearest input photo warped into a view through the reconstruction's depth.

A render at a view no input saw is blurred or broken where the reconstruction is unsure, but most of what it
shows was photographed by some input. Warping the nearest input photo into the view through the render's own
depth brings that texture to the right place (image-based rendering); the repair model then learns where to
trust it. A warped pixel is valid only if it lies in front of the source camera, inside its image, and is not
occluded there: its depth in the source camera agrees with the reconstruction's depth rendered at the source
(within ``tolerance`` relative). The same function makes the guide for training pairs and at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from priors.regularizers import sample_source, source_coordinates
from recon.cameras import Camera


@dataclass
class GuideSource:
    """One input photo that can guide a repair: its image [h,w,3] in [0,1], its camera, and the reconstruction's
    depth rendered at that camera [h,w] (z along the optical axis; 0 where nothing was rendered)."""

    image: Tensor
    camera: Camera
    depth: Tensor


def sources_from_renders(images: list[Tensor], cameras: list[Camera], renders: list[Any]) -> list[GuideSource]:
    """Guide sources from input photos, their cameras and the reconstruction's renders there (anything with a
    ``depth`` [h,w] tensor, e.g. RGB+ED render outputs)."""
    return [GuideSource(image=im, camera=c, depth=o.depth.detach().cpu()) for im, c, o in zip(images, cameras, renders)]


def nearest_sources(
    camera: Camera, sources: list[GuideSource], count: int = 1, exclude: int | None = None
) -> list[int]:
    """Indices of the ``count`` sources whose optical axes are closest in direction to ``camera``'s, ties broken
    by centre distance; source number ``exclude`` is skipped (the view itself, when it is an input)."""
    axis = camera.R[2]
    scored = []
    for k, s in enumerate(sources):
        if k == exclude:
            continue
        cos = float(np.dot(axis, s.camera.R[2]))
        dist = float(np.linalg.norm(camera.center - s.camera.center))
        scored.append((-cos, dist, k))
    return [k for _, _, k in sorted(scored)[:count]]


def _tensors(camera: Camera) -> tuple[Tensor, Tensor]:
    K = torch.as_tensor(np.asarray(camera.K, dtype=np.float32))
    vm = torch.as_tensor(np.asarray(camera.viewmat, dtype=np.float32))
    return K, vm


@torch.no_grad()
def warp_guide(
    depth: Tensor,
    alpha: Tensor,
    camera: Camera,
    source: GuideSource,
    tolerance: float = 0.05,
    min_alpha: float = 0.5,
) -> Tensor:
    """[H,W,4] guide for a view (``depth``, ``alpha`` [H,W] rendered there): the source photo warped into it and
    a validity channel (1 where the warp is trusted: rendered surface, inside the source image, not occluded)."""
    K, vm = _tensors(camera)
    sK, svm = _tensors(source.camera)
    d = depth.to(torch.float32)
    us, vs, z = source_coordinates(d, K, vm, sK, svm)
    warped, inside = sample_source(source.image.to(torch.float32), us, vs, z)
    # occlusion: the point's depth in the source camera against the depth rendered there
    sd = sample_source(source.depth[..., None].to(torch.float32), us, vs, z, mode="nearest")[0][..., 0]
    visible = (sd > 0) & ((z - sd).abs() <= tolerance * sd)
    valid = inside & visible & (d > 0) & (alpha > min_alpha)
    return torch.cat([warped.clamp(0.0, 1.0) * valid[..., None], valid[..., None].to(torch.float32)], dim=-1)


def guide_for_view(
    depth: Tensor, alpha: Tensor, camera: Camera, sources: list[GuideSource], exclude: int | None = None
) -> Tensor:
    """The guide [H,W,4] from the nearest source (by viewing direction) other than number ``exclude``; all zeros
    (nothing valid) when there is none."""
    picks = nearest_sources(camera, sources, 1, exclude=exclude)
    if not picks:
        return torch.zeros(*depth.shape, 4)
    return warp_guide(depth, alpha, camera, sources[picks[0]])


__all__ = ["GuideSource", "guide_for_view", "nearest_sources", "sources_from_renders", "warp_guide"]
