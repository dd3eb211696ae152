"""Training loop of the repair model on a PairSet (generic pre-training and per-scene fine-tuning)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from priors.diffusion.data import PairSet, random_crops
from priors.diffusion.model import RepairModel, prior_threads

StepFn = Callable[[int, int, float], None]


def train_repair(
    model: RepairModel,
    pairs: PairSet,
    steps: int,
    batch_size: int = 16,
    crop: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    time_budget_s: float | None = None,
    progress: bool | StepFn = False,
    object_weight: float = 0.0,
) -> list[float]:
    """Adam on the diffusion loss over random object-centred crops; returns the per-step losses.

    Stops early when ``time_budget_s`` is spent (CPU budget). ``progress``: True shows a rich progress bar,
    a callable is called as ``fn(step, steps, loss)``. The learning rate follows a cosine decay to 10%.
    ``object_weight`` > 0 weights pixels of the clean object (non-black clean image) by ``1 + object_weight``:
    errors on the object are what masked test metrics see, floaters on the background are not.
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    device = model.device
    params = [p for p in model.unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1.0 + np.cos(np.pi * min(1.0, s / max(1, steps))))
    )
    model.unet.train()
    losses: list[float] = []
    bar = None
    if progress is True:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("repair prior"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        task = bar.add_task("train", total=steps, loss=float("nan"))
        bar.start()
    start = time.perf_counter()
    threads = prior_threads(device)
    threads.__enter__()
    try:
        for step in range(1, steps + 1):
            r, a, c, g = random_crops(pairs, batch_size, crop, rng)
            if model.uses_guide and g is None:
                raise ValueError("a guided repair model needs pairs with guides")
            weight = None
            if object_weight > 0:
                weight = 1.0 + object_weight * (c.amax(dim=1, keepdim=True) > 0.02).to(c.dtype)
                weight = weight.to(device)
            guide = None if g is None else g.to(device)
            loss = model.loss(r.to(device), a.to(device), c.to(device), generator=gen, weight=weight, guide=guide)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(task, advance=1, loss=float(np.mean(losses[-20:])))
            elif callable(progress):
                progress(step, steps, losses[-1])
            if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                break
    finally:
        threads.__exit__(None, None, None)
        if bar is not None:
            bar.stop()
        model.unet.eval()
    return losses
