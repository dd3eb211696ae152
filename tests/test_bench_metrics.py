"""Benchmark metrics: PSNR/SSIM against scikit-image on random images, the SpaRe "-M" variants, LPIPS absence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from recon import metrics
from recon.bench.scoring import NO_LPIPS_NOTE, load_lpips, score_image


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_ssim_match_skimage_on_random_images(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gt = rng.random((37, 53, 3)).astype(np.float64)
    pred = np.clip(gt + rng.normal(0, 0.1 * (seed + 1), gt.shape), 0, 1)
    want_psnr = peak_signal_noise_ratio(gt, pred, data_range=1.0)
    want_ssim = structural_similarity(
        gt, pred, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    scores = score_image(pred.astype(np.float32), gt.astype(np.float32), np.ones(gt.shape[:2]))
    assert scores["psnr"] == pytest.approx(want_psnr, abs=1e-3)
    assert scores["ssim"] == pytest.approx(want_ssim, abs=1e-4)
    # With a full mask, PSNR-M and SSIM-M are the full-image scores.
    assert scores["psnr_m"] == pytest.approx(want_psnr, abs=1e-3)
    assert scores["ssim_m"] == pytest.approx(want_ssim, abs=1e-4)


def test_psnr_m_counts_only_mask_pixels_and_ssim_m_uses_the_bbox() -> None:
    rng = np.random.default_rng(5)
    gt = rng.random((40, 60, 3)).astype(np.float32)
    pred = gt.copy()
    mask = np.zeros((40, 60), np.float32)
    mask[10:30, 20:45] = 1
    pred[mask == 0] = 0.0  # garbage outside the mask: PSNR-M must not see it
    pred[15, 25] = np.clip(pred[15, 25] + 0.5, 0, 1)  # one wrong pixel inside
    s = score_image(pred, gt, mask)
    inside = (pred - gt)[mask > 0]
    want = -10 * np.log10(np.mean(inside.astype(np.float64) ** 2))
    assert s["psnr_m"] == pytest.approx(want, abs=1e-3)
    assert s["psnr"] < s["psnr_m"] - 5
    want_ssim = structural_similarity(
        gt[10:30, 20:45],
        pred[10:30, 20:45],
        data_range=1.0,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert s["ssim_m"] == pytest.approx(want_ssim, abs=1e-4)


def test_mask_bbox_is_tight_and_grows_to_min_size() -> None:
    m = torch.zeros(30, 40)
    m[5:9, 10:20] = 1
    assert metrics.mask_bbox(m) == (5, 9, 10, 20)
    y0, y1, x0, x1 = metrics.mask_bbox(m, min_size=11)
    assert (y1 - y0, x1 - x0) == (11, 11) and y0 >= 0 and x0 >= 0
    m2 = torch.zeros(30, 40)
    m2[0, 39] = 1  # corner: the grown box is shifted inside the image
    y0, y1, x0, x1 = metrics.mask_bbox(m2, min_size=11)
    assert (y0, y1, x0, x1) == (0, 11, 29, 40)
    assert metrics.mask_bbox(torch.zeros(5, 5)) is None


def test_empty_mask_gives_none_not_a_number() -> None:
    img = np.full((20, 20, 3), 0.5, np.float32)
    s = score_image(img, img, np.zeros((20, 20)))
    assert s["psnr_m"] is None and s["ssim_m"] is None


def test_lpips_is_reported_missing_instead_of_invented(tmp_path) -> None:
    fn, note = load_lpips(None)
    assert fn is None and note == NO_LPIPS_NOTE
    fn, note = load_lpips(tmp_path / "alex.pth")
    assert fn is None and "missing" in note
    s = score_image(np.zeros((20, 20, 3), np.float32), np.zeros((20, 20, 3), np.float32), np.ones((20, 20)))
    assert s["lpips"] is None and s["lpips_m"] is None
