"""The repair model (priors/diffusion): training lowers its loss, save/load round-trips exactly, a model trained
for a few dozen steps on a known corruption repairs it, sampling handles any image size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from patterns import smooth_pattern

from priors.diffusion import PairSet, RepairModel, random_crops, train_repair
from recon.errors import ReconInputError


def tiny_model(seed: int = 0) -> RepairModel:
    return RepairModel.build(channels=(8, 16), norm_groups=4, seed=seed)


def pattern_pairs(n: int = 6, size: int = 32, seed: int = 0) -> PairSet:
    """Smooth colour patterns (clean) and their darkened copies (the corruption to undo)."""
    rng = np.random.default_rng(seed)
    pairs = PairSet()
    for _ in range(n):
        clean = smooth_pattern(rng, size)
        pairs.add(0.5 * clean, np.ones((size, size)), clean)
    return pairs


def test_training_lowers_the_loss() -> None:
    model = tiny_model()
    losses = train_repair(model, pattern_pairs(), steps=20, batch_size=4, crop=24, lr=3e-3, seed=0)
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_save_load_round_trip_is_identical(tmp_path: Path) -> None:
    model = tiny_model(seed=3)
    model.meta["note"] = "kept"
    folder = model.save(tmp_path / "prior")
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = RepairModel.load(folder)
    assert loaded.meta["note"] == "kept" and loaded.num_parameters == model.num_parameters
    r, a = torch.rand(2, 3, 20, 28), torch.rand(2, 1, 20, 28)
    for steps in (1, 3):
        o1 = model.repair(r, a, steps=steps, generator=torch.Generator().manual_seed(5))
        o2 = loaded.repair(r, a, steps=steps, generator=torch.Generator().manual_seed(5))
        assert torch.equal(o1, o2)


def test_load_rejects_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ReconInputError, match="repair.json"):
        RepairModel.load(tmp_path)
    (tmp_path / "repair.json").write_text('{"format": "something-else"}')
    with pytest.raises(ReconInputError, match="format"):
        RepairModel.load(tmp_path)


def test_repair_of_a_known_corruption_reduces_error() -> None:
    pairs = pattern_pairs(n=8, seed=1)
    model = tiny_model(seed=1)
    train_repair(model, pairs, steps=50, batch_size=6, crop=32, lr=3e-3, seed=1)
    test = pattern_pairs(n=3, seed=99)  # unseen patterns, same corruption
    r = torch.from_numpy(np.stack(test.renders)).permute(0, 3, 1, 2)
    a = torch.from_numpy(np.stack(test.alphas))[:, None]
    c = torch.from_numpy(np.stack(test.cleans)).permute(0, 3, 1, 2)
    before = float(((r - c) ** 2).mean())
    for steps in (1, 4):
        fixed = model.repair(r, a, steps=steps, generator=torch.Generator().manual_seed(0))
        after = float(((fixed - c) ** 2).mean())
        assert after < 0.5 * before, (steps, before, after)


def test_repair_keeps_odd_sizes_and_range() -> None:
    model = tiny_model()
    out = model.repair(torch.rand(1, 3, 17, 23), torch.ones(1, 1, 17, 23), steps=2)
    assert out.shape == (1, 3, 17, 23) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_random_crops_shapes_and_object_bias() -> None:
    pairs = PairSet()
    img = np.zeros((40, 50, 3), np.float32)
    img[30:36, 40:46] = 1.0  # a small object in a corner
    alpha = img[..., 0].copy()
    pairs.add(img, alpha, img)
    r, a, c, g = random_crops(pairs, 20, 16, np.random.default_rng(0), object_bias=1.0)
    assert g is None
    assert r.shape == (20, 3, 16, 16) and a.shape == (20, 1, 16, 16) and c.shape == (20, 3, 16, 16)
    assert all(float(a[k].max()) > 0 for k in range(20))  # every crop shows the object


def test_weighted_loss_matches_plain_loss_for_unit_weights() -> None:
    model = tiny_model()
    r, a, c = torch.rand(2, 3, 16, 16), torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    plain = model.loss(r, a, c, generator=torch.Generator().manual_seed(0))
    weighted = model.loss(r, a, c, generator=torch.Generator().manual_seed(0), weight=torch.ones(2, 1, 16, 16))
    assert torch.allclose(plain, weighted, rtol=1e-5)
    zero_w = torch.zeros(2, 1, 16, 16)
    zero_w[0] = 1.0  # only the first sample counts
    first = model.loss(r, a, c, generator=torch.Generator().manual_seed(0), weight=zero_w)
    assert not torch.allclose(first, plain)
