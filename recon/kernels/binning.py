"""Tile binning: which Gaussians touch which 16x16 tile, sorted front to back (a CSR of intersections).

Same layout as gsplat's ``isect_tiles`` / ``isect_offset_encode``:
  isect_ids   [M] int64  key = camera << (32 + tile_bits) | tile << 32 | float-bits(depth)
  flatten_ids [M] int32  index into the flattened [C*N] Gaussians, sorted by key
  offsets     [C, tile_h, tile_w] int32  first intersection of each tile (a tile ends where the next
              one starts, the last one at M)
One ``torch.sort`` of the int64 keys; the rest is a handful of vectorised integer ops (fast enough:
a few ms for 100k intersections; see benchmarks/kernels.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Intersections(NamedTuple):
    """The CSR of (camera, tile) -> Gaussians, front to back."""

    tiles_per_gauss: Tensor  # [C, N] int32
    isect_ids: Tensor  # [M] int64 sorted keys
    flatten_ids: Tensor  # [M] int32 into C*N
    offsets: Tensor  # [C, tile_h, tile_w] int32
    tile_width: int
    tile_height: int


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """Number of tiles across and down (partial tiles at the right/bottom count)."""
    return (width + tile_size - 1) // tile_size, (height + tile_size - 1) // tile_size


def tile_ranges(means2d: Tensor, radii: Tensor, tile_size: int, tile_width: int, tile_height: int) -> Tensor:
    """Per-Gaussian tile rectangle [C, N, 4] = (x_min, y_min, x_max, y_max), max exclusive, as gsplat.

    ``radii`` is [C,N,2] (per axis) or [C,N]; a Gaussian with a zero radius gets an empty rectangle.
    """
    if radii.dim() == means2d.dim() - 1:
        radii = radii.unsqueeze(-1).expand(*radii.shape, 2)
    m = means2d.detach().float() / tile_size
    r = radii.float() / tile_size
    lo = torch.floor(m - r)
    hi = torch.ceil(m + r)
    xmin = lo[..., 0].clamp(0, tile_width)
    ymin = lo[..., 1].clamp(0, tile_height)
    xmax = hi[..., 0].clamp(0, tile_width)
    ymax = hi[..., 1].clamp(0, tile_height)
    rect = torch.stack([xmin, ymin, xmax, ymax], dim=-1).to(torch.int64)
    dead = (radii[..., 0] <= 0) | (radii[..., 1] <= 0)
    rect[dead] = 0
    return rect


def isect_tiles(
    means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile_size: int = 16
) -> Intersections:
    """Bin projected Gaussians [C,N] into tiles and sort each tile's list by depth (front to back)."""
    C, N = means2d.shape[:2]
    tw, th = tile_grid(width, height, tile_size)
    dev = means2d.device
    with torch.no_grad():
        rect = tile_ranges(means2d, radii, tile_size, tw, th)
        w = (rect[..., 2] - rect[..., 0]).clamp_min(0)
        h = (rect[..., 3] - rect[..., 1]).clamp_min(0)
        counts = (w * h).reshape(-1)  # [C*N]
        tiles_per_gauss = counts.reshape(C, N).to(torch.int32)
        gid = torch.nonzero(counts, as_tuple=True)[0]
        cnt = counts[gid]
        M = int(cnt.sum())
        tile_bits = max(1, int(tw * th).bit_length())
        if M == 0:
            empty = torch.empty(0, dtype=torch.int64, device=dev)
            offsets = torch.zeros(C, th, tw, dtype=torch.int32, device=dev)
            return Intersections(tiles_per_gauss, empty, empty.to(torch.int32), offsets, tw, th)
        rect_g = rect.reshape(-1, 4)[gid]
        w_g = w.reshape(-1)[gid]
        start = torch.cumsum(cnt, 0) - cnt
        rep_idx = torch.repeat_interleave(torch.arange(gid.numel(), device=dev), cnt, output_size=M)
        local = torch.arange(M, device=dev) - start[rep_idx]
        wr = w_g[rep_idx]
        tx = rect_g[rep_idx, 0] + local % wr
        ty = rect_g[rep_idx, 1] + torch.div(local, wr, rounding_mode="floor")
        flat = gid[rep_idx]
        cam = torch.div(flat, N, rounding_mode="floor")
        depth_bits = depths.detach().float().contiguous().view(torch.int32).reshape(-1)[flat].to(torch.int64)
        depth_bits &= 0xFFFFFFFF
        keys = (cam << (32 + tile_bits)) | ((ty * tw + tx) << 32) | depth_bits
        isect_ids, order = torch.sort(keys)
        flatten_ids = flat[order].to(torch.int32)
        offsets = isect_offset_encode(isect_ids, C, tw, th)
    return Intersections(tiles_per_gauss, isect_ids, flatten_ids, offsets, tw, th)


def isect_offset_encode(isect_ids: Tensor, n_cameras: int, tile_width: int, tile_height: int) -> Tensor:
    """First intersection index of every (camera, tile): [C, tile_h, tile_w] int32."""
    n_tiles = tile_width * tile_height
    tile_bits = max(1, int(n_tiles).bit_length())
    global_tile = (isect_ids >> 32) & ((1 << tile_bits) - 1)
    global_tile = global_tile + (isect_ids >> (32 + tile_bits)) * n_tiles
    queries = torch.arange(n_cameras * n_tiles, device=isect_ids.device, dtype=torch.int64)
    offs = torch.searchsorted(global_tile.contiguous(), queries)
    return offs.to(torch.int32).reshape(n_cameras, tile_height, tile_width)
