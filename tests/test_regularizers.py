"""Regularisers: values at known points, gradients finite and pointing the designed way."""

from __future__ import annotations

import math

import pytest
import torch

from priors import regularizers as R


def test_depth_smoothness_zero_for_constant_and_scale_free() -> None:
    img = torch.rand(12, 16, 3, generator=torch.Generator().manual_seed(0))
    depth = torch.full((12, 16), 3.0, requires_grad=True)
    loss = R.depth_smoothness(depth, img)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(depth.grad).all()
    ramp = torch.linspace(1, 2, 16).expand(12, 16)
    flat = torch.zeros(12, 16, 3)
    a = R.depth_smoothness(ramp, flat)
    assert a.item() > 0
    assert R.depth_smoothness(ramp * 7.0, flat).item() == pytest.approx(a.item(), rel=1e-5)  # normalised
    assert R.depth_smoothness(ramp * 7.0, flat, normalize=False).item() == pytest.approx(7.0 * a.item() * 1.5, rel=1e-5)


def test_depth_smoothness_is_edge_aware_and_alpha_weighted() -> None:
    depth = torch.ones(10, 10)
    depth[:, 5:] = 2.0  # a depth step between columns 4 and 5
    flat = torch.full((10, 10, 3), 0.5)
    edge = flat.clone()
    edge[:, 5:] = 1.0  # the image has an edge at the same place
    assert R.depth_smoothness(depth, edge).item() < 0.05 * R.depth_smoothness(depth, flat).item()
    # Alpha zero on one side of the step removes the pairs that cross it.
    alpha = torch.ones(10, 10)
    alpha[:, 5:] = 0.0
    assert R.depth_smoothness(depth, flat, alpha).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        R.depth_smoothness(torch.ones(4, 5), torch.ones(5, 4, 3))


def test_depth_smoothness_gradient_smooths() -> None:
    g = torch.Generator().manual_seed(1)
    depth = (2.0 + 0.3 * torch.rand(16, 16, generator=g)).requires_grad_(True)
    img = torch.full((16, 16, 3), 0.5)
    opt = torch.optim.SGD([depth], lr=0.5)
    start = R.depth_smoothness(depth, img).item()
    for _ in range(30):
        opt.zero_grad()
        loss = R.depth_smoothness(depth, img)
        loss.backward()
        assert torch.isfinite(depth.grad).all()
        opt.step()
    assert R.depth_smoothness(depth, img).item() < 0.5 * start


@pytest.mark.parametrize("with_alpha", [False, True])
def test_depth_smoothness_same_bits_on_one_and_two_threads(with_alpha: bool) -> None:
    # its value scales the gradient (normalisation, alpha-weighted means): a sum torch splits between threads
    # made 1- and 2-thread training runs of the same seed differ (fern, 400x300 renders)
    g = torch.Generator().manual_seed(3)
    h, w = 378, 504
    depth0 = 1.0 + torch.rand(h, w, generator=g)
    img = torch.rand(h, w, 3, generator=g)
    alpha0 = torch.rand(h, w, generator=g)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            depth = depth0.clone().requires_grad_(True)
            alpha = alpha0.clone().requires_grad_(True) if with_alpha else None
            loss = R.depth_smoothness(depth, img, alpha)
            loss.backward()
            grads = [depth.grad] + ([alpha.grad] if alpha is not None else [])
            results.append((loss.detach(), *grads))
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_opacity_entropy_values_and_gradients() -> None:
    assert R.opacity_entropy(torch.tensor([0.0, 1.0])).item() == pytest.approx(0.0, abs=1e-4)
    assert R.opacity_entropy(torch.tensor([0.5])).item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert R.LN2 == pytest.approx(math.log(2.0))
    xs = torch.linspace(0.01, 0.99, 99)
    vals = torch.stack([R.opacity_entropy(x[None]) for x in xs])
    assert int(vals.argmax()) == 49  # maximum at 0.5
    o = torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0], requires_grad=True)
    R.opacity_entropy(o).backward()
    assert torch.isfinite(o.grad).all()
    # Descent direction pushes away from 0.5: towards 0 below, towards 1 above.
    assert o.grad[1] > 0 and o.grad[3] < 0 and abs(o.grad[2].item()) < 1e-6


def test_scale_regularizer() -> None:
    iso = torch.log(torch.full((5, 3), 0.1))
    assert R.scale_regularizer(iso).item() == 0.0  # ratio 1 < 10
    needle = torch.log(torch.tensor([[1.0, 0.01, 0.01]])).requires_grad_(True)
    loss = R.scale_regularizer(needle, max_ratio=10.0)
    assert loss.item() == pytest.approx(100.0 - 10.0, rel=1e-4)
    loss.backward()
    assert torch.isfinite(needle.grad).all()
    assert needle.grad[0, 0] > 0 and needle.grad[0, 1:].sum() < 0  # shrink the long axis, grow the short
    big = torch.log(torch.tensor([[2.0, 2.0, 2.0]]))
    assert R.scale_regularizer(big, max_scale=0.5).item() == pytest.approx(1.5, rel=1e-5)
    assert R.scale_regularizer(big, size_weight=0.1).item() == pytest.approx(0.2, rel=1e-5)
    assert R.scale_regularizer(torch.zeros(0, 3)).item() == 0.0
    with pytest.raises(ValueError):
        R.scale_regularizer(torch.zeros(4, 2))


def test_in_plane_ratio_frees_discs_and_caps_needles() -> None:
    disc = torch.log(torch.tensor([[1.0, 1.0, 0.01]]))
    needle = torch.log(torch.tensor([[1.0, 0.01, 0.01]]))
    assert R.scale_regularizer(disc, max_ratio=10.0).item() > 0  # max / min caps discs too
    assert R.scale_regularizer(disc, max_ratio=10.0, in_plane=True).item() == 0.0
    assert R.scale_regularizer(needle, max_ratio=10.0, in_plane=True).item() == pytest.approx(90.0, rel=1e-4)


def test_flatness_pulls_the_smallest_axis_down() -> None:
    blob = torch.log(torch.tensor([[0.3, 0.1, 0.2], [1.0, 1.0, 1.0]])).requires_grad_(True)
    loss = R.flatness(blob)
    assert loss.item() == pytest.approx((0.5 + 1.0) / 2, rel=1e-5)  # min / middle per Gaussian
    loss.backward()
    assert blob.grad[0, 1] > 0 and blob.grad[0, 2] < 0 and blob.grad[0, 0] == 0  # thinner, wider, length free
    assert R.flatness(torch.log(torch.tensor([[1.0, 1.0, 1e-4]]))).item() < 1e-3
    assert R.flatness(torch.zeros(0, 3)).item() == 0.0
    with pytest.raises(ValueError):
        R.flatness(torch.zeros(4, 2))


def test_alpha_mask_loss() -> None:
    mask = torch.zeros(6, 6)
    mask[2:4, 2:4] = 1.0
    assert R.alpha_mask_loss(mask.clone(), mask).item() < 1e-4
    assert R.alpha_mask_loss(mask.clone(), mask, kind="l1").item() == 0.0
    alpha = torch.full((6, 6, 1), 0.5, requires_grad=True)
    loss = R.alpha_mask_loss(alpha, mask)
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-5)
    loss.backward()
    assert torch.isfinite(alpha.grad).all()
    g = alpha.grad[..., 0]
    assert (g[mask > 0] < 0).all() and (g[mask == 0] > 0).all()  # raise alpha inside, lower outside
    with pytest.raises(ValueError):
        R.alpha_mask_loss(mask, mask, kind="nope")


def test_random_background_and_composite() -> None:
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = R.random_background((4, 5, 3), g1)
    b = R.random_background((4, 5, 3), g2)
    assert torch.equal(a, b) and a.shape == (4, 5, 3)
    assert torch.equal(a, a[0, 0].expand(4, 5, 3))  # solid colour
    n = R.random_background((4, 5, 3), g1, mode="noise")
    assert n.min() >= 0 and n.max() <= 1 and n.std() > 0.1
    assert R.random_background(generator=g1).shape == (3,)
    with pytest.raises(ValueError):
        R.random_background((4, 4))
    rgb = torch.full((2, 2, 3), 0.25)
    alpha = torch.full((2, 2), 0.5)
    out = R.composite(rgb, alpha, torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(out[0, 0], torch.tensor([0.75, 0.25, 0.25]))


def test_dropout_scale_drops_at_the_rate_and_keeps_the_expected_opacity() -> None:
    s = R.dropout_scale(20000, 0.25, torch.Generator().manual_seed(3))
    dropped = float((s == 0).float().mean())
    assert dropped == pytest.approx(0.25, abs=0.02)
    assert torch.unique(s).tolist() == [0.0, pytest.approx(1 / 0.75)]
    assert float(s.mean()) == pytest.approx(1.0, abs=0.03)  # inverted dropout: expected opacity unchanged
    again = R.dropout_scale(20000, 0.25, torch.Generator().manual_seed(3))
    assert torch.equal(s, again)  # a seed gives the same draws
    assert torch.equal(R.dropout_scale(5, 0.0, torch.Generator()), torch.ones(5))
    with pytest.raises(ValueError):
        R.dropout_scale(5, 1.0, torch.Generator())


def test_stereo_depth_loss_counts_only_trusted_pixels_and_resamples_the_render() -> None:
    target = torch.full((4, 6), 2.0)
    conf = torch.zeros(4, 6)
    conf[:2] = 1.0
    target[2:] = 0.0  # unknown where not trusted
    depth = torch.full((8, 12), 2.2, requires_grad=True)  # rendered at twice the stereo size
    loss = R.stereo_depth_loss(depth, target, conf)
    assert loss.item() == pytest.approx(0.1, rel=1e-5)  # |2.2 - 2| / 2
    loss.backward()
    assert depth.grad[:4].abs().sum() > 0 and depth.grad[4:].abs().sum() == 0  # untrusted rows get no pull
    assert R.stereo_depth_loss(torch.ones(4, 6, 1), target, torch.zeros(4, 6)).item() == 0.0


def test_decay_opacities_scales_every_opacity() -> None:
    logits = torch.tensor([-3.0, 0.0, 2.5])
    before = torch.sigmoid(logits)
    R.decay_opacities(logits, 0.1)
    assert torch.allclose(torch.sigmoid(logits), 0.9 * before, atol=1e-6)
    with pytest.raises(ValueError):
        R.decay_opacities(logits, 1.0)


def test_binocular_consistency_is_zero_at_the_true_depth_and_pulls_toward_it() -> None:
    torch.manual_seed(0)
    h, w, disparity = 24, 40, 4
    wide = torch.rand(h, w + 12, 3)
    target = wide[:, 4 : 4 + w]
    partner = wide[:, 4 + disparity : 4 + disparity + w]  # a camera moved along +x sees content shifted left
    fx, baseline, true_depth = 100.0, 0.2, 5.0  # fx * baseline / depth = 4 px
    alpha = torch.ones(h, w)
    losses, grads = [], []
    for z in (4.0, true_depth, 6.0):
        depth = torch.full((h, w), z, requires_grad=True)
        loss = R.binocular_consistency(depth, alpha, partner, target, fx, baseline)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(float(depth.grad.sum()))
    assert losses[1] < 1e-5 < min(losses[0], losses[2])
    assert grads[0] < 0 < grads[2]  # too near: push back; too far: pull in
    uncovered = R.binocular_consistency(torch.full((h, w), 4.0), torch.zeros(h, w), partner, target, fx, baseline)
    assert float(uncovered) == 0.0


def test_binocular_consistency_with_a_smaller_partner_render_still_finds_the_depth() -> None:
    h, w, disparity = 32, 48, 4
    x = torch.arange(w + 16, dtype=torch.float32)[None, :, None] + 0.5
    y = torch.arange(h, dtype=torch.float32)[:, None, None] + 0.5
    wide = 0.5 + 0.4 * torch.sin(x / 3.0 + torch.tensor([0.0, 1.0, 2.0])) * torch.cos(y / 5.0)  # smooth texture
    target = wide[:, 4 : 4 + w]
    partner = wide[:, 4 + disparity : 4 + disparity + w]
    small = torch.nn.functional.interpolate(partner.permute(2, 0, 1)[None], scale_factor=0.5, mode="area")[0]
    small = small.permute(1, 2, 0)  # the partner rendered at half size, same field of view
    fx, baseline = 100.0, 0.2  # true depth 5
    losses, grads = [], []
    for z in (4.0, 5.0, 6.0):
        depth = torch.full((h, w), z, requires_grad=True)
        loss = R.binocular_consistency(depth, torch.ones(h, w), small, target, fx, baseline)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(float(depth.grad.sum()))
    assert losses[1] < 0.6 * min(losses[0], losses[2])  # half-size sampling leaves a small floor
    assert grads[0] < 0 < grads[2]


def test_binocular_partner_is_the_camera_moved_along_its_own_x_axis() -> None:
    viewmat = torch.eye(4)
    viewmat[:3, 3] = torch.tensor([0.3, -0.2, 2.0])
    K = torch.tensor([[100.0, 0.0, 40.0], [0.0, 100.0, 30.0], [0.0, 0.0, 1.0]])
    (vm, Kp), w, h = R.binocular_partner(viewmat, K, 0.2, 80, 60, scale=0.5)
    assert (w, h) == (40, 30) and vm.shape == (1, 4, 4) and Kp.shape == (1, 3, 3)
    point = torch.tensor([0.1, 0.05, 3.0, 1.0])  # world point; 5 units in front of the camera
    cam_xyz, partner_xyz = (viewmat @ point)[:3], (vm[0] @ point)[:3]
    assert torch.allclose(partner_xyz, cam_xyz - torch.tensor([0.2, 0.0, 0.0]))
    u_cam = K[0, 0] * cam_xyz[0] / cam_xyz[2] + K[0, 2]
    u_partner = Kp[0, 0, 0] * partner_xyz[0] / partner_xyz[2] + Kp[0, 0, 2]
    assert torch.allclose(u_partner / 0.5, u_cam - 100.0 * 0.2 / cam_xyz[2])  # disparity fx * b / z, half size
    assert torch.equal(viewmat[:3, 3], torch.tensor([0.3, -0.2, 2.0]))  # the input camera is left as it was


def _shifted_pair(h: int = 40, w: int = 60, f: float = 50.0, b: float = 0.2, depth: float = 2.0):
    """A random texture seen by a camera at the origin and, as a fronto-parallel plane at ``depth``, by a
    source camera moved ``b`` along x: the source pixel u is the reference pixel u + f*b/depth."""
    torch.manual_seed(0)
    source = torch.rand(h, w, 3)
    K = torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])
    shift = round(f * b / depth)
    ref = torch.zeros_like(source)
    ref[:, shift:] = source[:, :-shift]
    source_vm = torch.eye(4)
    source_vm[0, 3] = -b
    return ref, source, K, torch.eye(4), source_vm, shift


def test_warp_source_into_view_reprojects_through_the_depth() -> None:
    ref, source, K, vm, source_vm, shift = _shifted_pair()
    same, inside = R.warp_source_into_view(torch.full((40, 60), 2.0), K, vm, source, K, vm)
    assert bool(inside.all()) and torch.allclose(same, source, atol=1e-5)
    warped, inside = R.warp_source_into_view(torch.full((40, 60), 2.0), K, vm, source, K, source_vm)
    assert torch.allclose(warped[:, shift + 1 :], ref[:, shift + 1 :], atol=1e-5)
    assert not bool(inside[:, :shift].any())  # those pixels fall left of the source image


def test_multiview_photometric_is_zero_at_the_true_depth_and_pulls_toward_it() -> None:
    ref, source, K, vm, source_vm, _ = _shifted_pair()
    alpha = torch.ones(40, 60)
    losses = {}
    for d in (1.8, 2.0, 2.2):
        depth = torch.full((40, 60), d, requires_grad=True)
        loss = R.multiview_photometric(depth, alpha, ref, K, vm, [(source, K, source_vm)])
        loss.backward()
        losses[d] = (float(loss.detach()), float(depth.grad.sum()))
    assert losses[2.0][0] < 1e-5 < losses[1.8][0] and losses[2.2][0] > 1e-2
    assert losses[1.8][1] < 0 < losses[2.2][1]  # gradient descent moves both toward 2.0
    gen = torch.Generator().manual_seed(0)
    for d, (full, _) in losses.items():  # a random subset of pixels estimates the same mean and direction
        depth = torch.full((40, 60), d, requires_grad=True)
        some = R.multiview_photometric(depth, alpha, ref, K, vm, [(source, K, source_vm)], pixels=800, generator=gen)
        some.backward()
        assert abs(float(some.detach()) - full) < 0.15 * full + 1e-5
        if d != 2.0:
            assert (float(depth.grad.sum()) > 0) == (d > 2.0)


def test_multiview_photometric_takes_the_best_source_and_ignores_uncovered_pixels() -> None:
    ref, source, K, vm, source_vm, _ = _shifted_pair()
    noise = torch.rand_like(source)
    depth = torch.full((40, 60), 2.0)
    both = R.multiview_photometric(
        depth, torch.ones(40, 60), ref, K, vm, [(noise, K, source_vm), (source, K, source_vm)]
    )
    assert float(both) < 1e-5  # the wrong photo does not count where the right one sees the point
    assert float(R.multiview_photometric(depth, torch.zeros(40, 60), ref, K, vm, [(noise, K, source_vm)])) == 0.0
