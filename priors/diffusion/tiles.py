"""Tile-sparse repair: run the repair model only on the tiles of a render that need it.

An image is cut into ``tile`` x ``tile`` tiles; each tile is repaired inside a context window of twice its size
(the UNet sees its surroundings), and only the tile's centre is kept. Tiles are chosen by :func:`tiles_needing_repair`
(object present and partly transparent or uneven), gathered as rows with the shared sparse kernels
(``recon.kernels.gather_rows`` / ``scatter_rows``), repaired as one batch and scattered back, so the cost
follows the damaged area rather than the image size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.kernels import gather_rows, scatter_rows

# ([n,3,s,s] render, [n,1,s,s] alpha, [n,4,s,s] guide or None) -> [n,3,s,s] clean
RepairFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def tile_grid(height: int, width: int, tile: int) -> tuple[int, int]:
    """Rows and columns of tiles covering an image (the last ones may stick out)."""
    return -(-height // tile), -(-width // tile)


def tiles_needing_repair(
    alpha: Tensor, rgb: Tensor, tile: int, min_alpha: float = 0.05, full: float = 0.97, std_thresh: float = 0.08
) -> Tensor:
    """Bool [rows*cols]: tiles that the object touches (max alpha > ``min_alpha``) and that are either not fully
    covered (some alpha < ``full``: holes, thin or fuzzy borders) or uneven in colour (std > ``std_thresh``)."""
    h, w = alpha.shape
    rows, cols = tile_grid(h, w, tile)
    pad = (0, cols * tile - w, 0, rows * tile - h)
    a = F.pad(alpha[None, None], pad)
    c = F.pad(rgb.permute(2, 0, 1)[None], pad)
    amax = F.max_pool2d(a, tile)
    amin = -F.max_pool2d(-F.pad(alpha[None, None], pad, value=1.0), tile)
    mean = F.avg_pool2d(c, tile)
    std = (F.avg_pool2d(c * c, tile) - mean * mean).clamp_min(0).sqrt().mean(dim=1, keepdim=True)
    need = (amax > min_alpha) & ((amin < full) | (std > std_thresh))
    return need.reshape(-1)


def _patches(x: Tensor, tile: int) -> tuple[Tensor, int, int]:
    """[C,H,W] -> rows [rows*cols, C*(2t)^2] of context windows (tile + t/2 margin each side)."""
    c, h, w = x.shape
    rows, cols = tile_grid(h, w, tile)
    m = tile // 2
    padded = F.pad(x[None], (m, cols * tile - w + m, m, rows * tile - h + m), mode="replicate")
    cols_t = F.unfold(padded, kernel_size=2 * tile, stride=tile)  # [1, C*(2t)^2, L]
    return cols_t[0].T.contiguous(), rows, cols


def repair_tiles(
    render: Tensor,
    alpha: Tensor,
    active: Tensor,
    tile: int,
    repair: RepairFn,
    batch: int = 16,
    guide: Tensor | None = None,
) -> Tensor:
    """Repaired copy of ``render`` [H,W,3] where ``active`` [rows*cols] tiles are replaced by the repair of their
    context window; inactive tiles keep the render. ``alpha`` is [H,W]; ``guide`` [H,W,4] (optional) is cut into
    the same windows and handed to ``repair``."""
    h, w, _ = render.shape
    parts = [render.permute(2, 0, 1), alpha[None]]
    if guide is not None:
        parts.append(guide.permute(2, 0, 1))
    x = torch.cat(parts, dim=0)  # [4 or 8,H,W]
    nc = x.shape[0]
    rows_t, rows, cols = _patches(x, tile)
    n_tiles = rows * cols
    index = active.nonzero().squeeze(1)
    out_rows = render.new_zeros((0, 3 * tile * tile))
    s, m = 2 * tile, tile // 2
    if index.numel():
        picked = gather_rows(rows_t, index).reshape(-1, nc, s, s)
        outs = []
        for k in range(0, picked.shape[0], batch):
            chunk = picked[k : k + batch]
            fixed = repair(chunk[:, :3], chunk[:, 3:4], chunk[:, 4:] if guide is not None else None)
            outs.append(fixed[:, :, m : m + tile, m : m + tile].reshape(chunk.shape[0], -1))
        out_rows = torch.cat(outs)
    full = scatter_rows(out_rows, index, n_tiles)  # [L, 3*t*t], zeros where inactive
    fixed_img = F.fold(full.T[None], output_size=(rows * tile, cols * tile), kernel_size=tile, stride=tile)[0]
    keep = tile_mask(active, h, w, tile)
    fixed_img = fixed_img[:, :h, :w].permute(1, 2, 0)
    return torch.where(keep[..., None], fixed_img, render)


def tile_mask(active: Tensor, height: int, width: int, tile: int) -> Tensor:
    """Per-pixel bool [H,W] mask of the active tiles."""
    rows, cols = tile_grid(height, width, tile)
    grid = active.reshape(rows, cols).to(torch.float32)
    up = grid.repeat_interleave(tile, 0).repeat_interleave(tile, 1)
    return up[:height, :width] > 0.5
