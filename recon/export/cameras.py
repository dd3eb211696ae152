"""A run's cameras in the formats other tools read: a COLMAP text model or a nerfstudio transforms.json.

The run folder keeps its cameras in cameras.json (OpenCV axes, world-to-camera, at the run's image size) and
names the views; the photos themselves stay where they were. Where the photos are found (``images``, else the
run's source folder as metrics.json records it), each camera is rescaled to its photo's size and the export
points at the photo; otherwise the export names ``images/NAME`` at the run's size. COLMAP's points3D.txt gets
the splat centres (the most opaque ``max_points``, coloured by their base colour) with empty tracks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.io.atomic import atomic_output_dir
from recon.io.colmap import write_colmap_text
from recon.io.images import find_image, image_size
from recon.io.transforms_json import write_transforms
from recon.run_folder import RunFolder

FORMATS = ("colmap", "nerfstudio")
MAX_POINTS = 100_000
_SH_C0 = 0.28209479177387814


@dataclass
class CameraExport:
    """What was written: the folder, how many cameras and points, and which views' photos were found."""

    folder: Path
    cameras: int
    points: int
    photos_found: list[str]
    photos_missing: list[str]


def _photo_dirs(run: RunFolder, images: Path | None) -> list[Path]:
    """Folders to look for the photos in: ``images`` alone when given, else the run's source and its images/."""
    if images is not None:
        if not images.is_dir():
            raise ReconInputError("images folder does not exist", images)
        return [images]
    source = run.read_metrics().get("source")
    if not isinstance(source, str):
        return []
    src = Path(source)
    base = src if src.is_dir() else src.parent
    return [base, base / "images"] if base.is_dir() else []


def _find_photos(names: list[str], dirs: list[Path]) -> list[Path | None]:
    out: list[Path | None] = []
    for n in names:
        hit = None
        for d in dirs:
            p = find_image(d / n)
            if p is not None and p.is_file():
                hit = p
                break
        out.append(hit)
    return out


def splat_points(run: RunFolder, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's splat centres and base colours (xyz Nx3, rgb Nx3 in [0, 1]); the most opaque ``max_points``.
    None when the run has no splats.ply."""
    if not run.splats.exists():
        return None
    from renderers.gaussians.ply import read_ply

    model = read_ply(run.splats)
    xyz = model.splats["means"].detach().cpu().numpy().astype(np.float64)
    rgb = np.clip(model.splats["sh0"].detach().cpu().numpy()[:, 0, :] * _SH_C0 + 0.5, 0.0, 1.0)
    if len(xyz) > max_points:
        opa = model.splats["opacities"].detach().cpu().numpy()
        keep = np.sort(np.argsort(-opa, kind="stable")[:max_points])
        xyz, rgb = xyz[keep], rgb[keep]
    return xyz, rgb.astype(np.float32)


def export_cameras(
    run_path: str | Path,
    kind: str,
    to: str | Path,
    overwrite: bool = False,
    images: str | Path | None = None,
    max_points: int = MAX_POINTS,
) -> CameraExport:
    """Write the cameras of the run at ``run_path`` into the folder ``to`` as ``kind`` ("colmap": cameras.txt,
    images.txt, points3D.txt with PINHOLE cameras; "nerfstudio": transforms.json with OpenGL camera-to-world).
    ``to`` is written atomically and an existing non-empty folder is replaced only with ``overwrite``."""
    if kind not in FORMATS:
        raise ReconInputError(f"unknown camera format {kind!r}; use {' or '.join(FORMATS)}", Path(to))
    run = RunFolder(run_path).require()
    cams = run.read_cameras()
    names = [c.name or f"view_{k:03d}.png" for k, c in enumerate(cams)]
    if len(set(names)) != len(names):
        raise ReconInputError("two cameras have the same view name", run.cameras_file)
    if kind == "colmap":
        bad = [n for n in names if any(ch.isspace() for ch in n)]
        if bad:
            raise ReconInputError(f"view name {bad[0]!r} has a space, which COLMAP's images.txt cannot hold", run.path)
    images_dir = Path(images) if images is not None else None
    photos = _find_photos(names, _photo_dirs(run, images_dir))
    out_cams: list[Camera] = []
    for c, p in zip(cams, photos):
        if p is not None:
            w, h = image_size(p)
            c = c if (w, h) == (c.width, c.height) else c.resized(w, h)
        out_cams.append(c)
    points = splat_points(run, max_points) if kind == "colmap" else None
    protect = [run.path] + ([images_dir] if images_dir is not None else [])
    with atomic_output_dir(to, overwrite=overwrite, protect=protect) as tmp:
        if kind == "colmap":
            write_colmap_text(tmp, out_cams, names, points)
        else:
            # paths are stored relative to the JSON's folder; the temporary folder is a sibling of ``to``
            rel = [p if p is not None else Path("images") / n for p, n in zip(photos, names)]
            write_transforms(tmp / "transforms.json", out_cams, rel)
    return CameraExport(
        folder=Path(to),
        cameras=len(out_cams),
        points=0 if points is None else len(points[0]),
        photos_found=[n for n, p in zip(names, photos) if p is not None],
        photos_missing=[n for n, p in zip(names, photos) if p is None],
    )
