"""Priors: what guides optimisation where views are missing.

masks        foreground masks from alpha / mask files / automatic OpenCV segmentation
segmentation automatic segmenters (salient U^2-Net-p via onnxruntime, OpenCV) with a per-view confidence
visual_hull  voxel-carved visual hull: initial points and colours, floater removal
regularizers differentiable sparse-view losses (depth smoothness, opacity entropy, scales, alpha/mask, background)
diffusion/   the diffusion repair model

Submodules are imported explicitly (``from priors.visual_hull import carve_visual_hull``) so importing one
does not pull in the others' dependencies.
"""
