"""Metrics: PSNR conventions, SSIM against scikit-image (or a float64 reference), losses, optional LPIPS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon import metrics


def _pair(seed: int = 0, h: int = 40, w: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(h, w, 3, generator=g)
    # Smooth structure plus noise so SSIM is far from both 0 and 1.
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    gt = 0.5 * gt + 0.5 * torch.stack([xx, yy, xx * yy], dim=-1)
    pred = (gt + 0.1 * torch.randn(h, w, 3, generator=g)).clamp(0, 1)
    return pred, gt


def _ssim_reference_f64(x: np.ndarray, y: np.ndarray) -> float:
    """Independent float64 SSIM (scipy gaussian_filter, truncate 3.5, 5-pixel crop), as skimage computes it."""
    from scipy.ndimage import gaussian_filter

    vals = []
    for c in range(x.shape[-1]):
        a, b = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        f = lambda z: gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")
        ux, uy = f(a), f(b)
        vx, vy, vxy = f(a * a) - ux * ux, f(b * b) - uy * uy, f(a * b) - ux * uy
        s = ((2 * ux * uy + 1e-4) * (2 * vxy + 9e-4)) / ((ux**2 + uy**2 + 1e-4) * (vx + vy + 9e-4))
        vals.append(s[5:-5, 5:-5].mean())
    return float(np.mean(vals))


def test_psnr_known_value_and_identity() -> None:
    gt = torch.zeros(8, 8, 3)
    pred = torch.full((8, 8, 3), 0.1)  # MSE 0.01 -> 20 dB
    assert metrics.psnr(pred, gt).item() == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr(gt, gt).item() == pytest.approx(100.0)  # capped, finite
    assert metrics.mse_to_psnr(0.01) == pytest.approx(20.0)


def test_psnr_batch_is_per_image() -> None:
    gt = torch.zeros(2, 8, 8, 3)
    pred = torch.stack([torch.full((8, 8, 3), 0.1), torch.full((8, 8, 3), 0.01)])
    out = metrics.psnr(pred, gt)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx([20.0, 40.0], abs=1e-3)


def test_masked_psnr_conventions_differ_by_mask_fraction() -> None:
    gt = torch.zeros(10, 10, 3)
    pred = torch.full((10, 10, 3), 0.1)
    pred[:, 5:] = 0.7  # large error outside the mask, must be ignored by both conventions
    mask = torch.zeros(10, 10)
    mask[:, :5] = 1.0
    inside = metrics.psnr(pred, gt, mask)  # MSE over mask pixels: 0.01
    regnerf = metrics.masked_psnr(pred, gt, mask)  # MSE over all pixels: 0.005
    assert inside.item() == pytest.approx(20.0, abs=1e-4)
    assert regnerf.item() == pytest.approx(20.0 + 10 * math.log10(2.0), abs=1e-4)
    with pytest.raises(ValueError):
        metrics.psnr(pred, gt, torch.zeros(10, 10))


def test_ssim_matches_reference() -> None:
    pred, gt = _pair()
    ours = metrics.ssim(pred, gt).item()
    try:
        from skimage.metrics import structural_similarity
    except ImportError:  # scikit-image is optional: fall back to the float64 re-implementation
        ref = _ssim_reference_f64(pred.numpy(), gt.numpy())
    else:
        ref = structural_similarity(
            pred.numpy().astype(np.float64),
            gt.numpy().astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
    assert 0.2 < ref < 0.95  # a non-trivial pair
    assert ours == pytest.approx(ref, abs=1e-3)
    assert ours == pytest.approx(_ssim_reference_f64(pred.numpy(), gt.numpy()), abs=1e-4)


def test_ssim_properties() -> None:
    pred, gt = _pair(1)
    assert metrics.ssim(gt, gt).item() == pytest.approx(1.0, abs=1e-5)
    batch = metrics.ssim(torch.stack([pred, gt]), torch.stack([gt, gt]))
    assert batch.shape == (2,)
    assert batch[0] < 0.95 and batch[1] == pytest.approx(1.0, abs=1e-5)
    # Masked over-the-mask SSIM ignores a corrupted region outside the mask.
    corrupted = gt.clone()
    corrupted[:, 30:] = 1.0 - corrupted[:, 30:]
    mask = torch.zeros(gt.shape[:2])
    mask[:, :20] = 1.0  # window radius 5 keeps pixels < 25 clear of the corruption
    assert metrics.ssim(corrupted, gt, mask).item() == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim(corrupted, gt).item() < 0.9


def test_masked_ssim_composites_on_black() -> None:
    pred, gt = _pair(2)
    mask = torch.zeros(gt.shape[:2])
    mask[8:30, 10:40] = 1.0
    expected = metrics.ssim(pred * mask[..., None], gt * mask[..., None])
    assert metrics.masked_ssim(pred, gt, mask).item() == pytest.approx(expected.item(), abs=1e-6)
    # Outside the mask nothing matters.
    other = pred.clone()
    other[mask == 0] = torch.rand(int((mask == 0).sum()), 3)
    assert metrics.masked_ssim(other, gt, mask).item() == pytest.approx(expected.item(), abs=1e-6)


def test_losses_differentiable_and_zero_at_target() -> None:
    pred, gt = _pair(3)
    pred = pred.clone().requires_grad_(True)
    loss = metrics.rgb_loss(pred, gt)
    loss.backward()
    assert loss.item() > 0
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert metrics.dssim_loss(gt, gt).item() == pytest.approx(0.0, abs=1e-6)
    assert metrics.l1(gt, gt).item() == 0.0
    assert metrics.l1(torch.full((4, 4, 3), 0.5), torch.zeros(4, 4, 3)).item() == pytest.approx(0.5)
    # dssim = (1 - ssim) / 2 with ssim in [-1, 1]
    d = metrics.dssim_loss(pred.detach(), gt).item()
    assert 0.0 < d < 1.0
    # Gradient descent on D-SSIM alone raises SSIM.
    x = pred.detach().clone().requires_grad_(True)
    before = metrics.ssim(x, gt).item()
    opt = torch.optim.Adam([x], lr=0.02)
    for _ in range(20):
        opt.zero_grad()
        metrics.dssim_loss(x, gt).backward()
        opt.step()
    assert metrics.ssim(x.detach(), gt).item() > before + 0.05


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        metrics.psnr(torch.zeros(4, 4, 3), torch.zeros(4, 5, 3))
    with pytest.raises(ValueError):
        metrics.ssim(torch.zeros(6, 6, 3), torch.zeros(6, 6, 3))  # smaller than the window


def test_lpips_none_without_weights(tmp_path) -> None:
    assert metrics.lpips_if_available() is None
    assert metrics.lpips_if_available(tmp_path / "missing.pth") is None


def test_lpips_with_local_weights(tmp_path) -> None:
    """Random weights in the two expected file layouts: loads, identical images give 0, different give > 0."""
    torch.manual_seed(0)
    backbone = {}
    for idx, cin, cout, k, _s, _p in metrics._ALEX_CONVS:
        backbone[f"features.{idx}.weight"] = torch.randn(cout, cin, k, k) * 0.05
        backbone[f"features.{idx}.bias"] = torch.zeros(cout)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c[2], 1, 1) for i, c in enumerate(metrics._ALEX_CONVS)}
    torch.save(backbone, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(heads, tmp_path / "alex.pth")
    f = metrics.lpips_if_available(tmp_path / "alex.pth")
    assert f is not None
    pred, gt = _pair(4, 64, 64)
    assert f(gt, gt).item() == pytest.approx(0.0, abs=1e-6)
    d = f(torch.stack([pred, gt]), torch.stack([gt, gt]))
    assert d.shape == (2,) and d[0] > 1e-4
    torch.save({"wrong": torch.zeros(1)}, tmp_path / "bad.pth")
    assert metrics.lpips_if_available(tmp_path / "bad.pth") is None
