"""The repair model's guide (priors/diffusion/guide.py and the guided model): the nearest input photo warped
into a view through its depth lands where the true image is, occluded or out-of-view pixels are marked invalid,
the nearest source is picked by viewing direction, and a guided model learns to use the guide (an unguided model
trained the same way cannot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from patterns import smooth_pattern

from priors.diffusion import PairSet, RepairModel, random_crops, train_repair
from priors.diffusion.guide import GuideSource, guide_for_view, nearest_sources, warp_guide
from priors.diffusion.tiles import repair_tiles
from recon.cameras import Camera, intrinsics

W, H, F, Z = 48, 40, 40.0, 4.0  # image size, focal, depth of the textured wall at z = Z


def camera(x: float, name: str = "") -> Camera:
    """A camera at (x, 0, 0) looking down +z (OpenCV axes), identity rotation."""
    vm = np.eye(4)
    vm[0, 3] = -x
    return Camera(intrinsics(F, F, W / 2, H / 2), vm, W, H, name=name)


def wall_image(cam: Camera) -> np.ndarray:
    """What ``cam`` sees of a wall at z = Z painted with a smooth pattern of the world x, y coordinates."""
    u = np.arange(W) + 0.5
    v = np.arange(H) + 0.5
    X = (u[None, :] - W / 2) / F * Z + cam.center[0]
    Y = np.broadcast_to(((v - H / 2) / F * Z)[:, None], (H, W))
    X = np.broadcast_to(X, (H, W))
    img = np.stack([0.5 + 0.4 * np.sin(2.0 * X), 0.5 + 0.4 * np.cos(1.5 * Y), 0.5 + 0.3 * np.sin(X + Y)], -1)
    return img.astype(np.float32)


def test_warp_guide_reproduces_the_view_and_marks_occlusion() -> None:
    target, src_cam = camera(0.0), camera(0.6)
    depth = torch.full((H, W), Z)
    alpha = torch.ones(H, W)
    source = GuideSource(torch.from_numpy(wall_image(src_cam)), src_cam, torch.full((H, W), Z))
    g = warp_guide(depth, alpha, target, source)
    valid = g[..., 3] > 0.5
    truth = torch.from_numpy(wall_image(target))
    # the source, 0.6 to the right, sees the wall shifted by F * 0.6 / Z = 6 px: the left columns are outside it
    assert 0.7 < float(valid.float().mean()) < 0.95
    assert not bool(valid[:, :5].any()) and bool(valid[:, 8:].all())
    err = (g[..., :3] - truth).abs()[valid]
    assert float(err.max()) < 0.05
    # an occluder in front of the source (its rendered depth is half the wall's) hides everything
    occluded = GuideSource(source.image, src_cam, torch.full((H, W), Z / 2))
    assert float(warp_guide(depth, alpha, target, occluded)[..., 3].sum()) == 0.0
    # and where nothing was rendered at the view, there is no guide either
    none = warp_guide(depth, torch.zeros(H, W), target, source)
    assert float(none[..., 3].sum()) == 0.0 and float(none[..., :3].abs().sum()) == 0.0


def test_nearest_source_by_direction_and_exclusion() -> None:
    srcs = [GuideSource(torch.zeros(H, W, 3), camera(x), torch.full((H, W), Z)) for x in (0.0, 2.0, 5.0)]
    turned = camera(0.0)
    c, s = np.cos(0.5), np.sin(0.5)
    turned.viewmat[:3, :3] = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # looks elsewhere
    srcs.append(GuideSource(torch.zeros(H, W, 3), turned, torch.full((H, W), Z)))
    assert nearest_sources(camera(1.7), srcs, 2) == [1, 0]  # same direction, then nearest centre
    assert nearest_sources(camera(2.0), srcs, 1, exclude=1) == [0]
    assert guide_for_view(torch.full((H, W), Z), torch.ones(H, W), camera(0.0), []).abs().sum() == 0


def test_pairs_with_guides_round_trip_and_do_not_mix(tmp_path: Path) -> None:
    pairs = PairSet()
    img = np.random.default_rng(0).random((20, 24, 3)).astype(np.float32)
    g = np.concatenate([img, np.ones((20, 24, 1), np.float32)], -1)
    pairs.add(img, np.ones((20, 24), np.float32), img, g)
    with pytest.raises(ValueError, match="guides"):
        pairs.add(img, np.ones((20, 24), np.float32), img)
    loaded = PairSet.load(pairs.save(tmp_path / "p.npz"))
    assert loaded.has_guides and np.allclose(loaded.guides[0], g, atol=1e-3)
    r, a, c, gg = random_crops(loaded, 3, 16, np.random.default_rng(0))
    assert gg is not None and gg.shape == (3, 4, 16, 16)
    assert torch.allclose(gg[:, :3], c, atol=1e-3)  # flipped together with the pair


def guided_pairs(n: int, seed: int) -> PairSet:
    """Clean patterns whose render is a flat grey (nothing to repair from) but whose guide holds the clean image
    on the left half: only a model that reads the guide can recover that half."""
    rng = np.random.default_rng(seed)
    size = 32
    yy, xx = np.mgrid[0:size, 0:size] / size
    pairs = PairSet()
    for _ in range(n):
        clean = smooth_pattern(rng, size)
        valid = (xx < 0.5).astype(np.float32)[..., None]
        guide = np.concatenate([clean * valid, valid], -1)
        pairs.add(np.full_like(clean, 0.5), np.ones((size, size)), clean, guide)
    return pairs


def test_a_guided_model_learns_to_use_the_guide(tmp_path: Path) -> None:
    train, test = guided_pairs(8, 1), guided_pairs(3, 99)
    r = torch.from_numpy(np.stack(test.renders)).permute(0, 3, 1, 2)
    a = torch.from_numpy(np.stack(test.alphas))[:, None]
    c = torch.from_numpy(np.stack(test.cleans)).permute(0, 3, 1, 2)
    g = torch.from_numpy(np.stack(test.guides)).permute(0, 3, 1, 2)
    left = g[:, 3:4].expand_as(c) > 0.5
    errs = {}
    for guided in (True, False):
        model = RepairModel.build(channels=(8, 16), norm_groups=4, seed=1, guide=guided)
        data = train if guided else PairSet(train.renders, train.alphas, train.cleans)
        train_repair(model, data, steps=60, batch_size=6, crop=32, lr=3e-3, seed=1)
        fixed = model.repair(r, a, generator=torch.Generator().manual_seed(0), guide=g)
        errs[guided] = float(((fixed - c) ** 2)[left].mean())
        if guided:
            assert model.uses_guide and model.cond_channels == 8
            loaded = RepairModel.load(model.save(tmp_path / "m"))
            assert loaded.uses_guide
            again = loaded.repair(r, a, generator=torch.Generator().manual_seed(0), guide=g)
            assert torch.equal(again, fixed)
    before = float(((r - c) ** 2)[left].mean())
    assert errs[True] < 0.4 * before, (errs, before)
    assert errs[True] < 0.5 * errs[False], errs


def test_repair_tiles_hands_the_guide_windows_over() -> None:
    h, w, t = 32, 48, 16
    rgb = torch.rand(h, w, 3)
    alpha = torch.ones(h, w)
    guide = torch.cat([torch.rand(h, w, 3), torch.ones(h, w, 1)], -1)
    active = torch.ones((h // t) * (w // t), dtype=torch.bool)

    def copy_guide(r: torch.Tensor, a: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        assert g is not None and g.shape[1] == 4
        return g[:, :3]

    out = repair_tiles(rgb, alpha, active, t, copy_guide, guide=guide)
    assert torch.allclose(out, guide[..., :3])
