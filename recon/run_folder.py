"""The run folder, the product's main artifact: its layout, and reading and writing its common files.

Layout (every name used anywhere comes from here)::

    splats.ply      3D Gaussians (3DGS PLY; for neural runs the model baked to Gaussians, for other viewers)
    mesh.ply        the mesh (representations mesh, hybrid)
    hybrid.json     the hybrid's compositing settings
    neural.pt       neural primitives (representation neural)
    cameras.json    the input cameras used (OpenCV convention, world-to-camera viewmat)
    renders/        renders of the input views (NAME.png)
    metrics.json    train PSNR/SSIM, counts, timings, mask and pose reports
    config.json     the settings tree (recon.config)
    run.log         the log
    prior/          pseudo-view renders and their repairs (diffusion prior)
    points.ply      optional point layer for the viewer

Each representation writes its own files (``save_run_files``) under these names; the model a folder holds is
loaded by ``recon.representations.load_model(RunFolder(path))``, which dispatches on config.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_text
from recon.io.jsonfile import read_json_object

SPLATS = "splats.ply"
MESH = "mesh.ply"
HYBRID = "hybrid.json"
NEURAL = "neural.pt"
CAMERAS = "cameras.json"
RENDERS = "renders"
METRICS = "metrics.json"
CONFIG = "config.json"
LOG = "run.log"
PRIOR = "prior"
POINTS = "points.ply"

RUN_HINT = "is this a run folder from `recon reconstruct`?"
CAMERA_CONVENTION = "OpenCV, viewmat = world-to-camera"


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder, and its common files read and written with one-line errors."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ paths
    @property
    def splats(self) -> Path:
        return self.path / SPLATS

    @property
    def mesh(self) -> Path:
        return self.path / MESH

    @property
    def cameras_file(self) -> Path:
        return self.path / CAMERAS

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def log_file(self) -> Path:
        return self.path / LOG

    @property
    def renders_dir(self) -> Path:
        return self.path / RENDERS

    @property
    def prior_dir(self) -> Path:
        return self.path / PRIOR

    def render_path(self, view_name: str) -> Path:
        """Where the render of input view ``view_name`` goes (its stem as a PNG)."""
        return self.renders_dir / f"{Path(view_name).stem}.png"

    def require(self) -> RunFolder:
        """Self, or ReconInputError when the folder does not exist."""
        if not self.path.is_dir():
            raise ReconInputError("run folder not found", self.path)
        return self

    # ------------------------------------------------------------------ cameras.json
    def write_cameras(self, cameras: Iterable[Camera]) -> None:
        data = {"convention": CAMERA_CONVENTION, "cameras": [c.to_dict() for c in cameras]}
        atomic_write_text(self.cameras_file, json.dumps(data, indent=1))

    def read_cameras(self) -> list[Camera]:
        """The run's cameras; ReconInputError naming the file when missing or malformed."""
        data = self._read_json(self.cameras_file, required=True)
        try:
            cams = [Camera.from_dict(d) for d in data["cameras"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ReconInputError(f"malformed camera list ({type(exc).__name__}: {exc})", self.cameras_file) from None
        if not cams:
            raise ReconInputError("holds no cameras", self.cameras_file)
        return cams

    # ------------------------------------------------------------------ config.json / metrics.json
    def write_config(self, config: Any) -> None:
        """``config`` (a recon.config.ReconstructConfig, or its dict) as config.json."""
        data = config if isinstance(config, dict) else config.to_dict()
        atomic_write_text(self.config_file, json.dumps(data, indent=2))

    def read_config_dict(self) -> dict[str, Any]:
        """config.json as written ({} for a folder without one: older runs, bare splat folders)."""
        return self._read_json(self.config_file, required=False)

    def representation(self) -> str:
        """The representation the run holds (gaussians when config.json does not say)."""
        rep = self.read_config_dict().get("representation", "gaussians")
        if not isinstance(rep, str):
            raise ReconInputError(f"representation must be a name, got {rep!r}", self.config_file)
        return rep

    def write_metrics(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.metrics_file, json.dumps(summary, indent=2))

    def read_metrics(self) -> dict[str, Any]:
        return self._read_json(self.metrics_file, required=False)

    @staticmethod
    def _read_json(path: Path, required: bool) -> dict[str, Any]:
        if not path.exists():
            if required:
                raise ReconInputError(f"missing ({RUN_HINT})", path)
            return {}
        return read_json_object(path)
