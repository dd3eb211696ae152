"""Pure-PyTorch tile compositing with autograd: the reference the C++ kernel is tested against, and the
fallback when no compiler is available.

Same math and the same early-termination rule as the kernel and gsplat 1.5.3 (the CUDA path, pinned in
pyproject), so CPU and GPU runs of one scene agree:
  sigma = 0.5 (a dx^2 + c dy^2) + b dx dy,  dx = mean_x - (x + 0.5)
  alpha = min(ALPHA_MAX, opacity exp(-sigma)); skipped when sigma < 0 or alpha < 1/255, or when the
          Gaussian's depth >= the pixel's far-depth limit
  a Gaussian is composited only while T (1 - alpha) > 1e-4 (T before it); since T only decreases, this
  equals the kernel's "stop at the first Gaussian that would take T to <= 1e-4".
Tiles are processed in chunks padded to the chunk's longest list, each chunk under gradient
checkpointing, so memory stays bounded (100k Gaussians at 400x300 runs) at the cost of recomputation.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

ALPHA_THRESHOLD = 1.0 / 255.0
# gsplat 1.5.3's rasterize_to_pixels: alpha = min(0.999, opacity exp(-sigma)), skipped when sigma < 0 or
# alpha < 1/255, the pixel stops (that Gaussian excluded) when T (1 - alpha) <= 1e-4; its backward passes
# gradients to sigma and opacity only where opacity exp(-sigma) <= 0.999 (the clamp is inactive).
ALPHA_MAX = 0.999
T_MIN = 1e-4


def _pad_to_tiles(img: Tensor, tile_size: int, tw: int, th: int) -> Tensor:
    """[C,H,W,...] -> [C*th*tw, tile_size*tile_size, ...] tile-major, zero padded at the right/bottom."""
    C, H, W = img.shape[:3]
    rest = img.shape[3:]
    pad_h, pad_w = th * tile_size - H, tw * tile_size - W
    if pad_h or pad_w:
        full = img.new_zeros((C, th * tile_size, tw * tile_size, *rest))
        full[:, :H, :W] = img
        img = full
    img = img.reshape(C, th, tile_size, tw, tile_size, *rest).transpose(2, 3)
    return img.reshape(C * th * tw, tile_size * tile_size, *rest)


def _chunk(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    ids: Tensor,
    pad_mask: Tensor,
    pix: Tensor,
    gdepth: Tensor | None,
    far: Tensor | None,
    alpha_max: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite B tiles: ids [B,K] into flat Gaussians, pix [B,P,2] pixel centres -> colour [B,P,D], T, alpha [B,P]."""
    m = means2d[ids]  # [B,K,2]
    con = conics[ids]  # [B,K,3]
    op = opacities[ids]  # [B,K]
    col = colors[ids]  # [B,K,D]
    dx = m[:, None, :, 0] - pix[:, :, None, 0]  # [B,P,K]
    dy = m[:, None, :, 1] - pix[:, :, None, 1]
    a = con[:, None, :, 0]
    b = con[:, None, :, 1]
    c = con[:, None, :, 2]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp_max(op[:, None, :] * torch.exp(-sigma), alpha_max)
    with torch.no_grad():
        valid = pad_mask[:, None, :] & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
        if far is not None and gdepth is not None:
            valid &= gdepth[:, None, :] < far[:, :, None]
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    T = torch.cumprod(one_minus, dim=-1)
    T_excl = torch.cat([torch.ones_like(T[..., :1]), T[..., :-1]], dim=-1)
    with torch.no_grad():
        incl = valid & (T_excl * one_minus > T_MIN)
    w = torch.where(incl, alpha * T_excl, torch.zeros_like(alpha))
    color = torch.einsum("bpk,bkd->bpd", w, col)
    T_final = torch.prod(torch.where(incl, one_minus, torch.ones_like(one_minus)), dim=-1)
    # alpha as the sum of weights: equals 1 - T_final, without float cancellation when alpha is small
    return color, T_final, w.sum(dim=-1)


def composite_reference(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    isect_offsets: Tensor,
    flatten_ids: Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,
    depths: Tensor | None = None,
    far_depths: Tensor | None = None,
    alpha_max: float = ALPHA_MAX,
    max_chunk_elems: int = 1 << 21,
) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of projected Gaussians; returns colours [C,H,W,D] and alphas [C,H,W,1].

    means2d [C,N,2], conics [C,N,3], colors [C,N,D], opacities [C,N], backgrounds None/[C,D]/[C,H,W,D],
    depths [C,N] and far_depths [C,H,W] (both needed for the far-depth limit), CSR from ``isect_tiles``.
    """
    C, N, D = colors.shape
    th, tw = isect_offsets.shape[1:]
    P = tile_size * tile_size
    n_tiles = C * th * tw
    M = flatten_ids.numel()
    dev, dt = colors.device, colors.dtype

    m_flat = means2d.reshape(C * N, 2)
    c_flat = conics.reshape(C * N, 3)
    col_flat = colors.reshape(C * N, D)
    op_flat = opacities.reshape(C * N)
    d_flat = depths.reshape(C * N).detach() if depths is not None else None
    far_t = None
    if far_depths is not None:
        if depths is None:
            raise ValueError("far_depths needs the Gaussians' depths")
        far_t = _pad_to_tiles(far_depths.detach()[..., None].to(dt), tile_size, tw, th)[..., 0]

    starts = isect_offsets.reshape(-1).to(torch.int64)
    ends = torch.cat([starts[1:], torch.tensor([M], device=dev, dtype=torch.int64)])
    counts = (ends - starts).tolist()
    starts_l = starts.tolist()

    # pixel centres of every tile, tile-major
    ys, xs = torch.meshgrid(torch.arange(tile_size, device=dev), torch.arange(tile_size, device=dev), indexing="ij")
    local = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1).to(dt) + 0.5  # [P,2]
    tile_idx = torch.arange(th * tw, device=dev)
    origin = torch.stack([tile_idx % tw, tile_idx // tw], dim=-1).to(dt) * tile_size  # [th*tw,2]

    color_parts: list[Tensor] = []
    T_parts: list[Tensor] = []
    A_parts: list[Tensor] = []
    t0 = 0
    while t0 < n_tiles:
        kmax = max(counts[t0], 1)
        t1 = t0 + 1
        while t1 < n_tiles and (t1 - t0 + 1) * P * max(kmax, counts[t1]) <= max_chunk_elems:
            kmax = max(kmax, counts[t1])
            t1 += 1
        ar = torch.arange(kmax, device=dev)
        cnt = torch.tensor(counts[t0:t1], device=dev)
        st = torch.tensor(starts_l[t0:t1], device=dev)
        pad_mask = ar[None, :] < cnt[:, None]
        pos = torch.where(pad_mask, st[:, None] + ar[None, :], torch.zeros_like(pad_mask, dtype=torch.int64))
        ids = flatten_ids.to(torch.int64)[pos.clamp_max(max(M - 1, 0))] if M > 0 else torch.zeros_like(pos)
        pix = origin[torch.arange(t0, t1, device=dev) % (th * tw)][:, None, :] + local[None]  # [B,P,2]
        gdepth = d_flat[ids] if (far_t is not None and d_flat is not None) else None
        far = far_t[t0:t1] if far_t is not None else None
        args = (m_flat, c_flat, col_flat, op_flat, ids, pad_mask, pix, gdepth, far, alpha_max)
        if torch.is_grad_enabled() and any(x.requires_grad for x in (m_flat, c_flat, col_flat, op_flat)):
            color, T_final, alpha = checkpoint(_chunk, *args, use_reentrant=False, preserve_rng_state=False)
        else:
            color, T_final, alpha = _chunk(*args)
        color_parts.append(color)
        T_parts.append(T_final)
        A_parts.append(alpha)
        t0 = t1

    color = torch.cat(color_parts, 0)  # [n_tiles,P,D]
    T_final = torch.cat(T_parts, 0)  # [n_tiles,P]
    alpha = torch.cat(A_parts, 0)
    color = _untile(color, C, th, tw, tile_size)[:, :height, :width]
    alpha = _untile(alpha[..., None], C, th, tw, tile_size)[:, :height, :width]
    if backgrounds is not None:
        T_img = _untile(T_final[..., None], C, th, tw, tile_size)[:, :height, :width]
        bg = backgrounds if backgrounds.dim() == 4 else backgrounds[:, None, None, :]
        color = color + T_img * bg
    return color, alpha


def _untile(x: Tensor, C: int, th: int, tw: int, tile_size: int) -> Tensor:
    """[C*th*tw, P, D] -> [C, th*tile, tw*tile, D]."""
    D = x.shape[-1]
    x = x.reshape(C, th, tw, tile_size, tile_size, D).transpose(2, 3)
    return x.reshape(C, th * tile_size, tw * tile_size, D)
