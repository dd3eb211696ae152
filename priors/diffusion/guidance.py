"""Diffusion guidance during reconstruction: repaired pseudo views as extra supervision (GaussianObject/ReconFusion).

After ``start`` (a fraction) of the training steps the guidance
  1. fine-tunes the repair model on the scene at hand (renders of noise-perturbed copies of the current
     Gaussians at the input views, paired with the input images: leave-nothing-out, GaussianObject's
     "noisy Gaussians"), within a few steps;
  2. renders pseudo views on the sphere around the inputs (same radius and target, azimuth/elevation a little
     beyond the inputs' range) at half resolution, picks the tiles that need repair (object present, partly
     transparent or uneven) and repairs only those (tile-sparse, :mod:`priors.diffusion.tiles`); a guided
     model also gets the nearest input photo warped into the pseudo view through its rendered depth
     (:mod:`priors.diffusion.guide`);
  3. from then on, every ``every`` steps, adds ``weight * (L1 + D-SSIM)`` between the render at one pseudo view
     and its repaired image over the repaired tiles; the repairs are recomputed every ``refresh`` steps.
Repaired images go into ``out_dir`` and :meth:`DiffusionGuidance.report` returns counts and timings.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from priors.diffusion.data import PairSet, perturb_gaussians
from priors.diffusion.guide import GuideSource, guide_for_view, sources_from_renders
from priors.diffusion.model import RepairModel
from priors.diffusion.tiles import repair_tiles, tile_grid, tile_mask, tiles_needing_repair
from priors.diffusion.train import train_repair
from recon import metrics
from recon.cameras import Camera
from recon.rig import rig_frame


@dataclass
class GuidanceSettings:
    """When and how strongly the repaired pseudo views supervise training (see the module docstring)."""

    weights: str | None = None  # local repair-model folder (save_pretrained layout); None = the bundled one
    start: float = 0.7  # fraction of the iterations before pseudo views are repaired and supervised (0.5: worse)
    refresh: int = 50  # steps between re-rendering + re-repairing (stale targets anchor training; 200: worse)
    views: int = 8
    weight: float = 0.2
    every: int = 2
    sample_steps: int = 1
    finetune_steps: int = 40
    finetune_lr: float = 3e-4
    object_weight: float = 4.0  # extra fine-tuning loss weight on object pixels (what masked metrics see)
    tile: int = 32
    scale: float = 0.5  # pseudo-view resolution relative to the input cameras
    az_margin_deg: float = 20.0
    el_margin_deg: float = 12.0
    save_images: bool = True


def azimuth_arc(azimuths: list[float], margin: float) -> tuple[float, float]:
    """(start, end) radians, end > start, of the arc of the orbit the pseudo views sample: the shortest arc
    holding every input azimuth (the circle minus its largest gap between inputs), widened by ``margin`` on both
    sides; the whole circle when the inputs surround the object (no gap of half a turn or more), as a 360-degree
    capture's unseen sides lie between its inputs."""
    a = sorted(x % (2.0 * math.pi) for x in azimuths)
    gaps = [(a[(k + 1) % len(a)] - a[k]) % (2.0 * math.pi) for k in range(len(a))]
    if len(a) == 1:
        gaps = [2.0 * math.pi]
    k = int(np.argmax(gaps))
    if gaps[k] < math.pi:
        return -math.pi, math.pi
    start = a[(k + 1) % len(a)]  # the arc starts after the largest gap and ends at its beginning
    start = start - 2.0 * math.pi if start >= math.pi else start
    length = 2.0 * math.pi - gaps[k]
    return start - margin, start + length + margin


def pseudo_cameras(
    cameras: list[Camera],
    count: int,
    scale: float = 0.5,
    az_margin_deg: float = 20.0,
    el_margin_deg: float = 12.0,
    seed: int = 0,
) -> list[Camera]:
    """``count`` cameras on the inputs' orbit (same target and radius, input intrinsics scaled by ``scale``),
    azimuth stratified over the inputs' arc widened by the margins (:func:`azimuth_arc`: the whole circle for
    inputs all around), elevation random over their range widened likewise (deterministic per seed)."""
    frame = rig_frame(cameras)
    az, el = [], []
    for c in cameras:
        a, e = frame.angles(c.center)
        az.append(a)
        el.append(e)
    lo_az, hi_az = azimuth_arc(az, math.radians(az_margin_deg))
    lo_el = max(min(el) - math.radians(el_margin_deg), math.radians(-80.0))
    hi_el = min(max(el) + math.radians(el_margin_deg), math.radians(80.0))
    rng = np.random.default_rng(seed)
    base = cameras[0].scaled(scale)
    out = []
    for k in range(count):
        u = (k + rng.random()) / count  # stratified in azimuth, random in elevation
        a = lo_az + u * (hi_az - lo_az)
        e = lo_el + rng.random() * (hi_el - lo_el)
        out.append(
            Camera.look_at(
                frame.target + frame.radius * frame.direction(a, e),
                frame.target,
                frame.up,
                base.K,
                base.width,
                base.height,
                name=f"pseudo_{k:02d}",
            )
        )
    return out


def _half(img: np.ndarray, scale: float) -> Tensor:
    """HxW or HxWxC numpy image resized by ``scale`` (area) as a float32 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    x = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    h, w = max(1, round(t.shape[0] * scale)), max(1, round(t.shape[1] * scale))
    y = F.interpolate(x, size=(h, w), mode="area")
    return y[0, 0] if t.dim() == 2 else y[0].permute(1, 2, 0)


class DiffusionGuidance:
    """Callable ``(step, model) -> loss | None`` for the training loop, plus :meth:`report`."""

    def __init__(
        self,
        repair_model: RepairModel,
        images: list[np.ndarray],
        masks: list[np.ndarray] | None,
        cameras: list[Camera],
        settings: GuidanceSettings,
        iterations: int,
        scene_scale: float = 1.0,
        out_dir: str | Path | None = None,
        seed: int = 0,
        lambda_dssim: float = 0.2,
    ) -> None:
        """``iterations``: the run's training steps (the guidance starts at ``settings.start`` x them and does not
        refresh in the last refresh/2 steps); ``seed`` and ``lambda_dssim`` are the run's."""
        self.repair_model = repair_model
        self.settings = settings
        self.iterations = int(iterations)
        self.start = max(1, int(settings.start * iterations))
        self.seed = int(seed)
        self.lambda_dssim = float(lambda_dssim)
        self.cameras = cameras
        self.scene_scale = scene_scale
        self.out_dir = None if out_dir is None else Path(out_dir)
        s = settings.scale
        self.input_cams = [c.scaled(s) for c in cameras]
        self.clean_inputs = []
        for k, im in enumerate(images):
            m = None if masks is None else _half(masks[k], s)
            img = _half(im, s)
            self.clean_inputs.append(img if m is None else img * m[..., None])
        self.pseudo = pseudo_cameras(
            cameras,
            settings.views,
            scale=s,
            az_margin_deg=settings.az_margin_deg,
            el_margin_deg=settings.el_margin_deg,
            seed=self.seed,
        )
        self.gen = torch.Generator().manual_seed(self.seed)
        self.targets: list[Tensor] = []
        self.weights: list[Tensor] = []
        self.cursor = 0
        self.stats: dict[str, Any] = {
            "finetune_s": 0.0,
            "repair_s": 0.0,
            "loss_s": 0.0,
            "refreshes": 0,
            "loss_terms": 0,
            "tiles_repaired": 0,
            "tiles_total": 0,
            "finetune_loss_first": None,
            "finetune_loss_last": None,
        }
        self.finetuned = False
        self.guide_valid: list[float] = []  # per repaired pseudo view: share of pixels with a valid guide

    # ------------------------------------------------------------------------------------------- stages
    def _finetune(self, model: Any) -> None:
        st = self.settings
        if st.finetune_steps <= 0:
            return
        if not (hasattr(model, "copy") and hasattr(model, "splats")):  # noisy copies need Gaussian parameters
            self.stats["finetune_skipped"] = type(model).__name__
            return
        t = time.perf_counter()
        pairs = PairSet()
        from renderers.gaussians.render import render_cameras

        guided = self.repair_model.uses_guide
        with torch.no_grad():
            for strength in (0.3, 0.6, 0.9):
                noisy = perturb_gaussians(model, strength, self.gen, scene_scale=self.scene_scale)
                outs = render_cameras(noisy, self.input_cams, background=[0.0, 0.0, 0.0], render_mode="RGB+ED")
                sources = self._sources(outs) if guided else []
                for k, (o, clean, cam) in enumerate(zip(outs, self.clean_inputs, self.input_cams)):
                    guide = None
                    if guided:  # the nearest *other* input photo, as a pseudo view would get
                        guide = guide_for_view(o.depth.cpu(), o.alpha.cpu(), cam, sources, exclude=k).numpy()
                    pairs.add(o.rgb.clamp(0, 1).cpu().numpy(), o.alpha.cpu().numpy(), clean.numpy(), guide)
        losses = train_repair(
            self.repair_model,
            pairs,
            st.finetune_steps,
            batch_size=8,
            crop=64,
            lr=st.finetune_lr,
            seed=self.seed,
            object_weight=st.object_weight,
        )
        self.stats["finetune_s"] += time.perf_counter() - t
        self.stats["finetune_pairs"] = len(pairs)
        if losses:
            self.stats["finetune_loss_first"] = float(np.mean(losses[: max(1, len(losses) // 5)]))
            self.stats["finetune_loss_last"] = float(np.mean(losses[-max(1, len(losses) // 5) :]))

    def _sources(self, outs: list[Any]) -> list[GuideSource]:
        """The input photos with the (current or noisy) model's depth rendered at them, for the guide."""
        return sources_from_renders(self.clean_inputs, self.input_cams, outs)

    def refresh(self, model: Any, step: int = 0) -> None:
        """Render every pseudo view, repair its tiles that need it, keep the repaired images as targets.

        The first call fine-tunes the repair model on the scene first (with gradients, hence no decorator)."""
        if not self.finetuned:
            with torch.enable_grad():
                self._finetune(model)
            self.finetuned = True
        with torch.no_grad():
            self._repair_all(model, step)

    def _repair_all(self, model: Any, step: int) -> None:
        st = self.settings
        t = time.perf_counter()
        rm = self.repair_model
        dev = rm.device

        def repair_fn(r: Tensor, a: Tensor, g: Tensor | None) -> Tensor:
            return rm.repair(
                r.to(dev), a.to(dev), steps=st.sample_steps, generator=self.gen, guide=None if g is None else g.to(dev)
            )

        self.targets, self.weights = [], []
        bg = torch.zeros(3, device=model.means.device)
        sources: list[GuideSource] = []
        if rm.uses_guide:
            from renderers.gaussians.render import render_cameras

            sources = self._sources(render_cameras(model, self.input_cams, background=[0.0, 0.0, 0.0]))
        for cam in self.pseudo:
            out = model.render(cam, background=bg, render_mode="RGB+ED" if sources else "RGB")
            rgb, alpha = out.rgb.clamp(0, 1).cpu(), out.alpha.cpu()
            guide = guide_for_view(out.depth.cpu(), alpha, cam, sources) if sources else None
            if guide is not None:
                self.guide_valid.append(float(guide[..., 3].mean()))
            active = tiles_needing_repair(alpha, rgb, st.tile)
            fixed = repair_tiles(rgb, alpha, active, st.tile, repair_fn, guide=guide).cpu()
            weight = tile_mask(active, cam.height, cam.width, st.tile).to(torch.float32)
            self.targets.append(fixed)
            self.weights.append(weight)
            self.stats["tiles_repaired"] += int(active.sum())
            rows, cols = tile_grid(cam.height, cam.width, st.tile)
            self.stats["tiles_total"] += rows * cols
            if st.save_images and self.out_dir is not None:
                from recon.io.images import save_image

                r = self.stats["refreshes"]
                save_image(self.out_dir / f"r{r}_step{step:05d}_{cam.name}_render.png", rgb.numpy())
                save_image(self.out_dir / f"r{r}_step{step:05d}_{cam.name}_repaired.png", fixed.numpy())
                save_image(self.out_dir / f"r{r}_step{step:05d}_{cam.name}_tiles.png", weight.numpy())
        self.stats["refreshes"] += 1
        self.stats["repair_s"] += time.perf_counter() - t

    # ------------------------------------------------------------------------------------------- loss
    def __call__(self, step: int, model: Any) -> Tensor | None:
        st = self.settings
        if step < self.start:
            return None
        due = step == self.start or (step - self.start) % max(1, st.refresh) == 0
        near_end = self.iterations - step < max(1, st.refresh // 2)
        if not self.targets or (due and not near_end):
            self.refresh(model, step)
        if (step - self.start) % max(1, st.every) != 0:
            return None
        t = time.perf_counter()
        k = self.cursor % len(self.pseudo)
        self.cursor += 1
        w = self.weights[k].to(model.means.device)
        if float(w.sum()) == 0.0:
            return None
        target = self.targets[k].to(model.means.device)
        out = model.render(self.pseudo[k], background=torch.zeros(3, device=model.means.device), render_mode="RGB")
        l1 = metrics.l1(out.rgb, target, w)
        smap = metrics.ssim_map(out.rgb, target, padding="reflect")
        smap = smap[0] if smap.dim() == 3 else smap
        dssim = ((1.0 - smap) * w).sum() / w.sum().clamp_min(1.0)
        loss = st.weight * ((1.0 - self.lambda_dssim) * l1 + self.lambda_dssim * dssim)
        self.stats["loss_s"] += time.perf_counter() - t
        self.stats["loss_terms"] += 1
        return loss

    def report(self) -> dict[str, Any]:
        """Counts and timings for metrics.json (seconds rounded)."""
        out = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.stats.items()}
        out.update(
            {
                "pseudo_views": len(self.pseudo),
                "start_step": self.start,
                "sample_steps": self.settings.sample_steps,
                "weight": self.settings.weight,
                "tile": self.settings.tile,
                "repair_model_parameters": self.repair_model.num_parameters,
                "guided": self.repair_model.uses_guide,
                "guide_valid_fraction": round(float(np.mean(self.guide_valid)), 4) if self.guide_valid else None,
                "images": None if self.out_dir is None else self.out_dir.name,
            }
        )
        if out["tiles_total"]:
            out["tiles_repaired_fraction"] = round(out["tiles_repaired"] / out["tiles_total"], 4)
        return out
