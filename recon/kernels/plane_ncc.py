"""Window NCC through per-pixel planes (PatchMatch stereo's scoring step), in C++ (csrc/plane_ncc.cpp).

Each scored pixel has its own plane, so the source window it is compared with is warped by its own homography:
no image-wide warp serves two pixels. The PyTorch version below (``plane_ncc_reference``) gathers every window
sample as a tensor (pixels x samples x sources, a few hundred MB per call at 400 x 300); the C++ kernel walks
each pixel's window in registers, ~20x faster on 2 cores. The semantics are in the C++ file's header; both
implementations follow them and agree to float precision (tests/test_plane_ncc.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.kernels.build import load_cpp_extension

_EXT_NAME = "plane_ncc"
_SOURCES = ["plane_ncc.cpp"]


def extension() -> ModuleType | None:
    """The compiled kernel (built on first use and cached), or None (no compiler, or RECON_NO_CPP=1)."""
    return load_cpp_extension(_EXT_NAME, _SOURCES)


def plane_ncc(
    ref: Tensor,
    sources: Sequence[Tensor],
    A: Tensor,
    b: Tensor,
    pixels: Tensor,
    g: Tensor,
    window: int,
    stride: int = 1,
) -> Tensor:
    """Best NCC over ``sources`` [Hs, Ws] of the ``window`` x ``window`` reference windows (sampled every
    ``stride`` pixels) around ``pixels`` [N, 2] (integer x, y) of ``ref`` [H, W], each warped through its plane
    ``g`` [N, 3] (K_r^-T n / d) into source s by A[s] q + b[s] (g . q); -1 where no source sees the whole window.
    Float32 images, float64 geometry; [N] float32."""
    ext = extension()
    ref = ref.float().contiguous()
    srcs = [s.float().contiguous() for s in sources]
    A, b, g = A.double().contiguous(), b.double().contiguous(), g.double().contiguous()
    pixels = pixels.long().contiguous()
    if ext is not None:
        return ext.plane_ncc(ref, srcs, A, b, pixels, g, int(window), int(stride))
    return plane_ncc_reference(ref, srcs, A, b, pixels, g, window, stride)


def plane_ncc_reference(
    ref: Tensor,
    sources: Sequence[Tensor],
    A: Tensor,
    b: Tensor,
    pixels: Tensor,
    g: Tensor,
    window: int,
    stride: int = 1,
) -> Tensor:
    """The PyTorch version of ``plane_ncc`` (the reference and the fallback)."""
    h, w = ref.shape
    r = window // 2
    steps = torch.arange(-r, r + 1, stride)
    oy, ox = torch.meshgrid(steps, steps, indexing="ij")
    ox, oy = ox.reshape(-1), oy.reshape(-1)
    xi = pixels[:, :1] + ox[None]  # [N, M] integer sample columns
    yi = pixels[:, 1:] + oy[None]
    ref_vals = ref[yi.clamp(0, h - 1), xi.clamp(0, w - 1)].double()  # edges replicated
    q = torch.stack([xi + 0.5, yi + 0.5, torch.ones_like(xi, dtype=torch.float64)], dim=-1).double()  # [N, M, 3]
    inv = (q * g[:, None, :]).sum(-1)  # [N, M] inverse depth scale along each sample's ray
    facing = (inv > 1e-12).all(dim=1)
    mr = ref_vals.mean(dim=1)
    var_r = (ref_vals.pow(2).mean(dim=1) - mr.pow(2)).clamp_min(0)
    best = torch.full((len(pixels),), -1.0, dtype=torch.float64)
    for s, img in enumerate(sources):
        hs, ws = img.shape
        p = q @ A[s].T + inv[..., None] * b[s]  # [N, M, 3]
        z = p[..., 2]
        u = p[..., 0] / z.clamp_min(1e-12) - 0.5
        v = p[..., 1] / z.clamp_min(1e-12) - 0.5
        ok = facing & (z > 1e-12).all(dim=1) & ((u >= 0) & (v >= 0) & (u <= ws - 1) & (v <= hs - 1)).all(dim=1)
        grid = torch.stack([(2 * u + 1) / ws - 1, (2 * v + 1) / hs - 1], dim=-1).float()
        vals = F.grid_sample(img[None, None], grid[None], mode="bilinear", align_corners=False)[0, 0].double()
        ms = vals.mean(dim=1)
        var_s = (vals.pow(2).mean(dim=1) - ms.pow(2)).clamp_min(0)
        cov = (vals * ref_vals).mean(dim=1) - mr * ms
        ncc = cov / torch.sqrt(var_r * var_s + 1e-8)
        best = torch.maximum(best, torch.where(ok, ncc, torch.full_like(ncc, -1.0)))
    return best.float()
