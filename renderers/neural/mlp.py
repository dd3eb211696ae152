"""The shared decoder of neural primitives: a small MLP with magnitude-prunable weights.

Training runs dense ``F.linear`` on ``weight * mask`` (so pruned weights get no gradient) and the pruning
optimiser (:class:`PruningAdam`) re-zeroes pruned weights after every step and raises the sparsity on the
cubic schedule of Zhu & Gupta (2017, "To prune, or not to prune"). Without autograd (inference) a pruned
layer runs through ``recon.kernels.sparse.SparseLinear`` where ``prefer_sparse`` says that pays on this
device (``sparse_mode="auto"``; small layers too from 90% sparsity, as measured), or always / never
(``"sparse"`` / ``"dense"``, for measurements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon.kernels.sparse import SparseLinear, cpp_available, prefer_sparse

SparseMode = Literal["auto", "sparse", "dense"]

# prefer_sparse keeps layers under 64x64 dense; for the decoder's input layer (17x64) at >= 90% sparsity the
# C++ kernel still wins at 10-20k visible rows (benchmarks/neural.py, 5 scenes x 2 runs: whole decoder
# 1.1-1.2x faster with it sparse too), so "auto" also makes such small layers sparse from this sparsity on.
SMALL_LAYER_SPARSITY = 0.9


@dataclass(frozen=True)
class PruneSchedule:
    """Gradual magnitude pruning: sparsity goes from 0 at ``start`` to ``target`` at ``end`` (cubic), every
    ``every`` optimiser steps: s_t = s_f (1 - (1 - (t - t0) / (t1 - t0))^3)."""

    target: float
    start: int
    end: int
    every: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"prune target sparsity must be in [0, 1), got {self.target}")
        if self.start < 0 or self.end < self.start or self.every < 1:
            raise ValueError(f"prune schedule needs 0 <= start <= end and every >= 1, got {self}")

    def sparsity_at(self, step: int) -> float:
        """Target sparsity after optimiser step ``step`` (1-based)."""
        if step < self.start:
            return 0.0
        if step >= self.end or self.end == self.start:
            return self.target
        frac = (step - self.start) / (self.end - self.start)
        return self.target * (1.0 - (1.0 - frac) ** 3)

    def prunes_at(self, step: int) -> bool:
        """Whether the masks are recomputed after step ``step``."""
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)


class DecoderMLP(nn.Module):
    """``in_dim -> hidden (ReLU) x n_hidden -> out_dim``; every layer but the last is prunable.

    Masks are bool buffers (saved with the state dict). The output layer starts small (std 1e-3) so a fresh
    decoder adds almost nothing to what the features encode directly.
    """

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int, n_hidden: int = 2, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if in_dim < 1 or hidden < 1 or out_dim < 1 or n_hidden < 1:
            raise ValueError(f"DecoderMLP needs positive sizes, got {in_dim}, {hidden}, {out_dim}, {n_hidden}")
        dims = [in_dim] + [hidden] * n_hidden + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        with torch.no_grad():
            for i, lin in enumerate(self.layers):
                last = i == len(self.layers) - 1
                std = 1e-3 if last else math.sqrt(2.0 / lin.in_features)  # He init for the ReLU layers
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=generator) * std)
                lin.bias.zero_()
        for i in self.prunable:
            self.register_buffer(f"mask{i}", torch.ones_like(self.layers[i].weight, dtype=torch.bool))
        self.config = {"in_dim": in_dim, "hidden": hidden, "out_dim": out_dim, "n_hidden": n_hidden}
        self.sparse_mode: SparseMode = "auto"
        self._sparse_cache: dict[int, tuple[Any, SparseLinear]] = {}

    # ----------------------------------------------------------------- masks
    @property
    def prunable(self) -> list[int]:
        """Indices of the prunable layers (all but the output layer)."""
        return list(range(len(self.layers) - 1))

    def mask(self, i: int) -> Tensor:
        return getattr(self, f"mask{i}")

    def sparsity(self) -> float:
        """Fraction of zero-masked weights over the prunable layers."""
        total = sum(self.mask(i).numel() for i in self.prunable)
        kept = sum(int(self.mask(i).sum()) for i in self.prunable)
        return 1.0 - kept / max(1, total)

    def nonzero_parameters(self) -> int:
        """Stored parameters after pruning: kept weights of the prunable layers + everything else."""
        n = 0
        for i, lin in enumerate(self.layers):
            n += int(self.mask(i).sum()) if i in self.prunable else lin.weight.numel()
            n += lin.bias.numel()
        return n

    def dense_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Magnitude-prune every prunable layer to ``sparsity`` (masks only shrink; pruned weights set to 0)."""
        for i in self.prunable:
            w = self.layers[i].weight
            keep = int(round((1.0 - sparsity) * w.numel()))
            mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
            if keep > 0:
                score = torch.where(self.mask(i).reshape(-1), w.abs().reshape(-1), torch.full_like(w.reshape(-1), -1.0))
                mask[torch.topk(score, keep).indices] = True
            mask = mask.reshape(w.shape) & self.mask(i)
            self.mask(i).copy_(mask)
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the pruned weights (after an optimiser step moved them)."""
        for i in self.prunable:
            self.layers[i].weight.mul_(self.mask(i))

    # ----------------------------------------------------------------- compute
    def layer_backend(self, i: int, x: Tensor) -> str:
        """ "sparse" or "dense" for prunable layer ``i`` on input ``x`` (sparse only without autograd)."""
        if i not in self.prunable or torch.is_grad_enabled() or self.sparse_mode == "dense":
            return "dense"
        if self.sparse_mode == "sparse":
            return "sparse"
        lin = self.layers[i]
        sp = 1.0 - float(self.mask(i).sum()) / self.mask(i).numel()
        if prefer_sparse(sp, lin.in_features, lin.out_features, x.device):
            return "sparse"
        small_wins = sp >= SMALL_LAYER_SPARSITY - 0.005 and x.device.type == "cpu" and cpp_available()
        return "sparse" if small_wins else "dense"

    def _sparse_layer(self, i: int) -> SparseLinear:
        lin, mask = self.layers[i], self.mask(i)
        key = (lin.weight.data_ptr(), lin.weight._version, lin.bias._version, mask.data_ptr(), mask._version)
        hit = self._sparse_cache.get(i)
        if hit is None or hit[0] != key:
            layer = SparseLinear.from_mask(lin.weight.detach(), mask, lin.bias.detach())
            hit = (key, layer)
            self._sparse_cache[i] = hit
        return hit[1]

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, lin in enumerate(self.layers):
            if i in self.prunable:
                if self.layer_backend(i, x) == "sparse":
                    x = self._sparse_layer(i)(x)
                else:
                    x = F.linear(x, lin.weight * self.mask(i), lin.bias)
            else:
                x = lin(x)
            if i < last:
                x = torch.relu(x)
        return x

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> DecoderMLP:
        self._sparse_cache = {}  # .to()/.float(): rebuild the sparse layers on the new tensors
        return super()._apply(fn, *args, **kwargs)


class PruningAdam(torch.optim.Adam):
    """Adam for the decoder that keeps pruned weights at zero and follows a :class:`PruneSchedule`.

    The trainer steps every optimiser once per iteration, so this optimiser's step count is the training step.
    """

    def __init__(self, mlp: DecoderMLP, lr: float, schedule: PruneSchedule | None = None, **kwargs: Any) -> None:
        super().__init__([{"params": list(mlp.parameters()), "lr": lr, "name": "mlp"}], **kwargs)
        self.mlp = mlp
        self.schedule = schedule
        self.steps_taken = 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = super().step(closure)
        self.steps_taken += 1
        if self.schedule is not None and self.schedule.prunes_at(self.steps_taken):
            self.mlp.prune_to(self.schedule.sparsity_at(self.steps_taken))
        else:
            self.mlp.apply_masks()
        return loss
