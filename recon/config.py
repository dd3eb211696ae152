"""Reconstruction settings as a tree of component configs, and the named presets (trees) built from them.

Each component owns its dataclass and defaults: densification (``renderers.gaussians.strategy.DensifyConfig``),
pose estimation (``recon.poses.config.PoseConfig``), mesh/hybrid (``renderers.mesh.config.MeshConfig``),
neural primitives (``renderers.neural.config.NeuralConfig``), the diffusion prior
(``priors.diffusion.guidance.GuidanceSettings``); the trainer's own parts (initialisation, schedule, losses)
are defined here. Any field can be set by its dotted path (``densify.prune_opa``), from Python
(:func:`make_config`) or the command line (``recon reconstruct ... --set densify.prune_opa=0.01``); the whole
tree is recorded as config.json, and keys an old config.json holds that no field matches are reported.
"""

from __future__ import annotations

import json
import logging
import math
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any

from priors.diffusion.guidance import GuidanceSettings
from priors.stereo import StereoSettings
from recon.poses.config import POSE_METHODS, PoseConfig
from renderers.gaussians.strategy import DensifyConfig
from renderers.mesh.config import MESH_METHODS, MeshConfig
from renderers.neural.config import NeuralConfig

log = logging.getLogger("recon")

PRIORS = ("none", "diffusion")


@dataclass
class InitConfig:
    """Initial Gaussians: ``points`` sampled in the visual hull of the masks (else at random in the volume the
    cameras see), carved on a ``hull_resolution``^3 grid, with opacity ``opacity``."""

    visual_hull: bool = True
    hull_resolution: int = 96
    points: int = 6000
    opacity: float = 0.1
    # without a hull (scene mode): "data" = the input's sparse points, else points in the cameras' frusta between
    # the near and far depths, coloured from their pixels; "random" = uniform in the cameras' box (vanilla 3DGS)
    scene_points: str = "data"
    # object mode: this share of the start points comes from plane-sweep stereo inside the masks and the hull
    # (recon.modes.object_stereo_start) instead of hull samples, and its depths supervise the run
    # (loss.stereo_depth) as in scene mode, where stereo places >= 10% of the masked pixels. 0 = the hull alone.
    # DTU dtu3m (3 nearby views, true masks) 14.77 / 15.58 -> 21.47 / 19.42 dB (0.5: 20.82 / 19.26; 1.0: 21.38 /
    # 19.38), lego 8 views 23.73 -> 24.03; lego 3 views (~5% placed) keeps the hull: 15.57 with it.
    object_stereo: float = 0.75


@dataclass
class TrainConfig:
    """The training schedule: ``coarse_until`` (fraction of the iterations at half resolution; scene mode
    ``scene_coarse_until`` when set), SH degree and how often it rises, random background colours (with masks: the
    object must explain its own alpha), per-parameter learning-rate overrides (``lrs``: names as
    ``renderers.gaussians.model.DEFAULT_LRS``)."""

    # A half-resolution step costs ~40% of a full one (a quarter of the pixels to composite). Measured on the real
    # dev data (benchmarks/results/real_ablations.json; was 0.3): object mode 0.5 lego 8 views 23.47 -> 23.51 dB
    # (0.7: 23.40); scene mode 0.7 DTU dtu3 scan24 / scan37 19.54 / 18.44 -> 19.59 / 18.43 (0.5: 19.56 / 18.42):
    # the full-resolution steps a short sparse-view run needs are its last ones.
    coarse_until: float = 0.5
    scene_coarse_until: float | None = 0.7
    sh_degree: int = 2
    sh_raise_every: int = 250
    random_background: bool = True
    lrs: dict[str, float] = field(default_factory=dict)
    # Gaussian dropout (DropGaussian, CVPR 2025): each step every Gaussian is left out of the render with this
    # probability and the kept ones' opacity is scaled by 1/(1-rate), so no Gaussian can hide behind others that
    # already explain the few input views (sparse-view overfitting); 0 = off. Not used for the final renders.
    dropout: float = 0.0
    # opacity decay (Binocular3DGS): after every step each opacity is multiplied by (1 - rate); what the loss
    # does not keep supporting fades out and is pruned. 0 = off.
    opacity_decay: float = 0.01
    # the rate instead when the run starts from the visual hull alone (object mode where stereo placed too little
    # of the object, e.g. a few views far apart): a hull fills a volume whose inside and excess only the decay
    # empties, as there is no stereo surface to carve free space against. Lego 3 views: 0.01 15.73 / 15.56 dB
    # (seeds 0 / 1), 0.02 16.09 / 16.02, 0.03 16.12 / 15.97, 0.05 16.10. The rate is for 3 views and holds per
    # pass over the views (recon.training.hull_decay: x 3/n above 3 views).
    hull_opacity_decay: float = 0.03
    # co-regularisation (CoR-GS, ECCV 2024; priors.co_regularization): 2 trains a second field beside the first
    # from the same start; each is pulled towards the other's render of pseudo views between the inputs
    # (loss.co_render) and Gaussians with no counterpart in the other field are pruned (co_prune). The first
    # field is the result; training costs about twice as much. 1 = one field.
    co_fields: int = 1
    co_prune: bool = True


@dataclass
class LossConfig:
    """Loss terms: L1 + ``dssim`` x D-SSIM, the object masks (train on the object only, with an alpha loss of
    weight ``mask``), sparse-view regularisers (``priors.regularizers``) and floater pruning outside the hull."""

    dssim: float = 0.2
    use_masks: bool = True
    mask: float = 0.1
    opacity_entropy: float = 0.002
    scale: float = 0.01
    max_scale_ratio: float = 8.0
    # flat discs (priors.regularizers.flatness: smallest / middle scale); when on, max_scale_ratio caps only the
    # in-plane ratio (largest / middle), so discs are free and only needles are capped. 0 = off: measured at
    # 0.01 on the real dev data it changed nothing beyond noise (DTU dtu3 +0.23 / -0.13 / +0.08 dB at seeds 0-2,
    # fern +0.00, lego 8 views -0.01; 1.0: dtu3 +0.08, SSIM -0.01), though the discs it makes (median smallest /
    # middle scale 1:14 against 1:1.75) are what a surface-normal or meshing term would build on.
    flatten: float = 0.0
    # edge-aware smoothness of the rendered depth (RegNeRF / DNGaussian; priors.regularizers.depth_smoothness):
    # measured on the real dev data at 0.05, never lower than without it (DTU dtu3 +0.38 / +0.19 dB at seed 0,
    # +0.19 / +0.01 at seed 1; fern +0.07; lego 8 / 3 views +0.03 / +0.07; generated 3-view track +0.08)
    depth_smooth: float = 0.05
    prune_outside_hull: bool = True
    # scene mode: rendered depth pulled toward the confident plane-sweep stereo depth of the input views
    # (priors.stereo), weighted by its confidence: the stand-in for the monocular depth priors published methods use
    stereo_depth: float = 1.0
    # scene mode: remove Gaussians an input view sees through: nearer than its trusted stereo surface by more
    # than this fraction of the depth (priors.stereo.in_free_space), at every densification step. 0 = off.
    free_space_margin: float = 0.05
    # Binocular3DGS self-supervision: a virtual camera beside the training view (baseline binocular_baseline x
    # the median depth, so ~that fraction of the focal length in disparity) is rendered and warped back through
    # the training view's rendered depth onto its image (priors.regularizers.binocular_consistency). 0 = off.
    binocular: float = 1.0
    binocular_baseline: float = 0.1
    # size of the partner render relative to the training view (1 = same; smaller costs less, sampled bilinearly;
    # 0.5 cost DTU dtu3 0.38 / 0.07 dB on scan24 / scan37)
    binocular_scale: float = 1.0
    # the partner is rendered every this many steps (its weight times this, so the term's total is unchanged);
    # 2 cost DTU scan24 0.27 dB
    binocular_every: int = 1
    # with train.co_fields 2: weight of the pseudo-view agreement between the two fields (L1 + D-SSIM)
    co_render: float = 1.0
    # multi-view photometric consistency: the other input photos warped into the training view through its
    # rendered depth must reproduce its photo (best source per pixel; priors.regularizers.multiview_photometric).
    # Object mode only (recon.modes.scene_config turns it off: on unmasked DTU photos, whose lighting changes
    # between views, it cost 0.4 dB). Off by default: scoring every pixel helped lego (8 views 23.47 -> 23.71,
    # 3 views 15.58 -> 15.76) but grew 40-75% more Gaussians and made the run much slower (lego 8 views 743 s
    # against 410 s beside the same load); scoring 8192 random pixels a step (multiview_pixels) grew as many and
    # cost lego 8 views 1.1 dB (22.34), the generated 3-view track 0.04 dB. 0 = off.
    multiview: float = 0.0
    # pixels the multi-view term scores per step (random; 0 = every pixel)
    multiview_pixels: int = 0
    # surfaces opaque from new directions (priors.novel_views): a camera tilted up to
    # novel_opacity_deg from the training view about the point the inputs look at renders at half size, and
    # pixels a surface partly covers are pulled to full opacity. 0 = off. Object mode leaves it off: a hull-only
    # start's excess volume is what such views see partly covered, and making it opaque cost lego 3 views 2.65 dB.
    novel_opacity: float = 0.0
    # scene mode's novel_opacity when set (recon.modes.scene_config): DTU dtu3 over seeds 0-2 +0.35 / +0.21 / +0.41
    # dB (every step), fern -0.07
    scene_novel_opacity: float | None = 0.5
    novel_opacity_deg: float = 30.0
    # the tilted view is rendered every this many steps (its weight times this, so the term's total is unchanged):
    # every step added half a scene run's time (fern 117 -> 185 s, over the 3-view budget); every 2nd step scored
    # as well (dtu3 20.72 -> 20.70 dB at seed 0, fern 21.40 -> 21.46)
    novel_opacity_every: int = 2


@dataclass
class ReconstructConfig:
    """Everything that decides a reconstruction run; recorded as config.json in the run folder."""

    preset: str = "fast"
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA (gsplat kernels) when available, else the CPU kernels
    iterations: int = 1000
    # > 0: steps scale with the input views: a scene-mode run trains steps_per_view x views, an object-mode run
    # the larger of that and ``iterations``; within STEPS_RANGE, scene mode at most SCENE_MAX_STEPS. An explicit
    # ``iterations`` (--iterations, make_config) turns it off.
    steps_per_view: int = 0
    # object mode with steps_per_view: at least this many steps per view (0 = the scene rule). Masks and the hull
    # keep longer training paying once views are many: lego 8 views 23.29 dB at 1360 steps, 23.73 at 2720, 23.89
    # at 4080; with 3 views the extra steps only overfit (lego 3 views 15.83 at 1000, 15.72 at 1530).
    object_steps_per_view: int = 0
    max_side: int = 400  # images are downscaled so their longest side is at most this
    track: int | None = None  # SpaRe scenes: which track's input views to use (3 or 9)
    # what the run produces: "gaussians" (3DGS), "mesh" (Gaussians -> TSDF/Poisson mesh, rendered as a mesh),
    # "hybrid" (mesh as opaque surface + Gaussians in front of it), "neural" (neural primitives)
    representation: str = "gaussians"
    prior: str = "none"  # "none" or "diffusion" (settings in ``diffusion``)
    mode: str = "auto"  # "auto" (object when the input has masks, else scene), "object" or "scene" (recon.modes)
    init: InitConfig = field(default_factory=InitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    densify: DensifyConfig = field(default_factory=lambda: replace(FAST_DENSIFY))
    poses: PoseConfig = field(default_factory=PoseConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    neural: NeuralConfig = field(default_factory=NeuralConfig)
    diffusion: GuidanceSettings = field(default_factory=GuidanceSettings)
    # the plane-sweep stereo of the input views that starts and supervises scene-mode runs, and object-mode runs
    # where it places enough of the object (priors.stereo, recon.modes)
    stereo: StereoSettings = field(default_factory=StereoSettings)

    def validate(self) -> ReconstructConfig:
        """Raise ValueError naming the option when a field holds an unknown choice or an impossible number."""
        from recon.representations import REPRESENTATIONS  # the one registry (it imports this module)

        choices = {
            "representation": tuple(REPRESENTATIONS),
            "prior": PRIORS,
            "mesh.method": MESH_METHODS,
            "poses.method": POSE_METHODS,
            "mode": ("auto", "object", "scene"),
            "init.scene_points": ("data", "random"),
        }
        for path, allowed in choices.items():
            if get_field(self, path) not in allowed:
                raise ValueError(f"{path} must be one of {', '.join(allowed)}; got {get_field(self, path)!r}")
        for path, low in _MINIMUMS.items():
            value = get_field(self, path)
            if value is None and path in ("densify.max_gaussians", "loss.scene_novel_opacity"):
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < low
            ):
                raise ValueError(f"{path} must be a number >= {low}; got {value!r}")
        for path in _FRACTIONS:
            value = get_field(self, path)
            if value is None and path in (
                "densify.refine_stop_frac",
                "densify.scene_refine_stop_frac",
                "train.scene_coarse_until",
            ):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{path} must be a fraction in [0, 1]; got {value!r}")
        for path in ("train.opacity_decay", "train.hull_opacity_decay"):
            if get_field(self, path) >= 1.0:
                raise ValueError(f"{path} must be below 1; got {get_field(self, path)!r}")
        if self.train.dropout >= 1.0:
            raise ValueError(f"train.dropout must be below 1 (1 drops every Gaussian); got {self.train.dropout!r}")
        if self.train.co_fields not in (1, 2):
            raise ValueError(f"train.co_fields must be 1 or 2; got {self.train.co_fields!r}")
        if self.stereo.slant_deg >= 80:
            raise ValueError(f"stereo.slant_deg must be below 80 degrees; got {self.stereo.slant_deg!r}")
        if self.track not in (None, 3, 9):
            raise ValueError(f"track must be 3 or 9; got {self.track!r}")
        hfov = self.poses.hfov_deg
        if hfov is not None and (isinstance(hfov, bool) or not isinstance(hfov, (int, float)) or not 1 <= hfov <= 170):
            raise ValueError(f"poses.hfov_deg must be a field of view in degrees between 1 and 170; got {hfov!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def for_views(self, n_views: int, scene: bool) -> ReconstructConfig:
        """This config with ``iterations`` fixed for ``n_views`` input views in scene or object mode (see
        ``steps_per_view``)."""
        if self.steps_per_view <= 0:
            return self
        lo, hi = STEPS_RANGE
        steps = self.steps_per_view * max(1, n_views)
        if scene:
            hi = min(hi, SCENE_MAX_STEPS)
        else:
            steps = max(steps, self.iterations, self.object_steps_per_view * max(1, n_views))
        return replace(self, iterations=int(min(hi, max(lo, steps))), steps_per_view=0)

    def steps_label(self) -> str:
        """How many steps the run trains, for progress lines."""
        if self.steps_per_view > 0:
            if self.object_steps_per_view > self.steps_per_view:
                return f"{self.steps_per_view} steps per view, {self.object_steps_per_view} for an object"
            return f"{self.steps_per_view} steps per view"
        return f"{self.iterations} steps"

    @classmethod
    def from_dict(cls, d: dict[str, Any], report: Callable[[str], None] | None = None) -> ReconstructConfig:
        """The config a config.json holds (nested, or the flat layout of older runs). Keys no field matches are
        passed to ``report`` (default: a logged warning) instead of being dropped silently."""
        flat = _flatten(d)
        config = cls()
        unknown = []
        for key, value in flat.items():
            path = _LEGACY.get(key, key)
            try:
                config = set_field(config, path, value)
            except KeyError:
                unknown.append(key)
            except ValueError as exc:
                unknown.append(f"{key} ({exc})")
        if unknown:
            (report or log.warning)(
                f"config.json: {len(unknown)} setting(s) this version does not know were ignored: {', '.join(unknown)}"
            )
        return config


STEPS_RANGE = (300, 3000)  # iterations that steps_per_view may give
# Scene mode's ceiling: its steps cost more (the whole frame drawn, the tilted view, stereo depth), and at 9 views
# 3000 of them took DTU scan24 / scan37 to 425 / 409 s on the 2-core machine (6 minute budget); 2400 took
# 348 / 326 s and scored 27.49 / 24.74 dB against 27.32 / 24.77 (dtu9, seed 0).
SCENE_MAX_STEPS = 2400

# Densification schedule of the CPU default: short sparse-view runs refine early and often; no opacity reset.
FAST_DENSIFY = DensifyConfig(
    refine_start_iter=100,
    refine_stop_frac=0.7,
    # scene mode stops growing at half the run: DTU dtu3 scan24 / scan37 19.42 -> 19.54 / 18.26 -> 18.44 dB (0.48:
    # 19.63 / 18.50, fern 20.52 -> 20.61); 350 steps instead (fewer steps) gave DTU as much but fern -0.25 dB
    scene_refine_stop_frac=0.5,
    refine_every=50,
    reset_every=100000,
    grow_grad2d=0.0002,
    max_gaussians=60000,
)

# Smallest sensible value of numeric fields (smaller ones train nothing or break the image pyramid).
_MINIMUMS: dict[str, float] = {
    "iterations": 1,
    "steps_per_view": 0,
    "object_steps_per_view": 0,
    "max_side": 32,
    "train.sh_degree": 0,
    "train.sh_raise_every": 1,
    "init.hull_resolution": 8,
    "init.points": 1,
    "stereo.max_side": 16,
    "stereo.max_planes": 2,
    "stereo.plane_step_px": 0.05,
    "stereo.window": 3,
    "stereo.min_ncc": -1,
    "stereo.min_texture": 0,
    "stereo.max_reproj_px": 0,
    "stereo.max_rel_depth": 0,
    "stereo.slant_deg": 0,
    "stereo.max_sources": 0,
    "stereo.refine_iters": 0,
    "stereo.geom_iters": 0,
    "init.opacity": 1e-6,
    "loss.dssim": 0,
    "loss.mask": 0,
    "loss.opacity_entropy": 0,
    "loss.scale": 0,
    "loss.max_scale_ratio": 1,
    "loss.flatten": 0,
    "loss.depth_smooth": 0,
    "loss.stereo_depth": 0,
    "loss.binocular": 0,
    "loss.binocular_baseline": 0,
    "loss.binocular_scale": 0.05,
    "loss.binocular_every": 1,
    "loss.co_render": 0,
    "train.co_fields": 1,
    "loss.multiview": 0,
    "loss.multiview_pixels": 0,
    "loss.novel_opacity": 0,
    "loss.scene_novel_opacity": 0,
    "loss.novel_opacity_deg": 0,
    "loss.novel_opacity_every": 1,
    "densify.refine_start_iter": 0,
    "densify.refine_every": 1,
    "densify.reset_every": 1,
    "densify.grow_grad2d": 0,
    "densify.prune_opa": 0,
    "densify.grow_scale3d": 0,
    "densify.prune_scale3d": 0,
    "densify.proximity": 0,
    "densify.proximity_k": 1,
    "densify.max_gaussians": 1,
    "poses.lr": 0,
    "mesh.faces": 4,
    "mesh.hybrid_iterations": 0,
    "mesh.color_steps": 0,
    "neural.feature_dim": 1,
    "neural.hidden": 1,
    "diffusion.refresh": 1,
    "diffusion.views": 1,
    "diffusion.weight": 0,
    "diffusion.every": 1,
    "diffusion.sample_steps": 1,
    "diffusion.finetune_steps": 0,
    "diffusion.tile": 4,
}
_FRACTIONS = (
    "init.object_stereo",
    "train.coarse_until",
    "train.scene_coarse_until",
    "train.dropout",
    "train.opacity_decay",
    "train.hull_opacity_decay",
    "loss.free_space_margin",
    "densify.refine_stop_frac",
    "densify.scene_refine_stop_frac",
    "poses.refine_start",
    "neural.sparsity",
    "neural.prune_start",
    "neural.prune_end",
    "diffusion.start",
)

# Flat names of config.json files written before the tree (old run folders still load).
_LEGACY: dict[str, str] = {
    "coarse_until": "train.coarse_until",
    "sh_degree": "train.sh_degree",
    "sh_raise_every": "train.sh_raise_every",
    "random_background": "train.random_background",
    "lrs": "train.lrs",
    "use_visual_hull": "init.visual_hull",
    "hull_resolution": "init.hull_resolution",
    "init_points": "init.points",
    "init_opacity": "init.opacity",
    "lambda_dssim": "loss.dssim",
    "use_masks": "loss.use_masks",
    "lambda_mask": "loss.mask",
    "lambda_opacity_entropy": "loss.opacity_entropy",
    "lambda_scale": "loss.scale",
    "max_scale_ratio": "loss.max_scale_ratio",
    "lambda_depth_smooth": "loss.depth_smooth",
    "prune_outside_hull": "loss.prune_outside_hull",
    "refine_start": "densify.refine_start_iter",
    "refine_stop_frac": "densify.refine_stop_frac",
    "refine_every": "densify.refine_every",
    "reset_every": "densify.reset_every",
    "grow_grad2d": "densify.grow_grad2d",
    "max_gaussians": "densify.max_gaussians",
    "poses": "poses.method",
    "pose_refine": "poses.refine",
    "pose_lr": "poses.lr",
    "pose_refine_start": "poses.refine_start",
    "mesh_method": "mesh.method",
    "mesh_faces": "mesh.faces",
    "hybrid_iterations": "mesh.hybrid_iterations",
    "mesh_color_steps": "mesh.color_steps",
    "hybrid_depth_tolerance": "mesh.hybrid_depth_tolerance",
    "hybrid_min_weight": "mesh.hybrid_min_weight",
    "neural_feature_dim": "neural.feature_dim",
    "neural_hidden": "neural.hidden",
    "neural_sparsity": "neural.sparsity",
    "neural_prune_start": "neural.prune_start",
    "neural_prune_end": "neural.prune_end",
    "prior_weights": "diffusion.weights",
    "prior_start": "diffusion.start",
    "prior_refresh": "diffusion.refresh",
    "prior_views": "diffusion.views",
    "prior_weight": "diffusion.weight",
    "prior_every": "diffusion.every",
    "prior_sample_steps": "diffusion.sample_steps",
    "prior_finetune_steps": "diffusion.finetune_steps",
    "prior_tile": "diffusion.tile",
}


# ----------------------------------------------------------------------------- dotted-path access
def field_paths(config: Any, prefix: str = "") -> list[str]:
    """Every settable dotted path of a config tree (``iterations``, ``densify.prune_opa``, ...)."""
    out = []
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            out += field_paths(value, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def get_field(config: Any, path: str) -> Any:
    """The value at a dotted path; KeyError naming the path when there is none."""
    node = config
    for part in path.split("."):
        if not is_dataclass(node) or part not in {f.name for f in fields(node)}:
            raise KeyError(path)
        node = getattr(node, part)
    return node


def set_field(config: Any, path: str, value: Any, _prefix: str = "") -> Any:
    """A copy of the tree with ``path`` set to ``value`` (strings are parsed by the field's type); KeyError for
    an unknown path, ValueError for a value the field's type cannot hold."""
    head, _, rest = path.partition(".")
    by_name = {f.name: f for f in fields(config)} if is_dataclass(config) else {}
    full = _prefix + path
    if head not in by_name:
        raise KeyError(full)
    current = getattr(config, head)
    if rest:
        if not is_dataclass(current):
            raise KeyError(full)
        return replace(config, **{head: set_field(current, rest, value, f"{_prefix}{head}.")})
    if is_dataclass(current):
        if not isinstance(value, dict):
            raise ValueError(f"{full} is a group of settings; set its fields ({full}.<name>)")
        for k, v in value.items():
            current = set_field(current, k, v, f"{full}.")
        return replace(config, **{head: current})
    hint = typing.get_type_hints(type(config))[head]
    return replace(config, **{head: _coerce(value, hint, full)})


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """``value`` (a Python value or a command-line string) as the type ``hint`` wants."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in [a for a in args if a is not type(None)]:
            try:
                return _coerce(value, arg, path)
            except ValueError:
                continue
        raise ValueError(f"{path}: cannot use {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ValueError(f"{path} takes true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError(f"{path} takes a whole number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path} takes a whole number, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ValueError(f"{path} takes a whole number, got {value!r}")
        return int(f)
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"{path} takes a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path} takes a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{path} takes text, got {value!r}")
        return value
    if origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"{path} takes a JSON object, e.g. '{{\"means\": 1e-4}}'") from None
        if not isinstance(value, dict):
            raise ValueError(f"{path} takes a JSON object, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
    raise ValueError(f"{path}: unsupported setting type {hint!r}")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys; ``lrs`` (a dict-valued field) stays whole."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "lrs" and not (prefix == "train." and k == "lrs"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


# ----------------------------------------------------------------------------- presets
def _tree(**paths: Any) -> ReconstructConfig:
    config = ReconstructConfig()
    for key, value in paths.items():
        config = set_field(config, key.replace("__", "."), value)
    return config


PRESETS: dict[str, ReconstructConfig] = {
    # 340 steps per input view in both modes: 8 object views train 2720 (lego 8 views +0.42 dB over 1360 at twice
    # the time), 3 views 1020. Scene mode kept 170 a view while more steps only grew floaters (DTU dtu3 16.52 dB
    # at 1000 steps vs 17.15 at 500; with binocular consistency and free-space pruning scan24 19.23 vs 19.43);
    # since stereo depth supervises most of a scene at full size, the extra steps pay there too: DTU dtu3 over
    # seeds 0-2 20.12 -> 20.25 dB (scan24 +0.42, scan37 -0.17), SSIM up on all six runs; fern 21.11 -> 21.43.
    "fast": _tree(preset="fast", steps_per_view=340),
    "quality": _tree(
        preset="quality",
        iterations=7000,
        max_side=800,
        train__sh_degree=3,
        train__sh_raise_every=1000,
        init__hull_resolution=128,
        init__points=20000,
        densify__refine_start_iter=500,
        densify__refine_every=100,
        densify__reset_every=3000,
        densify__max_gaussians=300000,
        # long GPU runs: the schedule the half-resolution measurements (CPU fast preset) did not cover
        train__coarse_until=0.3,
        train__scene_coarse_until=None,
    ),
    # Vanilla 3DGS on the same code: no hull (random init in the camera-visible box), no masks, no priors.
    "plain": _tree(
        preset="plain",
        init__visual_hull=False,
        init__scene_points="random",
        loss__use_masks=False,
        train__random_background=False,
        loss__mask=0.0,
        loss__opacity_entropy=0.0,
        loss__scale=0.0,
        loss__depth_smooth=0.0,
        loss__stereo_depth=0.0,
        loss__free_space_margin=0.0,
        loss__binocular=0.0,
        train__opacity_decay=0.0,
        train__hull_opacity_decay=0.0,
        loss__prune_outside_hull=False,
        densify__scene_refine_stop_frac=None,
        train__coarse_until=0.3,
        train__scene_coarse_until=None,
        loss__multiview=0.0,
        loss__scene_novel_opacity=None,
    ),
}


def make_config(preset: str = "fast", settings: dict[str, Any] | None = None, **overrides: Any) -> ReconstructConfig:
    """The named preset with overrides applied: ``overrides`` by top-level name or dotted path
    (``make_config("fast", iterations=60, **{"densify.prune_opa": 0.01})``; None values are skipped) and
    ``settings`` as ``{"path": value}`` (values may be strings, parsed by the field's type).
    Unknown names or impossible values raise ValueError."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    config = PRESETS[preset]
    given = [*((k, v) for k, v in overrides.items() if v is not None), *(settings or {}).items()]
    if any(k == "iterations" for k, _ in given) and not any(k == "steps_per_view" for k, _ in given):
        config = replace(config, steps_per_view=0)  # an explicit number of steps wins over the per-view rule
    for path, value in given:
        try:
            config = set_field(config, path, value)
        except KeyError:
            raise ValueError(f"unknown setting {path!r} (`recon settings` lists them all)") from None
    return config.validate()


def parse_settings(items: list[str]) -> dict[str, str]:
    """``["densify.prune_opa=0.01", ...]`` -> ``{"densify.prune_opa": "0.01"}``; ValueError when malformed."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set takes PATH=VALUE (e.g. densify.prune_opa=0.01), got {item!r}")
        out[key.strip()] = value.strip()
    return out
