"""One Gaussian field's optimisation against the input views, split into `losses` and `update` so that two
fields can train side by side (:class:`CoTraining`, ``priors.co_regularization``) with extra loss terms added
between the two halves of a step. ``recon.pipeline.train`` drives one or two of these."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from recon import metrics
from recon.cameras import Camera
from recon.config import ReconstructConfig
from recon.io.types import ViewSet
from recon.rig import look_at_point

if TYPE_CHECKING:
    from recon.pipeline import Initialisation
    from renderers.types import TrainableSplats


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    pruned_floaters: int = 0
    cameras: list[Camera] | None = None  # photometrically refined cameras (when pose refinement ran)
    pose_correction_deg: list[float] | None = None
    co_pruned: int = 0  # Gaussians removed by co-pruning (two fields trained together)
    unpooled: int = 0  # Gaussians added by proximity-guided unpooling (densify.proximity)
    undrawn_pruned: int = 0  # Gaussians removed at the end because no view draws them (opacity < 1/255)


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; anything else as torch understands it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def half_resolution(t: torch.Tensor) -> torch.Tensor:
    """Half-resolution image/mask by 2x2 average pooling (HxW or HxWxC)."""
    x = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    y = torch.nn.functional.avg_pool2d(x, 2, ceil_mode=False)
    return y[0, 0] if t.dim() == 2 else y[0].permute(1, 2, 0)


def data_background(views: ViewSet) -> tuple[float, float, float]:
    """The colour the input photos were composited on when the data records one (Blender scenes: white), else
    black. Scene mode trains and renders over it, as vanilla 3DGS's ``--white_background`` on NeRF-synthetic
    data: a known background then costs nothing, where over black it had to be painted by a fog of Gaussians in
    front of the cameras that hides the object from every other view (plain lego 8 views: 11.2 dB)."""
    try:
        rgb = tuple(float(v) for v in np.asarray(views.meta.get("background"), dtype=np.float64).reshape(3))
    except (TypeError, ValueError):
        return (0.0, 0.0, 0.0)
    if not all(0.0 <= v <= 1.0 for v in rgb):
        return (0.0, 0.0, 0.0)
    return rgb  # type: ignore[return-value]


def _targets(
    views: ViewSet, masks: list[np.ndarray] | None, use_masks: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    images = [torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32)) for im in views.images]
    if not use_masks or masks is None:
        return images, None
    return images, [torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)) for m in masks]


@dataclass
class StepOutput:
    """What :meth:`FieldTrainer.losses` computed for one step: the loss so far, the render and its target."""

    loss: torch.Tensor
    out: Any
    target: torch.Tensor
    background: torch.Tensor


# views at which train.hull_opacity_decay is the per-step rate (lego's 3, where it was measured)
HULL_DECAY_VIEWS = 3


def hull_decay(config: ReconstructConfig, n_views: int) -> float:
    """Per-step opacity decay of a run started from the visual hull alone: ``train.hull_opacity_decay`` at up to
    ``HULL_DECAY_VIEWS`` views, scaled by 3 / n above, so the decay per pass over the views stays the same: a
    Gaussian that one view needs is supported once a pass. Hull-only lego 8 views: 22.33 dB at the full 3%, 23.65
    at 3 / 8 of it, 23.73 at 1%."""
    return config.train.hull_opacity_decay * min(1.0, HULL_DECAY_VIEWS / max(1, n_views))


class FieldTrainer:
    """The optimisation state of one Gaussian field (optimisers, densification, pose corrections, targets).

    A step is ``losses(step)`` (render a training view, every configured loss term), then any extra terms added
    to its ``loss``, then ``update(step, output)`` (backward, optimiser steps, densification, floater pruning).
    ``seed`` drives this field's view order, backgrounds and regulariser sampling.
    """

    def __init__(
        self,
        init: Initialisation,
        views: ViewSet,
        cameras: list[Camera],
        masks: list[np.ndarray] | None,
        config: ReconstructConfig,
        seed: int,
        refine_poses: bool = False,
    ) -> None:
        from renderers.gaussians.model import means_lr_scheduler
        from renderers.gaussians.strategy import DensifyStrategy

        self.config = config
        self.init = init
        self.cameras = cameras
        self.gen = torch.Generator().manual_seed(seed)
        self.device = device = resolve_device(config.device)
        self.model: TrainableSplats = init.model.to(device)
        images, tmasks = _targets(views, masks, config.loss.use_masks)
        self.images = [im.to(device) for im in images]
        self.tmasks = None if tmasks is None else [m.to(device) for m in tmasks]
        self.half_images = [half_resolution(im) for im in self.images]
        self.half_masks = None if self.tmasks is None else [half_resolution(m) for m in self.tmasks]
        self.half_cams = [c.resized(c.width // 2, c.height // 2) for c in cameras]
        self.optimizers = self.model.make_optimizers(config.train.lrs or None, scene_scale=init.scene_scale)
        # a start from the visual hull alone fills a volume that only the decay empties (no stereo surface to
        # carve free space against), so it decays faster (train.hull_opacity_decay)
        self.opacity_decay = hull_decay(config, len(cameras)) if init.hull_only else config.train.opacity_decay
        # 100x decay of the means' learning rate over the run (3DGS)
        self.means_schedule = means_lr_scheduler(self.optimizers, max_steps=config.iterations)
        densify = config.densify
        if densify.refine_stop_frac is not None:
            densify = replace(densify, refine_stop_iter=int(densify.refine_stop_frac * config.iterations))
        self.densify = densify
        self.strategy = DensifyStrategy(densify, scene_scale=init.scene_scale, seed=seed)
        self.raster_kwargs = {"absgrad": True} if densify.absgrad else {}
        self.pose_opt = None
        if refine_poses:
            from recon.poses.refine import PoseCorrection

            self.pose_opt = PoseCorrection(cameras, device=device)
            self.pose_adam = torch.optim.Adam(self.pose_opt.param_groups(config.poses.lr))
            self.pose_start = int(config.poses.refine_start * config.iterations)
            self.Ks_full = torch.tensor(np.stack([c.K for c in cameras]), dtype=torch.float32, device=device)
            self.Ks_half = torch.tensor(np.stack([c.K for c in self.half_cams]), dtype=torch.float32, device=device)
        self.stereo = None
        if init.stereo is not None and config.loss.stereo_depth > 0:
            self.stereo = [
                (torch.from_numpy(sd.depth).to(device), torch.from_numpy(sd.confidence).to(device))
                for sd in init.stereo
            ]
        self.view_tensors = {  # (K, viewmat) of each input camera at full size (False) and coarse half size (True)
            half: [
                (
                    torch.as_tensor(c.K, dtype=torch.float32, device=device),
                    torch.as_tensor(c.viewmat, dtype=torch.float32, device=device),
                )
                for c in (self.half_cams if half else cameras)
            ]
            for half in (False, True)
        }
        self.n_views = len(self.images)
        self.look_at = look_at_point(cameras)  # what the tilted views of loss.novel_opacity turn about
        self.order: list[int] = []
        self.coarse_steps = int(config.train.coarse_until * config.iterations)
        # without random backgrounds: black where masks are used, else the data's own background (data_background)
        self.fixed_bg = torch.tensor(
            (0.0, 0.0, 0.0) if config.loss.use_masks and self.tmasks is not None else data_background(views),
            device=device,
        )
        self.result = TrainResult()

    def losses(self, step: int) -> StepOutput:
        """Render this step's training view and sum every configured loss term (nothing is stepped yet)."""
        from priors import regularizers as reg

        config, model, gen = self.config, self.model, self.gen
        if not self.order:
            self.order = torch.randperm(self.n_views, generator=gen).tolist()
        i = self.order.pop()
        coarse = step <= self.coarse_steps
        cam = self.half_cams[i] if coarse else self.cameras[i]
        gt = self.half_images[i] if coarse else self.images[i]
        mask = None if self.tmasks is None else (self.half_masks[i] if coarse else self.tmasks[i])  # type: ignore[index]
        model.active_sh_degree = min(config.train.sh_degree, step // max(1, config.train.sh_raise_every))
        bg = (
            reg.random_background(generator=gen, device=self.device)
            if config.train.random_background
            else self.fixed_bg
        )
        step_kwargs = dict(self.raster_kwargs)
        if config.train.dropout > 0:
            step_kwargs["opacity_scale"] = reg.dropout_scale(
                model.num_gaussians, config.train.dropout, gen, self.device
            )
        pose_opt = self.pose_opt
        if pose_opt is not None:
            Kt = pose_opt.scale_K((self.Ks_half if coarse else self.Ks_full)[i])
            out = model.render(
                (pose_opt.viewmats(i), Kt),
                width=cam.width,
                height=cam.height,
                background=bg,
                render_mode="RGB+ED",
                **step_kwargs,
            )[0]
        else:
            out = model.render(cam, background=bg, render_mode="RGB+ED", **step_kwargs)
        target = gt if mask is None else reg.composite(gt * mask[..., None], mask, bg)
        self.strategy.step_pre_backward(out.meta)
        loss = metrics.rgb_loss(out.rgb, target, lambda_dssim=config.loss.dssim)
        if mask is not None and config.loss.mask > 0:
            loss = loss + config.loss.mask * reg.alpha_mask_loss(out.alpha, mask)
        if config.loss.opacity_entropy > 0:
            loss = loss + config.loss.opacity_entropy * reg.opacity_entropy(model.opacities)
        if config.loss.scale > 0:
            loss = loss + config.loss.scale * reg.scale_regularizer(
                model.splats["scales"], max_ratio=config.loss.max_scale_ratio, in_plane=config.loss.flatten > 0
            )
        if config.loss.flatten > 0:
            loss = loss + config.loss.flatten * reg.flatness(model.splats["scales"])
        if config.loss.depth_smooth > 0 and out.depth is not None:
            loss = loss + config.loss.depth_smooth * reg.depth_smoothness(out.depth, gt, out.alpha)
        if self.stereo is not None and out.depth is not None:
            loss = loss + config.loss.stereo_depth * reg.stereo_depth_loss(out.depth, *self.stereo[i])
        # this step's camera as tensors (refined when poses are refined) for the terms that warp through depth
        K_i, vm_i = (Kt, pose_opt.viewmats(i)) if pose_opt is not None else self.view_tensors[coarse][i]
        every = config.loss.binocular_every
        if config.loss.binocular > 0 and out.depth is not None and step % every == 0:
            baseline = reg.binocular_shift(out.depth, out.alpha, config.loss.binocular_baseline, gen)
            partner_cam, pw, ph = reg.binocular_partner(
                vm_i, K_i, baseline, cam.width, cam.height, config.loss.binocular_scale
            )
            partner = model.render(partner_cam, width=pw, height=ph, background=bg, render_mode="RGB", **step_kwargs)[0]
            fx = float(K_i.reshape(-1, 3, 3)[0, 0, 0])
            loss = loss + config.loss.binocular * every * reg.binocular_consistency(
                out.depth, out.alpha, partner.rgb, target, fx, baseline
            )
        if config.loss.multiview > 0 and out.depth is not None and self.n_views > 1:
            if pose_opt is not None:
                sources = [
                    (self.images[j], pose_opt.scale_K(self.Ks_full[j]), pose_opt.viewmats(j))
                    for j in range(self.n_views)
                    if j != i
                ]
            else:
                sources = [(self.images[j], *self.view_tensors[False][j]) for j in range(self.n_views) if j != i]
            loss = loss + config.loss.multiview * reg.multiview_photometric(
                out.depth, out.alpha, gt, K_i, vm_i, sources, pixels=config.loss.multiview_pixels, generator=gen
            )
        tilt_every = config.loss.novel_opacity_every
        if config.loss.novel_opacity > 0 and step % tilt_every == 0:
            from priors.novel_views import opacity_completeness, tilted_camera

            tilted = tilted_camera(self.half_cams[i], self.look_at, config.loss.novel_opacity_deg, gen)
            far = model.render(tilted, background=bg, render_mode="RGB", **step_kwargs)
            loss = loss + config.loss.novel_opacity * tilt_every * opacity_completeness(far.alpha)
        return StepOutput(loss=loss, out=out, target=target, background=bg)

    def update(self, step: int, output: StepOutput) -> dict[str, float] | None:
        """Backward ``output.loss``, step the optimisers, densify and prune floaters; every 10th step (and the
        last) the history record it appended."""
        from priors import regularizers as reg
        from priors.visual_hull import floater_mask

        config, model, init = self.config, self.model, self.init
        output.loss.backward()
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if self.pose_opt is not None:
            if step > self.pose_start:
                self.pose_adam.step()
            self.pose_adam.zero_grad(set_to_none=True)
        self.means_schedule.step()
        reg.decay_opacities(model.splats["opacities"], self.opacity_decay)
        self.strategy.step_post_backward(step, output.out.meta, model, self.optimizers)
        if step >= config.densify.refine_start_iter and step % config.densify.refine_every == 0:
            floaters = None  # object mode prunes outside the hull (even with stereo depth), scene mode in free space
            if init.hull is not None and config.loss.prune_outside_hull:
                with torch.no_grad():
                    floaters = floater_mask(
                        model.means.detach(), init.hull, self.cameras, min_views=min(2, self.n_views)
                    )
            elif init.stereo and config.loss.free_space_margin > 0:
                from priors.stereo import in_free_space

                means = model.means.detach().cpu().numpy()
                free = in_free_space(means, init.stereo, config.loss.free_space_margin)
                floaters = torch.from_numpy(free).to(self.device)
            if floaters is not None and bool(floaters.any()) and int((~floaters).sum()) > 0:
                self.result.pruned_floaters += self.strategy.prune_mask(model, floaters, self.optimizers)
        if step % 10 == 0 or step == config.iterations:
            with torch.no_grad():
                psnr_v = float(metrics.psnr(output.out.rgb.detach().clamp(0, 1), output.target))
            rec = {"step": step, "loss": float(output.loss.detach()), "psnr": psnr_v, "gaussians": model.num_gaussians}
            self.result.history.append(rec)
            return rec
        return None

    def finish(self, seconds: float) -> TrainResult:
        """The run's result: history, timing and (when refined) the corrected cameras.

        Gaussians no view can draw any more (opacity under 1/255, left by the opacity decay: about half of a
        real-data run's) are removed here, so the saved model and the viewer carry only what renders; the
        renders stay the same."""
        undrawn = self.model.undrawn()
        if undrawn is not None and bool(undrawn.any()) and not bool(undrawn.all()):
            self.result.undrawn_pruned = self.strategy.prune_mask(self.model, undrawn, self.optimizers)
        self.result.seconds = seconds
        self.result.unpooled = self.strategy.unpooled
        if self.pose_opt is not None:
            self.result.cameras = self.pose_opt.cameras(self.cameras)
            self.result.pose_correction_deg = [float(x) for x in self.pose_opt.magnitudes()[0]]
        return self.result


class CoTraining:
    """The second field of a co-regularised run (CoR-GS) and the terms that tie it to the first: from
    ``START`` x the steps on, both render a pseudo view between two inputs each step and each is pulled
    towards the other's render (``loss.co_render``); at each densification step until growth stops, Gaussians of
    either field with no counterpart in the other are pruned (``train.co_prune``)."""

    START = 0.2  # fraction of the run before the pseudo-view term starts (the fields first need a shape)

    def __init__(
        self,
        first: FieldTrainer,
        init: Initialisation,
        views: ViewSet,
        cameras: list[Camera],
        masks: list[np.ndarray] | None,
        config: ReconstructConfig,
        refine_poses: bool,
    ) -> None:
        model = init.model.copy() if hasattr(init.model, "copy") else copy.deepcopy(init.model)
        self.first = first
        self.second = FieldTrainer(
            replace(init, model=model), views, cameras, masks, config, seed=config.seed + 1, refine_poses=refine_poses
        )
        self.cameras = cameras
        self.config = config
        self.gen = torch.Generator().manual_seed(config.seed + 2)
        self.start = int(self.START * config.iterations)
        self.pruned = 0

    def step(self, step: int, main: StepOutput) -> None:
        """The second field's step (losses and update) and the pseudo-view term added to ``main.loss``."""
        from priors.co_regularization import co_render_loss, pseudo_camera

        other = self.second.losses(step)
        weight = self.config.loss.co_render
        if weight > 0 and step > self.start:
            cam = pseudo_camera(self.cameras, self.gen)
            bg = main.background
            a = self.first.model.render(cam, background=bg, render_mode="RGB").rgb
            b = self.second.model.render(cam, background=bg, render_mode="RGB").rgb
            dssim = self.config.loss.dssim
            main.loss = main.loss + weight * co_render_loss(a, b, dssim)
            other.loss = other.loss + weight * co_render_loss(b, a, dssim)
        self.second.update(step, other)

    def after_update(self, step: int) -> None:
        """Co-pruning at the densification steps while the fields still grow."""
        from priors.co_regularization import unmatched

        d = self.first.densify
        if not self.config.train.co_prune or step < d.refine_start_iter or step > d.refine_stop_iter:
            return
        if step % d.refine_every != 0:
            return
        a, b = self.first, self.second
        drop_a = unmatched(a.model.means, a.model.scales, b.model.means)
        drop_b = unmatched(b.model.means, b.model.scales, a.model.means)
        for trainer, drop in ((a, drop_a), (b, drop_b)):
            if bool(drop.any()) and int((~drop).sum()) > 0:
                n = trainer.strategy.prune_mask(trainer.model, drop, trainer.optimizers)
                if trainer is a:
                    self.pruned += n
