"""Render a GaussianModel into a list of Cameras and save the images (e.g. "renders of the input views")."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from recon.cameras import Camera
from recon.io.atomic import atomic_write_bytes
from recon.io.images import save_image
from renderers.gaussians.model import GaussianModel
from renderers.types import RenderOutput


@torch.no_grad()
def render_cameras(
    model: GaussianModel,
    cameras: Sequence[Camera],
    background: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    render_mode: str = "RGB+ED",
    batch_size: int = 4,
) -> list[RenderOutput]:
    """One detached, unbatched RenderOutput per camera, in order; cameras of one size are batched together."""
    outputs: list[RenderOutput | None] = [None] * len(cameras)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, cam in enumerate(cameras):
        by_size.setdefault((cam.width, cam.height), []).append(i)
    for indices in by_size.values():
        for start in range(0, len(indices), max(1, batch_size)):
            chunk = indices[start : start + max(1, batch_size)]
            out = model.render([cameras[i] for i in chunk], background=background, render_mode=render_mode)
            for j, i in enumerate(chunk):
                outputs[i] = out[j].detach()
    return [o for o in outputs if o is not None]


def _stem(name: str, index: int) -> str:
    stem = Path(name).stem if name else ""
    return stem or f"view_{index:03d}"


def save_renders(
    outputs: Sequence[RenderOutput],
    out_dir: str | Path,
    names: Sequence[str],
    save_alpha: bool = False,
    save_depth: bool = False,
) -> list[Path]:
    """Write ``<name>.png`` per output (plus ``<name>_alpha.png`` / ``<name>_depth.npy`` if asked).

    Returns the colour PNG paths. Depth is saved raw (float32, expected depth, 0 = empty) so that it keeps
    its metric meaning.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    used: set[str] = set()
    for i, (out, name) in enumerate(zip(outputs, names, strict=True)):
        stem = _stem(name, i)
        if stem in used:  # two views with one name must not overwrite each other
            stem = f"{stem}_{i:03d}"
        used.add(stem)
        rgb_path = out_dir / f"{stem}.png"
        save_image(rgb_path, out.rgb.detach().float().clamp(0, 1).cpu().numpy())
        if save_alpha:
            save_image(out_dir / f"{stem}_alpha.png", out.alpha.detach().float().clamp(0, 1).cpu().numpy())
        if save_depth and out.depth is not None:
            buf = io.BytesIO()
            np.save(buf, out.depth.detach().float().cpu().numpy())
            atomic_write_bytes(out_dir / f"{stem}_depth.npy", buf.getvalue())
        paths.append(rgb_path)
    return paths


def render_views(
    model: GaussianModel,
    cameras: Sequence[Camera],
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    background: Sequence[float] | np.ndarray | torch.Tensor | None = (1.0, 1.0, 1.0),
    save_alpha: bool = False,
    save_depth: bool = False,
) -> list[Path]:
    """Render every camera and save PNGs into ``out_dir`` (names default to the cameras' names)."""
    if names is None:
        names = [c.name for c in cameras]
    mode = "RGB+ED" if save_depth else "RGB"
    outputs = render_cameras(model, cameras, background=background, render_mode=mode)
    return save_renders(outputs, out_dir, names, save_alpha=save_alpha, save_depth=save_depth)
