"""recon/kernels: shared compute kernels (CPU C++/OpenMP with a PyTorch reference; gsplat on CUDA).

Gaussian splatting: ``rasterize`` (gsplat-like entry point) built from ``project_gaussians``,
``sh_to_color``, ``isect_tiles`` and the compositing kernels ``composite_cpu`` / ``composite_reference``.
Networks: ``gather_rows`` / ``scatter_rows`` / ``apply_on_active`` (evaluate only active rows) and
``SparseLinear`` (CSR or N:M weights, C++ kernel; ``prefer_sparse`` says where it pays).
"""

from recon.kernels.binning import Intersections, isect_offset_encode, isect_tiles
from recon.kernels.projection import Projection, camera_centers, project_gaussians, quat_scale_to_covar
from recon.kernels.rasterize import rasterize
from recon.kernels.sh import eval_sh, sh_basis, sh_to_color
from recon.kernels.sparse import (
    SPARSE_BREAK_EVEN,
    SPARSE_MIN_WEIGHTS,
    SparseLinear,
    active_indices,
    apply_on_active,
    cpp_available,
    gather_rows,
    prefer_sparse,
    scatter_rows,
)

__all__ = [
    "SPARSE_BREAK_EVEN",
    "SPARSE_MIN_WEIGHTS",
    "SparseLinear",
    "active_indices",
    "apply_on_active",
    "cpp_available",
    "gather_rows",
    "prefer_sparse",
    "scatter_rows",
    "Intersections",
    "Projection",
    "camera_centers",
    "eval_sh",
    "isect_offset_encode",
    "isect_tiles",
    "project_gaussians",
    "quat_scale_to_covar",
    "rasterize",
    "sh_basis",
    "sh_to_color",
]
