"""Neural primitives in a run folder: ``neural.pt`` (the model) and ``splats.ply`` (baked, for viewers)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_bytes
from recon.run_folder import NEURAL, SPLATS
from renderers.gaussians.ply import write_ply
from renderers.neural.model import NeuralPrimitives

MODEL_FILE = NEURAL
BAKED_FILE = SPLATS  # the model baked to Gaussians, for other viewers


def save_model(path: str | Path, model: NeuralPrimitives) -> Path:
    """``torch.save`` of ``model.state()`` (plain tensors and numbers), written atomically."""
    buf = io.BytesIO()
    torch.save(model.state(), buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> NeuralPrimitives:
    """The model saved by :func:`save_model`; ReconInputError naming the file when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise ReconInputError("no neural primitives file here", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable / truncated / not a torch file
        raise ReconInputError(f"cannot read neural primitives ({type(exc).__name__})", path) from exc
    if not isinstance(state, dict):
        raise ReconInputError("not a neural primitives file", path)
    try:
        return NeuralPrimitives.from_state(state, device=device)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ReconInputError(f"not a valid neural primitives file: {exc}".splitlines()[0], path) from exc


def save_run_files(model: NeuralPrimitives, folder: str | Path) -> list[str]:
    """Write neural.pt and the baked splats.ply into ``folder``; returns the file names."""
    folder = Path(folder)
    save_model(folder / MODEL_FILE, model)
    write_ply(folder / BAKED_FILE, model.to_gaussians())
    return [MODEL_FILE, BAKED_FILE]


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> NeuralPrimitives:
    """The neural primitives of a run folder (from neural.pt)."""
    return load_model(Path(run_dir) / MODEL_FILE, device=device)
