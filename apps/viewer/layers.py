"""Gaussians and cameras as viser scene layers, and the browser's camera back as a Camera.

viser cameras follow OpenCV axes (x right, y down, z forward) like this project, so a camera's pose is
just its camera-to-world rotation (as a w x y z quaternion) and its centre. Splats go to viser as centres,
3x3 covariances R S S R^T (activated scales and unit quaternions), DC colours (sh0 * C0 + 0.5, clipped)
and opacities. viser is imported only by the functions that take a scene.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recon.cameras import Camera, qvec_to_rotmat, rotmat_to_qvec
from recon.kernels.projection import quat_to_rotmat
from renderers.gaussians.model import GaussianModel, sh0_to_rgb


@dataclass
class SplatArrays:
    """What ``scene.add_gaussian_splats`` takes: centers [N,3], covariances [N,3,3], rgbs [N,3], opacities [N,1]."""

    centers: np.ndarray
    covariances: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray

    def __len__(self) -> int:
        return int(self.centers.shape[0])


quats_to_rotmats = quat_to_rotmat  # wxyz [N,4] -> [N,3,3], shared with the rasterizer


@torch.no_grad()
def splat_arrays(model: GaussianModel, scale: float = 1.0, min_opacity: float = 0.0) -> SplatArrays:
    """The model's Gaussians as viser arrays; ``scale`` multiplies every axis, ``min_opacity`` drops faint ones."""
    keep = model.opacities.detach() >= float(min_opacity)
    rot = quats_to_rotmats(model.splats["quats"].detach()[keep].float())
    s = model.scales.detach()[keep].float() * float(scale)
    m = rot * s[:, None, :]  # R diag(s)
    cov = m @ m.transpose(1, 2)
    rgb = sh0_to_rgb(model.splats["sh0"].detach()[keep][:, 0].float()).clamp(0.0, 1.0)
    return SplatArrays(
        centers=model.means.detach()[keep].float().cpu().numpy(),
        covariances=cov.cpu().numpy(),
        rgbs=rgb.cpu().numpy(),
        opacities=model.opacities.detach()[keep].float().cpu().numpy()[:, None],
    )


def camera_pose(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz, position) of a camera's camera-to-world pose, as viser scene nodes take it."""
    c2w = cam.c2w
    return rotmat_to_qvec(c2w[:3, :3]), c2w[:3, 3].copy()


def camera_from_view(
    wxyz: Sequence[float] | np.ndarray, position: Sequence[float] | np.ndarray, fov_y: float, width: int, height: int
) -> Camera:
    """A pinhole Camera for a viewer pose (camera-to-world wxyz + position) and vertical field of view."""
    R = qvec_to_rotmat(np.asarray(wxyz, dtype=np.float64))
    c2w = np.eye(4)
    c2w[:3, :3] = R
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    fy = 0.5 * height / math.tan(0.5 * float(fov_y))
    K = np.array([[fy, 0.0, 0.5 * width], [0.0, fy, 0.5 * height], [0.0, 0.0, 1.0]])
    return Camera(K=K, viewmat=np.linalg.inv(c2w), width=int(width), height=int(height), name="viewer")


def frustum_scale(cameras: Sequence[Camera]) -> float:
    """A frustum size that reads well: a tenth of the median camera distance to the cameras' centroid."""
    centers = np.stack([c.center for c in cameras])
    spread = float(np.median(np.linalg.norm(centers - centers.mean(axis=0), axis=1)))
    return max(spread * 0.1, 1e-3)


def add_splats(
    scene: Any, name: str, model: GaussianModel, scale: float = 1.0, min_opacity: float = 0.0, visible: bool = True
) -> Any:
    """Add (or replace) the Gaussians as a viser splat node; returns the handle."""
    arr = splat_arrays(model, scale=scale, min_opacity=min_opacity)
    return scene.add_gaussian_splats(
        name,
        centers=arr.centers,
        covariances=arr.covariances,
        rgbs=arr.rgbs,
        opacities=arr.opacities,
        visible=visible,
    )


def add_frustums(
    scene: Any,
    prefix: str,
    cameras: Sequence[Camera],
    images: Sequence[np.ndarray | None] | None = None,
    color: tuple[int, int, int] = (20, 20, 20),
    scale: float | None = None,
    on_click: Callable[[Any, Camera], None] | None = None,
    thumb_side: int = 160,
) -> list[Any]:
    """One frustum per camera under ``prefix`` (with its image when given).

    ``on_click(client, camera)`` runs when a browser client clicks a frustum (e.g. to fly that client there).
    """
    import cv2

    size = frustum_scale(cameras) if scale is None else scale
    handles = []
    for k, cam in enumerate(cameras):
        wxyz, pos = camera_pose(cam)
        img = None if images is None else images[k]
        if img is not None:
            arr = np.asarray(img)
            if arr.dtype != np.uint8:
                arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            f = thumb_side / max(arr.shape[:2])
            if f < 1.0:
                arr = cv2.resize(
                    arr,
                    (max(1, round(arr.shape[1] * f)), max(1, round(arr.shape[0] * f))),
                    interpolation=cv2.INTER_AREA,
                )
            img = arr
        handle = scene.add_camera_frustum(
            f"{prefix}/{k:03d}",
            fov=cam.fov_y,
            aspect=cam.width / cam.height,
            scale=size,
            color=color,
            image=img,
            wxyz=wxyz,
            position=pos,
            thickness=size * 0.03,
        )
        if on_click is not None:
            handle.on_click(lambda event, cam=cam: on_click(event.client, cam))
        handles.append(handle)
    return handles


def add_mesh(scene: Any, name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> Any:
    """Add (or replace) a triangle mesh node, with its vertex colours when it has them; returns the handle."""
    if colors is not None:
        import trimesh

        mesh = trimesh.Trimesh(
            vertices, faces, vertex_colors=(np.clip(colors, 0, 1) * 255).astype(np.uint8), process=False
        )
        return scene.add_mesh_trimesh(name, mesh)
    return scene.add_mesh_simple(name, vertices, faces, color=(200, 200, 200))
