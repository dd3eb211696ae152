"""The repair model: a small image-conditioned diffusion UNet (diffusers) that turns a corrupted render into a
clean view.

What it models: the *residual* ``clean - render`` (in [-1, 1]), diffused with a DDPM schedule and predicted
directly as x0 (``prediction_type="sample"``), conditioned on the render (RGB in [-1, 1]) and its alpha, both
concatenated to the noisy residual as extra input channels (GaussianObject-style repair, small enough for a CPU).
Modelling the residual means an undamaged render needs an output of zero, which a small model learns quickly.

A model built with ``guide=True`` also sees a *guide*: the nearest input photo warped into the view through the
render's depth, with a validity channel (in front of that camera, inside its image, not occluded there; see
:mod:`priors.diffusion.guide`). Repair is then far better posed (ReconFusion / CAT3D condition on the input
views): where the guide is valid the true texture is there to be copied; elsewhere the model falls back on the
render. ``repair.json`` records ``cond_channels`` (4 without a guide, 8 with one).

Sampling: a few deterministic DDIM steps, or a single step (x0 predicted from pure noise at the last timestep,
i.e. the conditional mean) for speed. The UNet is fully convolutional, so it runs on any image whose sides are
multiples of :attr:`RepairModel.multiple` (inputs are reflect-padded to that).

Storage: ``save(folder)`` writes the diffusers layout (``unet/``, ``scheduler/`` via ``save_pretrained``) plus
``repair.json``; ``RepairModel.load(folder)`` reads it back with ``local_files_only`` (never a download).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.errors import ReconInputError

FORMAT = "recon-repair-prior"
FORMAT_VERSION = 1
COND_CHANNELS = 4  # render RGB + alpha
GUIDE_CHANNELS = 4  # warped nearest input photo RGB + its validity (models built with guide=True)
BUNDLED_WEIGHTS = Path(__file__).resolve().parents[2] / "data" / "priors" / "repair-small"


@contextmanager
def prior_threads(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the UNet with ``RECON_PRIOR_THREADS`` torch threads (default 1) on CPU, restoring the count after.

    Measured here (2 cores shared with other jobs): the small UNet's convolutions run about 10x faster with one
    thread than with two when the cores are busy (OpenMP threads wait on each other), so one is the default.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(os.environ.get("RECON_PRIOR_THREADS", "1"))))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ReconInputError("the diffusion prior needs the 'diffusers' package (pip install diffusers)") from exc
    return diffusers


class RepairModel:
    """UNet2DModel (noisy residual + conditioning -> clean residual) with its DDIM scheduler."""

    def __init__(self, unet: Any, scheduler: Any, meta: dict[str, Any] | None = None) -> None:
        self.unet = unet
        self.scheduler = scheduler
        self.meta: dict[str, Any] = dict(meta or {})

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        channels: tuple[int, ...] = (32, 64, 64),
        layers_per_block: int = 1,
        sample_size: int = 64,
        num_train_timesteps: int = 1000,
        norm_groups: int = 8,
        seed: int = 0,
        guide: bool = False,
    ) -> RepairModel:
        """A fresh, randomly initialised model (seeded). ``channels`` sets the width of each resolution level;
        ``guide`` adds the warped-input-photo conditioning (see the module docstring)."""
        d = _diffusers()
        torch.manual_seed(seed)
        n = len(channels)
        cond = COND_CHANNELS + (GUIDE_CHANNELS if guide else 0)
        unet = d.UNet2DModel(
            sample_size=sample_size,
            in_channels=3 + cond,
            out_channels=3,
            block_out_channels=tuple(channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            norm_num_groups=norm_groups,
        )
        scheduler = d.DDIMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type="sample",
            clip_sample=True,
            clip_sample_range=1.0,
        )
        return cls(
            unet, scheduler, {"channels": list(channels), "layers_per_block": layers_per_block, "cond_channels": cond}
        )

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> RepairModel:
        """Read a model saved by :meth:`save` from a local folder (ReconInputError naming it when unusable)."""
        d = _diffusers()
        folder = Path(folder)
        meta_path = folder / "repair.json"
        if not meta_path.is_file():
            raise ReconInputError("not a repair-prior folder (repair.json missing)", folder)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ReconInputError(f"cannot read repair.json: {exc}", meta_path) from exc
        if meta.get("format") != FORMAT:
            raise ReconInputError(f"repair.json has format {meta.get('format')!r}, expected {FORMAT!r}", meta_path)
        try:
            unet = d.UNet2DModel.from_pretrained(folder / "unet", local_files_only=True, low_cpu_mem_usage=False)
            scheduler = d.DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ReconInputError(f"cannot load the repair model: {str(exc).splitlines()[0]}", folder) from exc
        model = cls(unet, scheduler, meta)
        return model.to(device)

    def save(self, folder: str | Path) -> Path:
        """Write ``unet/``, ``scheduler/`` (diffusers ``save_pretrained``, safetensors) and ``repair.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")
        meta = {**self.meta, "format": FORMAT, "format_version": FORMAT_VERSION, "cond_channels": self.cond_channels}
        (folder / "repair.json").write_text(json.dumps(meta, indent=2))
        return folder

    def to(self, device: str | torch.device) -> RepairModel:
        self.unet.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this (one halving per down block after the first)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def cond_channels(self) -> int:
        """Conditioning channels the UNet takes besides the noisy residual: 4 (render, alpha) or 8 (+ guide)."""
        return int(self.unet.config.in_channels) - 3

    @property
    def uses_guide(self) -> bool:
        """True when the model was trained with the warped-input-photo guide (8 conditioning channels)."""
        return self.cond_channels == COND_CHANNELS + GUIDE_CHANNELS

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    # ----------------------------------------------------------------------------------------- tensors
    def conditioning(self, render: Tensor, alpha: Tensor, guide: Tensor | None = None) -> Tensor:
        """[B,3,H,W] render in [0,1], [B,1,H,W] alpha (and for a guided model [B,4,H,W] guide: warped photo RGB
        in [0,1] and validity in {0,1}; None = no valid guide pixel) -> conditioning in [-1, 1]."""
        parts = [render * 2.0 - 1.0, alpha * 2.0 - 1.0]
        if self.uses_guide:
            if guide is None:
                guide = torch.zeros_like(render[:, :1]).expand(-1, GUIDE_CHANNELS, -1, -1)
            valid = guide[:, 3:4]
            parts += [(guide[:, :3] * 2.0 - 1.0) * valid, valid * 2.0 - 1.0]
        return torch.cat(parts, dim=1)

    def _predict(self, x_t: Tensor, cond: Tensor, t: Tensor) -> Tensor:
        return self.unet(torch.cat([x_t, cond], dim=1), t).sample

    def loss(
        self,
        render: Tensor,
        alpha: Tensor,
        clean: Tensor,
        generator: torch.Generator | None = None,
        weight: Tensor | None = None,
        guide: Tensor | None = None,
    ) -> Tensor:
        """DDPM training loss: MSE between the predicted and true residual at a random timestep per sample.

        render/clean: [B,3,H,W] in [0,1]; alpha: [B,1,H,W]; ``weight`` [B,1,H,W] optionally weights pixels;
        ``guide`` [B,4,H,W] for a guided model (see :meth:`conditioning`).
        """
        x0 = (clean - render).clamp(-1.0, 1.0)
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=generator, device=x0.device)
        x_t = self.scheduler.add_noise(x0, noise, t)
        pred = self._predict(x_t, self.conditioning(render, alpha, guide), t)
        err = (pred - x0) ** 2
        if weight is not None:
            return (err * weight).sum() / (weight.sum() * 3.0).clamp_min(1e-8)
        return err.mean()

    @torch.no_grad()
    def repair(
        self,
        render: Tensor,
        alpha: Tensor,
        steps: int = 1,
        generator: torch.Generator | None = None,
        guide: Tensor | None = None,
    ) -> Tensor:
        """Clean images [B,3,H,W] in [0,1] for renders [B,3,H,W] and alphas [B,1,H,W] (any H, W); ``guide``
        [B,4,H,W] for a guided model (ignored by one without).

        ``steps`` <= 1: a single x0 prediction from noise at the last timestep; otherwise DDIM with ``steps`` steps.
        """
        with prior_threads(render.device):
            return self._repair(render, alpha, steps, generator, guide if self.uses_guide else None)

    def _repair(
        self, render: Tensor, alpha: Tensor, steps: int, generator: torch.Generator | None, guide: Tensor | None
    ) -> Tensor:
        was_training = self.unet.training
        self.unet.eval()
        h, w = render.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            render = F.pad(render, (0, pw, 0, ph), mode=mode)
            alpha = F.pad(alpha, (0, pw, 0, ph), mode=mode)
            if guide is not None:
                guide = F.pad(guide, (0, pw, 0, ph), mode=mode)
        cond = self.conditioning(render, alpha, guide)
        shape = (render.shape[0], 3, render.shape[-2], render.shape[-1])
        x = torch.randn(shape, generator=generator, device=render.device)
        if steps <= 1:
            t = torch.full((shape[0],), self.num_train_timesteps - 1, device=render.device, dtype=torch.long)
            x0 = self._predict(x, cond, t).clamp(-1.0, 1.0)
        else:
            self.scheduler.set_timesteps(int(steps), device=render.device)
            x0 = x
            for t in self.scheduler.timesteps:
                tt = torch.full((shape[0],), int(t), device=render.device, dtype=torch.long)
                out = self._predict(x, cond, tt)
                step = self.scheduler.step(out, t, x, eta=0.0)
                x = step.prev_sample
                x0 = step.pred_original_sample
            x0 = x0.clamp(-1.0, 1.0)
        if was_training:
            self.unet.train()
        return (render + x0).clamp(0.0, 1.0)[..., :h, :w]
