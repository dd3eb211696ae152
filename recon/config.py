"""Reconstruction settings and the named presets (`fast` for CPUs, `quality` for GPUs, `plain` = vanilla 3DGS)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


REPRESENTATIONS = ("gaussians", "mesh", "hybrid", "neural")
PRIORS = ("none", "diffusion")


@dataclass
class ReconstructConfig:
    """Everything that decides a reconstruction run; recorded as config.json in the run folder."""

    preset: str = "fast"
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA (gsplat kernels) when available, else the CPU kernels
    iterations: int = 1000
    max_side: int = 400  # images are downscaled so their longest side is at most this
    coarse_until: float = 0.3  # fraction of iterations trained at half resolution (cheap early steps)
    sh_degree: int = 2
    sh_raise_every: int = 250
    # initialisation
    use_visual_hull: bool = True
    hull_resolution: int = 96
    init_points: int = 6000
    init_opacity: float = 0.1
    # losses
    lambda_dssim: float = 0.2
    use_masks: bool = True  # train on the object only, with an alpha/mask loss
    lambda_mask: float = 0.1
    random_background: bool = True
    lambda_opacity_entropy: float = 0.002
    lambda_scale: float = 0.01
    max_scale_ratio: float = 8.0
    lambda_depth_smooth: float = 0.0
    # floater elimination (needs the hull)
    prune_outside_hull: bool = True
    # densification (gsplat DefaultStrategy-like)
    refine_start: int = 100
    refine_stop_frac: float = 0.7
    refine_every: int = 50
    reset_every: int = 100000  # opacity reset is harmful for short sparse-view runs; off by default
    grow_grad2d: float = 0.0002
    max_gaussians: int = 60000
    lrs: dict[str, float] = field(default_factory=dict)
    # poses for unposed image folders: "auto" (recon.poses SfM) or "colmap" (pycolmap); photometric refinement
    # of estimated poses during training (per-camera SE(3) corrections, zero-initialised)
    poses: str = "auto"
    pose_refine: bool = True
    pose_lr: float = 2e-4
    pose_refine_start: float = 0.1  # fraction of iterations before the corrections start moving
    # SpaRe scenes: which track's input views to use (3 or 9)
    track: int | None = None
    # what the run produces: "gaussians" (3DGS), "mesh" (Gaussians -> TSDF/Poisson mesh, rendered as a mesh),
    # "hybrid" (mesh as opaque surface + Gaussians in front of it), "neural" (neural primitives)
    representation: str = "gaussians"
    # ---- mesh / hybrid (renderers/mesh) ----
    mesh_method: str = "tsdf"  # "tsdf" (fused depth renders) or "poisson" (oriented points)
    mesh_faces: int = 50000  # decimation target
    hybrid_iterations: int = 150  # fine-tuning steps of the Gaussians (and mesh colours) in front of the mesh
    mesh_color_steps: int = 0  # Adam (L1) steps after the least-squares vertex-colour fit to the input views
    hybrid_depth_tolerance: float = 0.3  # x scene scale: Gaussians this far behind the mesh surface still show
    hybrid_min_weight: float = 1.0  # prune Gaussians adding < this many pixels' worth to every input/orbit view
    # ---- neural primitives (renderers/neural) ----
    neural_feature_dim: int = 8  # per-primitive features (11 + F floats per primitive vs 38 for SH degree 2)
    neural_hidden: int = 64  # decoder MLP width (2 hidden layers)
    neural_sparsity: float = 0.9  # target sparsity of the decoder's hidden layers (gradual magnitude pruning)
    neural_prune_start: float = 0.2  # fractions of the iterations where pruning starts / reaches the target
    neural_prune_end: float = 0.7
    # ---- diffusion prior (priors/diffusion) ----
    prior: str = "none"  # "none" or "diffusion"
    prior_weights: str | None = None  # local folder of a repair model (save_pretrained layout); None = bundled
    prior_start: float = 0.7  # fraction of iterations before pseudo views are repaired and supervised (0.5: worse)
    prior_refresh: int = 50  # steps between re-rendering + re-repairing (stale targets anchor training; 200: worse)
    prior_views: int = 8  # pseudo views around the inputs
    prior_weight: float = 0.2  # weight of the pseudo-view loss (L1 + D-SSIM on repaired tiles)
    prior_every: int = 2  # apply the pseudo-view loss every this many steps (one pseudo view each time)
    prior_sample_steps: int = 1  # DDIM steps per repair (1 = single-step x0 prediction: measured better)
    prior_finetune_steps: int = 40  # per-scene fine-tuning steps on noisy-Gaussian pairs of the input views (0 = off)
    prior_tile: int = 32  # repair tile size in pixels of the half-resolution pseudo views

    def validate(self) -> "ReconstructConfig":
        """Raise ValueError naming the option when a field holds an unknown choice or an impossible number."""
        choices = {"representation": REPRESENTATIONS, "prior": PRIORS, "mesh_method": ("tsdf", "poisson"),
                   "poses": ("auto", "colmap")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        for name, low in _MINIMUMS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
                raise ValueError(f"{name} must be a number >= {low}; got {value!r}")
        for name in _FRACTIONS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1]; got {value!r}")
        if self.track not in (None, 3, 9):
            raise ValueError(f"track must be 3 or 9; got {self.track!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReconstructConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# Smallest sensible value of numeric fields (smaller ones train nothing or break the image pyramid).
_MINIMUMS: dict[str, float] = {
    "iterations": 1, "max_side": 32, "sh_degree": 0, "sh_raise_every": 1, "hull_resolution": 8, "init_points": 1,
    "init_opacity": 1e-6, "lambda_dssim": 0, "lambda_mask": 0, "lambda_opacity_entropy": 0, "lambda_scale": 0,
    "max_scale_ratio": 1, "lambda_depth_smooth": 0, "refine_start": 0, "refine_every": 1, "reset_every": 1,
    "grow_grad2d": 0, "max_gaussians": 1, "pose_lr": 0, "mesh_faces": 4, "hybrid_iterations": 0,
    "mesh_color_steps": 0, "neural_feature_dim": 1, "neural_hidden": 1, "prior_refresh": 1, "prior_views": 1,
    "prior_weight": 0, "prior_every": 1, "prior_sample_steps": 1, "prior_finetune_steps": 0, "prior_tile": 4,
}
_FRACTIONS = ("coarse_until", "refine_stop_frac", "pose_refine_start", "neural_sparsity", "neural_prune_start",
              "neural_prune_end", "prior_start")


PRESETS: dict[str, ReconstructConfig] = {
    "fast": ReconstructConfig(preset="fast"),
    "quality": ReconstructConfig(
        preset="quality",
        iterations=7000,
        max_side=800,
        sh_degree=3,
        sh_raise_every=1000,
        hull_resolution=128,
        init_points=20000,
        refine_start=500,
        refine_every=100,
        reset_every=3000,
        max_gaussians=300000,
    ),
    # Vanilla 3DGS on the same code: no hull (random init in the camera-visible box), no masks, no priors.
    "plain": ReconstructConfig(
        preset="plain",
        use_visual_hull=False,
        use_masks=False,
        random_background=False,
        lambda_mask=0.0,
        lambda_opacity_entropy=0.0,
        lambda_scale=0.0,
        lambda_depth_smooth=0.0,
        prune_outside_hull=False,
    ),
}


def make_config(preset: str = "fast", **overrides: Any) -> ReconstructConfig:
    """The named preset with ``overrides`` applied (unknown names raise ValueError)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    names = {f.name for f in fields(ReconstructConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown config options: {sorted(unknown)}")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}).validate()
