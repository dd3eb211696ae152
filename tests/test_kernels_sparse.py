"""Sparse ops: active-row gather/scatter and the sparse linear layer (C++ kernel and PyTorch fallbacks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recon.kernels import sparse as sp
from recon.kernels.sparse import SparseLinear, apply_on_active, gather_rows, prefer_sparse, scatter_rows

needs_cpp = pytest.mark.skipif(not sp.cpp_available(), reason="C++ sparse kernel not built")


def _mlp(d_in: int = 6, d_out: int = 3, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(d_in, 8), nn.ReLU(), nn.Linear(8, d_out)).to(dtype)


# ---------------------------------------------------------------------------------------------------- gather


def test_gather_scatter_values_fill_and_duplicates() -> None:
    x = torch.arange(12.0).reshape(6, 2)
    idx = torch.tensor([4, 1, 4])
    g = gather_rows(x, idx)
    assert torch.equal(g, x[[4, 1, 4]])
    out = scatter_rows(g, idx, 6, fill=-1.0)
    assert torch.equal(out[1], x[1])
    assert torch.equal(out[4], 2 * x[4])  # duplicates add up
    assert torch.all(out[[0, 2, 3, 5]] == -1.0)
    with pytest.raises(ValueError):
        scatter_rows(g, idx[:2], 6)
    with pytest.raises(TypeError):
        gather_rows(x, torch.tensor([0.0, 1.0]))


def test_gather_scatter_gradcheck() -> None:
    torch.manual_seed(0)
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([5, 0, 2, 5])
    assert torch.autograd.gradcheck(lambda t: gather_rows(t, idx), (x,))
    src = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: scatter_rows(t, idx, 7, fill=0.5), (src,))


def test_apply_on_active_matches_dense_with_mask_and_indices() -> None:
    torch.manual_seed(0)
    mlp = _mlp()
    x = torch.randn(50, 6)
    mask = torch.rand(50) > 0.6
    dense = mlp(x)
    for active in (mask, mask.nonzero().squeeze(1)):
        out = apply_on_active(mlp, x, active, fill=7.0)
        assert out.shape == (50, 3)
        torch.testing.assert_close(out[mask], dense[mask])
        assert torch.all(out[~mask] == 7.0)


def test_apply_on_active_pixel_mask_tuple_io_and_all_active() -> None:
    torch.manual_seed(0)
    feats, dirs = torch.randn(5, 4, 6), torch.randn(5, 4, 3)
    mask = torch.rand(5, 4) > 0.5

    def fn(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a.sum(-1, keepdim=True) * b, a[:, :2]

    rgb, first = apply_on_active(fn, (feats, dirs), mask, fill=0.0)
    assert rgb.shape == (5, 4, 3) and first.shape == (5, 4, 2)
    ref_rgb, ref_first = fn(feats.reshape(20, 6), dirs.reshape(20, 3))
    torch.testing.assert_close(rgb.reshape(20, 3)[mask.reshape(-1)], ref_rgb[mask.reshape(-1)])
    torch.testing.assert_close(first.reshape(20, 2)[mask.reshape(-1)], ref_first[mask.reshape(-1)])
    assert torch.all(rgb[~mask] == 0) and torch.all(first[~mask] == 0)
    full = apply_on_active(fn, (feats, dirs), torch.ones(5, 4, dtype=torch.bool))
    torch.testing.assert_close(full[0], fn(feats.reshape(20, 6), dirs.reshape(20, 3))[0].reshape(5, 4, 3))
    none = apply_on_active(lambda a: a * 2, feats, torch.zeros(5, 4, dtype=torch.bool), fill=3.0)
    assert torch.all(none == 3.0)
    with pytest.raises(ValueError):
        apply_on_active(fn, (feats, dirs), torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError):
        apply_on_active(lambda a: a, feats.reshape(20, 6), torch.tensor([0, 20]))


def test_apply_on_active_gradients_only_on_active_rows() -> None:
    torch.manual_seed(0)
    mlp = _mlp()
    x = torch.randn(40, 6, requires_grad=True)
    mask = torch.rand(40) > 0.5
    w = torch.randn(40, 3)
    (apply_on_active(mlp, x, mask) * w).sum().backward()
    gx, gp = x.grad.clone(), [p.grad.clone() for p in mlp.parameters()]
    assert torch.all(gx[~mask] == 0) and gx[mask].abs().sum() > 0
    # same as differentiating the MLP on the active rows alone
    mlp.zero_grad()
    x2 = x.detach()[mask].requires_grad_(True)
    (mlp(x2) * w[mask]).sum().backward()
    torch.testing.assert_close(gx[mask], x2.grad)
    for a, p in zip(gp, mlp.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_apply_on_active_gradcheck() -> None:
    torch.manual_seed(0)
    mlp = _mlp(dtype=torch.float64)
    x = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda t: apply_on_active(mlp, t, mask, fill=1.0), (x,))


# ---------------------------------------------------------------------------------------------- construction


def test_from_dense_csr_keeps_largest_magnitudes() -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 40)
    layer = SparseLinear.from_dense(w, sparsity=0.75)
    assert layer.nnz == 160 and abs(layer.sparsity - 0.75) < 1e-9
    mask = layer.mask()
    assert mask.sum() == 160
    assert w[mask].abs().min() >= w[~mask].abs().max()
    torch.testing.assert_close(layer.to_dense(), w * mask)
    assert layer.bias is None
    # sparsity=None keeps the existing non-zeros
    again = SparseLinear.from_dense(layer.to_dense().detach())
    assert torch.equal(again.mask(), mask)


def test_from_dense_nm_structure_and_compact_arrays() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(32, 10)
    for n, m in ((2, 4), (1, 4), (1, 8)):
        layer = SparseLinear.from_dense(lin, format="nm", n=n, m=m)
        groups = layer.mask().reshape(10, 32 // m, m)
        assert torch.all(groups.sum(-1) == n)
        kept = lin.weight.detach().abs().reshape(10, 32 // m, m)
        assert torch.all((kept * groups).amax(-1) == kept.amax(-1))  # the largest of each group is kept
        vals, offs = layer.nm_compact()
        assert vals.shape == offs.shape == (10, 32 // m, n) and offs.dtype == torch.uint8
        dense = layer.to_dense().detach().reshape(10, 32 // m, m)
        torch.testing.assert_close(torch.gather(dense, -1, offs.long()), vals.detach())
        torch.testing.assert_close(layer.bias.detach(), lin.bias.detach())
    with pytest.raises(ValueError):
        SparseLinear.from_dense(nn.Linear(30, 4), format="nm", n=2, m=4)
    with pytest.raises(ValueError):
        SparseLinear.from_dense(lin, sparsity=0.9, format="nm", n=2, m=4)


# ----------------------------------------------------------------------------------------------- numerics


def _check_vs_masked_dense(layer: SparseLinear, x: torch.Tensor, atol: float) -> None:
    x = x.clone().requires_grad_(True)
    y = layer(x)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, layer.values, *([layer.bias] if layer.bias is not None else [])], gy)
    xr = x.detach().clone().requires_grad_(True)
    w = layer.to_dense().detach().requires_grad_(True)
    b = None if layer.bias is None else layer.bias.detach().clone().requires_grad_(True)
    yr = F.linear(xr, w, b)
    ref = torch.autograd.grad(yr, [xr, w, *([b] if b is not None else [])], gy)
    mask = layer.mask()
    torch.testing.assert_close(y, yr, atol=atol, rtol=1e-5)
    torch.testing.assert_close(grads[0], ref[0], atol=atol, rtol=1e-5)
    torch.testing.assert_close(grads[1], ref[1][mask], atol=atol * 20, rtol=1e-4)  # sums over the batch
    if b is not None:
        torch.testing.assert_close(grads[2], ref[2], atol=atol * 20, rtol=1e-4)


@needs_cpp
@pytest.mark.parametrize("tile", [32, 64])
@pytest.mark.parametrize(
    ("batch", "d_in", "d_out", "fmt", "kw"),
    [
        (1, 3, 5, "csr", {"sparsity": 0.5}),
        (77, 35, 19, "csr", {"sparsity": 0.9}),
        (130, 64, 48, "csr", {"sparsity": 0.0}),
        (200, 96, 130, "csr", {"sparsity": 0.99}),
        (65, 32, 16, "nm", {"n": 2, "m": 4}),
        (100, 48, 33, "nm", {"n": 1, "m": 16}),
    ],
)
def test_cpp_matches_masked_dense(tile: int, batch: int, d_in: int, d_out: int, fmt: str, kw: dict) -> None:
    torch.manual_seed(batch + d_in)
    layer = SparseLinear.from_dense(nn.Linear(d_in, d_out), format=fmt, backend="cpp", **kw)
    layer.cpp_tile = tile
    _check_vs_masked_dense(layer, torch.randn(batch, d_in), atol=1e-5)


@needs_cpp
def test_cpp_leading_dims_no_bias_empty_rows_and_auto() -> None:
    torch.manual_seed(0)
    w = torch.randn(24, 40)
    w[3] = 0  # an output row without non-zeros
    w[:, 7] = 0  # an input column without non-zeros
    layer = SparseLinear.from_dense(w)
    assert layer.resolved_backend(torch.zeros(1, 40)) == "cpp"
    x = torch.randn(3, 5, 40)
    torch.testing.assert_close(layer(x), x @ w.t(), atol=1e-5, rtol=1e-5)
    _check_vs_masked_dense(layer, x.reshape(15, 40), atol=1e-5)
    assert layer(torch.zeros(0, 40)).shape == (0, 24)
    with pytest.raises(TypeError):
        layer(x.double())


@pytest.mark.parametrize("backend", ["torch", "dense"])
def test_fallbacks_match_masked_dense(backend: str) -> None:
    torch.manual_seed(0)
    for fmt, kw in (("csr", {"sparsity": 0.8}), ("nm", {"n": 2, "m": 4})):
        layer = SparseLinear.from_dense(nn.Linear(20, 12), format=fmt, backend=backend, **kw)
        _check_vs_masked_dense(layer, torch.randn(33, 20), atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "dense", pytest.param("cpp", marks=needs_cpp)])
def test_sparse_linear_gradcheck_float64(backend: str) -> None:
    torch.manual_seed(0)
    layer = SparseLinear.from_dense(nn.Linear(7, 5).double(), sparsity=0.6, backend=backend)
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)

    def f(inp: torch.Tensor, values: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, {"values": values, "bias": bias}, (inp,))

    vals = layer.values.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, vals, bias))


def test_no_compiler_falls_back_to_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sp, "_ext", lambda: None)
    layer = SparseLinear(16, 8, sparsity=0.5)
    x = torch.randn(4, 16)
    assert layer.resolved_backend(x) == "dense"
    torch.testing.assert_close(layer(x), F.linear(x, layer.to_dense(), layer.bias))
    assert not prefer_sparse(0.99, 256, 256)


# -------------------------------------------------------------------------------------------- module misc


def test_state_dict_round_trip_and_to_linear() -> None:
    torch.manual_seed(0)
    for fmt, kw in (("csr", {"sparsity": 0.7}), ("nm", {"n": 1, "m": 4})):
        a = SparseLinear(32, 16, format=fmt, **kw)
        b = SparseLinear(32, 16, format=fmt, **({"sparsity": 0.2} if fmt == "csr" else kw))  # other nnz
        b.load_state_dict(a.state_dict())
        x = torch.randn(10, 32)
        torch.testing.assert_close(b(x), a(x))
        assert torch.equal(b.mask(), a.mask())
        torch.testing.assert_close(a.to_linear()(x), a(x), atol=1e-5, rtol=1e-5)
    nm_keys = set(SparseLinear(32, 16, format="nm", n=2, m=4).state_dict())
    assert nm_keys == {"values", "bias", "nm_offsets"}


def test_training_step_keeps_pattern() -> None:
    torch.manual_seed(0)
    layer = SparseLinear(24, 8, sparsity=0.75)
    before = layer.mask().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, target = torch.randn(64, 24), torch.randn(64, 8)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.mse_loss(layer(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert torch.equal(layer.mask(), before)


def test_prefer_sparse_policy() -> None:
    assert not prefer_sparse(0.99, 256, 256, device="cuda")
    assert not prefer_sparse(0.5, 256, 256)  # measured: a tie with dense at best
    assert not prefer_sparse(0.99, 16, 16)  # too small to gain anything
    if sp.cpp_available():
        assert prefer_sparse(sp.SPARSE_BREAK_EVEN, 64, 64)
        assert prefer_sparse(0.95, 256, 128)
