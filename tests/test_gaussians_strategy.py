"""Densification strategy: gradient statistics, clone/split/prune/reset, the cap, and Adam state bookkeeping.

These tests drive the strategy with a hand-made rasterizer ``meta`` (a means2d tensor whose gradient we
choose), so they need no rasterizer.
"""

from __future__ import annotations

import math

import pytest
import torch

from renderers.gaussians.model import PARAM_NAMES, GaussianModel
from renderers.gaussians.strategy import DensifyConfig, DensifyStrategy, prune_mask, quat_to_rotmat, split

W, H = 100, 50


def make_model(n: int, log_scale: float = math.log(0.001), opacity: float = 0.5, seed: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    params = {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "scales": torch.full((n, 3), log_scale) + 0.01 * torch.randn(n, 3, generator=g),
        "opacities": torch.full((n,), math.log(opacity / (1 - opacity))),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.randn(n, 15, 3, generator=g),
    }
    return GaussianModel(params)


def adam_step(model: GaussianModel, optimizers: dict) -> None:
    """One optimiser step with non-zero gradients so that every Adam state exists and is non-zero."""
    loss = sum((p * (i + 1)).sum() for i, p in enumerate(model.splats.values()))
    loss.backward()
    for o in optimizers.values():
        o.step()
        o.zero_grad(set_to_none=True)


def fake_meta(grad2d: torch.Tensor, radii: torch.Tensor | None = None) -> dict:
    """A rasterizer meta whose means2d gets gradient ``grad2d`` [C,N,2] after backward."""
    c, n, _ = grad2d.shape
    means2d = torch.zeros(c, n, 2, requires_grad=True)
    meta = {
        "means2d": means2d,
        "radii": torch.ones(c, n, dtype=torch.int32) if radii is None else radii,
        "depths": torch.ones(c, n),
        "width": W,
        "height": H,
        "n_cameras": c,
    }
    return meta


def backward_meta(strategy: DensifyStrategy, meta: dict, grad2d: torch.Tensor) -> None:
    strategy.step_pre_backward(meta)
    (meta["means2d"] * grad2d).sum().backward()


def opt_state(optimizers: dict, model: GaussianModel, name: str) -> dict:
    return optimizers[name].state[model.splats[name]]


def pixel_grad_for(target_norm: float) -> float:
    """Pixel-space x gradient that normalises (x W/2, one camera) to ``target_norm``."""
    return target_norm / (W / 2)


def test_accumulates_normalised_gradients_and_visibility():
    model = make_model(3)
    s = DensifyStrategy(DensifyConfig(refine_start_iter=1000))
    g = torch.zeros(2, 3, 2)
    g[0, 0] = torch.tensor([3.0, 4.0])  # normalised: (3*50*2, 4*25*2) = (300, 200)
    g[1, 0] = torch.tensor([1.0, 0.0])  # (100, 0)
    g[0, 1] = torch.tensor([float("nan"), 5.0])  # invisible in camera 0 -> ignored, even if NaN
    radii = torch.ones(2, 3, dtype=torch.int32)
    radii[0, 1] = 0
    meta = fake_meta(g, radii)
    backward_meta(s, meta, g)
    s.step_post_backward(1, meta, model, None)
    assert s.grad2d[0].item() == pytest.approx(math.hypot(300.0, 200.0) + 100.0)
    assert s.grad2d[1].item() == pytest.approx(0.0)
    assert s.count.tolist() == [2.0, 1.0, 2.0]


def test_per_axis_radii_are_accepted():
    model = make_model(2)
    s = DensifyStrategy()
    g = torch.ones(1, 2, 2)
    radii = torch.tensor([[[2, 3], [0, 4]]], dtype=torch.int32)  # gsplat >= 1.5 layout [C,N,2]
    meta = fake_meta(g, radii)
    backward_meta(s, meta, g)
    s.step_post_backward(1, meta, model, None)
    assert s.count.tolist() == [1.0, 0.0]


def test_missing_gradient_is_a_clear_error():
    model = make_model(2)
    s = DensifyStrategy()
    meta = fake_meta(torch.zeros(1, 2, 2))
    with pytest.raises(RuntimeError, match="step_pre_backward"):
        s.step_post_backward(1, meta, model, None)


def _refine_once(model, optimizers, s, grads_per_gaussian: torch.Tensor, step: int = 200) -> dict:
    """Feed one step with x-gradients giving the wanted normalised norms, at a refine step."""
    n = model.num_gaussians
    g = torch.zeros(1, n, 2)
    g[0, :, 0] = grads_per_gaussian / (W / 2)
    meta = fake_meta(g)
    backward_meta(s, meta, g)
    return s.step_post_backward(step, meta, model, optimizers)


def test_clone_appends_copies_with_zeroed_adam_rows():
    model = make_model(4)  # all small (scale 0.001 <= 0.01)
    opts = model.make_optimizers()
    adam_step(model, opts)
    before = {k: v.detach().clone() for k, v in model.splats.items()}
    states_before = {k: {s: t.clone() for s, t in opt_state(opts, model, k).items()} for k in PARAM_NAMES}
    s = DensifyStrategy(DensifyConfig(refine_start_iter=100, refine_every=100, reset_every=3000))
    stats = _refine_once(model, opts, s, torch.tensor([1e-3, 0.0, 5e-4, 1e-5]))
    assert stats["cloned"] == 2 and stats["split"] == 0 and stats["pruned"] == 0
    assert model.num_gaussians == 6
    for k in PARAM_NAMES:
        p = model.splats[k]
        assert torch.equal(p[:4], before[k])
        assert torch.equal(p[4], before[k][0]) and torch.equal(p[5], before[k][2])
        # the optimiser now holds exactly the model's parameter object
        assert opts[k].param_groups[0]["params"][0] is p
        st = opts[k].state[p]
        for name in ("exp_avg", "exp_avg_sq"):
            assert st[name].shape == p.shape
            assert torch.equal(st[name][:4], states_before[k][name])
            assert torch.count_nonzero(st[name][4:]) == 0
            assert torch.count_nonzero(st[name][:4]) > 0
        assert torch.equal(st["step"], states_before[k]["step"])
    adam_step(model, opts)  # still steps with the new shapes
    assert s.grad2d.shape == (6,) and torch.count_nonzero(s.grad2d) == 0  # statistics restart after a refine


def test_split_replaces_large_gaussians_by_two_samples():
    torch.manual_seed(0)
    model = make_model(3, log_scale=math.log(0.05))  # large: 0.05 > 0.01 * scene_scale(1)
    opts = model.make_optimizers()
    adam_step(model, opts)
    before = {k: v.detach().clone() for k, v in model.splats.items()}
    states_before = {k: {s: t.clone() for s, t in opt_state(opts, model, k).items()} for k in PARAM_NAMES}
    s = DensifyStrategy(DensifyConfig(refine_start_iter=100))
    stats = _refine_once(model, opts, s, torch.tensor([0.0, 1e-3, 0.0]))
    assert stats == {"cloned": 0, "split": 1, "pruned": 0, "reset": False, "num_gaussians": 4}
    p = model.splats
    keep = torch.tensor([0, 2])
    for k in PARAM_NAMES:
        assert torch.equal(p[k][:2], before[k][keep])  # untouched rows keep their order
        st = opts[k].state[p[k]]
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(st[name][:2], states_before[k][name][keep])
            assert torch.count_nonzero(st[name][2:]) == 0
    # the two children: scales / 1.6, same rotation/opacity/colour, centres drawn around the parent
    expected_log_scale = before["scales"][1] - math.log(1.6)
    for child in (2, 3):
        assert torch.allclose(p["scales"][child], expected_log_scale, atol=1e-6)
        for k in ("quats", "opacities", "sh0", "shN"):
            assert torch.equal(p[k][child], before[k][1])
        offset = p["means"][child] - before["means"][1]
        assert 0 < offset.norm() < 6 * 0.05 * 1.05  # within 6 sigma of the parent
    assert not torch.equal(p["means"][2], p["means"][3])


def test_split_samples_follow_the_gaussians_covariance():
    """Offsets of many children, rotated back to the parent's frame, have the parent's per-axis std."""
    n = 4000
    params = {
        "means": torch.zeros(n, 3),
        "quats": torch.tensor([[0.9, 0.1, -0.3, 0.2]]).repeat(n, 1),
        "scales": torch.log(torch.tensor([[0.5, 0.1, 0.02]])).repeat(n, 1),
        "opacities": torch.zeros(n),
        "sh0": torch.zeros(n, 1, 3),
        "shN": torch.zeros(n, 0, 3),
    }
    model = GaussianModel(params)
    split(model, None, torch.ones(n, dtype=torch.bool), generator=torch.Generator().manual_seed(1))
    assert model.num_gaussians == 2 * n
    rot = quat_to_rotmat(params["quats"][:1])[0]
    local = model.splats["means"] @ rot  # R^T x for each row
    std = local.std(dim=0)
    assert torch.allclose(std, torch.tensor([0.5, 0.1, 0.02]), rtol=0.05)


def test_prune_low_opacity_and_too_large_after_first_reset():
    model = make_model(5)
    with torch.no_grad():
        model.splats["opacities"][0] = -10.0  # opacity ~4.5e-5 < 0.005
        model.splats["scales"][1] = math.log(0.5)  # 0.5 > 0.1 * scene_scale
    opts = model.make_optimizers()
    adam_step(model, opts)
    cfg = DensifyConfig(refine_start_iter=100, refine_every=100, reset_every=1000)
    s = DensifyStrategy(cfg)
    stats = _refine_once(model, opts, s, torch.zeros(5), step=500)  # before the first reset: size not pruned
    assert stats["pruned"] == 1 and model.num_gaussians == 4
    kept_means = model.splats["means"].detach().clone()
    stats = _refine_once(model, opts, s, torch.zeros(4), step=1100)
    assert stats["pruned"] == 1 and model.num_gaussians == 3
    assert torch.equal(model.splats["means"], kept_means[[1, 2, 3]])
    for k in PARAM_NAMES:
        assert opts[k].state[model.splats[k]]["exp_avg"].shape[0] == 3
    adam_step(model, opts)


def test_opacity_reset_clamps_and_zeroes_opacity_moments():
    model = make_model(3)
    with torch.no_grad():
        model.splats["opacities"][:] = torch.tensor([3.0, -6.0, 0.0])
    opts = model.make_optimizers()
    adam_step(model, opts)
    means_state = opt_state(opts, model, "means")["exp_avg"].clone()
    low_before = model.opacities[1].item()
    assert low_before < 0.01
    cfg = DensifyConfig(refine_start_iter=10_000, reset_every=300, prune_opa=0.005)
    s = DensifyStrategy(cfg)
    stats = _refine_once(model, opts, s, torch.zeros(3), step=300)
    assert stats["reset"] is True and model.num_gaussians == 3
    op = model.opacities.detach()
    assert op[0].item() == pytest.approx(0.01, rel=1e-4)
    assert op[2].item() == pytest.approx(0.01, rel=1e-4)
    assert op[1].item() == low_before  # already below: untouched
    st = opt_state(opts, model, "opacities")
    assert torch.count_nonzero(st["exp_avg"]) == 0 and torch.count_nonzero(st["exp_avg_sq"]) == 0
    assert torch.equal(opt_state(opts, model, "means")["exp_avg"], means_state)


def test_cap_grows_only_the_highest_gradients():
    model = make_model(6)
    opts = model.make_optimizers()
    s = DensifyStrategy(DensifyConfig(refine_start_iter=100, max_gaussians=8))
    grads = torch.tensor([1e-3, 5e-3, 2e-3, 0.0, 4e-3, 3e-3])
    before = model.splats["means"].detach().clone()
    stats = _refine_once(model, opts, s, grads)
    assert stats["cloned"] == 2 and model.num_gaussians == 8
    assert torch.equal(model.splats["means"][6:], before[[1, 4]])
    # at the cap nothing grows any more
    stats = _refine_once(model, opts, s, torch.full((8,), 1e-2))
    assert stats["cloned"] == 0 and stats["split"] == 0 and model.num_gaussians == 8


def test_over_cap_model_is_pruned_down_to_the_cap_faintest_first():
    model = make_model(6)
    with torch.no_grad():
        model.splats["opacities"][:] = torch.tensor([0.5, -1.0, 2.0, -2.0, 1.0, 0.0])
    s = DensifyStrategy(DensifyConfig(refine_start_iter=100, max_gaussians=4))
    stats = _refine_once(model, None, s, torch.zeros(6))
    assert stats["pruned"] == 2 and model.num_gaussians == 4
    assert sorted(model.splats["opacities"].tolist()) == [-1.0, 0.0, 0.5, 1.0, 2.0][1:]


def test_schedule_respects_start_stop_and_interval():
    cfg = DensifyConfig(refine_start_iter=100, refine_stop_iter=1000, refine_every=100, reset_every=10_000)
    big = torch.full((3,), 1.0)
    for step, grows in [(100, False), (150, False), (200, True), (1000, False), (1100, False)]:
        model = make_model(3)
        stats = _refine_once(model, None, DensifyStrategy(cfg), big, step=step)
        assert (model.num_gaussians > 3) == grows, step
        assert stats["num_gaussians"] == model.num_gaussians


def test_scene_scale_changes_clone_versus_split():
    model = make_model(2, log_scale=math.log(0.05))
    stats = _refine_once(
        model, None, DensifyStrategy(DensifyConfig(refine_start_iter=100), scene_scale=10.0), torch.ones(2)
    )
    assert stats["cloned"] == 2 and stats["split"] == 0  # 0.05 <= 0.01 * 10


def test_prune_mask_function_and_method_keep_states_in_step():
    model = make_model(5)
    opts = model.make_optimizers()
    adam_step(model, opts)
    before = model.splats["sh0"].detach().clone()
    n = prune_mask(model, torch.tensor([True, False, False, True, False]), opts)
    assert n == 2 and model.num_gaussians == 3
    assert torch.equal(model.splats["sh0"], before[[1, 2, 4]])
    assert opt_state(opts, model, "sh0")["exp_avg"].shape == (3, 1, 3)

    s = DensifyStrategy(DensifyConfig(refine_start_iter=10_000))
    g = torch.zeros(1, 3, 2)
    g[0, :, 0] = torch.tensor([1.0, 2.0, 3.0])
    meta = fake_meta(g)
    backward_meta(s, meta, g)
    s.step_post_backward(1, meta, model, opts)
    s.prune_mask(model, torch.tensor([False, True, False]), opts)
    assert model.num_gaussians == 2
    assert s.grad2d.tolist() == pytest.approx([50.0, 150.0])  # x-grad * W/2
    adam_step(model, opts)
    with pytest.raises(ValueError, match="bool"):
        prune_mask(model, torch.tensor([0, 1]))


def test_absgrad_reads_the_absgrad_attribute():
    model = make_model(2)
    s = DensifyStrategy(DensifyConfig(absgrad=True))
    g = torch.zeros(1, 2, 2)
    meta = fake_meta(g)
    backward_meta(s, meta, g)
    with pytest.raises(RuntimeError, match="absgrad"):
        s.step_post_backward(1, meta, model, None)
    meta["means2d"].absgrad = torch.tensor([[[0.02, 0.0], [0.0, 0.0]]])
    s.step_post_backward(1, meta, model, None)
    assert s.grad2d[0].item() == pytest.approx(1.0)


def _has_rasterize() -> bool:
    try:
        from recon.kernels import rasterize  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _has_rasterize(), reason="recon.kernels.rasterize is not available yet (written by another helper)"
)
def test_short_training_loop_with_real_renders_densifies_and_fits():
    """Render -> loss -> backward -> Adam -> strategy, with several refine steps inside the loop."""
    import numpy as np

    from recon.cameras import Camera, intrinsics

    K = intrinsics(30.0, 30.0, 16.0, 12.0)
    cam = Camera.look_at([0.0, 0.0, -3.0], [0, 0, 0], [0, -1, 0], K, 32, 24)
    target = torch.zeros(24, 32, 3)
    target[6:18, 8:24] = torch.tensor([0.9, 0.2, 0.1])
    rng = np.random.default_rng(0)
    model = GaussianModel.from_points(rng.uniform(-0.4, 0.4, (30, 3)), rng.random((30, 3)), sh_degree=1)
    opts = model.make_optimizers(lrs={"sh0": 2e-2, "means": 1e-3})
    cfg = DensifyConfig(
        refine_start_iter=4, refine_every=5, reset_every=1000, refine_stop_iter=30, grow_grad2d=1e-5, max_gaussians=80
    )
    s = DensifyStrategy(cfg, scene_scale=1.0)
    losses, grown = [], 0
    for step in range(40):
        out = model.render(cam, render_mode="RGB")
        loss = (out.rgb - target).abs().mean()
        s.step_pre_backward(out.meta)
        loss.backward()
        for o in opts.values():
            o.step()
            o.zero_grad(set_to_none=True)
        stats = s.step_post_backward(step, out.meta, model, opts)
        grown += stats["cloned"] + stats["split"]
        losses.append(loss.item())
        for name, o in opts.items():
            assert o.param_groups[0]["params"][0] is model.splats[name]
    assert grown > 0 and 30 < model.num_gaussians <= 80
    assert min(losses[-5:]) < losses[0] * 0.7


def test_unpool_fills_the_gap_between_two_clusters_halfway():
    """Proximity-guided unpooling: two tight clusters 4 apart; the two Gaussians bridging them (each far from
    its neighbours) get copies of their neighbours halfway across, with zero Adam rows; a budget caps it."""
    from renderers.gaussians.strategy import unpool

    model = make_model(40)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        means = 0.01 * torch.randn(40, 3, generator=g)
        means[20:] += torch.tensor([4.0, 0.0, 0.0])
        means[19] = torch.tensor([1.0, 0.0, 0.0])  # a lone Gaussian 1 from the first cluster, 3 from the second
        model.splats["means"].copy_(means)
    opts = model.make_optimizers()
    adam_step(model, opts)
    before = {k: v.detach().clone() for k, v in model.splats.items()}
    added = unpool(model, opts, ratio=3.0, k=3)
    assert added == 3 and model.num_gaussians == 43  # the lone one to its 3 neighbours in the first cluster
    new = model.splats["means"][40:].detach()
    assert torch.allclose(new[:, 0], torch.full((3,), 0.5), atol=0.05)  # halfway between 1.0 and the cluster at 0
    for k in PARAM_NAMES:
        assert torch.equal(model.splats[k][:40], before[k])
        assert torch.count_nonzero(opts[k].state[model.splats[k]]["exp_avg"][40:]) == 0
    for row in model.splats["sh0"][40:].detach():  # each new one copies a neighbour in the first cluster
        assert any(torch.equal(row, before["sh0"][j]) for j in range(19))
    assert unpool(make_model(40), None, ratio=3.0, budget=0) == 0
    dense = make_model(40)
    assert unpool(dense, None, ratio=100.0) == 0 and dense.num_gaussians == 40


def test_refine_unpools_when_proximity_is_set():
    model = make_model(30)
    with torch.no_grad():
        model.splats["means"][0] = torch.tensor([30.0, 0.0, 0.0])  # far from the rest
    opts = model.make_optimizers()
    s = DensifyStrategy(DensifyConfig(refine_start_iter=100, refine_every=100, reset_every=3000, proximity=3.0))
    stats = _refine_once(model, opts, s, torch.zeros(30))
    assert stats["cloned"] == 0 and s.unpooled == 3 and model.num_gaussians == 33
    off = make_model(30)
    s_off = DensifyStrategy(DensifyConfig(refine_start_iter=100, refine_every=100, reset_every=3000))
    _refine_once(off, off.make_optimizers(), s_off, torch.zeros(30))
    assert off.num_gaussians == 30 and s_off.unpooled == 0
