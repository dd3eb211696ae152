"""The C++ D-SSIM loss (recon.kernels.ssim) matches the PyTorch reference (ssim_map + autograd) in value and
gradient, and is bitwise the same on 1 and 2 threads."""

from __future__ import annotations

import pytest
import torch

from recon import metrics
from recon.kernels import ssim as ssim_kernel

needs_cpp = pytest.mark.skipif(not ssim_kernel.available(), reason="no C++ compiler: reference path only")


def _reference(pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, torch.Tensor]:
    """D-SSIM and its gradient through ssim_map and autograd, in float64."""
    x = pred.double().requires_grad_(True)
    loss = (1.0 - metrics.ssim_map(x, gt.double(), padding="reflect").mean()) / 2.0
    loss.backward()
    return loss.item(), x.grad


def _fast(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = pred.clone().requires_grad_(True)
    loss = metrics.dssim_loss(x, gt)
    loss.backward()
    return loss.detach(), x.grad


@needs_cpp
@pytest.mark.parametrize("shape", [(40, 52, 3), (2, 23, 17, 3), (6, 5, 3)])  # (6, 5): radius = width
def test_cpp_dssim_matches_reference(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(shape, generator=g)
    pred = (gt + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)
    ref_loss, ref_grad = _reference(pred, gt)
    loss, grad = _fast(pred, gt)
    assert metrics._ssim_mean_cpp(pred, gt, 11, 1.5) is not None  # the C++ path ran
    assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-5, abs=1e-7)
    scale = float(ref_grad.abs().max())
    assert float((grad.double() - ref_grad).abs().max()) <= 1e-4 * scale


@needs_cpp
def test_cpp_dssim_same_bits_on_one_and_two_threads() -> None:
    g = torch.Generator().manual_seed(4)
    gt, pred = torch.rand(64, 80, 3, generator=g), torch.rand(64, 80, 3, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _fast(pred, gt)
        torch.set_num_threads(2)
        two = _fast(pred, gt)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_reference_path_where_the_kernel_does_not_apply() -> None:
    gt = torch.rand(20, 20, 3, dtype=torch.float64)
    assert metrics._ssim_mean_cpp(gt, gt, 11, 1.5) is None  # float64: autograd reference (gradcheck works)
    x = torch.rand(20, 20, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: metrics.dssim_loss(t, gt), (x,), eps=1e-6, atol=1e-6)
    small = torch.rand(3, 3, 3)
    assert metrics._ssim_mean_cpp(small, small, 11, 1.5) is None
