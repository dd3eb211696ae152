"""Gaussian + mesh hybrid (as GauMesh): an opaque coloured mesh with 3D Gaussians composited in front of it.

Per pixel the mesh is ray cast (cached per camera pose); its colour becomes the Gaussian render's per-pixel
background and its depth the rasteriser's far limit (``far_depths``: Gaussians at or behind the surface are
skipped there). So a Gaussian in front of the mesh shows, one behind it is hidden, and where the mesh is hit the
pixel is opaque. Gradients reach the Gaussians and the mesh's vertex colours.

:class:`HybridModel` trains through ``recon.pipeline.train`` like a GaussianModel: it exposes the Gaussians'
``splats`` (the densify strategy replaces rows there), activations, ``make_optimizers`` (plus one Adam for the
vertex colours), ``active_sh_degree`` and ``num_gaussians``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from recon.cameras import Camera
from recon.run_folder import HYBRID, MESH, SPLATS
from renderers.gaussians.model import GaussianModel
from renderers.mesh.model import CameraLike, MeshModel, camera_list
from renderers.splats import SplatPrimitives
from renderers.types import RenderOutput

MESH_COLOR_LR = 2.5e-3
HYBRID_JSON = HYBRID


class HybridModel(SplatPrimitives):
    """Gaussians (``gaussians``) in front of an opaque mesh (``mesh``); see the module docstring."""

    def __init__(
        self, gaussians: GaussianModel, mesh: MeshModel, depth_tolerance: float = 0.0, train_mesh_colors: bool = True
    ) -> None:
        super().__init__()
        self.gaussians = gaussians
        self.splats = gaussians.splats  # the same ParameterDict: one set of rows, two views of it
        self.mesh = mesh
        # Gaussians up to this far behind the mesh surface still show (the extracted surface runs through the
        # middle of the Gaussians' surface layer, not in front of it); scene units
        self.depth_tolerance = float(depth_tolerance)
        self.train_mesh_colors = train_mesh_colors

    # ----------------------------------------------------------------- what train() and the strategy use
    # The Gaussians' rows and activations come from SplatPrimitives over the same ParameterDict (the strategy
    # replaces rows there); the SH degrees are the Gaussians' own, so the trainer's schedule reaches them.
    @property
    def sh_degree(self) -> int:
        return self.gaussians.sh_degree

    @property
    def active_sh_degree(self) -> int:
        return self.gaussians.active_sh_degree

    @active_sh_degree.setter
    def active_sh_degree(self, value: int) -> None:
        self.gaussians.active_sh_degree = value

    def make_optimizers(
        self, lrs: dict[str, float] | None = None, scene_scale: float = 1.0, batch_size: int = 1
    ) -> dict[str, torch.optim.Optimizer]:
        """The Gaussians' optimisers plus ``mesh_colors`` (rate ``lrs["mesh_colors"]``) when colours train."""
        lrs = dict(lrs or {})
        color_lr = float(lrs.pop("mesh_colors", MESH_COLOR_LR))
        opts: dict[str, torch.optim.Optimizer] = dict(
            self.gaussians.make_optimizers(lrs or None, scene_scale=scene_scale, batch_size=batch_size)
        )
        if self.train_mesh_colors:
            opts["mesh_colors"] = torch.optim.Adam([self.mesh.colors], lr=color_lr, eps=1e-15)
        return opts

    # ----------------------------------------------------------------- rendering
    def mesh_layers(self, cams: Sequence[Camera]) -> tuple[Tensor, Tensor, Tensor]:
        """Stacked mesh colour [C,H,W,3], hit mask [C,H,W] (bool) and depth [C,H,W] (inf on a miss)."""
        rgbs, hits, depths = [], [], []
        for cam in cams:
            h = self.mesh.raycast(cam)
            rgbs.append(self.mesh.shade(h))
            hits.append(h.hit)
            depths.append(h.depth)
        dev = self.device
        return torch.stack(rgbs).to(dev), torch.stack(hits).to(dev), torch.stack(depths).to(dev)

    def render(
        self,
        cameras: CameraLike,
        width: int | None = None,
        height: int | None = None,
        background: Tensor | np.ndarray | Sequence[float] | None = None,
        render_mode: str = "RGB+ED",
        **raster_kwargs: Any,
    ) -> RenderOutput:
        """Render like :meth:`GaussianModel.render` (Camera, list of Cameras or (viewmats, Ks) pair).

        ``background`` (RGB [3]) shows only where neither the mesh nor the Gaussians cover the pixel.
        alpha is 1 where the mesh is hit; depth composites the Gaussians' expected depth over the mesh's.
        """
        cams, single = camera_list(cameras, width, height)
        mesh_rgb, hit, mesh_depth = self.mesh_layers(cams)
        hitf = hit.to(mesh_rgb.dtype)[..., None]
        if background is None:
            bg = torch.zeros(3, device=self.device)
        else:
            bg = background if isinstance(background, Tensor) else torch.as_tensor(np.asarray(background))
            bg = bg.to(device=self.device, dtype=torch.float32)
        if bg.dim() == 2:  # [C,3]
            bg = bg[:, None, None, :]
        bg_img = mesh_rgb * hitf + (1.0 - hitf) * bg  # [3], [H,W,3] and [C,H,W,3] broadcast
        if isinstance(cameras, tuple) and not isinstance(cameras[0], Camera):
            target: Any = cameras
        else:
            target = cams
        out = self.gaussians.render(
            target,
            width=cams[0].width,
            height=cams[0].height,
            background=bg_img,
            render_mode=render_mode,
            far_depths=mesh_depth + self.depth_tolerance,
            **raster_kwargs,
        )
        if not out.batched:  # a single (viewmat, K) pair comes back unbatched
            out = RenderOutput(out.rgb[None], out.alpha[None], None if out.depth is None else out.depth[None], out.meta)
        alpha = torch.where(hit, torch.ones_like(out.alpha), out.alpha)
        depth = out.depth
        if depth is not None:
            d_mesh = torch.where(hit, mesh_depth, torch.zeros_like(mesh_depth))
            depth = torch.where(hit, out.alpha * depth + (1.0 - out.alpha) * d_mesh, depth)
        res = RenderOutput(rgb=out.rgb, alpha=alpha, depth=depth, meta=out.meta)
        return res[0] if single else res

    # ----------------------------------------------------------------- pruning
    def contribution(self, cameras: Sequence[Camera]) -> Tensor:
        """[N] the largest total blending weight (sum over pixels of w_i = alpha_i T_i) each Gaussian has in any
        of ``cameras`` when rendered in front of the mesh (what it adds to an image, in pixels' worth).

        Computed as the gradient of the summed render with respect to a per-Gaussian constant colour.
        """
        from recon.kernels import rasterize

        g = self.gaussians
        means, quats, scales, opac = (t.detach() for t in (g.means, g.quats, g.scales, g.opacities))
        best = torch.zeros(g.num_gaussians, device=self.device)
        for cam in cameras:
            far = self.mesh.raycast(cam).depth.to(self.device) + self.depth_tolerance
            colors = torch.ones(g.num_gaussians, 1, device=self.device, requires_grad=True)
            viewmat = torch.tensor(cam.viewmat, dtype=torch.float32, device=self.device)[None]
            K = torch.tensor(cam.K, dtype=torch.float32, device=self.device)[None]
            img, _, _ = rasterize(
                means, quats, scales, opac, colors, viewmat, K, cam.width, cam.height, far_depths=far[None]
            )
            (grad,) = torch.autograd.grad(img.sum(), colors)
            best = torch.maximum(best, grad[:, 0])
        return best

    def hidden_mask(self, cameras: Sequence[Camera], min_weight: float = 0.25) -> Tensor:
        """[N] bool: Gaussians that add less than ``min_weight`` pixels' worth of colour to every camera of
        ``cameras`` in front of the mesh (hidden behind it, or too faint): pruning them leaves those images
        nearly unchanged."""
        return self.contribution(cameras) < min_weight

    # ----------------------------------------------------------------- files
    def save_run_files(self, folder: str | Path) -> list[str]:
        """Run-folder files of representation "hybrid": splats.ply, mesh.ply and hybrid.json (the settings)."""
        import json

        from recon.io.atomic import atomic_write_text
        from renderers.gaussians.ply import write_ply

        folder = Path(folder)
        write_ply(folder / SPLATS, self.gaussians)
        self.mesh.save(folder / MESH)
        atomic_write_text(folder / HYBRID, json.dumps({"depth_tolerance": self.depth_tolerance}, indent=2))
        return [SPLATS, MESH, HYBRID]

    @classmethod
    def load(cls, folder: str | Path) -> HybridModel:
        """The hybrid a run folder holds (splats.ply + mesh.ply + hybrid.json, which may be absent)."""
        from recon.io.jsonfile import read_json_object
        from renderers.gaussians.ply import read_ply

        folder = Path(folder)
        settings = read_json_object(folder / HYBRID_JSON) if (folder / HYBRID_JSON).exists() else {}
        gaussians = read_ply(folder / SPLATS)
        gaussians.active_sh_degree = gaussians.sh_degree
        return cls(
            gaussians, MeshModel.load(folder / MESH), depth_tolerance=float(settings.get("depth_tolerance", 0.0))
        )
