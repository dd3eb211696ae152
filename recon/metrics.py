"""Image metrics and photometric losses: the project's one metrics module.

Images are torch float tensors in [0, 1], shaped [H, W, 3] or [B, H, W, 3] (channels last, as everywhere in the
project). Metric functions return one value per image: a 0-d tensor for [H, W, 3] input, a [B] tensor for a
batch, so a benchmark averages per-image values (the usual "mean PSNR over test views"). Losses return a 0-d
tensor and are differentiable. Everything runs on CPU or CUDA.

Masked metrics, two conventions (both here; `benchmarks/reconstruct.py` reports both, the leaderboard's PSNR-M
is the first, with SSIM-M / LPIPS-M on the mask's bounding box — see the SpaRe section below):

* ``psnr(pred, gt, mask)`` / ``ssim(pred, gt, mask)``: statistics over the mask pixels only (MSE summed over
  mask pixels divided by their count; the SSIM map averaged over mask pixels). Independent of how much
  background the image holds, so useful for training diagnostics.
* ``masked_psnr`` / ``masked_ssim``: the RegNeRF / SpaRe convention. Both prediction and ground truth are
  composited on black with the object mask (``pred*mask``, ``gt*mask``) and the ordinary full-image metric is
  computed, so MSE is averaged over *all* pixels. Background pixels contribute zero error, which inflates PSNR
  relative to the first convention by ``10*log10(H*W / mask_pixels)``. It is what published DTU sparse-view
  results (RegNeRF, DNGaussian, FSGS) use, so numbers compare with them.

SSIM follows Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), data range 1, population
covariances; with ``padding="valid"`` (the default for the metric) it equals
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1, channel_axis=-1)``, which crops the 5-pixel border where the window leaves the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

_C1 = 0.01**2
_C2 = 0.03**2
# PSNR is capped where the MSE vanishes (identical images) so averages stay finite: 1e-10 -> 100 dB.
_MIN_MSE = 1e-10

Padding = Literal["valid", "reflect", "zeros"]


# --------------------------------------------------------------------------------------------- shape helpers
def _as_batch(x: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    """[H,W,3] or [B,H,W,3] -> ([B,H,W,3], was_batched)."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if x.dim() == 3:
        return x.unsqueeze(0), False
    if x.dim() == 4:
        return x, True
    raise ValueError(f"{name} must be [H,W,C] or [B,H,W,C], got shape {tuple(x.shape)}")


def _mask_batch(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mask [H,W], [H,W,1], [B,H,W] or [B,H,W,1] -> float [B,H,W,1] matching ``like`` ([B,H,W,C])."""
    m = mask.to(device=like.device, dtype=like.dtype)
    if m.dim() >= 3 and m.shape[-1] == 1 and m.shape[-3:-1] == like.shape[1:3]:
        m = m[..., 0]
    if m.dim() == 2:
        m = m.unsqueeze(0)
    if m.dim() != 3 or m.shape[-2:] != like.shape[1:3]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match images {tuple(like.shape)}")
    return m.expand(like.shape[0], -1, -1).unsqueeze(-1)


def _check_pair(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    p, batched = _as_batch(pred, "pred")
    g, _ = _as_batch(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    return p, g.to(p.dtype), batched


def _unbatch(v: torch.Tensor, batched: bool) -> torch.Tensor:
    return v if batched else v[0]


# --------------------------------------------------------------------------------------------- PSNR
def _psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse.clamp_min(_MIN_MSE))


def mse_to_psnr(mse: float) -> float:
    """PSNR in dB (data range 1) of a mean squared error, with the same 100 dB cap as ``psnr``."""
    return -10.0 * math.log10(max(float(mse), _MIN_MSE))


def psnr(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB for data range 1, one value per image.

    With ``mask`` (1 = object; soft masks weight pixels) the MSE is taken over mask pixels only (sum of
    weighted squared errors / (mask weight * channels)). For the RegNeRF/SpaRe convention use ``masked_psnr``.
    """
    p, g, batched = _check_pair(pred, gt)
    se = (p - g) ** 2
    if mask is None:
        mse = se.mean(dim=(1, 2, 3))
    else:
        m = _mask_batch(mask, p)
        denom = m.sum(dim=(1, 2, 3)) * p.shape[-1]
        if bool((denom <= 0).any()):
            raise ValueError("psnr: mask is empty for at least one image")
        mse = (se * m).sum(dim=(1, 2, 3)) / denom
    return _unbatch(_psnr_from_mse(mse), batched)


def masked_psnr(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RegNeRF/SpaRe masked PSNR: both images composited on black with ``mask``, MSE over the full image."""
    p, g, batched = _check_pair(pred, gt)
    m = _mask_batch(mask, p)
    return _unbatch(_psnr_from_mse(((p * m - g * m) ** 2).mean(dim=(1, 2, 3))), batched)


# --------------------------------------------------------------------------------------------- SSIM
def gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian taps (as scipy.ndimage with radius (size-1)/2)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"SSIM window size must be odd and positive, got {size}")
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (w / w.sum()).to(dtype)


def _filter(x: torch.Tensor, taps: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Separable depthwise Gaussian filter of x [N,C,H,W]."""
    c = x.shape[1]
    k = taps.numel()
    r = k // 2
    if padding == "reflect":
        # Half-sample symmetric ("d c b a | a b c d"), as scipy.ndimage's mode="reflect".
        x = _symmetric_pad(x, r)
    elif padding == "zeros":
        x = F.pad(x, (r, r, r, r))
    wx = taps.view(1, 1, 1, k).expand(c, 1, 1, k)
    wy = taps.view(1, 1, k, 1).expand(c, 1, k, 1)
    x = F.conv2d(x, wx, groups=c)
    return F.conv2d(x, wy, groups=c)


def _symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if r > h or r > w:
        raise ValueError(f"image {h}x{w} is smaller than the SSIM window radius {r}")
    left = x[..., :, :r].flip(-1)
    right = x[..., :, w - r :].flip(-1)
    x = torch.cat([left, x, right], dim=-1)
    top = x[..., :r, :].flip(-2)
    bottom = x[..., h - r :, :].flip(-2)
    return torch.cat([top, x, bottom], dim=-2)


def ssim_map(
    pred: torch.Tensor,
    gt: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    padding: Padding = "valid",
) -> torch.Tensor:
    """Per-pixel SSIM averaged over channels: [B,H',W'] (H' = H-window+1 for "valid", else H).

    Differentiable. "valid" keeps only pixels whose window lies inside the image (skimage's cropped mean);
    "reflect" / "zeros" pad so the map covers every pixel (used for losses and masked averages).
    """
    p, g, _ = _check_pair(pred, gt)
    if padding == "valid" and (p.shape[1] < window or p.shape[2] < window):
        raise ValueError(f"image {p.shape[1]}x{p.shape[2]} is smaller than the SSIM window {window}")
    x = p.permute(0, 3, 1, 2)
    y = g.permute(0, 3, 1, 2)
    taps = gaussian_window(window, sigma, device=x.device, dtype=x.dtype)
    # One filter pass over the five statistics stacked along channels.
    c = x.shape[1]
    stats = _filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), taps, padding)
    mx, my, mxx, myy, mxy = torch.split(stats, c, dim=1)
    vx = mxx - mx * mx
    vy = myy - my * my
    cxy = mxy - mx * my
    num = (2 * mx * my + _C1) * (2 * cxy + _C2)
    den = (mx * mx + my * my + _C1) * (vx + vy + _C2)
    return (num / den).mean(dim=1)


def ssim(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor | None = None,
    window: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Mean SSIM per image (differentiable).

    Without a mask: the mean of the "valid" map, equal to scikit-image's gaussian-weighted SSIM. With a mask:
    the reflect-padded map averaged over mask pixels (weights = mask). For RegNeRF/SpaRe use ``masked_ssim``.
    """
    p, g, batched = _check_pair(pred, gt)
    if mask is None:
        return _unbatch(ssim_map(p, g, window, sigma, "valid").mean(dim=(1, 2)), batched)
    m = _mask_batch(mask, p)[..., 0]
    denom = m.sum(dim=(1, 2))
    if bool((denom <= 0).any()):
        raise ValueError("ssim: mask is empty for at least one image")
    s = ssim_map(p, g, window, sigma, "reflect")
    return _unbatch((s * m).sum(dim=(1, 2)) / denom, batched)


def masked_ssim(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """RegNeRF/SpaRe masked SSIM: both images composited on black with ``mask``, then full-image SSIM."""
    p, g, batched = _check_pair(pred, gt)
    m = _mask_batch(mask, p)
    return _unbatch(ssim_map(p * m, g * m, window, sigma, "valid").mean(dim=(1, 2)), batched)


# --------------------------------------------------------------------------------------------- losses
def image_psnr_ssim(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[float, float]:
    """(PSNR, SSIM) of one image: ``masked_psnr``/``masked_ssim`` (RegNeRF convention) with a mask, else full-image."""
    if mask is None:
        return float(psnr(pred, gt)), float(ssim(pred, gt))
    return float(masked_psnr(pred, gt, mask)), float(masked_ssim(pred, gt, mask))


def l1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error (over mask pixels when a mask is given), a 0-d tensor."""
    p, g, _ = _check_pair(pred, gt)
    err = (p - g).abs()
    if mask is None:
        return err.mean()
    m = _mask_batch(mask, p)
    return (err * m).sum() / (m.sum() * p.shape[-1]).clamp_min(1e-8)


def dssim_loss(pred: torch.Tensor, gt: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural dissimilarity (1 - SSIM) / 2 over the reflect-padded map (every pixel gets a gradient).

    Float32 CPU images go through the C++ kernel (``recon.kernels.ssim``: same value and gradient within float
    rounding, ~6x faster forward + backward) when it is built and only ``pred`` needs a gradient; everything else
    through ``ssim_map`` and autograd."""
    mean = _ssim_mean_cpp(pred, gt, window, sigma)
    if mean is None:
        mean = ssim_map(pred, gt, window, sigma, "reflect").mean()
    return (1.0 - mean) / 2.0


def _ssim_mean_cpp(pred: torch.Tensor, gt: torch.Tensor, window: int, sigma: float) -> torch.Tensor | None:
    """Mean reflect-padded SSIM from the C++ kernel, or None where it does not apply (the caller falls back)."""
    p, g, _ = _check_pair(pred, gt)
    if p.device.type != "cpu" or p.dtype != torch.float32 or g.requires_grad or window % 2 == 0 or window < 1:
        return None
    if window // 2 > min(p.shape[1], p.shape[2]):
        return None  # the reference path raises the error
    from recon.kernels import ssim as ssim_kernel

    if not ssim_kernel.available():
        return None
    x = p.permute(0, 3, 1, 2).reshape(-1, p.shape[1], p.shape[2])  # [B*C, H, W]
    y = g.permute(0, 3, 1, 2).reshape(-1, g.shape[1], g.shape[2])
    taps = gaussian_window(window, sigma, dtype=torch.float32)
    return ssim_kernel.ssim_mean_cpu(x, y, taps, _C1, _C2)


def rgb_loss(pred: torch.Tensor, gt: torch.Tensor, lambda_dssim: float = 0.2) -> torch.Tensor:
    """The 3DGS photometric loss: (1 - lambda) * L1 + lambda * D-SSIM, with D-SSIM = 1 - SSIM.

    3DGS writes the SSIM term as (1 - SSIM), i.e. twice ``dssim_loss``; kept that way so lambda=0.2 means
    what it means in the 3DGS paper.
    """
    return (1.0 - lambda_dssim) * l1(pred, gt) + lambda_dssim * 2.0 * dssim_loss(pred, gt)


# --------------------------------------------------------------------------------------------- LPIPS (optional)
# LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), rebuilt here so no extra package is needed. Two
# local files are required: the torchvision AlexNet state dict (keys "features.{0,3,6,8,10}.{weight,bias}",
# e.g. torch hub's alexnet-owt-7be5be79.pth) and the LPIPS linear heads (keys "lin{0..4}.model.1.weight",
# the lpips package's weights/v0.1/alex.pth). Nothing is ever downloaded.
_ALEX_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
_ALEX_CONVS = (
    (0, 3, 64, 11, 4, 2),
    (3, 64, 192, 5, 1, 2),
    (6, 192, 384, 3, 1, 1),
    (8, 384, 256, 3, 1, 1),
    (10, 256, 256, 3, 1, 1),
)  # (torchvision index, in, out, kernel, stride, padding)


class _AlexLPIPS(torch.nn.Module):
    """LPIPS-Alex: unit-normalised relu1..relu5 feature differences, 1x1 linear heads, spatial mean, sum."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv2d(i, o, k, stride=s, padding=p) for _, i, o, k, s, p in _ALEX_CONVS
        )
        self.lins = torch.nn.ModuleList(torch.nn.Conv2d(c[2], 1, 1, bias=False) for c in _ALEX_CONVS)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = (x - self.shift) / self.scale
        for i, conv in enumerate(self.convs):
            if i in (1, 2):  # max-pools after relu1 and relu2, as in AlexNet
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            feats.append(x)
        return feats

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """pred, gt: [B,3,H,W] in [-1, 1] -> [B] distances."""
        total = 0.0
        for lin, f0, f1 in zip(self.lins, self._features(pred), self._features(gt)):
            f0 = f0 / (f0.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            f1 = f1 / (f1.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((f0 - f1) ** 2).mean(dim=(1, 2, 3))
        return total

    def load_weights(self, backbone: dict, heads: dict) -> None:
        for conv, (idx, *_rest) in zip(self.convs, _ALEX_CONVS):
            conv.weight.data.copy_(backbone[f"features.{idx}.weight"])
            conv.bias.data.copy_(backbone[f"features.{idx}.bias"])
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(heads[f"lin{i}.model.1.weight"])


def lpips_if_available(
    weights_path: str | Path | None = None,
    backbone_path: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """An LPIPS-Alex function ``f(pred, gt) -> per-image distance`` if its weights are on disk, else None.

    ``weights_path``: the LPIPS linear-head file (lpips' ``weights/v0.1/alex.pth``); None -> no LPIPS.
    ``backbone_path``: torchvision's AlexNet state dict; None -> look for ``alexnet-owt-7be5be79.pth`` next to
    ``weights_path`` and in torch hub's checkpoint folder. Missing or unreadable files give None (never a
    download). Images as elsewhere: [H,W,3] or [B,H,W,3] in [0,1].
    """
    if weights_path is None:
        return None
    weights_path = Path(weights_path)
    candidates = (
        [Path(backbone_path)]
        if backbone_path is not None
        else [
            weights_path.parent / _ALEX_BACKBONE_FILE,
            Path(torch.hub.get_dir()) / "checkpoints" / _ALEX_BACKBONE_FILE,
        ]
    )
    backbone_file = next((c for c in candidates if c.is_file()), None)
    if not weights_path.is_file() or backbone_file is None:
        return None
    try:
        heads = torch.load(weights_path, map_location="cpu", weights_only=True)
        backbone = torch.load(backbone_file, map_location="cpu", weights_only=True)
        net = _AlexLPIPS()
        net.load_weights(backbone, heads)
    except (KeyError, RuntimeError, OSError, ValueError):
        return None
    net = net.to(device).eval()
    for prm in net.parameters():
        prm.requires_grad_(False)

    def lpips(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        p, g, batched = _check_pair(pred, gt)
        p = p.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2) * 2 - 1
        g = g.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2) * 2 - 1
        return _unbatch(net(p, g), batched)

    return lpips


# --------------------------------------------------------------------------------------------- SpaRe "-M" metrics
# The SpaRe challenge's object-only scores: PSNR-M over the mask pixels (``psnr(pred, gt, mask)``), SSIM-M and
# LPIPS-M on the crop of both images to the tight bounding box of the mask (grown to a minimum size the window
# or network needs, clamped to the image).
def mask_bbox(mask: torch.Tensor, min_size: int = 1) -> tuple[int, int, int, int] | None:
    """Tight bounding box (y0, y1, x0, x1), end-exclusive, of ``mask > 0.5`` for an [H, W] mask; None when empty.

    The box is grown symmetrically (then shifted to stay inside the image) to at least ``min_size`` per side,
    or the image size when that is smaller.
    """
    m = mask.detach()
    if m.dim() == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.dim() != 2:
        raise ValueError(f"mask_bbox: expected an [H, W] mask, got shape {tuple(mask.shape)}")
    h, w = m.shape
    rows = torch.nonzero((m > 0.5).any(dim=1)).flatten()
    cols = torch.nonzero((m > 0.5).any(dim=0)).flatten()
    if rows.numel() == 0:
        return None

    def grow(lo: int, hi: int, size: int) -> tuple[int, int]:
        need = min(min_size, size) - (hi - lo)
        if need > 0:
            lo -= need // 2
            hi += need - need // 2
            shift = max(0, -lo) - max(0, hi - size)
            lo, hi = lo + shift, hi + shift
        return lo, hi

    y0, y1 = grow(int(rows[0]), int(rows[-1]) + 1, h)
    x0, x1 = grow(int(cols[0]), int(cols[-1]) + 1, w)
    return y0, y1, x0, x1


def crop_to_mask_bbox(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, min_size: int = 1
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """[H, W, 3] pred and gt cropped to :func:`mask_bbox` of the [H, W] mask (None when the mask is empty)."""
    box = mask_bbox(mask, min_size)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    return pred[y0:y1, x0:x1], gt[y0:y1, x0:x1]


def bbox_ssim(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, window: int = 11, sigma: float = 1.5
) -> float | None:
    """SpaRe SSIM-M: full SSIM of the [H, W, 3] images cropped to the mask's bounding box (None: empty mask)."""
    crop = crop_to_mask_bbox(pred, gt, mask, min_size=window)
    if crop is None:
        return None
    return float(ssim(*crop, window=window, sigma=sigma))


__all__ = [
    "psnr",
    "mse_to_psnr",
    "masked_psnr",
    "ssim",
    "ssim_map",
    "masked_ssim",
    "image_psnr_ssim",
    "gaussian_window",
    "l1",
    "dssim_loss",
    "rgb_loss",
    "lpips_if_available",
    "mask_bbox",
    "crop_to_mask_bbox",
    "bbox_ssim",
]
