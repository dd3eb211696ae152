"""priors/diffusion: a small diffusers repair model (corrupted render -> clean view) and its use as a prior.

* :class:`RepairModel` (model.py): UNet2DModel + DDIM, residual x0 prediction, save/load from a local folder.
* :func:`train_repair` (train.py): generic pre-training and per-scene fine-tuning on a :class:`PairSet`.
* :class:`DiffusionGuidance` (guidance.py): repaired pseudo views as an extra training loss, tile-sparse.
* ``benchmarks/train_repair_prior.py`` trains the bundled weights ``data/priors/repair-small``.
"""

from __future__ import annotations

from pathlib import Path

from priors.diffusion.data import PairSet, perturb_gaussians, random_crops
from priors.diffusion.guidance import DiffusionGuidance, GuidanceSettings, pseudo_cameras
from priors.diffusion.model import BUNDLED_WEIGHTS, RepairModel
from priors.diffusion.train import train_repair
from recon.errors import ReconInputError


def load_repair_model(weights: str | Path | None = None, device: str = "cpu") -> RepairModel:
    """The repair model in ``weights`` (a local folder written by :meth:`RepairModel.save`), else the bundled one.

    Never downloads: a missing bundled folder is a ReconInputError saying how to train it.
    """
    folder = Path(weights) if weights is not None else BUNDLED_WEIGHTS
    if weights is None and not (folder / "repair.json").is_file():
        raise ReconInputError(
            "the bundled repair prior is missing; train it with "
            "`python benchmarks/train_repair_prior.py` or pass --prior-weights",
            folder,
        )
    if not folder.is_dir():
        raise ReconInputError("prior weights folder not found", folder)
    return RepairModel.load(folder, device=device)


__all__ = [
    "BUNDLED_WEIGHTS",
    "DiffusionGuidance",
    "GuidanceSettings",
    "PairSet",
    "RepairModel",
    "load_repair_model",
    "perturb_gaussians",
    "pseudo_cameras",
    "random_crops",
    "train_repair",
]
