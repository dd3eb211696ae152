"""Foreground masks: alpha pass-through and automatic segmentation of synthetic object photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from priors.masks import foreground_masks, segment_foreground
from recon.errors import ReconInputError

H, W = 180, 240


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle: float) -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    c, s = np.cos(angle), np.sin(angle)
    u = ((xs - cx) * c + (ys - cy) * s) / ax
    v = (-(xs - cx) * s + (ys - cy) * c) / ay
    return u**2 + v**2 <= 1.0


def _texture(rng: np.random.Generator, a: tuple, b: tuple) -> np.ndarray:
    """Stripes and blobs mixing two colours, plus noise."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    t = 0.5 + 0.5 * np.sin(xs / 5.0 + 2 * np.sin(ys / 11.0))
    img = t[..., None] * np.array(a, np.float32) + (1 - t[..., None]) * np.array(b, np.float32)
    return img + rng.normal(0, 0.02, img.shape).astype(np.float32)


def _compose(bg: np.ndarray, fg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Object over background, slightly blurred like a real lens (soft edges)."""
    img = np.where(mask[..., None], fg, bg).astype(np.float32)
    return np.clip(cv2.GaussianBlur(img, (5, 5), 1.0), 0, 1)


def test_textured_ellipse_on_noisy_uniform_background() -> None:
    rng = np.random.default_rng(0)
    gt = _ellipse(125, 88, 70, 48, 0.4)
    bg = np.float32([0.85, 0.85, 0.82]) + rng.normal(0, 0.03, (H, W, 3)).astype(np.float32)
    img = _compose(bg, _texture(rng, (0.8, 0.2, 0.1), (0.1, 0.3, 0.7)), gt)
    mask = segment_foreground(img)
    assert mask.shape == (H, W) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert _iou(mask, gt) > 0.9


def test_object_with_background_coloured_patches_and_dark_background() -> None:
    """Parts of the object share the backdrop colour; they are enclosed, so the mask stays whole."""
    rng = np.random.default_rng(1)
    gt = _ellipse(120, 92, 60, 60, 0.0)
    bg = np.float32([0.08, 0.08, 0.1]) + rng.normal(0, 0.02, (H, W, 3)).astype(np.float32)
    fg = _texture(rng, (0.9, 0.85, 0.3), (0.6, 0.5, 0.2))
    fg[_ellipse(120, 92, 12, 8, 0.0)] = bg[_ellipse(120, 92, 12, 8, 0.0)]  # backdrop-coloured spot inside
    img = _compose(bg, fg, gt)
    assert _iou(segment_foreground(img), gt) > 0.9


def test_object_on_platform_excludes_platform_touching_border() -> None:
    rng = np.random.default_rng(2)
    ys = np.mgrid[0:H, 0:W][0]
    bg = np.where((ys > 0.62 * H)[..., None], np.float32([0.45, 0.38, 0.3]), np.float32([0.7, 0.75, 0.8]))
    bg = bg + rng.normal(0, 0.02, (H, W, 3)).astype(np.float32)
    gt = _ellipse(120, 95, 45, 55, 0.0)  # sits across the wall/floor edge
    img = _compose(bg, _texture(rng, (0.2, 0.7, 0.2), (0.9, 0.9, 0.2)), gt)
    mask = segment_foreground(img)
    assert _iou(mask, gt) > 0.9


def test_platform_inside_frame_is_kept_with_object() -> None:
    """Documented behaviour: a platform that does not reach the border counts as foreground."""
    rng = np.random.default_rng(6)
    bg = np.float32([0.9, 0.9, 0.9]) + rng.normal(0, 0.02, (H, W, 3)).astype(np.float32)
    platform = _ellipse(120, 130, 90, 22, 0.0)
    obj = _ellipse(120, 85, 40, 50, 0.0)
    fg = np.where(obj[..., None], _texture(rng, (0.8, 0.1, 0.1), (0.2, 0.1, 0.7)), np.float32([0.35, 0.3, 0.25]))
    mask = segment_foreground(_compose(bg, fg.astype(np.float32), platform | obj))
    assert _iou(mask, platform | obj) > 0.9


def test_vignetted_background_and_distractor_in_corner() -> None:
    """Lighting falls off towards the corners; a small blob near a corner is not the object."""
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    r2 = ((xs - W / 2) / (W / 2)) ** 2 + ((ys - H / 2) / (H / 2)) ** 2
    bg = (np.float32([0.9, 0.9, 0.92]) * (1 - 0.18 * r2)[..., None]).astype(np.float32)
    bg = bg + rng.normal(0, 0.015, (H, W, 3)).astype(np.float32)
    gt = _ellipse(118, 90, 50, 65, -0.3)
    distractor = _ellipse(20, 20, 8, 8, 0.0)
    img = _compose(bg, _texture(rng, (0.3, 0.1, 0.1), (0.5, 0.2, 0.6)), gt | distractor)
    mask = segment_foreground(img)
    assert _iou(mask, gt) > 0.9
    assert mask[distractor].mean() < 0.1


def test_large_image_is_processed_downscaled() -> None:
    rng = np.random.default_rng(4)
    gt = _ellipse(125, 88, 70, 48, 0.4)
    img = _compose(np.full((H, W, 3), 0.9, np.float32), _texture(rng, (0.1, 0.2, 0.6), (0.2, 0.5, 0.3)), gt)
    big = np.repeat(np.repeat(img, 3, axis=0), 3, axis=1)
    mask = segment_foreground(big, max_side=256)
    assert mask.shape == big.shape[:2]
    assert _iou(mask, np.repeat(np.repeat(gt, 3, axis=0), 3, axis=1)) > 0.9


def test_alpha_pass_through_and_mixed() -> None:
    rng = np.random.default_rng(5)
    gt = _ellipse(125, 88, 70, 48, 0.4)
    img = _compose(np.full((H, W, 3), 0.9, np.float32), _texture(rng, (0.1, 0.2, 0.6), (0.2, 0.5, 0.3)), gt)
    soft = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    u8 = (gt * 255).astype(np.uint8)
    out = foreground_masks([img, img, img], [soft, u8, None])
    assert np.array_equal(out[0], soft)  # soft alpha kept as is
    assert np.array_equal(out[1], gt.astype(np.float32))
    assert _iou(out[2], gt) > 0.9  # None entry -> automatic
    assert all(m.dtype == np.float32 for m in out)


def test_uniform_image_gives_empty_mask_and_bad_alpha_raises() -> None:
    img = np.full((H, W, 3), 0.5, np.float32)
    assert segment_foreground(img).sum() == 0
    with pytest.raises(ReconInputError):
        foreground_masks([img], [np.ones((H, W + 1), np.float32)])
    with pytest.raises(ReconInputError):
        foreground_masks([img, img], [np.ones((H, W), np.float32)])
