"""Neural primitives: Gaussian-shaped splats whose colour and opacity come from one small shared MLP.

Per-primitive parameters live in ``model.splats`` (an ``nn.ParameterDict``, rows = primitives), so the
Gaussian densification strategy clones, splits and prunes them like Gaussians:

    means      [N, 3]   world positions
    quats      [N, 4]   rotations, w x y z, unnormalised
    scales     [N, 3]   log standard deviations
    opacities  [N]      opacity logits (view-independent base)
    features   [N, F]   learned feature vector; its first 3 channels are a base colour in SH-DC units

Per view, only the primitives that can touch the image (a conservative screen-space test, a superset of the
rasteriser's own culling) are decoded: ``mlp(features, SH-encoded view direction)`` gives a colour residual
and an opacity-logit offset (``recon.kernels.sparse.apply_on_active``). The decoded colours are then splatted
by the same ``rasterize`` kernel as Gaussians (plain features, ``sh_degree=None``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recon.cameras import Camera
from recon.kernels.projection import MAX_EXTEND, camera_centers
from recon.kernels.sh import sh_basis
from recon.kernels.sparse import apply_on_active
from renderers.gaussians.model import GaussianModel
from renderers.neural.mlp import DecoderMLP, PruneSchedule, PruningAdam
from renderers.splats import (
    RENDER_MODES,
    SH_C0,
    SplatPrimitives,
    adam_betas,
    camera_tensors,
    per_parameter_adams,
    raster_output,
)
from renderers.types import RenderOutput

PARAM_NAMES = ("means", "quats", "scales", "opacities", "features")
GEOMETRY_FLOATS = 3 + 4 + 3 + 1  # per primitive, besides the features
DEFAULT_LRS: dict[str, float] = {
    "means": 1.6e-4,
    "scales": 5e-3,
    "quats": 1e-3,
    "opacities": 5e-2,
    "features": 2.5e-3,
    "mlp": 2e-3,
}
DECODER_OUT = 4  # colour residual (3) + opacity-logit offset (1)
FORMAT = "recon-neural-v1"


@torch.no_grad()
def visible_mask(
    means: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
    near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3,
) -> Tensor:  # fmt: skip
    """[C, N] bool: primitives whose splat may touch the image (superset of the rasteriser's radii > 0).

    Bounds the projected 2D variance by |J|_F^2 * max_scale^2 + eps2d (J: the projection Jacobian with the
    same 1.3x-FOV clamp as ``project_gaussians``), takes a 3.33-sigma box plus one pixel and tests it against
    the image; depth must lie in [near, far].
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    p = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]
    x, y, z = p.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    zs = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    u, v = x / zs, y / zs
    uc = torch.minimum((width - cx) / fx + 0.3 * tan_x, torch.maximum(-(cx / fx + 0.3 * tan_x), u))
    vc = torch.minimum((height - cy) / fy + 0.3 * tan_y, torch.maximum(-(cy / fy + 0.3 * tan_y), v))
    jnorm2 = (fx / zs) ** 2 * (1.0 + uc * uc) + (fy / zs) ** 2 * (1.0 + vc * vc)
    smax = scales.max(dim=-1).values[None]
    r = MAX_EXTEND * torch.sqrt(jnorm2 * smax * smax + eps2d) + 1.0
    mx, my = fx * u + cx, fy * v + cy
    vis = in_depth & (mx + r > 0) & (mx - r < width) & (my + r > 0) & (my - r < height)
    return vis & torch.isfinite(r) & torch.isfinite(mx) & torch.isfinite(my)


def fibonacci_directions(n: int) -> Tensor:
    """``n`` unit vectors spread evenly over the sphere [n, 3] (golden-angle spiral)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = torch.sqrt(torch.clamp_min(1.0 - z * z, 0.0))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1).float()


class NeuralPrimitives(SplatPrimitives):
    """Splats with per-primitive features and one shared decoder MLP (see the module docstring)."""

    def __init__(
        self,
        params: dict[str, Tensor],
        hidden: int = 64,
        n_hidden: int = 2,
        dir_degree: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        missing = [k for k in PARAM_NAMES if k not in params]
        if missing:
            raise ValueError(f"NeuralPrimitives needs parameters {PARAM_NAMES}, missing {missing}")
        n = params["means"].shape[0]
        feats = params["features"]
        if feats.dim() != 2 or feats.shape[0] != n or feats.shape[1] < 3:
            raise ValueError(f"parameter 'features' must have shape ({n}, F) with F >= 3, got {tuple(feats.shape)}")
        expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
        for k, shape in expected.items():
            if tuple(params[k].shape) != shape:
                raise ValueError(f"parameter {k!r} must have shape {shape}, got {tuple(params[k].shape)}")
        if not 1 <= dir_degree <= 3:
            raise ValueError(f"dir_degree must be in 1..3, got {dir_degree}")
        self.feature_dim = int(feats.shape[1])
        self.dir_degree = int(dir_degree)
        self.splats = nn.ParameterDict(
            {k: nn.Parameter(params[k].detach().clone().float().contiguous()) for k in PARAM_NAMES}
        )
        gen = torch.Generator().manual_seed(int(seed))
        enc_dim = (dir_degree + 1) ** 2 - 1
        self.mlp = DecoderMLP(self.feature_dim + enc_dim, hidden, DECODER_OUT, n_hidden, generator=gen)
        self.sh_degree = 0  # colour is decoded, not SH; kept so trainer code that sets SH degrees works
        self._active_sh_degree = 0
        self.prune_schedule: PruneSchedule | None = None
        self.decoded_rows = 0  # (camera, primitive) pairs the decoder evaluated in the last render

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_gaussians(
        cls, g: GaussianModel, feature_dim: int = 8, seed: int = 0, hidden: int = 64, n_hidden: int = 2,
        dir_degree: int = 2,
    ) -> NeuralPrimitives:  # fmt: skip
        """Same geometry as ``g``; features start as its DC colour plus small random latent channels."""
        if feature_dim < 3:
            raise ValueError(f"feature_dim must be >= 3 (the first 3 channels hold the base colour), got {feature_dim}")
        n = g.num_gaussians
        gen = torch.Generator().manual_seed(int(seed))
        feats = torch.randn((n, feature_dim), generator=gen) * 0.1
        feats[:, :3] = g.splats["sh0"].detach()[:, 0].cpu()
        params = {k: g.splats[k].detach().cpu() for k in ("means", "quats", "scales", "opacities")}
        params["features"] = feats
        model = cls(params, hidden=hidden, n_hidden=n_hidden, dir_degree=dir_degree, seed=seed)
        return model.to(g.device)

    # ----------------------------------------------------------------- activations (geometry: SplatPrimitives)
    @property
    def opacities(self) -> Tensor:
        """View-independent base opacities (the decoder adds a per-view logit offset when rendering)."""
        return torch.sigmoid(self.splats["opacities"])

    def undrawn(self) -> Tensor | None:
        """None: the decoder's per-view offset can raise a low base opacity, so no row is undrawn for sure."""
        return None

    @property
    def features(self) -> Tensor:
        return self.splats["features"]

    def parameter_counts(self) -> dict[str, int]:
        """Stored floats: per-primitive rows, the decoder (dense and after pruning) and the total (pruned)."""
        per = GEOMETRY_FLOATS + self.feature_dim
        mlp_nz = self.mlp.nonzero_parameters()
        return {
            "primitives": self.num_gaussians,
            "per_primitive": per,
            "primitive_params": per * self.num_gaussians,
            "mlp_params_dense": self.mlp.dense_parameters(),
            "mlp_params_nonzero": mlp_nz,
            "total": per * self.num_gaussians + mlp_nz,
        }

    # ----------------------------------------------------------------- optimisation
    def make_optimizers(
        self, lrs: dict[str, float] | None = None, scene_scale: float = 1.0, batch_size: int = 1
    ) -> dict[str, torch.optim.Optimizer]:
        """One Adam per per-primitive parameter (patched by densification) plus "mlp": a :class:`PruningAdam`
        following ``self.prune_schedule`` (no pruning when None). ``lrs`` overrides :data:`DEFAULT_LRS`."""
        rates = dict(DEFAULT_LRS)
        if lrs:
            unknown = set(lrs) - set(rates)
            if unknown:
                raise ValueError(f"unknown parameter names in lrs: {sorted(unknown)}")
            rates.update(lrs)
        rates["means"] *= scene_scale
        opts = per_parameter_adams(self.splats, PARAM_NAMES, rates, batch_size)
        bs = max(1, int(batch_size))
        opts["mlp"] = PruningAdam(self.mlp, rates["mlp"] * math.sqrt(bs), self.prune_schedule, betas=adam_betas(bs))
        return opts

    # ----------------------------------------------------------------- decoding and rendering
    def _decode_rows(self, feats: Tensor, dirs: Tensor) -> Tensor:
        enc = sh_basis(self.dir_degree, dirs)[..., 1:]
        return self.mlp(torch.cat([feats, enc], dim=-1))

    def decode(self, viewmats: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
        """Colours [C,N,3] and opacities [C,N] seen from ``viewmats`` [C,4,4]; decoder run on ``visible`` only.

        Rows outside ``visible`` [C,N] keep the base colour and base opacity (the rasteriser culls them).
        """
        C = viewmats.shape[0]
        feats = self.splats["features"]
        dirs = self.means[None] - camera_centers(viewmats)[:, None]  # [C,N,3], as the SH convention
        out = apply_on_active(self._decode_rows, (feats[None].expand(C, -1, -1), dirs), visible)
        self.decoded_rows = int(visible.sum())
        rgb = (feats[None, :, :3] * SH_C0 + 0.5 + out[..., :3]).clamp_min(0.0)
        opac = torch.sigmoid(self.splats["opacities"][None] + out[..., 3])
        return rgb, opac

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
        """Same contract as ``GaussianModel.render`` (``sh_degree`` is ignored: colour is decoded)."""
        from recon.kernels import rasterize

        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        viewmats, Ks, width, height, single = camera_tensors(cameras, width, height, self.device)
        scales = self.scales
        visible = visible_mask(
            self.means.detach(),
            scales.detach(),
            viewmats.detach(),
            Ks.detach(),
            width,
            height,
            near_plane,
            far_plane,
            raster_kwargs.get("eps2d", 0.3),
        )
        colors, opac = self.decode(viewmats, visible)
        if opacity_scale is not None:
            opac = opac * opacity_scale
        render_colors, render_alphas, meta = rasterize(
            self.means, self.quats, scales, opac, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, sh_degree=None, render_mode=render_mode, **raster_kwargs,
        )  # fmt: skip
        meta["decoded_rows"] = self.decoded_rows
        return raster_output(render_colors, render_alphas, meta, render_mode, background, single)

    # ----------------------------------------------------------------- baking for display
    @torch.no_grad()
    def to_gaussians(self, sh_degree: int = 2, n_dirs: int = 32) -> GaussianModel:
        """A GaussianModel that approximates this model for SH viewers: the decoded colour over ``n_dirs``
        view directions least-squares fitted by SH up to ``sh_degree`` (the DC term = the mean colour),
        the decoded opacity averaged over those directions."""
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be in 0..3, got {sh_degree}")
        dirs = fibonacci_directions(n_dirs).to(self.device)  # [K,3] viewing directions (camera -> primitive)
        n, k = self.num_gaussians, dirs.shape[0]
        feats = self.splats["features"].detach()
        opac_sum = torch.zeros(n, device=self.device)
        basis = sh_basis(sh_degree, dirs)  # [K,B]
        pinv = torch.linalg.pinv(basis.double()).float()  # [B,K]
        colours = torch.empty((k, n, 3), device=self.device)
        for j in range(k):
            out = self._decode_rows(feats, dirs[j].expand(n, 3))
            colours[j] = feats[:, :3] * SH_C0 + 0.5 + out[:, :3]
            opac_sum += torch.sigmoid(self.splats["opacities"].detach() + out[:, 3])
        coeffs = torch.einsum("bk,knc->nbc", pinv, colours - 0.5)  # [N,B,3]
        opac = (opac_sum / k).clamp(1e-6, 1 - 1e-6)
        params = {
            "means": self.means.detach(),
            "quats": self.splats["quats"].detach(),
            "scales": self.splats["scales"].detach(),
            "opacities": torch.log(opac / (1 - opac)),
            "sh0": coeffs[:, :1],
            "shN": coeffs[:, 1:],
        }
        return GaussianModel(
            {k_: v.cpu() for k_, v in params.items()}, sh_degree=sh_degree, active_sh_degree=sh_degree
        ).to(self.device)

    # ----------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Plain dict (CPU tensors, ints, strings) that :meth:`from_state` turns back into an identical model."""
        cfg = self.mlp.config
        return {
            "format": FORMAT,
            "params": {k: self.splats[k].detach().cpu().clone() for k in PARAM_NAMES},
            "mlp": {k: v.detach().cpu().clone() for k, v in self.mlp.state_dict().items()},
            "config": {
                "feature_dim": self.feature_dim,
                "hidden": cfg["hidden"],
                "n_hidden": cfg["n_hidden"],
                "dir_degree": self.dir_degree,
                "sparse_mode": self.mlp.sparse_mode,
            },
            "mlp_sparsity": self.mlp.sparsity(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> NeuralPrimitives:
        if state.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} state (format {state.get('format')!r})")
        cfg = state["config"]
        model = cls(
            state["params"], hidden=int(cfg["hidden"]), n_hidden=int(cfg["n_hidden"]), dir_degree=int(cfg["dir_degree"])
        )
        model.mlp.load_state_dict(state["mlp"])
        model.mlp.sparse_mode = cfg.get("sparse_mode", "auto")
        return model.to(device)

    def save_run_files(self, folder: Any) -> list[str]:
        """neural.pt (the model) and splats.ply (baked Gaussians for viewers) in the run folder."""
        from renderers.neural.run_files import save_run_files

        return save_run_files(self, folder)
