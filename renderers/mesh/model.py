"""A triangle mesh with per-vertex colours, rendered by ray casting (open3d RaycastingScene) on the CPU.

Rendering is split in two: the ray cast (which triangle each pixel-centre ray hits, the barycentrics and the
depth; not differentiable, cached per camera pose) and the shading, which interpolates the vertex colours with
the barycentrics in torch, so losses on rendered images reach ``colors`` (render-and-compare colour fitting,
hybrid training). Conventions as every renderer: OpenCV camera axes, pixel centres at +0.5, depth along the
optical axis (0 where nothing is hit).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recon.cameras import Camera
from renderers.types import RenderOutput

RENDER_MODES = ("RGB", "RGB+ED")
CACHE_SIZE = 128  # ray casts kept per mesh (a training run revisits a few dozen camera poses)

CameraLike = Camera | Sequence[Camera] | tuple[Tensor, Tensor]


@dataclass
class RayHits:
    """Per-pixel ray-cast result for one camera (CPU tensors)."""

    tri: Tensor  # [H,W] int64 triangle index, -1 where the ray misses
    bary: Tensor  # [H,W,3] float32 barycentric weights of the triangle's three vertices
    depth: Tensor  # [H,W] float32 camera-frame z, inf where the ray misses

    @property
    def hit(self) -> Tensor:
        return self.tri >= 0

    @property
    def hit_index(self) -> Tensor:
        """Flat indices of the pixels whose ray hits the mesh (computed once)."""
        idx = self.__dict__.get("_hit_index")
        if idx is None:
            idx = torch.nonzero(self.tri.reshape(-1) >= 0).squeeze(1)
            self.__dict__["_hit_index"] = idx
        return idx


def camera_list(cameras: CameraLike, width: int | None, height: int | None) -> tuple[list[Camera], bool]:
    """A Camera, a list of Cameras or a (viewmat(s), K(s)) tensor pair -> (Cameras, single camera?)."""
    if isinstance(cameras, Camera):
        return [cameras], True
    if isinstance(cameras, tuple) and len(cameras) == 2 and not isinstance(cameras[0], Camera):
        if width is None or height is None:
            raise ValueError("width and height are required when rendering from (viewmats, Ks)")
        vm = torch.as_tensor(cameras[0]).detach().cpu().double().numpy()
        ks = torch.as_tensor(cameras[1]).detach().cpu().double().numpy()
        single = vm.ndim == 2
        vm, ks = vm.reshape(-1, 4, 4), ks.reshape(-1, 3, 3)
        return [Camera(K=k, viewmat=v, width=int(width), height=int(height)) for v, k in zip(vm, ks)], single
    cams = list(cameras)
    if not cams:
        raise ValueError("no cameras to render")
    sizes = {(c.width, c.height) for c in cams}
    if len(sizes) != 1:
        raise ValueError(f"cameras rendered together must share one image size, got {sorted(sizes)}")
    return cams, False


def pixel_rays(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(origins [H*W,3], unit world directions [H*W,3]) through the pixel centres, as the scene generator casts."""
    dw = cam.world_directions(cam.pixel_grid().reshape(-1, 2))
    return np.broadcast_to(cam.center, dw.shape), dw


class MeshModel(nn.Module):
    """Vertices [V,3] and triangles [F,3] (fixed buffers) and per-vertex colours [V,3] (a parameter in [0,1])."""

    def __init__(
        self, vertices: np.ndarray | Tensor, triangles: np.ndarray | Tensor, colors: np.ndarray | Tensor | None = None
    ) -> None:
        super().__init__()
        v = torch.as_tensor(np.asarray(vertices, dtype=np.float32) if not isinstance(vertices, Tensor) else vertices)
        f = torch.as_tensor(np.asarray(triangles, dtype=np.int64) if not isinstance(triangles, Tensor) else triangles)
        v, f = v.detach().float().reshape(-1, 3).cpu(), f.detach().long().reshape(-1, 3).cpu()
        if len(f) == 0:
            raise ValueError("a mesh needs at least one triangle")
        if int(f.min()) < 0 or int(f.max()) >= len(v):
            raise ValueError("triangle indices out of range")
        if colors is None:
            c = torch.full((len(v), 3), 0.5)
        else:
            c = torch.as_tensor(np.asarray(colors, dtype=np.float32) if not isinstance(colors, Tensor) else colors)
            c = c.detach().float().reshape(-1, 3).cpu()
            if len(c) != len(v):
                raise ValueError(f"{len(v)} vertices but {len(c)} colours")
        self.register_buffer("vertices", v.contiguous())
        self.register_buffer("triangles", f.contiguous())
        self.colors = nn.Parameter(c.clamp(0.0, 1.0).contiguous())
        self._scene: Any = None
        self._cache: OrderedDict[bytes, RayHits] = OrderedDict()

    # ----------------------------------------------------------------- sizes
    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def device(self) -> torch.device:
        return self.colors.device

    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vertices float64, triangles int64, colours float64 clipped to [0,1])."""
        return (
            self.vertices.detach().cpu().double().numpy(),
            self.triangles.detach().cpu().numpy(),
            self.colors.detach().clamp(0, 1).cpu().double().numpy(),
        )

    # ----------------------------------------------------------------- ray casting
    def _raycasting_scene(self) -> Any:
        import open3d as o3d

        if self._scene is None:
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(
                self.vertices.cpu().numpy().astype(np.float32), self.triangles.cpu().numpy().astype(np.uint32)
            )
            self._scene = scene
        return self._scene

    def raycast(self, cam: Camera) -> RayHits:
        """Triangle ids, barycentrics and depth of the ray through every pixel centre of ``cam`` (cached)."""
        import open3d as o3d

        key = np.concatenate([cam.viewmat.ravel(), cam.K.ravel(), [cam.width, cam.height]]).astype(np.float64).tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        origins, dirs = pixel_rays(cam)
        rays = np.concatenate([origins, dirs], axis=1).astype(np.float32)
        res = self._raycasting_scene().cast_rays(o3d.core.Tensor(rays))
        t = res["t_hit"].numpy().astype(np.float64)
        ok = np.isfinite(t)
        tri = np.where(ok, res["primitive_ids"].numpy().astype(np.int64), -1)
        uv = res["primitive_uvs"].numpy().astype(np.float32)
        bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
        bary[~ok] = 0.0
        depth = np.full(len(t), np.inf, dtype=np.float32)
        depth[ok] = (t[ok] * np.einsum("ij,j->i", dirs[ok], cam.R[2])).astype(np.float32)
        H, W = cam.height, cam.width
        hit = RayHits(
            torch.from_numpy(tri.reshape(H, W)),
            torch.from_numpy(bary.reshape(H, W, 3)),
            torch.from_numpy(depth.reshape(H, W)),
        )
        self._cache[key] = hit
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return hit

    def shade(self, hits: RayHits) -> Tensor:
        """[H,W,3] colour at the hit points (bary-weighted vertex colours; 0 where missed), differentiable."""
        dev = self.colors.device
        H, W = hits.tri.shape
        idx = hits.hit_index.to(dev)
        corners = self.triangles.to(dev)[hits.tri.reshape(-1).to(dev)[idx]]  # [M,3] vertex ids
        val = (hits.bary.reshape(-1, 3).to(dev)[idx][..., None] * self.colors.clamp(0.0, 1.0)[corners]).sum(dim=1)
        out = torch.zeros(H * W, 3, device=dev, dtype=val.dtype).index_copy(0, idx, val)
        return out.reshape(H, W, 3)

    # ----------------------------------------------------------------- rendering
    def render(
        self,
        cameras: CameraLike,
        width: int | None = None,
        height: int | None = None,
        background: Tensor | np.ndarray | Sequence[float] | None = None,
        render_mode: str = "RGB+ED",
        **_: Any,
    ) -> RenderOutput:
        """Render one camera (unbatched output) or several (batched); background RGB [3] or per-pixel [H,W,3].

        alpha is 1 where a ray hits the mesh, 0 elsewhere; depth (RGB+ED) is camera-frame z, 0 on a miss.
        """
        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        cams, single = camera_list(cameras, width, height)
        rgbs, alphas, depths = [], [], []
        for cam in cams:
            hits = self.raycast(cam)
            rgb = self.shade(hits)
            alpha = hits.hit.to(device=rgb.device, dtype=rgb.dtype)
            if background is not None:
                bg = background if isinstance(background, Tensor) else torch.as_tensor(np.asarray(background))
                bg = bg.to(device=rgb.device, dtype=rgb.dtype)
                rgb = rgb + (bg if bg.dim() == 3 else bg.reshape(1, 1, 3)) * (1.0 - alpha[..., None])
            rgbs.append(rgb)
            alphas.append(alpha)
            depths.append(torch.where(hits.hit, hits.depth, torch.zeros_like(hits.depth)).to(rgb.device))
        out = RenderOutput(
            rgb=torch.stack(rgbs),
            alpha=torch.stack(alphas),
            depth=torch.stack(depths) if render_mode == "RGB+ED" else None,
            meta={"backend": "open3d"},
        )
        return out[0] if single else out

    # ----------------------------------------------------------------- colour fitting
    def fit_colors(
        self,
        images: Sequence[np.ndarray | Tensor],
        cameras: Sequence[Camera],
        masks: Sequence[np.ndarray | Tensor] | None = None,
        steps: int = 0,
        lr: float = 0.01,
        smooth: float = 1e-3,
    ) -> float:
        """Fit the vertex colours to ``images`` by render-and-compare over the hit pixels inside ``masks``.

        The rendered colour is linear in the vertex colours (barycentric weights from the cached ray casts),
        so the L2 fit is one sparse least-squares solve: (A^T A + smooth I) c = A^T b + smooth c0, where the
        small ``smooth`` term keeps vertices no view sees at their current colours. ``steps`` > 0 then runs
        that many Adam steps on the L1 error (robust to shading outliers). Returns the final mean absolute error.
        """
        import scipy.sparse as sp
        from scipy.sparse.linalg import spsolve

        tri_l, bary_l, tgt_l = [], [], []
        for k, cam in enumerate(cameras):
            hits = self.raycast(cam)
            img = images[k]
            img = torch.as_tensor(np.asarray(img, dtype=np.float32) if not isinstance(img, Tensor) else img).float()
            keep = hits.hit
            if masks is not None:
                m = masks[k]
                m = torch.as_tensor(np.asarray(m, dtype=np.float32) if not isinstance(m, Tensor) else m).float()
                keep = keep & (m > 0.5)
            idx = torch.nonzero(keep.reshape(-1)).squeeze(1)
            tri_l.append(hits.tri.reshape(-1)[idx])
            bary_l.append(hits.bary.reshape(-1, 3)[idx])
            tgt_l.append(img.reshape(-1, 3).cpu()[idx])
        tri = torch.cat(tri_l)
        if len(tri) == 0:
            return float("nan")
        bary, target = torch.cat(bary_l), torch.cat(tgt_l)
        corners = self.triangles.cpu()[tri]  # [P,3] vertex ids
        n_pix, n_v = len(tri), self.num_vertices
        A = sp.csr_matrix(
            (bary.double().numpy().ravel(), corners.numpy().ravel(), np.arange(0, 3 * n_pix + 1, 3)), shape=(n_pix, n_v)
        )
        c0 = self.colors.detach().cpu().double().numpy()
        lhs = (A.T @ A + smooth * sp.identity(n_v)).tocsc()
        rhs = A.T @ target.double().numpy() + smooth * c0
        sol = np.clip(np.asarray(spsolve(lhs, rhs)).reshape(n_v, 3), 0.0, 1.0)
        with torch.no_grad():
            self.colors.copy_(torch.from_numpy(sol).to(self.colors))
        dev = self.device
        bary, target, corners = bary.to(dev), target.to(dev), corners.to(dev)
        if steps > 0:
            opt = torch.optim.Adam([self.colors], lr=lr)
            for _ in range(steps):
                loss = ((bary[..., None] * self.colors[corners]).sum(dim=1) - target).abs().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    self.colors.clamp_(0.0, 1.0)
            self.colors.grad = None
        with torch.no_grad():
            return float(((bary[..., None] * self.colors[corners]).sum(dim=1) - target).abs().mean())

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write the mesh with vertex colours (.ply, .obj or .glb by suffix)."""
        from renderers.mesh.io import write_mesh

        v, f, c = self.numpy()
        return write_mesh(path, v, f, c)

    @classmethod
    def load(cls, path: str | Path) -> MeshModel:
        from renderers.mesh.io import read_mesh

        v, f, c = read_mesh(path)
        return cls(v, f, c)

    def save_run_files(self, folder: str | Path) -> list[str]:
        """Run-folder files of representation "mesh": mesh.ply."""
        from recon.run_folder import MESH

        self.save(Path(folder) / MESH)
        return [MESH]
