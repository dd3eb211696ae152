"""Adaptive density control for 3D Gaussians: clone, split, prune and opacity reset (3DGS / gsplat behaviour).

Per training step the strategy accumulates, for every Gaussian seen by a camera, the norm of the loss
gradient with respect to its projected 2D centre (in NDC-like units: pixel gradients times [W/2, H/2] and the
number of cameras in the batch). Every ``refine_every`` steps inside [refine_start_iter, refine_stop_iter):

* Gaussians whose mean gradient exceeds ``grow_grad2d`` grow: small ones (max scale <= grow_scale3d x scene
  scale) are cloned in place, large ones are replaced by 2 samples drawn from themselves with scales / 1.6;
* Gaussians with opacity < ``prune_opa`` are removed, and (after the first opacity reset) so are ones larger
  than ``prune_scale3d`` x scene scale;
* ``max_gaussians`` caps the count: when growth would exceed it only the highest-gradient candidates grow.

Every ``reset_every`` steps all opacities are clamped to at most ``2 * prune_opa``.

Every change of the parameter rows is mirrored in the Adam states: kept rows keep their moments, new rows
start with zero moments, removed rows are dropped. The parameters are replaced by new ``nn.Parameter``
objects both in the splats dict and in the optimisers' parameter groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recon.kernels.projection import quat_to_rotmat  # the one quaternion convention (wxyz)
from renderers.types import TrainableSplats

SPLIT_SCALE_DIVISOR = 1.6

Optimizers = dict[str, torch.optim.Optimizer]
# What the strategy works on: the per-primitive parameter dict (as gsplat's strategies), or a model holding it in
# ``splats`` (Gaussians, neural primitives, the hybrid's Gaussians). Activations come from the raw rows.
Splats = nn.ParameterDict | TrainableSplats


def splats_of(obj: Splats) -> nn.ParameterDict:
    """The parameter dict itself, whether given directly or held by a model."""
    return obj if isinstance(obj, nn.ParameterDict) else obj.splats


def _count(obj: Splats) -> int:
    return int(splats_of(obj)["means"].shape[0])


def _device(obj: Splats) -> torch.device:
    return splats_of(obj)["means"].device


def _scales(obj: Splats) -> Tensor:
    return torch.exp(splats_of(obj)["scales"])


def _opacities(obj: Splats) -> Tensor:
    return torch.sigmoid(splats_of(obj)["opacities"])


@dataclass
class DensifyConfig:
    """Thresholds and schedule of :class:`DensifyStrategy` (defaults as gsplat's DefaultStrategy)."""

    prune_opa: float = 0.005
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    prune_scale3d: float = 0.1
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    refine_stop_frac: float | None = None  # when set, the trainer sets refine_stop_iter to this x its iterations
    # scene mode's refine_stop_frac when set (recon.modes.scene_config): without masks or a hull, growth late in
    # a short sparse-view run mostly adds background floaters
    scene_refine_stop_frac: float | None = None
    reset_every: int = 3000
    refine_every: int = 100
    pause_refine_after_reset: int = 0
    absgrad: bool = False
    max_gaussians: int | None = 1_000_000
    # > 0: proximity-guided unpooling (FSGS) at every refine: a Gaussian whose mean distance to its
    # ``proximity_k`` nearest centres exceeds this many times the median such distance gets a new Gaussian
    # halfway to each of those neighbours (a copy of the neighbour moved there). Sparse views leave large gaps
    # between the few places the inputs pin down (untextured walls, the table); the gradient rule grows only
    # where a view already disagrees. 0 = off.
    proximity: float = 0.0
    proximity_k: int = 3


# ----------------------------------------------------------------------------- row operations
def _replace_rows(
    model: Splats,
    optimizers: Optimizers | None,
    param_fn: Callable[[str, Tensor], Tensor],
    state_fn: Callable[[str, Tensor], Tensor],
    names: tuple[str, ...] | None = None,
) -> None:
    """Swap each named parameter for ``param_fn(name, old)`` and its per-row optimiser states for ``state_fn``.

    ``names`` defaults to every per-primitive parameter the model holds (Gaussians, neural primitives...).

    Optimiser state tensors with the parameter's shape (Adam's exp_avg, exp_avg_sq, max_exp_avg_sq) are
    transformed; scalars such as ``step`` are kept.
    """
    names = tuple(splats_of(model).keys()) if names is None else names
    for name in names:
        old = splats_of(model)[name]
        new = nn.Parameter(param_fn(name, old.detach()).contiguous(), requires_grad=old.requires_grad)
        for opt in (optimizers or {}).values():
            for group in opt.param_groups:
                for i, p in enumerate(group["params"]):
                    if p is not old:
                        continue
                    group["params"][i] = new
                    st = opt.state.pop(old, None)
                    if st is not None:
                        opt.state[new] = {
                            k: state_fn(name, v) if isinstance(v, Tensor) and v.shape == old.shape else v
                            for k, v in st.items()
                        }
        splats_of(model)[name] = new


@torch.no_grad()
def duplicate(model: Splats, optimizers: Optimizers | None, mask: Tensor) -> None:
    """Append an exact copy of every selected Gaussian (new rows get zero Adam moments)."""
    idx = torch.where(mask)[0]
    if len(idx) == 0:
        return

    def param_fn(_: str, p: Tensor) -> Tensor:
        return torch.cat([p, p[idx]])

    def state_fn(_: str, v: Tensor) -> Tensor:
        return torch.cat([v, v.new_zeros((len(idx), *v.shape[1:]))])

    _replace_rows(model, optimizers, param_fn, state_fn)


@torch.no_grad()
def unpool(model: Splats, optimizers: Optimizers | None, ratio: float, k: int = 3, budget: int | None = None) -> int:
    """Proximity-guided unpooling (FSGS): every Gaussian whose mean distance to its ``k`` nearest centres is
    above ``ratio`` x the median of that distance gets, for each of those neighbours, a copy of the neighbour
    moved to the midpoint between the two (each pair once; new rows get zero Adam moments). At most ``budget``
    new Gaussians, the widest gaps first. Returns how many were added."""
    from scipy.spatial import cKDTree  # CPU nearest neighbours; centres are copied off the device once

    means = splats_of(model)["means"].detach()
    n = means.shape[0]
    if n <= k or ratio <= 0 or (budget is not None and budget <= 0):
        return 0
    xyz = means.cpu().double().numpy()
    dist, nbr = cKDTree(xyz).query(xyz, k=k + 1)  # column 0 is the point itself
    spread = dist[:, 1:].mean(axis=1)
    sources = (spread > ratio * float(np.median(spread))).nonzero()[0]
    if len(sources) == 0:
        return 0
    pairs: dict[tuple[int, int], tuple[int, int, float]] = {}  # each pair once: (source, neighbour, distance)
    for i in sources.tolist():
        for j, d in zip(nbr[i, 1:].tolist(), dist[i, 1:].tolist()):
            pairs.setdefault((min(i, j), max(i, j)), (i, j, d))
    ranked = sorted(pairs.values(), key=lambda p: -p[2])
    if budget is not None:
        ranked = ranked[:budget]
    src = torch.tensor([i for i, _, _ in ranked], dtype=torch.long, device=means.device)
    dst = torch.tensor([j for _, j, _ in ranked], dtype=torch.long, device=means.device)
    mid = 0.5 * (means[src] + means[dst])

    def param_fn(name: str, p: Tensor) -> Tensor:
        return torch.cat([p, mid.to(p.dtype) if name == "means" else p[dst]])

    def state_fn(_: str, v: Tensor) -> Tensor:
        return torch.cat([v, v.new_zeros((len(dst), *v.shape[1:]))])

    _replace_rows(model, optimizers, param_fn, state_fn)
    return len(dst)


@torch.no_grad()
def split(model: Splats, optimizers: Optimizers | None, mask: Tensor, generator: torch.Generator | None = None) -> None:
    """Replace every selected Gaussian by 2 Gaussians centred at samples from it, scales divided by 1.6.

    Unselected rows keep their order and come first; the 2*M new rows are appended (sample 0 of all
    selected, then sample 1), with zero Adam moments.
    """
    idx = torch.where(mask)[0]
    m = len(idx)
    if m == 0:
        return
    rest = torch.where(~mask)[0]
    sel_scales = _scales(model)[idx]
    rot = quat_to_rotmat(splats_of(model)["quats"][idx])
    noise = torch.randn((2, m, 3), device=_device(model), generator=generator)
    offsets = torch.einsum("mij,bmj->bmi", rot, noise * sel_scales[None])
    new_means = (splats_of(model)["means"][idx][None] + offsets).reshape(2 * m, 3)
    new_log_scales = torch.log(sel_scales / SPLIT_SCALE_DIVISOR).repeat(2, 1)

    def param_fn(name: str, p: Tensor) -> Tensor:
        if name == "means":
            added = new_means
        elif name == "scales":
            added = new_log_scales
        else:
            added = p[idx].repeat(2, *([1] * (p.dim() - 1)))
        return torch.cat([p[rest], added])

    def state_fn(_: str, v: Tensor) -> Tensor:
        return torch.cat([v[rest], v.new_zeros((2 * m, *v.shape[1:]))])

    _replace_rows(model, optimizers, param_fn, state_fn)


@torch.no_grad()
def remove(model: Splats, optimizers: Optimizers | None, mask: Tensor) -> None:
    """Delete the selected Gaussians (and their Adam moments)."""
    if not bool(mask.any()):
        return
    keep = torch.where(~mask)[0]
    _replace_rows(model, optimizers, lambda _, p: p[keep], lambda _, v: v[keep])


@torch.no_grad()
def reset_opacity(model: Splats, optimizers: Optimizers | None, value: float) -> None:
    """Clamp every opacity to at most ``value`` and zero the opacity Adam moments."""
    logit = math.log(value / (1.0 - value))
    _replace_rows(
        model,
        optimizers,
        lambda _, p: p.clamp_max(logit),
        lambda _, v: torch.zeros_like(v),
        names=("opacities",),
    )


def prune_mask(model: Splats, mask: Tensor, optimizers: Optimizers | None = None) -> int:
    """Remove Gaussians where ``mask`` is true (e.g. floaters outside a visual hull); returns how many.

    Pass the optimisers during training so their states follow. If a :class:`DensifyStrategy` is active,
    use its :meth:`DensifyStrategy.prune_mask` instead so its gradient statistics follow too.
    """
    mask = _check_mask(model, mask)
    n = int(mask.sum())
    remove(model, optimizers, mask)
    return n


def _check_mask(model: Splats, mask: Tensor) -> Tensor:
    mask = torch.as_tensor(mask, device=_device(model))
    if mask.dtype != torch.bool or mask.shape != (_count(model),):
        raise ValueError(
            f"mask must be a bool tensor of shape ({_count(model)},), got {mask.dtype} {tuple(mask.shape)}"
        )
    return mask


# ----------------------------------------------------------------------------- the strategy
class DensifyStrategy:
    """Stateful adaptive density control; call the two ``step_*`` hooks around ``loss.backward()``.

    Usage per training step::

        out = model.render(cams, ...)
        strategy.step_pre_backward(out.meta)
        loss.backward()
        for o in optimizers.values(): o.step(); o.zero_grad(set_to_none=True)
        strategy.step_post_backward(step, out.meta, model, optimizers)

    Step the optimisers before ``step_post_backward`` (as gsplat's trainer does): after a refine the
    parameters are new objects without gradients, so an optimiser step taken after it would skip them.
    """

    def __init__(self, config: DensifyConfig | None = None, scene_scale: float = 1.0, seed: int = 0) -> None:
        self.config = config or DensifyConfig()
        self.scene_scale = float(scene_scale)
        self.seed = int(seed)
        self.grad2d: Tensor | None = None  # [N] summed view-space gradient norms since the last refine
        self.count: Tensor | None = None  # [N] how many times each Gaussian was visible
        self._generators: dict[str, torch.Generator] = {}
        self.unpooled = 0  # Gaussians added by proximity-guided unpooling so far

    # ----------------------------------------------------------------- hooks
    def step_pre_backward(self, meta: dict[str, Any]) -> None:
        """Keep the gradient of the projected centres, which the post-backward hook reads."""
        means2d = meta["means2d"]
        if means2d.requires_grad:
            means2d.retain_grad()

    def step_post_backward(
        self, step: int, meta: dict[str, Any], model: Splats, optimizers: Optimizers | None
    ) -> dict[str, Any]:
        """Accumulate gradient statistics; refine and reset opacities when the schedule says so.

        Returns what happened: ``{"cloned", "split", "pruned", "reset", "num_gaussians"}``.
        """
        cfg = self.config
        stats: dict[str, Any] = {"cloned": 0, "split": 0, "pruned": 0, "reset": False}
        if step >= cfg.refine_stop_iter:
            stats["num_gaussians"] = _count(model)
            return stats
        self._accumulate(meta, model)
        if (
            step > cfg.refine_start_iter
            and step % cfg.refine_every == 0
            and step % cfg.reset_every >= cfg.pause_refine_after_reset
        ):
            stats["cloned"], stats["split"] = self._grow(model, optimizers)
            stats["pruned"] = self._prune(step, model, optimizers)
            self._reset_state(model)
        if step % cfg.reset_every == 0 and step > 0:
            reset_opacity(model, optimizers, 2.0 * cfg.prune_opa)
            stats["reset"] = True
        stats["num_gaussians"] = _count(model)
        return stats

    def prune_mask(self, model: Splats, mask: Tensor, optimizers: Optimizers | None = None) -> int:
        """Remove Gaussians where ``mask`` is true, keeping optimiser states and statistics in step."""
        mask = _check_mask(model, mask)
        self._ensure_state(model)
        assert self.grad2d is not None and self.count is not None
        keep = ~mask
        self.grad2d, self.count = self.grad2d[keep], self.count[keep]
        return prune_mask(model, mask, optimizers)

    # ----------------------------------------------------------------- internals
    def _ensure_state(self, model: Splats) -> None:
        n = _count(model)
        if self.grad2d is None or self.grad2d.shape[0] != n or self.grad2d.device != _device(model):
            self._reset_state(model)

    def _reset_state(self, model: Splats) -> None:
        self.grad2d = torch.zeros(_count(model), device=_device(model))
        self.count = torch.zeros(_count(model), device=_device(model))

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    @torch.no_grad()
    def _accumulate(self, meta: dict[str, Any], model: Splats) -> None:
        """Add this step's per-Gaussian view-space gradient norms and visibility counts."""
        self._ensure_state(model)
        assert self.grad2d is not None and self.count is not None
        means2d = meta["means2d"]
        grad = getattr(means2d, "absgrad", None) if self.config.absgrad else means2d.grad
        if grad is None:
            what = "means2d.absgrad (rasterize with absgrad=True)" if self.config.absgrad else "means2d.grad"
            raise RuntimeError(f"no {what}: call step_pre_backward(meta) before loss.backward()")
        if grad.dim() == 2:  # single camera without batch dim
            grad = grad[None]
        n_cams = int(meta.get("n_cameras", grad.shape[0]))
        width, height = float(meta["width"]), float(meta["height"])
        scale = grad.new_tensor([width / 2.0 * n_cams, height / 2.0 * n_cams])
        norms = (grad * scale).norm(dim=-1)  # [C, N]
        radii = meta["radii"]
        if radii.dim() == norms.dim() + 1:  # gsplat >= 1.5 gives per-axis radii [C, N, 2]
            visible = (radii > 0).all(dim=-1)
        else:
            visible = radii > 0
        visible = visible.reshape(norms.shape)
        self.grad2d += torch.where(visible, norms, torch.zeros_like(norms)).sum(dim=0)  # NaN-safe for culled ones
        self.count += visible.sum(dim=0).to(self.count.dtype)

    @torch.no_grad()
    def _grow(self, model: Splats, optimizers: Optimizers | None) -> tuple[int, int]:
        cfg = self.config
        assert self.grad2d is not None and self.count is not None
        n = _count(model)
        avg = self.grad2d / self.count.clamp_min(1.0)
        high = avg > cfg.grow_grad2d
        if cfg.max_gaussians is not None:
            budget = max(0, int(cfg.max_gaussians) - n)  # each clone or split adds exactly one Gaussian
            if int(high.sum()) > budget:
                ranked = torch.where(high, avg, torch.full_like(avg, -1.0))
                high = torch.zeros_like(high)
                if budget > 0:
                    high[torch.topk(ranked, budget).indices] = True
        small = _scales(model).max(dim=-1).values <= cfg.grow_scale3d * self.scene_scale
        to_clone = high & small
        to_split = high & ~small
        n_clone, n_split = int(to_clone.sum()), int(to_split.sum())
        if n_clone:
            duplicate(model, optimizers, to_clone)
            to_split = torch.cat([to_split, to_split.new_zeros(n_clone)])
        if n_split:
            split(model, optimizers, to_split, generator=self._generator(_device(model)))
        if cfg.proximity > 0:
            room = None if cfg.max_gaussians is None else int(cfg.max_gaussians) - _count(model)
            self.unpooled += unpool(model, optimizers, cfg.proximity, cfg.proximity_k, budget=room)
        return n_clone, n_split

    @torch.no_grad()
    def _prune(self, step: int, model: Splats, optimizers: Optimizers | None) -> int:
        cfg = self.config
        opac = _opacities(model)
        doomed = opac < cfg.prune_opa
        if step > cfg.reset_every:
            doomed |= _scales(model).max(dim=-1).values > cfg.prune_scale3d * self.scene_scale
        if cfg.max_gaussians is not None:
            excess = _count(model) - int(doomed.sum()) - int(cfg.max_gaussians)
            if excess > 0:  # still over the cap (e.g. initialised above it): drop the faintest survivors
                ranked = torch.where(doomed, torch.full_like(opac, 2.0), opac)
                doomed[torch.topk(ranked, excess, largest=False).indices] = True
        n = int(doomed.sum())
        remove(model, optimizers, doomed)
        return n
