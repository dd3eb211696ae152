"""Differentiable regularisers for sparse-view Gaussian training (torch; any device).

Each term targets a failure mode that sparse-view methods report:

* ``depth_smoothness``: edge-aware total variation of rendered depth (RegNeRF's depth smoothness, DNGaussian
  / FSGS-style geometry regularisation): flat regions of the image should have smooth depth.
* ``opacity_entropy``: binary entropy of opacities; semi-transparent Gaussians are how few views get
  "explained" by floaters and fog, so push opacities to 0 or 1 (the 0s are then pruned).
* ``scale_regularizer``: PhysGaussian's anisotropy penalty (max/min scale ratio above a threshold) plus a
  mean-size term; needle-like and huge Gaussians overfit the training views and streak in novel ones.
* ``flatness``: smallest over middle scale, towards flat discs (2DGS / Gaussian surfels): a surface element
  has no thickness, so its unseen depth extent cannot streak in a new view.
* ``alpha_mask_loss``: rendered alpha should match the object mask (GaussianObject, masks-as-supervision).
* ``stereo_depth_loss``: rendered depth against the input views' own confident stereo depth (the stand-in
  for DNGaussian / FSGS's monocular depth), relative error weighted by the stereo confidence.
* ``dropout_scale``: Gaussian dropout (DropGaussian / DropoutGS): random Gaussians left out of a training
  render, the rest compensated, so every Gaussian must be useful on its own rather than co-adapt to the few
  input views.
* ``random_background`` + ``composite``: train against a random background so the model cannot paint the
  background colour into the object's transparency (3DGS's random_background option).
All losses return a 0-d tensor (a mean, so weights do not depend on the number of pixels or Gaussians).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

_EPS = 1e-6
LN2 = math.log(2.0)  # maximum of opacity_entropy


def depth_smoothness(
    depth: torch.Tensor,
    image: torch.Tensor,
    alpha: torch.Tensor | None = None,
    edge_sharpness: float = 10.0,
    normalize: bool = True,
) -> torch.Tensor:
    """Edge-aware TV of ``depth`` [H,W]: sum_dir mean(|d depth| * exp(-edge_sharpness * mean_c |d image|)).

    ``image`` [H,W,3] (treated as a constant: gradients flow to depth only); ``alpha`` [H,W] optional
    weights (each neighbour pair weighted by the product of its alphas, so background pixels do not count).
    ``normalize`` divides by the (detached) mean depth so the term is independent of the scene scale.
    """
    if depth.dim() == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.dim() != 2 or image.shape[:2] != depth.shape:
        raise ValueError(f"depth {tuple(depth.shape)} and image {tuple(image.shape)} must be [H,W] and [H,W,3]")
    img = image.detach().to(depth.dtype)
    w = None
    if alpha is not None:
        w = alpha.reshape(depth.shape).to(depth.dtype)
    d = depth
    if normalize:
        scale = _sum64(d * w) / _sum64(w).clamp_min(_EPS) if w is not None else _sum64(d) / d.numel()
        d = d / scale.to(depth.dtype).detach().abs().clamp_min(_EPS)
    total = depth.new_zeros((), dtype=torch.float64)
    for dim in (0, 1):
        dd = torch.diff(d, dim=dim).abs()
        di = torch.diff(img, dim=dim).abs().mean(dim=-1)
        term = dd * torch.exp(-edge_sharpness * di)
        if w is None:
            total = total + _sum64(term) / term.numel()
        else:
            pair = w.narrow(dim, 0, w.shape[dim] - 1) * w.narrow(dim, 1, w.shape[dim] - 1)
            total = total + _sum64(term * pair) / _sum64(pair).clamp_min(_EPS)
    return total.to(depth.dtype)


def _sum64(t: torch.Tensor) -> torch.Tensor:
    """Sum in float64: torch splits a large float32 sum between threads, so its last bits (and a training run
    whose gradients depend on the value) would change with the thread count; in float64 that difference is far
    below what the float32 result keeps."""
    return t.to(torch.float64).sum()


def opacity_entropy(opacities: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy -(o ln o + (1-o) ln(1-o)) of opacities in [0, 1], in nats.

    0 at o = 0 or 1, maximal (ln 2) at 0.5; the gradient pushes each opacity away from 0.5. Opacities are
    clamped to [1e-6, 1 - 1e-6] so gradients stay finite at the ends.
    """
    o = opacities.clamp(_EPS, 1.0 - _EPS)
    return -(o * torch.log(o) + (1.0 - o) * torch.log1p(-o)).mean()


def scale_regularizer(
    log_scales: torch.Tensor,
    max_ratio: float = 10.0,
    ratio_weight: float = 1.0,
    size_weight: float = 0.0,
    max_scale: float | None = None,
    in_plane: bool = False,
) -> torch.Tensor:
    """Penalty on Gaussian shapes from log-scales [N,3].

    ratio_weight * mean(relu(max_s / min_s - max_ratio))   (PhysGaussian: no Gaussian thinner than 1:max_ratio)
    + size_weight * mean(mean_axis(s))                      (keeps Gaussians small; scale-dependent, default off)
    + mean(relu(max_s - max_scale))                         (only when max_scale is given: caps huge Gaussians)

    ``in_plane``: the ratio is max / middle scale instead, so flat discs (surface elements, see ``flatness``)
    are free and only needles are capped.
    """
    if log_scales.dim() != 2 or log_scales.shape[-1] != 3:
        raise ValueError(f"log_scales must be [N,3], got {tuple(log_scales.shape)}")
    if len(log_scales) == 0:
        return log_scales.sum()
    lmax = log_scales.max(dim=-1).values
    lmin = log_scales.median(dim=-1).values if in_plane else log_scales.min(dim=-1).values
    # Ratio from log space (exp of a difference): no division by a tiny scale.
    ratio = torch.exp(lmax - lmin)
    loss = ratio_weight * F.relu(ratio - max_ratio).mean()
    if size_weight:
        loss = loss + size_weight * torch.exp(log_scales).mean()
    if max_scale is not None:
        loss = loss + F.relu(torch.exp(lmax) - max_scale).mean()
    return loss


def flatness(log_scales: torch.Tensor) -> torch.Tensor:
    """Mean ratio of each Gaussian's smallest scale to its middle one, in (0, 1]: pulls Gaussians towards flat
    discs (2DGS / Gaussian surfels: a surface element has no thickness). Scale-free, so the same weight fits
    any scene size. A disc on the surface looks the same from any side; a thick blob fitted to a few views
    shows its unseen depth extent as a streak from a new one."""
    if log_scales.dim() != 2 or log_scales.shape[-1] != 3:
        raise ValueError(f"log_scales must be [N,3], got {tuple(log_scales.shape)}")
    if len(log_scales) == 0:
        return log_scales.sum()
    ordered = log_scales.sort(dim=-1).values
    return torch.exp(ordered[:, 0] - ordered[:, 1]).mean()


def alpha_mask_loss(alpha: torch.Tensor, mask: torch.Tensor, kind: Literal["bce", "l1"] = "bce") -> torch.Tensor:
    """Rendered alpha [H,W] (or [...,1]) against the object mask [H,W] in [0,1]: mean BCE or mean L1."""
    a = alpha.reshape(alpha.shape[:-1]) if alpha.dim() == mask.dim() + 1 and alpha.shape[-1] == 1 else alpha
    m = mask.to(a.dtype).reshape(a.shape)
    if kind == "l1":
        return (a - m).abs().mean()
    if kind == "bce":
        a = a.clamp(_EPS, 1.0 - _EPS)
        return -(m * torch.log(a) + (1.0 - m) * torch.log1p(-a)).mean()
    raise ValueError(f"alpha_mask_loss kind must be 'bce' or 'l1', got {kind!r}")


def random_background(
    shape: tuple[int, ...] = (3,),
    generator: torch.Generator | None = None,
    mode: Literal["solid", "noise"] = "solid",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A random background of ``shape`` (last dim 3) in [0, 1].

    "solid": one random colour broadcast to ``shape`` (what 3DGS does each step); "noise": i.i.d. per pixel.
    Drawn on the CPU from ``generator`` (reproducible whatever the device) and moved to ``device``.
    """
    if len(shape) == 0 or shape[-1] != 3:
        raise ValueError(f"background shape must end in 3, got {shape}")
    if mode == "solid":
        bg = torch.rand(3, generator=generator).expand(*shape).clone()
    elif mode == "noise":
        bg = torch.rand(*shape, generator=generator)
    else:
        raise ValueError(f"random_background mode must be 'solid' or 'noise', got {mode!r}")
    return bg.to(device) if device is not None else bg


def composite(rgb: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Over-composite: rgb + (1 - alpha) * background.

    For renders, ``rgb`` is premultiplied (a splatting renderer's accumulated colour); to put a ground-truth
    image on the same background use ``composite(gt * mask, mask, background)``.
    """
    a = alpha if alpha.dim() == rgb.dim() else alpha.unsqueeze(-1)
    return rgb + (1.0 - a) * background


__all__ = [
    "depth_smoothness",
    "opacity_entropy",
    "scale_regularizer",
    "flatness",
    "alpha_mask_loss",
    "random_background",
    "composite",
    "LN2",
]


def dropout_scale(n: int, rate: float, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-Gaussian opacity factors for one dropout training step: 0 with probability ``rate``, else
    1/(1-rate) (inverted dropout: the expected opacity is unchanged). Drawn on the CPU from ``generator`` so a
    seed gives the same draws on every device."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    keep = torch.rand(n, generator=generator) >= rate
    return (keep.to(torch.float32) / (1.0 - rate)).to(device)


def stereo_depth_loss(depth: torch.Tensor, target: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    """Confidence-weighted mean relative error |d - t| / t between rendered depth ``depth`` [H,W] (or [H,W,1],
    any size: area-resampled to the target's) and stereo depth ``target`` [h,w] (0 = unknown) with
    ``confidence`` [h,w] in [0, 1]. Zero when nothing is trusted."""
    if depth.dim() == 3:
        depth = depth[..., 0]
    if depth.shape != target.shape:
        depth = F.interpolate(depth[None, None], size=tuple(target.shape), mode="area")[0, 0]
    w = confidence * (target > 0)
    total = w.sum()
    if float(total) <= 0:
        return depth.new_zeros(())
    rel = (depth - target).abs() / target.clamp_min(_EPS)
    return (w * rel).sum() / total


def decay_opacities(logits: torch.Tensor, rate: float) -> None:
    """Opacity decay (Binocular3DGS): every opacity ``o`` becomes ``(1 - rate) * o``, in place on the logits.

    Gaussians the loss keeps needing get their opacity back from the gradient each step; the ones only a few
    pixels of a few views support (floaters that sparse views cannot rule out) fade until pruning removes them."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"opacity decay rate must be in [0, 1), got {rate}")
    if rate == 0.0:
        return
    with torch.no_grad():
        o = torch.sigmoid(logits) * (1.0 - rate)
        logits.copy_(torch.log(o) - torch.log1p(-o))


def binocular_shift(depth: torch.Tensor, alpha: torch.Tensor, ratio: float, generator: torch.Generator) -> float:
    """Baseline of this step's virtual stereo partner: ``ratio`` times the median rendered depth where the view
    is covered (so the disparity is about ``ratio`` x the focal length in pixels at any scene scale), with a
    random sign; 0 when nothing is covered."""
    d = depth.detach().reshape(-1)[alpha.detach().reshape(-1) > 0.5]
    if d.numel() == 0:
        return 0.0
    sign = 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0
    return sign * ratio * float(d.median())


def binocular_partner(
    viewmat: torch.Tensor, K: torch.Tensor, baseline: float, width: int, height: int, scale: float = 1.0
) -> tuple[tuple[torch.Tensor, torch.Tensor], int, int]:
    """The virtual stereo partner of the camera (``viewmat`` [4,4] or [1,4,4], ``K`` [3,3] or [1,3,3]): moved
    ``baseline`` along its own x axis, rendered ``scale`` times its size with the same field of view. Returns
    ``((viewmats [1,4,4], Ks [1,3,3]), width, height)``; gradients reach the inputs (pose refinement)."""
    partner_vm = viewmat.reshape(-1, 4, 4).clone()
    partner_vm[:, 0, 3] = partner_vm[:, 0, 3] - baseline  # x_partner = x_cam - baseline
    pw = max(1, round(width * scale))
    ph = max(1, round(height * scale))
    partner_K = K.reshape(-1, 3, 3).clone()
    partner_K[:, 0] = partner_K[:, 0] * (pw / width)
    partner_K[:, 1] = partner_K[:, 1] * (ph / height)
    return (partner_vm, partner_K), pw, ph


def binocular_consistency(
    depth: torch.Tensor,
    alpha: torch.Tensor,
    partner_rgb: torch.Tensor,
    target: torch.Tensor,
    fx: float,
    baseline: float,
) -> torch.Tensor:
    """Binocular3DGS's self-supervision: the render of a virtual camera moved ``baseline`` along the input
    camera's x axis, ``partner_rgb`` [H,W,3], warped back into the input view through the input view's rendered
    depth [H,W] (rectified pair: disparity fx * baseline / depth), must reproduce the input image ``target``.
    Mean L1 over covered pixels (alpha > 0.5) that land inside the partner image; gradients reach the depth
    (geometry) and the partner render (appearance away from the input views). The partner render may be smaller
    than the input view (same field of view): it is sampled in normalised coordinates."""
    if depth.dim() == 3:
        depth = depth[..., 0]
    h, w = depth.shape
    if baseline == 0.0:
        return depth.new_zeros(())
    u = torch.arange(w, dtype=depth.dtype, device=depth.device)[None, :] + 0.5
    v = torch.arange(h, dtype=depth.dtype, device=depth.device)[:, None] + 0.5
    u_partner = u - fx * baseline / depth.clamp_min(_EPS)
    grid = torch.stack([2.0 * u_partner / w - 1.0, (2.0 * v / h - 1.0).expand(h, w)], dim=-1)
    warped = F.grid_sample(
        partner_rgb.permute(2, 0, 1)[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False
    )[0].permute(1, 2, 0)
    valid = (alpha.detach().reshape(h, w) > 0.5) & (u_partner > 0) & (u_partner < w) & (depth > 0)
    count = valid.sum()
    if int(count) == 0:
        return depth.new_zeros(())
    err = (warped - target).abs().mean(dim=-1)
    return (err * valid).sum() / count


def source_coordinates(
    depth: torch.Tensor,
    K: torch.Tensor,
    viewmat: torch.Tensor,
    source_K: torch.Tensor,
    source_viewmat: torch.Tensor,
    pixels: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where this view's pixels land in another camera through this view's depth: (us, vs) pixel coordinates
    in the source image and z, the point's depth along the source's optical axis. ``depth`` [H,W] (or, with
    ``pixels`` = (u, v) pixel-centre coordinates of any shape, the depths there); cameras as in
    :func:`warp_source_into_view`. Gradients reach ``depth``."""
    if pixels is None:
        h, w = depth.shape
        u = torch.arange(w, dtype=depth.dtype, device=depth.device)[None, :].expand(h, w) + 0.5
        v = torch.arange(h, dtype=depth.dtype, device=depth.device)[:, None].expand(h, w) + 0.5
    else:
        u, v = pixels
    K = K.reshape(3, 3)
    vm = viewmat.reshape(4, 4)
    svm = source_viewmat.reshape(4, 4)
    # source-camera coordinates of the back-projected pixels: R_s R^T (X_cam - t) + t_s, as one affine map
    R = svm[:3, :3] @ vm[:3, :3].T
    t = svm[:3, 3] - R @ vm[:3, 3]
    rays = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], dim=-1)
    src = (rays @ R.T) * depth[..., None] + t
    z = src[..., 2]
    sK = source_K.reshape(3, 3)
    zs = z.clamp_min(_EPS)
    us = sK[0, 0] * src[..., 0] / zs + sK[0, 2]
    vs = sK[1, 1] * src[..., 1] / zs + sK[1, 2]
    return us, vs, z


def sample_source(
    source: torch.Tensor, us: torch.Tensor, vs: torch.Tensor, z: torch.Tensor, mode: str = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``source`` [h,w,C] sampled at (us, vs) from :func:`source_coordinates` (``mode`` of grid_sample, border
    padding): (values [..., C], inside [...] bool: in front of the source camera and inside its image)."""
    sh, sw = source.shape[:2]
    grid = torch.stack([2.0 * us / sw - 1.0, 2.0 * vs / sh - 1.0], dim=-1).reshape(1, 1, -1, 2)
    values = F.grid_sample(source.permute(2, 0, 1)[None], grid, mode=mode, padding_mode="border", align_corners=False)
    values = values[0, :, 0].T.reshape(*us.shape, source.shape[-1])
    inside = (z > _EPS) & (us > 0) & (us < sw) & (vs > 0) & (vs < sh)
    return values, inside.detach()


def warp_source_into_view(
    depth: torch.Tensor,
    K: torch.Tensor,
    viewmat: torch.Tensor,
    source: torch.Tensor,
    source_K: torch.Tensor,
    source_viewmat: torch.Tensor,
    pixels: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The image ``source`` [h,w,3] of another camera (``source_K`` [3,3], world->camera ``source_viewmat``
    [4,4]) resampled into this view through this view's depth (z along the optical axis; ``K``, ``viewmat`` as
    for the source). ``depth`` is the depth map [H,W], or with ``pixels`` = (u, v) pixel-centre coordinates of
    any shape the depths at those pixels. Returns (warped [..., 3], inside [...] bool: the point lies in front
    of the source camera and lands inside its image). Gradients reach ``depth``."""
    us, vs, z = source_coordinates(depth, K, viewmat, source_K, source_viewmat, pixels)
    return sample_source(source, us, vs, z)


def multiview_photometric(
    depth: torch.Tensor,
    alpha: torch.Tensor,
    target: torch.Tensor,
    K: torch.Tensor,
    viewmat: torch.Tensor,
    sources: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    pixels: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multi-view photometric consistency of the rendered depth (the self-supervision of learned multi-view
    stereo and of Monodepth2): every other input photo ``(image [h,w,3], K, viewmat)`` warped into this view
    through its rendered depth [H,W] must reproduce this view's photo ``target`` [H,W,3]. Per pixel the best
    source counts (a point one photo does not see, occluded or out of frame, is judged by another), over covered
    pixels (alpha > 0.5) that at least one source sees. Unlike ``binocular_consistency`` it needs no extra render:
    the real neighbouring photos supervise the depth directly. ``pixels`` > 0 scores that many random pixels
    (drawn with ``generator``; an unbiased estimate at a fraction of the cost of every pixel)."""
    if depth.dim() == 3:
        depth = depth[..., 0]
    h, w = depth.shape
    covered = alpha.detach().reshape(h, w) > 0.5
    if 0 < pixels < h * w:
        idx = torch.randint(0, h * w, (pixels,), generator=generator).to(depth.device)
        u = (idx % w).to(depth.dtype) + 0.5
        v = torch.div(idx, w, rounding_mode="floor").to(depth.dtype) + 0.5
        d, covered, target = depth.reshape(-1)[idx], covered.reshape(-1)[idx], target.reshape(-1, 3)[idx]
        where: tuple[torch.Tensor, torch.Tensor] | None = (u, v)
    else:
        d, where = depth, None
    errors = []
    for image, sK, svm in sources:
        warped, inside = warp_source_into_view(d, K, viewmat, image, sK, svm, pixels=where)
        err = (warped - target).abs().mean(dim=-1)
        errors.append(torch.where(inside, err, torch.full_like(err, float("inf"))))
    if not errors:
        return depth.new_zeros(())
    best = torch.stack(errors).min(dim=0).values
    valid = covered & torch.isfinite(best)
    count = valid.sum()
    if int(count) == 0:
        return depth.new_zeros(())
    return torch.where(valid, best, torch.zeros_like(best)).sum() / count
