"""Mean SSIM (reflect padding) with a hand-written gradient, in C++ (csrc/ssim.cpp): the D-SSIM training loss.

The PyTorch version (``recon.metrics.ssim_map`` through autograd) is the reference and the fallback; this one
filters the five statistics in one pass and keeps three derivative maps for the backward, instead of ~40
intermediate tensors and four depthwise convolutions (about a third of a training step on 2 CPU cores).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from recon.kernels.build import load_cpp_extension

_EXT_NAME = "ssim"
_SOURCES = ["ssim.cpp"]


def extension() -> ModuleType | None:
    """The compiled SSIM kernel (built on first use and cached), or None (no compiler, or RECON_NO_CPP=1)."""
    return load_cpp_extension(_EXT_NAME, _SOURCES)


def available() -> bool:
    """True when the C++ SSIM kernel can be used."""
    return extension() is not None


class _SSIMMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, taps: Tensor, c1: float, c2: float) -> Tensor:  # type: ignore[override]
        ext = extension()
        assert ext is not None
        x, y, taps = (t.detach().contiguous() for t in (x, y, taps))
        mean, coef = ext.ssim_fwd(x, y, taps, float(c1), float(c2))
        ctx.save_for_backward(x, y, taps, coef)
        return mean

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        ext = extension()
        assert ext is not None
        x, y, taps, coef = ctx.saved_tensors
        return ext.ssim_bwd(x, y, taps, coef, float(grad)), None, None, None, None


def ssim_mean_cpu(x: Tensor, y: Tensor, taps: Tensor, c1: float, c2: float) -> Tensor:
    """Mean over every pixel of the SSIM map of single-channel images x, y [M, H, W] (float32, CPU), with the
    window ``taps`` (odd length) over half-sample symmetric padding; differentiable w.r.t. ``x`` only."""
    return _SSIMMean.apply(x, y, taps, c1, c2)
