"""Real spherical-harmonics colour, degree 0..3, in the 3DGS / gsplat basis and sign convention.

Per-Gaussian and cheap, so plain vectorised PyTorch with autograd. Callers add 0.5 and clamp at 0
(``sh_to_color``) exactly as gsplat's ``rasterization`` does.
"""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    """Number of coefficients for a degree: (degree + 1)^2."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Basis values [..., (degree+1)^2] for unit-or-not directions [..., 3] (normalised here)."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh degree must be in 0..3, got {degree}")
    d = torch.nn.functional.normalize(dirs, dim=-1)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
        if degree >= 3:
            out += [
                SH_C3[0] * y * (3.0 * xx - yy),
                SH_C3[1] * xy * z,
                SH_C3[2] * y * (4.0 * zz - xx - yy),
                SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                SH_C3[4] * x * (4.0 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy),
                SH_C3[6] * x * (xx - 3.0 * yy),
            ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Raw SH value [..., D] from coefficients [..., K, D] (K >= (degree+1)^2; extra bands ignored).

    ``dirs`` [..., 3] broadcasts against ``coeffs`` [..., K, D] on the leading dimensions.
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"sh degree {degree} needs {k} coefficients per Gaussian, got {coeffs.shape[-2]}")
    basis = sh_basis(degree, dirs)  # [..., k]
    return (basis.unsqueeze(-1) * coeffs[..., :k, :]).sum(dim=-2)


def sh_to_color(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """gsplat's colour rule: clamp_min(eval_sh + 0.5, 0)."""
    return torch.clamp_min(eval_sh(degree, dirs, coeffs) + 0.5, 0.0)
