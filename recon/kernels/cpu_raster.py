"""Autograd wrappers around the C++/OpenMP kernels (csrc/rasterize.cpp, one extension).

* ``project_gaussians_cpu``: fused EWA projection, same results as ``projection.project_gaussians``.
* ``sh_to_color_cpu``: SH colour, same as ``sh.sh_to_color`` for per-Gaussian coefficients [N,K,3].
* ``isect_tiles_cpu``: tile binning (counting sort by tile of depth-sorted Gaussians), same CSR as
  ``binning.isect_tiles``.
* ``composite_cpu``: same signature and results as ``reference.composite_reference``; the forward saves
  the final transmittance and the last contributing intersection of every pixel, and the backward walks
  each pixel's list back to front.
All backwards are hand-written (no autograd inside); the PyTorch versions are the reference in tests.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from recon.kernels.binning import Intersections
from recon.kernels.build import load_cpp_extension
from recon.kernels.projection import Projection, camera_centers
from recon.kernels.reference import ALPHA_MAX

_EXT_NAME = "rasterize"
_SOURCES = ["rasterize.cpp"]
# No fast-math and no FMA contraction: the forward and backward recompute each alpha and must agree bit for
# bit on the alpha >= 1/255 and T > 1e-4 decisions; it also keeps results close to the PyTorch reference.
# No trapping math lets the branch-free tile-row loops vectorise (16 lanes with AVX-512).
_CFLAGS = ["-fno-fast-math", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-mprefer-vector-width=512"]


def extension() -> ModuleType | None:
    """The compiled kernel (built on first use and cached), or None (no compiler, or RECON_NO_CPP=1)."""
    return load_cpp_extension(_EXT_NAME, _SOURCES, extra_cflags=_CFLAGS)


def available() -> bool:
    """True when the C++ kernel can be used."""
    return extension() is not None


def _f32(t: Tensor) -> Tensor:
    return t.detach().to(torch.float32).contiguous()


class _ProjectCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, width, height, eps2d, near, far, clip, comp):  # type: ignore[override]
        ext = extension()
        assert ext is not None
        ins = [_f32(t) for t in (means, quats, scales, opacities, viewmats, Ks)]
        scalars = (int(width), int(height), float(eps2d), float(near), float(far), float(clip), bool(comp))
        means2d, conics, depths, radii, comps, radii_max = ext.project_fwd(*ins, *scalars)
        ctx.save_for_backward(*ins, radii)
        ctx.scalars = scalars
        ctx.mark_non_differentiable(radii, radii_max)
        if not comp:
            ctx.mark_non_differentiable(comps)
        return means2d, conics, depths, radii, comps, radii_max

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, v_radii, v_comps, v_radii_max):  # type: ignore[override]
        ext = extension()
        assert ext is not None
        *ins, radii = ctx.saved_tensors
        v_comps = v_comps.contiguous() if (ctx.scalars[-1] and v_comps is not None) else torch.empty(0)
        v_means, v_quats, v_scales = ext.project_bwd(
            *ins, *ctx.scalars, radii, _f32(v_means2d), _f32(v_conics), _f32(v_depths), _f32(v_comps)
        )
        return (v_means, v_quats, v_scales) + (None,) * 10


def project_gaussians_cpu(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
) -> Projection:
    """C++ ``project_gaussians`` (opacities [C,N] required); gradients reach means, quats and scales only."""
    C, N = viewmats.shape[0], means.shape[0]
    op = opacities.detach().expand(C, N)
    means2d, conics, depths, radii, comps, radii_max = _ProjectCPU.apply(
        means, quats, scales, op, viewmats.detach(), Ks.detach(), width, height, eps2d, near_plane, far_plane,
        radius_clip, calc_compensations,
    )  # fmt: skip
    return Projection(means2d, conics, depths, radii, comps if calc_compensations else None, radii_max)


class _SHColorCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, degree, means, coeffs, campos):  # type: ignore[override]
        ext = extension()
        assert ext is not None
        ins = (_f32(means), _f32(coeffs), _f32(campos))
        ctx.save_for_backward(*ins)
        ctx.degree = int(degree)
        return ext.sh_fwd(int(degree), *ins)

    @staticmethod
    def backward(ctx, v_colors):  # type: ignore[override]
        ext = extension()
        assert ext is not None
        v_means, v_coeffs = ext.sh_bwd(ctx.degree, *ctx.saved_tensors, _f32(v_colors))
        return None, v_means, v_coeffs, None


def sh_to_color_cpu(degree: int, means: Tensor, coeffs: Tensor, viewmats: Tensor) -> Tensor:
    """Colours [C,N,3] = clamp_min(SH(coeffs [N,K,3], dir from each camera centre) + 0.5, 0) in C++."""
    return _SHColorCPU.apply(degree, means, coeffs, camera_centers(viewmats.detach()))


def isect_tiles_cpu(
    means2d: Tensor, radii: Tensor, depths: Tensor, width: int, height: int, tile_size: int = 16
) -> Intersections:
    """C++ tile binning; same CSR as ``binning.isect_tiles`` (ties in depth ordered by Gaussian index)."""
    ext = extension()
    assert ext is not None
    if radii.dim() == 2:
        radii = radii.unsqueeze(-1).expand(*radii.shape, 2)
    tpg, isect_ids, flatten_ids, offsets = ext.isect_tiles(
        _f32(means2d), radii.to(torch.int32).contiguous(), _f32(depths), int(width), int(height), int(tile_size)
    )
    return Intersections(tpg, isect_ids, flatten_ids, offsets, offsets.shape[2], offsets.shape[1])


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        means2d: Tensor,
        conics: Tensor,
        colors: Tensor,
        opacities: Tensor,
        backgrounds: Tensor | None,
        depths: Tensor | None,
        far_depths: Tensor | None,
        isect_offsets: Tensor,
        flatten_ids: Tensor,
        width: int,
        height: int,
        tile_size: int,
        alpha_max: float,
        absgrad: bool,
    ) -> tuple[Tensor, Tensor]:
        ext = extension()
        assert ext is not None
        m2d, con, col, op = _f32(means2d), _f32(conics), _f32(colors), _f32(opacities)
        offs = isect_offsets.to(torch.int32).contiguous()
        ids = flatten_ids.to(torch.int32).contiguous()
        dep = _f32(depths) if (depths is not None and far_depths is not None) else None
        far = _f32(far_depths) if far_depths is not None else None
        color, alpha, T_final, last, splats, blocks = ext.rasterize_fwd(
            m2d, con, col, op, dep, far, offs, ids, width, height, tile_size, float(alpha_max)
        )
        if backgrounds is not None:
            bg = backgrounds if backgrounds.dim() == 4 else backgrounds[:, None, None, :]
            color = color + T_final[..., None] * bg.detach().to(color.dtype)
        # the per-Gaussian records and the blocks each intersection may composite: the backward reuses them
        ctx.save_for_backward(m2d, con, col, op, offs, ids, T_final, last, backgrounds, splats, blocks)
        ctx.dims = (width, height, tile_size, float(alpha_max), bool(absgrad))
        ctx.means2d = means2d if absgrad else None
        ctx.mark_non_differentiable(T_final)
        return color, alpha

    @staticmethod
    def backward(ctx, v_color: Tensor, v_alpha: Tensor):  # type: ignore[override]
        ext = extension()
        assert ext is not None
        m2d, con, col, op, offs, ids, T_final, last, backgrounds, splats, blocks = ctx.saved_tensors
        width, height, tile_size, alpha_max, absgrad = ctx.dims
        v_color = v_color.to(torch.float32).contiguous()
        v_alpha_eff = v_alpha[..., 0].to(torch.float32)
        v_bg = None
        if backgrounds is not None:
            bg = backgrounds if backgrounds.dim() == 4 else backgrounds[:, None, None, :]
            # d(color)/d(alpha_i) carries -T_final/(1-alpha_i) * bg: fold it into the alpha gradient
            v_alpha_eff = v_alpha_eff - (v_color * bg.to(torch.float32)).sum(-1)
            if ctx.needs_input_grad[4]:
                v_bg_img = T_final[..., None] * v_color
                v_bg = (v_bg_img if backgrounds.dim() == 4 else v_bg_img.sum(dim=(1, 2))).to(backgrounds.dtype)
        v_means2d, v_conics, v_colors, v_opac, v_abs = ext.rasterize_bwd(
            m2d, con, col, op, offs, ids, width, height, tile_size, alpha_max,
            T_final, last, v_color, v_alpha_eff.contiguous(), absgrad, splats, blocks,
        )  # fmt: skip
        if absgrad and ctx.means2d is not None:
            ctx.means2d.absgrad = v_abs
        return (v_means2d, v_conics, v_colors, v_opac, v_bg) + (None,) * 9


def composite_cpu(
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
    absgrad: bool = False,
) -> tuple[Tensor, Tensor]:
    """C++ front-to-back compositing; colours [C,H,W,D] and alphas [C,H,W,1] (float32, CPU).

    Arguments as ``reference.composite_reference``. With ``absgrad`` the backward also stores the sum of
    per-pixel |dL/dmeans2d| in ``means2d.absgrad`` (gsplat's convention).
    """
    return _RasterizeCPU.apply(
        means2d, conics, colors, opacities, backgrounds, depths, far_depths,
        isect_offsets, flatten_ids, int(width), int(height), int(tile_size), float(alpha_max), bool(absgrad),
    )  # fmt: skip
