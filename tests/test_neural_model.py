"""Neural primitives: gradients, visible-only decoding, densification rows, save/load, baking, pruning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import renderers.neural.model as neural_model
from recon.cameras import Camera
from recon.errors import ReconInputError
from renderers.gaussians import GaussianModel, read_ply
from renderers.gaussians.strategy import duplicate, remove, split
from renderers.neural import (
    DecoderMLP,
    NeuralPrimitives,
    PruneSchedule,
    PruningAdam,
    load_run_model,
    save_run_files,
    visible_mask,
)

W, H = 64, 48


def camera(eye: tuple[float, float, float] = (0.0, 0.0, -3.0)) -> Camera:
    K = np.array([[60.0, 0.0, W / 2], [0.0, 60.0, H / 2], [0.0, 0.0, 1.0]])
    return Camera.look_at(np.array(eye), np.zeros(3), np.array([0.0, -1.0, 0.0]), K, W, H)


def make_model(n: int = 400, feature_dim: int = 8, seed: int = 0, pts: np.ndarray | None = None) -> NeuralPrimitives:
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 3)) * 0.5 if pts is None else pts
    n = len(pts)
    g = GaussianModel.from_points(pts, rng.uniform(size=(n, 3)), sh_degree=2, init_opacity=0.5)
    return NeuralPrimitives.from_gaussians(g, feature_dim=feature_dim, seed=seed, hidden=64)


def test_from_gaussians_keeps_geometry_and_colour() -> None:
    rng = np.random.default_rng(1)
    g = GaussianModel.from_points(rng.normal(size=(50, 3)), rng.uniform(size=(50, 3)), sh_degree=2)
    m = NeuralPrimitives.from_gaussians(g, feature_dim=8, seed=0)
    assert m.num_gaussians == 50 and m.features.shape == (50, 8)
    for k in ("means", "quats", "scales", "opacities"):
        assert torch.equal(m.splats[k], g.splats[k])
    assert torch.equal(m.features[:, :3], g.splats["sh0"][:, 0])
    counts = m.parameter_counts()
    assert counts["per_primitive"] == 19 and counts["primitive_params"] == 50 * 19
    assert counts["total"] == 50 * 19 + sum(p.numel() for p in m.mlp.parameters())
    # a fresh decoder barely changes the colour: the render is close to the Gaussians' DC render
    cam = camera()
    a = m.render(cam, background=torch.zeros(3), render_mode="RGB").rgb
    b = g.render(cam, background=torch.zeros(3), render_mode="RGB", sh_degree=0).rgb
    assert float((a - b).abs().max().detach()) < 0.05
    with pytest.raises(ValueError):
        NeuralPrimitives.from_gaussians(g, feature_dim=2)


def test_gradients_reach_features_mlp_and_means() -> None:
    m = make_model()
    out = m.render(camera(), background=torch.ones(3) * 0.3, render_mode="RGB+ED")
    assert out.rgb.shape == (H, W, 3) and out.depth is not None and out.alpha.shape == (H, W)
    loss = (out.rgb - 0.7).abs().mean() + out.depth.mean() * 0.01
    loss.backward()
    feats = m.splats["features"].grad
    assert feats is not None and float(feats[:, :3].abs().sum()) > 0
    assert float(feats[:, 3:].abs().sum()) > 0, "latent feature channels get gradient through the decoder"
    for name, p in m.mlp.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    for name in ("means", "scales", "opacities"):
        assert float(m.splats[name].grad.abs().sum()) > 0, name
    assert out.meta["means2d"].shape == (1, m.num_gaussians, 2)
    assert out.meta["radii"].shape == (1, m.num_gaussians)


def test_only_visible_primitives_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    cluster = rng.normal(size=(100, 3)) * 0.3
    pts = np.concatenate([cluster, cluster + [8.0, 0.0, 0.0], cluster + [0.0, 0.0, -6.0]])  # in view, aside, behind
    m = make_model(pts=pts)
    rows: list[int] = []
    forward = m.mlp.forward
    monkeypatch.setattr(m.mlp, "forward", lambda x: (rows.append(x.shape[0]), forward(x))[1])
    cam = camera((0.0, 0.0, -1.5))
    out = m.render(cam, background=torch.zeros(3), render_mode="RGB")
    assert rows == [m.decoded_rows] and 0 < m.decoded_rows <= 100
    # the cheap test is a superset of what the rasteriser keeps, so skipping the others changes nothing
    vis = visible_mask(
        m.means.detach(),
        m.scales.detach(),
        torch.tensor(cam.viewmat, dtype=torch.float32)[None],
        torch.tensor(cam.K, dtype=torch.float32)[None],
        W,
        H,
    )
    kept = out.meta["radii"] > 0
    assert bool(kept.any()) and not bool((kept & ~vis).any())
    everything = lambda means, *a, **k: torch.ones(1, means.shape[0], dtype=torch.bool)
    monkeypatch.setattr(neural_model, "visible_mask", everything)
    full = m.render(cam, background=torch.zeros(3), render_mode="RGB")
    assert rows[-1] == m.num_gaussians
    torch.testing.assert_close(out.rgb, full.rgb, atol=1e-5, rtol=0)


def test_batched_and_pose_tensor_renders_match_single() -> None:
    m = make_model(n=200)
    cams = [camera(), camera((0.5, 0.2, -3.0))]
    with torch.no_grad():
        batch = m.render(cams, background=torch.zeros(3), render_mode="RGB+ED")
        vm = torch.tensor(np.stack([c.viewmat for c in cams]), dtype=torch.float32)
        Ks = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32)
        pair = m.render((vm[1:], Ks[1:]), width=W, height=H, background=torch.zeros(3), render_mode="RGB")
        single = m.render(cams[1], background=torch.zeros(3), render_mode="RGB")
    assert batch.rgb.shape == (2, H, W, 3)
    torch.testing.assert_close(batch.rgb[1], single.rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(pair.rgb[0], single.rgb, atol=1e-6, rtol=0)


def test_densify_row_operations_move_features_with_geometry() -> None:
    m = make_model(n=30)
    opts = m.make_optimizers(scene_scale=1.0)
    out = m.render(camera(), background=torch.zeros(3), render_mode="RGB")
    out.rgb.sum().backward()
    for o in opts.values():
        o.step()
        o.zero_grad(set_to_none=True)
    mlp_before = [p.detach().clone() for p in m.mlp.parameters()]
    feats = m.features.detach().clone()
    mask = torch.zeros(30, dtype=torch.bool)
    mask[[2, 5]] = True
    duplicate(m, opts, mask)
    assert m.num_gaussians == 32 and torch.equal(m.features[30:], feats[[2, 5]])
    split(m, opts, torch.cat([mask, torch.zeros(2, dtype=torch.bool)]), generator=torch.Generator().manual_seed(0))
    assert m.num_gaussians == 34
    assert torch.equal(m.features[-2:], feats[[2, 5]]) and torch.equal(m.features[-4:-2], feats[[2, 5]])
    remove(m, opts, torch.arange(34) < 4)
    assert m.num_gaussians == 30
    for name in ("means", "quats", "scales", "opacities", "features"):
        assert m.splats[name].shape[0] == 30
        p = opts[name].param_groups[0]["params"][0]
        assert p is m.splats[name] and opts[name].state[p]["exp_avg"].shape == p.shape
    assert all(torch.equal(a, b) for a, b in zip(mlp_before, m.mlp.parameters()))
    assert set(m.splats.keys()) == {"means", "quats", "scales", "opacities", "features"}
    m.render(camera(), background=torch.zeros(3), render_mode="RGB").rgb.sum().backward()  # still renders


def test_make_optimizers_rates_and_unknown_names() -> None:
    m = make_model(n=10)
    opts = m.make_optimizers({"mlp": 1e-2}, scene_scale=2.0)
    assert set(opts) == {"means", "quats", "scales", "opacities", "features", "mlp"}
    assert isinstance(opts["mlp"], PruningAdam) and opts["mlp"].param_groups[0]["lr"] == 1e-2
    assert opts["means"].param_groups[0]["lr"] == pytest.approx(1.6e-4 * 2.0)
    with pytest.raises(ValueError, match="sh0"):
        m.make_optimizers({"sh0": 1.0})
    m.active_sh_degree = 3
    assert m.active_sh_degree == 0


def prune_fully(m: NeuralPrimitives, target: float = 0.9) -> None:
    m.mlp.prune_to(target)


def test_save_load_round_trip_renders_identically(tmp_path: Path) -> None:
    m = make_model(n=300)
    prune_fully(m)
    files = save_run_files(m, tmp_path)
    assert files == ["neural.pt", "splats.ply"]
    again = load_run_model(tmp_path)
    assert again.num_gaussians == m.num_gaussians and again.mlp.sparsity() == pytest.approx(m.mlp.sparsity())
    for cam in (camera(), camera((1.0, 0.5, -2.5))):
        with torch.no_grad():
            a = m.render(cam, background=torch.zeros(3), render_mode="RGB+ED")
            b = again.render(cam, background=torch.zeros(3), render_mode="RGB+ED")
        assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def test_baked_ply_approximates_the_neural_render(tmp_path: Path) -> None:
    m = make_model(n=300)
    with torch.no_grad():  # give the decoder some view dependence to bake
        m.mlp.layers[-1].weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(0))
    save_run_files(m, tmp_path)
    baked = read_ply(tmp_path / "splats.ply")
    assert baked.num_gaussians == m.num_gaussians and baked.sh_degree == 2
    cam = camera((0.3, -0.4, -3.0))
    with torch.no_grad():
        a = m.render(cam, background=torch.zeros(3), render_mode="RGB").rgb
        b = baked.render(cam, background=torch.zeros(3), render_mode="RGB", sh_degree=2).rgb
        b0 = baked.render(cam, background=torch.zeros(3), render_mode="RGB", sh_degree=0).rgb
    err, err0 = float((a - b).pow(2).mean()), float((a - b0).pow(2).mean())
    assert -10 * math.log10(err) > 30.0 and err < err0


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ReconInputError, match="neural.pt"):
        load_run_model(tmp_path)
    (tmp_path / "neural.pt").write_bytes(b"not a torch file")
    with pytest.raises(ReconInputError, match="neural.pt"):
        load_run_model(tmp_path)


def test_prune_schedule_is_cubic_and_reaches_the_target() -> None:
    s = PruneSchedule(target=0.9, start=10, end=50, every=5)
    vals = [s.sparsity_at(t) for t in range(0, 80)]
    assert vals[9] == 0.0 and vals[50] == pytest.approx(0.9) and vals[79] == pytest.approx(0.9)
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert s.sparsity_at(30) == pytest.approx(0.9 * (1 - 0.5**3))  # cubic: fast early, slow late
    assert s.prunes_at(10) and s.prunes_at(15) and not s.prunes_at(12) and s.prunes_at(50) and not s.prunes_at(55)
    with pytest.raises(ValueError):
        PruneSchedule(target=1.0, start=0, end=1)


def test_pruning_optimizer_reaches_sparsity_and_keeps_pruned_weights_zero() -> None:
    torch.manual_seed(0)
    mlp = DecoderMLP(17, 64, 4, generator=torch.Generator().manual_seed(0))
    opt = PruningAdam(mlp, lr=1e-2, schedule=PruneSchedule(0.9, start=5, end=25, every=5))
    x = torch.randn(256, 17)
    masks_seen = []
    for step in range(1, 41):
        loss = (mlp(x) - 1.0).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        masks_seen.append([mlp.mask(i).clone() for i in mlp.prunable])
        for i in mlp.prunable:
            assert bool((mlp.layers[i].weight[~mlp.mask(i)] == 0).all()), f"pruned weights moved at step {step}"
    assert mlp.sparsity() == pytest.approx(0.9, abs=0.002)
    for i in mlp.prunable:  # per layer, not just overall
        assert 1 - float(mlp.mask(i).float().mean()) == pytest.approx(0.9, abs=0.01)
    for prev, cur in zip(masks_seen, masks_seen[1:]):  # masks only shrink
        assert all(bool((c <= p).all()) for p, c in zip(prev, cur))
    assert mlp.nonzero_parameters() < mlp.dense_parameters() * 0.2


def test_sparse_inference_matches_dense() -> None:
    mlp = DecoderMLP(17, 64, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mlp.layers[-1].weight.normal_()
    mlp.prune_to(0.9)
    x = torch.randn(500, 17)
    with torch.no_grad():
        mlp.sparse_mode = "dense"
        dense = mlp(x)
        mlp.sparse_mode = "sparse"
        assert all(mlp.layer_backend(i, x) == "sparse" for i in mlp.prunable)
        sparse = mlp(x)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    mlp.sparse_mode = "auto"
    with torch.no_grad():
        chosen = [mlp.layer_backend(i, x) for i in mlp.prunable]
    from recon.kernels.sparse import cpp_available

    assert chosen == (["sparse", "sparse"] if cpp_available() else ["dense", "dense"])
    assert mlp.layer_backend(0, x) == "dense"  # with autograd on, training always runs dense masked weights


def test_pose_gradients_reach_the_viewmats() -> None:
    """Photometric pose refinement renders from (viewmats, Ks) tensors that require grad."""
    m = make_model(n=200)
    cam = camera()
    vm = torch.tensor(cam.viewmat, dtype=torch.float32)[None].requires_grad_(True)
    Ks = torch.tensor(cam.K, dtype=torch.float32)[None]
    out = m.render((vm, Ks), width=W, height=H, background=torch.zeros(3), render_mode="RGB+ED")[0]
    out.rgb.mean().backward()
    assert vm.grad is not None and float(vm.grad.abs().sum()) > 0
