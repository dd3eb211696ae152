"""The C++ rasteriser is bitwise repeatable: same inputs, same gradients, on 1 or 2 threads, run after run."""

from __future__ import annotations

import pytest
import torch
from test_kernels_raster import make_scene

from recon.kernels import cpu_raster, rasterize

needs_cpp = pytest.mark.skipif(not cpu_raster.available(), reason="no C++ compiler: reference path only")


def _grads(threads: int) -> list[torch.Tensor]:
    """Forward + backward of a 2-camera scene with ``threads`` OpenMP threads; every gradient, absgrad too."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        params, vm, K = make_scene(3000, 96, 80, C=2, seed=21, sh_degree=3)
        leaves = [p.clone().requires_grad_(True) for p in params]
        colors, alphas, meta = rasterize(*leaves, vm, K, 96, 80, sh_degree=3, absgrad=True, backend="cpp")
        g = torch.Generator().manual_seed(5)
        (
            (colors * torch.randn(colors.shape, generator=g)).sum()
            + (alphas * torch.randn(alphas.shape, generator=g)).sum()
        ).backward()
        assert meta["flatten_ids"].numel() > 10 * 3000 // 2  # many tiles per Gaussian: the sums have several terms
        return [p.grad.clone() for p in leaves] + [meta["means2d"].absgrad.clone(), colors.detach(), alphas.detach()]
    finally:
        torch.set_num_threads(before)


@needs_cpp
def test_backward_is_bitwise_repeatable_on_two_threads():
    a, b = _grads(2), _grads(2)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@needs_cpp
def test_one_and_two_threads_give_the_same_bits():
    one, two = _grads(1), _grads(2)
    assert any(t.abs().max() > 0 for t in one[:5])
    for x, y in zip(one, two):
        assert torch.equal(x, y)
