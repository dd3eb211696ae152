"""The standard real-data protocols: published index lists and metric conventions, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recon.bench.protocols import PROTOCOLS, blender_split, dtu_split, get_protocol, llff_split, score_view
from recon.errors import ReconInputError


def test_llff_split_is_regnerfs() -> None:
    # 20 images (fern): every 8th held out; inputs round(linspace) over the other 17 (Python's round)
    assert llff_split(20, 3) == ([1, 10, 19], [0, 8, 16])
    assert llff_split(20, 6)[0] == [1, 4, 7, 12, 15, 19]
    assert llff_split(20, 9)[0] == [1, 3, 5, 7, 10, 12, 14, 17, 19]
    with pytest.raises(ReconInputError):
        llff_split(4, 9)


def test_dtu_split_is_regnerfs() -> None:
    train, test = dtu_split(3)
    assert train == [25, 22, 28]
    assert test == [1, 2, 9, 10, 11, 12, 14, 15, 23, 24, 26, 27, 29, 30, 31, 32, 33, 34, 35, 41, 42, 43, 45, 46, 47]
    assert dtu_split(9)[0] == [25, 22, 28, 40, 44, 48, 0, 8, 13] and len(dtu_split(9)[1]) == 25
    with pytest.raises(ReconInputError):
        dtu_split(3, n_images=20)


def test_blender_split_selects_frames_by_id() -> None:
    train_ids = list(range(100))[::-1]  # any order on disk
    test_ids = list(range(200))
    tr, te = blender_split(train_ids, test_ids, 8)
    assert [train_ids[k] for k in tr] == [26, 86, 2, 55, 75, 93, 16, 73]
    assert [test_ids[k] for k in te] == list(range(0, 200, 8)) and len(te) == 25
    thinned = list(range(0, 200, 8))  # a copy that keeps only every 8th test view already
    assert len(blender_split(train_ids, thinned, 3)[1]) == 25
    with pytest.raises(ReconInputError, match="26"):
        blender_split([1, 2, 3], test_ids, 3)


def test_metric_conventions_by_hand() -> None:
    pred = np.zeros((16, 20, 3), np.float32)
    gt = np.full((16, 20, 3), 0.5, np.float32)
    mask = np.zeros((16, 20), np.float32)
    mask[:8] = 1.0
    full = score_view(get_protocol("llff3"), pred, gt, None)
    assert full["psnr"] == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-4) and full["lpips"] is None
    white = score_view(get_protocol("blender8"), pred, gt, None)
    assert white["psnr"] == pytest.approx(full["psnr"], abs=1e-6)
    masked = score_view(get_protocol("dtu3"), pred, gt, mask)  # error 0.25 on half the pixels, over all pixels
    assert masked["psnr"] == pytest.approx(10 * math.log10(1 / 0.125), abs=1e-4)
    with pytest.raises(ReconInputError, match="no object mask"):
        score_view(get_protocol("dtu3"), pred, gt, np.zeros((16, 20)))


def test_protocol_table() -> None:
    assert {"blender8", "llff3", "llff6", "llff9", "dtu3", "dtu6", "dtu9", "dtu3m", "dtu9m"} <= set(PROTOCOLS)
    assert not get_protocol("dtu3").input_masks and get_protocol("dtu3m").input_masks
    with pytest.raises(ReconInputError, match="unknown protocol"):
        get_protocol("dtu4")


def test_scene_config_takes_max_side_from_a_setting_or_the_protocol() -> None:
    """`recon bench run --set max_side=N` was a TypeError traceback (max_side passed twice)."""
    from recon.bench.protocol_runner import scene_config

    assert scene_config("fast", {}, (300, 400)).max_side == 400
    assert scene_config("fast", {"max_side": 200}, (300, 400)).max_side == 200
    assert scene_config("fast", {"max_side": 200}, (300, 400), max_side=320).max_side == 320
    assert scene_config("fast", {"iterations": 7}, (300, 400)).iterations == 7  # was a TypeError too
    assert scene_config("fast", {"iterations": 7}, (300, 400), iterations=9).iterations == 9
    with pytest.raises(ReconInputError, match="train.dropout"):
        scene_config("fast", {"train.dropout": 1.5}, (300, 400))
    # were Python's "got multiple values for keyword argument 'seed'"
    with pytest.raises(ReconInputError, match="give it with --seed"):
        scene_config("fast", {"seed": "3"}, (300, 400))
    with pytest.raises(ReconInputError, match="give it with --method"):
        scene_config("fast", {"preset": "quality"}, (300, 400))
