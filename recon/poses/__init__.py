"""Pose estimation for unposed sparse views: features, matching, incremental SfM, bundle adjustment,
normalisation, pycolmap comparison, and photometric refinement during training (refine.py)."""

from recon.poses.align import (
    Similarity,
    align_cameras,
    pose_errors,
    transform_camera,
    umeyama,
)
from recon.poses.estimate import estimate_poses
from recon.poses.result import PoseResult

__all__ = ["PoseResult", "Similarity", "align_cameras", "estimate_poses", "pose_errors", "transform_camera", "umeyama"]
