"""Object mode with stereo: start points where stereo is confident inside the masks and hull, depths for the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recon.config import make_config


def _start(tiny_scene: Path, share: float):  # type: ignore[no-untyped-def]
    from recon.pipeline import initialise, load_inputs, object_masks, require_poses

    config = make_config(
        "fast", track=3, settings={"init.points": 1000, "init.hull_resolution": 40, "init.object_stereo": str(share)}
    )
    views = load_inputs(tiny_scene, config)
    cameras = require_poses(views)
    masks = object_masks(views)
    return initialise(views, cameras, masks, config), masks


def test_object_stereo_replaces_hull_samples_and_trusts_only_the_masks(tiny_scene: Path) -> None:
    import cv2

    init, masks = _start(tiny_scene, 0.5)
    assert init.hull is not None and init.stereo is not None
    assert init.model.num_gaussians == 1000
    assert bool(init.hull.contains(init.model.means.detach()).all())
    trusted = 0
    for sd, mask in zip(init.stereo, masks):
        m = cv2.resize(
            np.asarray(mask, np.float32), (sd.depth.shape[1], sd.depth.shape[0]), interpolation=cv2.INTER_AREA
        )
        assert not bool((sd.confidence[m < 0.5] > 0).any())  # nothing trusted outside the object
        assert not bool((sd.depth[m < 0.5] != 0).any())
        trusted += int((sd.confidence > 0).sum())
    assert trusted > 0


def test_without_object_stereo_the_hull_alone_starts_the_run(tiny_scene: Path) -> None:
    init, _ = _start(tiny_scene, 0.0)
    assert init.hull is not None and init.stereo is None and init.model.num_gaussians == 1000


@pytest.mark.parametrize("share", [1.5, -0.1])
def test_object_stereo_share_is_a_fraction(share: float) -> None:
    with pytest.raises(ValueError, match="object_stereo"):
        make_config("fast", settings={"init.object_stereo": str(share)})
