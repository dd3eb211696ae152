"""3D Gaussian scene: the learnable parameters, their activations, optimisers, rendering and checkpoints.

Parameters live in ``model.splats`` (an ``nn.ParameterDict`` laid out like gsplat's ``splats``):

    means      [N, 3]   world positions
    quats      [N, 4]   rotations, w x y z, unnormalised (normalised on use)
    scales     [N, 3]   log of the per-axis standard deviations
    opacities  [N]      logit of the opacity
    sh0        [N, 1, 3]  SH degree-0 (DC) coefficients
    shN        [N, K-1, 3]  higher SH bands, K = (sh_degree + 1)^2 (15 rows for degree 3, 0 for degree 0)

The densification strategy replaces these parameters (new row counts) and patches the optimiser states,
so code that holds a parameter across a refine step must look it up again in ``model.splats``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recon.cameras import Camera
from renderers.splats import (  # noqa: F401 (re-exported: the Gaussians' public names)
    RENDER_MODES,
    SH_C0,
    SplatPrimitives,
    adam_betas,
    camera_tensors,
    num_sh_bases,
    per_parameter_adams,
    raster_output,
    rgb_to_sh0,
    sh0_to_rgb,
    sh_degree_from_bases,
)
from renderers.types import RenderOutput

PARAM_NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")

# gsplat-like default learning rates; the means rate is multiplied by the scene scale.
DEFAULT_LRS: dict[str, float] = {
    "means": 1.6e-4,
    "scales": 5e-3,
    "quats": 1e-3,
    "opacities": 5e-2,
    "sh0": 2.5e-3,
    "shN": 2.5e-3 / 20,
}


class GaussianModel(SplatPrimitives):
    """A set of 3D Gaussians with SH colour; see the module docstring for the parameter layout."""

    def __init__(self, params: dict[str, Tensor], sh_degree: int | None = None, active_sh_degree: int = 0) -> None:
        super().__init__()
        missing = [k for k in PARAM_NAMES if k not in params]
        if missing:
            raise ValueError(f"GaussianModel needs parameters {PARAM_NAMES}, missing {missing}")
        n = params["means"].shape[0]
        expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,), "sh0": (n, 1, 3)}
        for k, shape in expected.items():
            if tuple(params[k].shape) != shape:
                raise ValueError(f"parameter {k!r} must have shape {shape}, got {tuple(params[k].shape)}")
        shn = params["shN"]
        if shn.dim() != 3 or shn.shape[0] != n or shn.shape[2] != 3:
            raise ValueError(f"parameter 'shN' must have shape ({n}, K-1, 3), got {tuple(shn.shape)}")
        degree_from_shape = sh_degree_from_bases(shn.shape[1] + 1)
        if sh_degree is not None and sh_degree != degree_from_shape:
            raise ValueError(f"sh_degree={sh_degree} but shN holds {shn.shape[1]} rows (degree {degree_from_shape})")
        self.sh_degree: int = degree_from_shape
        self.splats = nn.ParameterDict(
            {k: nn.Parameter(params[k].detach().clone().float().contiguous()) for k in PARAM_NAMES}
        )
        self._active_sh_degree = 0
        self.active_sh_degree = active_sh_degree

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_points(
        cls,
        xyz: np.ndarray | Tensor,
        rgb: np.ndarray | Tensor | None = None,
        sh_degree: int = 3,
        init_scale: float = 1.0,
        init_opacity: float = 0.1,
        device: str | torch.device = "cpu",
    ) -> GaussianModel:
        """Isotropic Gaussians at points ``xyz`` [N,3] with colours ``rgb`` [N,3] (float in [0,1] or uint8).

        Each Gaussian's scale is ``init_scale`` times the RMS distance to its 3 nearest neighbours (as 3DGS
        and gsplat initialise), so dense regions start with small splats and sparse ones with large ones.
        """
        from scipy.spatial import cKDTree

        pts = np.asarray(xyz.detach().cpu() if isinstance(xyz, Tensor) else xyz, dtype=np.float64).reshape(-1, 3)
        n = len(pts)
        if n == 0:
            raise ValueError("from_points needs at least one point")
        if not 0.0 < init_opacity < 1.0:
            raise ValueError(f"init_opacity must be in (0, 1), got {init_opacity}")
        if rgb is None:
            colors = np.full((n, 3), 0.5)
        else:
            c = np.asarray(rgb.detach().cpu() if isinstance(rgb, Tensor) else rgb)
            colors = c.astype(np.float64) / 255.0 if c.dtype == np.uint8 else c.astype(np.float64)
            colors = colors.reshape(-1, 3)
            if len(colors) != n:
                raise ValueError(f"{n} points but {len(colors)} colours")
        if n > 1:
            k = min(4, n)
            dist, _ = cKDTree(pts).query(pts, k=k)
            nn_dist = np.sqrt(np.mean(dist[:, 1:] ** 2, axis=1))
            positive = nn_dist[nn_dist > 0]
            fallback = float(np.median(positive)) if len(positive) else 0.01
            nn_dist = np.where(nn_dist > 0, nn_dist, fallback)
        else:
            nn_dist = np.array([0.01])
        log_scale = np.log(np.maximum(nn_dist * init_scale, 1e-7))
        params = {
            "means": torch.tensor(pts, dtype=torch.float32),
            "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
            "scales": torch.tensor(log_scale, dtype=torch.float32)[:, None].repeat(1, 3),
            "opacities": torch.full((n,), math.log(init_opacity / (1.0 - init_opacity))),
            "sh0": rgb_to_sh0(torch.tensor(colors, dtype=torch.float32))[:, None, :],
            "shN": torch.zeros((n, num_sh_bases(sh_degree) - 1, 3)),
        }
        return cls(params, sh_degree=sh_degree).to(device)

    @property
    def sh(self) -> Tensor:
        """All SH coefficients [N, K, 3]."""
        return torch.cat([self.splats["sh0"], self.splats["shN"]], dim=1)

    @property
    def base_colors(self) -> Tensor:
        """View-independent colour from the DC term, clipped to [0, 1] [N, 3]."""
        return sh0_to_rgb(self.splats["sh0"][:, 0]).clamp(0.0, 1.0)

    # ----------------------------------------------------------------- copies
    @torch.no_grad()
    def subset(self, mask_or_index: Tensor) -> GaussianModel:
        """A detached copy holding only the selected Gaussians (bool mask or index tensor)."""
        sel = mask_or_index.to(self.device)
        params = {k: v.detach()[sel] for k, v in self.splats.items()}
        return GaussianModel(params, active_sh_degree=self.active_sh_degree)

    @torch.no_grad()
    def copy(self) -> GaussianModel:
        """A detached deep copy (same device)."""
        return GaussianModel({k: v.detach() for k, v in self.splats.items()}, active_sh_degree=self.active_sh_degree)

    # ----------------------------------------------------------------- optimisation
    def make_optimizers(
        self, lrs: dict[str, float] | None = None, scene_scale: float = 1.0, batch_size: int = 1
    ) -> dict[str, torch.optim.Adam]:
        """One Adam per parameter (as gsplat), so each can have its own rate and be patched on densify.

        ``lrs`` overrides entries of :data:`DEFAULT_LRS`; the means rate is multiplied by ``scene_scale``.
        With ``batch_size`` > 1 cameras per step, rates and betas are scaled the way gsplat does.
        """
        rates = dict(DEFAULT_LRS)
        if lrs:
            unknown = set(lrs) - set(PARAM_NAMES)
            if unknown:
                raise ValueError(f"unknown parameter names in lrs: {sorted(unknown)}")
            rates.update(lrs)
        rates["means"] *= scene_scale
        return per_parameter_adams(self.splats, PARAM_NAMES, rates, batch_size)

    # ----------------------------------------------------------------- rendering
    def render(
        self,
        cameras: Camera | Sequence[Camera] | tuple[Tensor, Tensor],
        width: int | None = None,
        height: int | None = None,
        background: Tensor | np.ndarray | Sequence[float] | None = None,
        render_mode: str = "RGB+ED",
        sh_degree: int | None = None,
        near_plane: float = 0.01,
        far_plane: float = 1e10,
        opacity_scale: Tensor | None = None,
        **raster_kwargs: Any,
    ) -> RenderOutput:
        """Rasterize the Gaussians into one camera (unbatched output) or several (batched output).

        cameras: a Camera, a list of Cameras of one size, or a ``(viewmats [C,4,4], Ks [C,3,3])`` pair (then
        ``width``/``height`` are required). background: RGB [3], [C,3] or per-pixel [C,H,W,3] / [H,W,3],
        composited as ``rgb + bg * (1 - alpha)``. render_mode: "RGB" (depth None) or "RGB+ED" (expected depth).
        sh_degree defaults to ``active_sh_degree``. ``opacity_scale`` [N] multiplies the opacities for this render
        only (Gaussian dropout during training: 0 = dropped, 1/(1-rate) = kept). Extra keyword arguments go to
        ``rasterize``.
        """
        from recon.kernels import rasterize

        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        viewmats, Ks, width, height, single = camera_tensors(cameras, width, height, self.device)
        degree = self.active_sh_degree if sh_degree is None else max(0, min(int(sh_degree), self.sh_degree))
        colors = self.sh[:, : num_sh_bases(degree)]
        render_colors, render_alphas, meta = rasterize(
            self.means,
            self.quats,
            self.scales,
            self.opacities if opacity_scale is None else self.opacities * opacity_scale,
            colors,
            viewmats,
            Ks,
            width,
            height,
            near_plane=near_plane,
            far_plane=far_plane,
            sh_degree=degree,
            render_mode=render_mode,
            **raster_kwargs,
        )
        return raster_output(render_colors, render_alphas, meta, render_mode, background, single)

    # ----------------------------------------------------------------- files
    def save_run_files(self, folder: str | Path) -> list[str]:
        """Run-folder files of representation "gaussians": splats.ply (3DGS layout)."""
        from recon.run_folder import SPLATS
        from renderers.gaussians.ply import write_ply

        write_ply(Path(folder) / SPLATS, self)
        return [SPLATS]

    # ----------------------------------------------------------------- state (neural primitives are built from it)
    def state(self) -> dict[str, Any]:
        """Plain dict (CPU tensors, ints) that :meth:`from_state` turns back into a model."""
        return {
            "params": {k: v.detach().cpu().clone() for k, v in self.splats.items()},
            "sh_degree": self.sh_degree,
            "active_sh_degree": self.active_sh_degree,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> GaussianModel:
        model = cls(state["params"], sh_degree=state["sh_degree"], active_sh_degree=state["active_sh_degree"])
        return model.to(device)


def means_lr_scheduler(
    optimizers: dict[str, torch.optim.Optimizer], max_steps: int, final_factor: float = 0.01
) -> torch.optim.lr_scheduler.ExponentialLR:
    """Exponential decay of the means learning rate to ``final_factor`` of its start over ``max_steps``.

    Call ``scheduler.step()`` once per training step (as gsplat's trainer does).
    """
    if max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    gamma = final_factor ** (1.0 / max_steps)
    return torch.optim.lr_scheduler.ExponentialLR(optimizers["means"], gamma=gamma)
