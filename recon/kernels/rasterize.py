"""One public entry point, ``rasterize``, mirroring gsplat's ``rasterization``.

CUDA tensors go to gsplat (imported lazily); CPU tensors go through projection + SH (PyTorch autograd),
tile binning, and the C++/OpenMP compositing kernel, or the pure-PyTorch reference when the kernel is
unavailable (no compiler, RECON_NO_CPP=1) or ``backend="reference"``. Both CPU paths give the same
results and gradients within float tolerance.

Extras over gsplat: per-pixel ``backgrounds`` [C,H,W,D] and ``far_depths`` [C,H,W]: a Gaussian whose depth
is >= far_depths at a pixel is skipped there (tile lists are depth-sorted, so compositing simply stops),
which lets an opaque mesh (colour as background, depth as far limit) be composited behind the Gaussians.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from recon.kernels import cpu_raster
from recon.kernels.binning import isect_tiles
from recon.kernels.projection import camera_centers, project_gaussians
from recon.kernels.reference import ALPHA_MAX, composite_reference
from recon.kernels.sh import sh_to_color

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "cpp", "reference", "gsplat")


def _check_inputs(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor, Ks: Tensor,
    sh_degree: int | None, render_mode: str, rasterize_mode: str, backend: str,
) -> None:  # fmt: skip
    N = means.shape[0]
    if means.shape != (N, 3):
        raise ValueError(f"means must be [N, 3], got {tuple(means.shape)}")
    if quats.shape != (N, 4) or scales.shape != (N, 3):
        raise ValueError(f"quats must be [N, 4] and scales [N, 3], got {tuple(quats.shape)}, {tuple(scales.shape)}")
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4) or Ks.shape != (viewmats.shape[0], 3, 3):
        raise ValueError(f"viewmats must be [C, 4, 4] and Ks [C, 3, 3], got {tuple(viewmats.shape)}, {tuple(Ks.shape)}")
    C = viewmats.shape[0]
    if opacities.shape not in ((N,), (C, N)):
        raise ValueError(f"opacities must be [N] or [C, N], got {tuple(opacities.shape)}")
    if sh_degree is None:
        if colors.dim() not in (2, 3) or colors.shape[-2] != N or (colors.dim() == 3 and colors.shape[0] != C):
            raise ValueError(f"colors must be [N, D] or [C, N, D], got {tuple(colors.shape)}")
    else:
        if colors.dim() not in (3, 4) or colors.shape[-3] != N or colors.shape[-1] != 3:
            raise ValueError(f"SH colors must be [N, K, 3] or [C, N, K, 3], got {tuple(colors.shape)}")
        if not 0 <= sh_degree <= 3 or colors.shape[-2] < (sh_degree + 1) ** 2:
            raise ValueError(f"sh_degree {sh_degree} needs {(sh_degree + 1) ** 2} coefficients, got {colors.shape[-2]}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    far_depths: Tensor | None = None,
    absgrad: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Render N 3D Gaussians into C cameras; returns (render_colors [C,H,W,D'], render_alphas [C,H,W,1], meta).

    means [N,3]; quats [N,4] wxyz (any norm); scales [N,3] and opacities [N] or [C,N] already activated;
    colors [N,D] / [C,N,D], or SH coefficients [N,K,3] / [C,N,K,3] with ``sh_degree``; viewmats [C,4,4]
    world-to-camera (OpenCV axes); Ks [C,3,3]. render_mode "RGB", "D" (accumulated depth), "ED" (expected
    depth = accumulated depth / alpha), "RGB+D", "RGB+ED": depth is appended as the last channel.
    backgrounds [C,D] or [C,H,W,D] (D = colour channels) are added as T_final * bg. far_depths [C,H,W]
    (CPU only): Gaussians at or beyond it are skipped per pixel. absgrad: also store the per-Gaussian sum of
    per-pixel |dL/dmeans2d| in ``meta["means2d"].absgrad`` after backward (C++ and gsplat paths).
    backend: "auto" (gsplat on CUDA; on CPU the C++ kernels for float32, else the PyTorch reference),
    "cpp", "reference", "gsplat". Float32 CPU inputs whose viewmats/Ks require grad use the C++ compositing
    with PyTorch projection/SH, so gradients reach the cameras too.

    Compositing rule (all paths, gsplat 1.5.3's): alpha = min(0.999, opacity exp(-sigma)), skipped below
    1/255, stop before T drops to <= 1e-4; opacity-aware tight bounding boxes as gsplat 1.5.

    meta: means2d [C,N,2] (graph tensor: call ``retain_grad()`` on it for densification), radii [C,N]
    int32 (max of the per-axis radii_xy [C,N,2]; 0 = culled), depths, conics, opacities [C,N],
    tiles_per_gauss, isect_ids, flatten_ids, isect_offsets, width, height, tile_size, tile_width,
    tile_height, n_cameras, backend.
    """
    _check_inputs(
        means, quats, scales, opacities, colors, viewmats, Ks, sh_degree, render_mode, rasterize_mode, backend
    )
    if backend == "gsplat" or (backend == "auto" and means.is_cuda):
        return _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
            radius_clip, eps2d, sh_degree, tile_size, backgrounds, render_mode, rasterize_mode, far_depths, absgrad,
        )  # fmt: skip
    if means.is_cuda:
        raise ValueError(f"backend {backend!r} runs on CPU tensors; use backend='auto' or 'gsplat' on CUDA")

    use_cpp = backend == "cpp" or (backend == "auto" and means.dtype == torch.float32)
    if use_cpp and not cpu_raster.available():
        if backend == "cpp":
            raise RuntimeError("the C++ rasteriser is unavailable (no compiler, or RECON_NO_CPP=1)")
        use_cpp = False
    if use_cpp and means.dtype != torch.float32:
        raise ValueError("the C++ rasteriser needs float32 tensors")
    if not near_plane > 0:
        raise ValueError(f"near_plane must be > 0 (depths are sorted as positive floats), got {near_plane}")
    if width <= 0 or height <= 0 or tile_size <= 0:
        raise ValueError(f"width, height and tile_size must be positive, got {width}, {height}, {tile_size}")

    C = viewmats.shape[0]
    N = means.shape[0]
    opac = opacities if opacities.dim() == 2 else opacities[None].expand(C, N)
    # fused C++ projection/SH unless gradients must reach the cameras (then PyTorch autograd does it)
    cam_grad = viewmats.requires_grad or Ks.requires_grad
    fused = use_cpp and not cam_grad
    project = cpu_raster.project_gaussians_cpu if fused else project_gaussians
    proj = project(
        means, quats, scales, opac, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, calc_compensations=rasterize_mode == "antialiased",
    )  # fmt: skip
    if proj.compensations is not None:
        opac = opac * proj.compensations

    if render_mode in ("D", "ED"):
        feats = proj.depths[..., None]
    else:
        if sh_degree is None:
            feats = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)
        else:
            if fused and colors.dim() == 3:
                feats = cpu_raster.sh_to_color_cpu(sh_degree, means, colors, viewmats)
            else:
                dirs = means[None] - camera_centers(viewmats)[:, None]  # [C,N,3]
                feats = sh_to_color(sh_degree, dirs, colors)  # [C,N,3]
        if render_mode in ("RGB+D", "RGB+ED"):
            feats = torch.cat([feats, proj.depths[..., None]], dim=-1)
    n_extra = 1 if render_mode in ("RGB+D", "RGB+ED") else 0

    bg = backgrounds if render_mode not in ("D", "ED") else None  # gsplat: depth-only renders ignore it
    if bg is not None:
        D_rgb = feats.shape[-1] - n_extra
        if bg.shape not in ((C, D_rgb), (C, height, width, D_rgb)):
            raise ValueError(f"backgrounds must be [C, {D_rgb}] or [C, H, W, {D_rgb}], got {tuple(bg.shape)}")
        if n_extra:
            bg = torch.cat([bg, bg.new_zeros(*bg.shape[:-1], 1)], dim=-1)
    if far_depths is not None and far_depths.shape != (C, height, width):
        raise ValueError(f"far_depths must be [C, H, W] = [{C}, {height}, {width}], got {tuple(far_depths.shape)}")

    binning = cpu_raster.isect_tiles_cpu if use_cpp else isect_tiles
    isects = binning(proj.means2d, proj.radii, proj.depths, width, height, tile_size)
    args = (proj.means2d, proj.conics, feats, opac, isects.offsets, isects.flatten_ids, width, height, tile_size)
    if use_cpp:
        render_colors, render_alphas = cpu_raster.composite_cpu(
            *args, backgrounds=bg, depths=proj.depths, far_depths=far_depths, alpha_max=ALPHA_MAX, absgrad=absgrad
        )
    else:
        render_colors, render_alphas = composite_reference(
            *args, backgrounds=bg, depths=proj.depths, far_depths=far_depths, alpha_max=ALPHA_MAX
        )
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp_min(1e-10)], dim=-1
        )

    meta: dict[str, Any] = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": proj.radii_max if proj.radii_max is not None else proj.radii.amax(dim=-1),
        "radii_xy": proj.radii,
        "means2d": proj.means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": opac,
        "tile_width": isects.tile_width,
        "tile_height": isects.tile_height,
        "tiles_per_gauss": isects.tiles_per_gauss,
        "isect_ids": isects.isect_ids,
        "flatten_ids": isects.flatten_ids,
        "isect_offsets": isects.offsets,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_cameras": C,
        "backend": "cpp" if use_cpp else "reference",
    }
    return render_colors, render_alphas, meta


def _rasterize_gsplat(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor, Ks: Tensor,
    width: int, height: int, near_plane: float, far_plane: float, radius_clip: float, eps2d: float,
    sh_degree: int | None, tile_size: int, backgrounds: Tensor | None, render_mode: str, rasterize_mode: str,
    far_depths: Tensor | None, absgrad: bool,
) -> tuple[Tensor, Tensor, dict[str, Any]]:  # fmt: skip
    """gsplat on CUDA; per-pixel backgrounds are added here as (1 - alpha) * bg."""
    if far_depths is not None:
        raise NotImplementedError(
            "far_depths is only supported by the CPU rasteriser (gsplat has no per-pixel far limit)"
        )
    try:
        from gsplat import rasterization
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "rendering CUDA tensors needs gsplat: pip install -e '.[cuda]' (or move the tensors to the CPU)"
        ) from exc
    if render_mode in ("D", "ED"):
        backgrounds = None
    per_pixel_bg = backgrounds is not None and backgrounds.dim() == 4
    colors_out, alphas, meta = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree,
        packed=False, tile_size=tile_size, backgrounds=None if per_pixel_bg else backgrounds,
        render_mode=render_mode, rasterize_mode=rasterize_mode, absgrad=absgrad,
    )  # fmt: skip
    if per_pixel_bg:
        assert backgrounds is not None
        n = backgrounds.shape[-1]
        colors_out = torch.cat([colors_out[..., :n] + (1.0 - alphas) * backgrounds, colors_out[..., n:]], dim=-1)
    meta = dict(meta)
    radii = meta.get("radii")
    if radii is not None and radii.dim() == 3:
        meta["radii_xy"] = radii
        meta["radii"] = radii.amax(dim=-1)
    meta["backend"] = "gsplat"
    return colors_out, alphas, meta
