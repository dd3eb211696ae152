"""Automatic segmenters: the confidence measure on toy masks, and the salient model where it is installed."""

from __future__ import annotations

import numpy as np
import pytest

from priors.segmentation import OpenCVSegmenter, make_segmenter, salient_model_path, view_confidence


def _disc(h: int = 120, w: int = 160, r: int = 30) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    gt = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < r**2
    img = np.empty((h, w, 3), np.float32)
    img[:] = (0.85, 0.85, 0.8)
    img[gt] = (0.8, 0.15, 0.1)
    return img, gt


def test_confidence_is_high_for_one_decided_object_and_low_otherwise() -> None:
    _, gt = _disc()
    p = gt.astype(np.float32)
    assert view_confidence(p, gt) > 0.95
    assert view_confidence(np.full(gt.shape, 0.5, np.float32), gt) < 0.05  # undecided probabilities
    two = np.zeros_like(gt)
    two[10:40, 10:40] = True
    two[70:100, 110:140] = True
    assert view_confidence(two.astype(np.float32), two) == pytest.approx(0.5)  # two equal objects
    assert view_confidence(np.zeros_like(p), np.zeros_like(gt)) == 0.0  # empty mask
    assert view_confidence(np.ones_like(p), np.ones_like(gt)) == 0.0  # the whole image


def test_make_segmenter_names() -> None:
    assert isinstance(make_segmenter("opencv"), OpenCVSegmenter)
    with pytest.raises(ValueError, match="unknown segmenter"):
        make_segmenter("magic")


@pytest.mark.skipif(salient_model_path() is None, reason="salient segmentation model not installed")
def test_salient_segmenter_finds_a_disc_on_a_plain_background() -> None:
    img, gt = _disc()
    s = make_segmenter("salient").segment(img)
    m = s.mask > 0.5
    assert s.mask.shape == gt.shape and s.probability.shape == gt.shape
    assert (m & gt).sum() / (m | gt).sum() > 0.8 and s.confidence > 0.5
