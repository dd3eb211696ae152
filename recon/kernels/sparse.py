"""Sparse ops for the network components: active-row gather/scatter and a sparse linear layer.

* ``gather_rows`` / ``scatter_rows`` / ``apply_on_active``: evaluate a network only on the rows that matter
  (visible primitives, masked pixels) and scatter the result back; gradients reach only the active rows.
* ``SparseLinear``: ``y = x W^T + b`` with W stored sparse, either CSR (unstructured magnitude pruning) or N:M
  (n kept weights in every group of m consecutive inputs, stored as compact values + uint8 offsets).
  On CPU it runs the C++/OpenMP kernel in ``csrc/sparse_linear.cpp``; elsewhere (CUDA, no compiler,
  ``RECON_NO_CPP=1``, other dtypes) it falls back to pure PyTorch.

Dense ``F.linear`` is very fast on this CPU (oneDNN/MKL GEMM): the sparse layer ties with it at 50% sparsity
and wins from 75%; ``prefer_sparse`` encodes that measured break-even (benchmarks/_sparse_linear.py).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .build import load_cpp_extension

Backend = Literal["auto", "cpp", "torch", "dense"]
Format = Literal["csr", "nm"]

# ----------------------------------------------------------------------------------------------------------
# active rows
# ----------------------------------------------------------------------------------------------------------


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """Rows ``x[index]`` (index_select along dim 0); the gradient is scattered back with index_add."""
    return x.index_select(0, _as_index(index, x.device))


def scatter_rows(src: Tensor, index: Tensor, num_rows: int, fill: float = 0.0) -> Tensor:
    """Inverse of ``gather_rows``: a ``(num_rows, *src.shape[1:])`` tensor whose row ``index[i]`` is ``src[i]``.

    Duplicate indices are summed (index_add semantics); rows not in ``index`` hold ``fill``. The gradient of
    ``src`` is ``grad[index]``.
    """
    index = _as_index(index, src.device)
    if index.numel() != src.shape[0]:
        raise ValueError(f"scatter_rows: {index.numel()} indices for {src.shape[0]} rows")
    base = src.new_full((num_rows, *src.shape[1:]), fill)
    if fill != 0:
        base = base.index_fill(0, index, 0)
    return base.index_add(0, index, src)


def active_indices(active: Tensor, num_rows: int) -> Tensor:
    """Int64 indices of the active rows from a bool mask (any shape, flattened) or an index tensor."""
    if active.dtype == torch.bool:
        if active.numel() != num_rows:
            raise ValueError(f"active mask has {active.numel()} entries for {num_rows} rows")
        return active.reshape(-1).nonzero().squeeze(1)
    index = _as_index(active, active.device)
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_rows):
        raise ValueError(f"active indices out of range [0, {num_rows})")
    return index


TensorOrTuple = Tensor | tuple[Tensor, ...]


def apply_on_active(
    fn: Callable[..., TensorOrTuple], x: TensorOrTuple, active: Tensor, fill: float = 0.0
) -> TensorOrTuple:
    """Evaluate ``fn`` only on the active rows of ``x`` and scatter the result back, ``fill`` elsewhere.

    ``x`` is a tensor or a tuple of tensors sharing their leading dims (passed to ``fn`` as separate
    arguments). ``active`` is either a bool mask whose shape equals those leading dims (e.g. an HxW pixel
    mask for an HxWxC tensor), or a 1-D index tensor into dim 0. ``fn`` maps ``(n, ...)`` rows to ``(n, ...)``
    rows (a tensor or a tuple of tensors); the output keeps the leading dims of ``x``. Inactive rows get no
    gradient and cost nothing. Duplicate indices are evaluated twice and summed.
    """
    xs = (x,) if isinstance(x, Tensor) else tuple(x)
    if not xs:
        raise ValueError("apply_on_active: no input tensors")
    lead = tuple(xs[0].shape[: active.ndim]) if active.dtype == torch.bool else tuple(xs[0].shape[:1])
    for t in xs:
        if tuple(t.shape[: len(lead)]) != lead:
            raise ValueError(f"apply_on_active: inputs have leading dims {tuple(t.shape)} vs {lead}")
    if active.dtype == torch.bool and tuple(active.shape) != lead:
        raise ValueError(f"apply_on_active: mask shape {tuple(active.shape)} != leading dims {lead}")
    num_rows = math.prod(lead)
    flat = tuple(t.reshape(num_rows, *t.shape[len(lead) :]) for t in xs)
    index = active_indices(active.to(xs[0].device), num_rows)

    if active.dtype == torch.bool and index.numel() == num_rows:  # everything active: no gather/scatter
        out = fn(*flat)
    else:
        out = fn(*(gather_rows(t, index) for t in flat))
        out = _map_out(out, lambda o: scatter_rows(o, index, num_rows, fill))
    return _map_out(out, lambda o: o.reshape(*lead, *o.shape[1:]))


def _map_out(out: Any, f: Callable[[Tensor], Tensor]) -> TensorOrTuple:
    if isinstance(out, Tensor):
        return f(out)
    if isinstance(out, (tuple, list)):
        return tuple(f(o) for o in out)
    raise TypeError(f"apply_on_active: fn must return a tensor or a tuple of tensors, got {type(out).__name__}")


def _as_index(index: Tensor, device: torch.device) -> Tensor:
    if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
        raise TypeError(f"expected an integer index tensor, got {index.dtype}")
    if index.ndim != 1:
        index = index.reshape(-1)
    return index.to(device=device, dtype=torch.long)


# ----------------------------------------------------------------------------------------------------------
# when the sparse layer pays
# ----------------------------------------------------------------------------------------------------------

# Measured with benchmarks/_sparse_linear.py on the dev machine (Xeon with AVX-512, float32, batch 4096-65536,
# layers 64x64 to 256x256, against oneDNN/MKL F.linear). At 50% sparsity the C++ kernel only ties with dense
# (0.75-1.1x); from 75% it wins forward and backward at every measured shape (fwd+bwd 1.1-1.8x at 75%,
# 1.4-3x at 90%, 1.5-3.9x at 95%). Layers smaller than 64x64 (e.g. 32x32: 1.05x at 75%) are memory/overhead
# bound and gain nothing, so they stay dense.
SPARSE_BREAK_EVEN = 0.75
SPARSE_MIN_WEIGHTS = 64 * 64


def prefer_sparse(
    sparsity: float,
    in_features: int,
    out_features: int,
    device: torch.device | str = "cpu",
) -> bool:
    """True when a ``SparseLinear`` of this sparsity and shape is expected to beat dense ``F.linear`` here.

    The same threshold holds for inference (forward) and training (forward + backward). Only the CPU C++
    kernel can win; on CUDA (dense cuBLAS) or without a compiler the answer is False.
    """
    if torch.device(device).type != "cpu" or _ext() is None:
        return False
    if in_features * out_features < SPARSE_MIN_WEIGHTS:
        return False
    return sparsity >= SPARSE_BREAK_EVEN


# ----------------------------------------------------------------------------------------------------------
# sparse linear layer
# ----------------------------------------------------------------------------------------------------------


def _ext() -> ModuleType | None:
    return load_cpp_extension("sparse_linear", ["sparse_linear.cpp"])


def cpp_available() -> bool:
    """Whether the C++ sparse-linear kernel could be built (or was found in the cache)."""
    return _ext() is not None


class _CppSparseLinearFn(torch.autograd.Function):
    """Forward and backward through the C++ kernel (CPU, float32/float64)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        values: Tensor,
        bias: Tensor | None,
        ptr: Tensor,
        idx: Tensor,
        tptr: Tensor,
        tidx: Tensor,
        tperm: Tensor,
        tile: int = 0,
    ) -> Tensor:
        ext = _ext()
        assert ext is not None
        ctx.save_for_backward(x, values, ptr, idx, tptr, tidx, tperm)
        ctx.tile = tile
        return ext.forward(x, ptr, idx, values, bias, ptr.numel() - 1, tile)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, values, ptr, idx, tptr, tidx, tperm = ctx.saved_tensors
        need_x, need_v, need_b = ctx.needs_input_grad[:3]
        ext = _ext()
        assert ext is not None
        gx, gv = ext.backward(x, gy.contiguous(), ptr, idx, values, tptr, tidx, tperm, need_x, need_v, ctx.tile)
        gb = gy.sum(0) if need_b else None
        return gx, gv, gb, None, None, None, None, None, None


def _csr(ptr: Tensor, idx: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(ptr, idx.long(), values, size)


class _TorchSparseLinearFn(torch.autograd.Function):
    """Pure-PyTorch sparse path: CSR SpMM (torch.sparse.mm) and a sampled product for the weight gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        values: Tensor,
        bias: Tensor | None,
        ptr: Tensor,
        idx: Tensor,
        tptr: Tensor,
        tidx: Tensor,
        tperm: Tensor,
    ) -> Tensor:
        out, inp = ptr.numel() - 1, x.shape[1]
        w = _csr(ptr, idx, values, (out, inp))
        y = torch.sparse.mm(w, x.t().contiguous()).t()
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(x, values, ptr, idx, tptr, tidx, tperm)
        return y.contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, ...]:
        x, values, ptr, idx, tptr, tidx, tperm = ctx.saved_tensors
        need_x, need_v, need_b = ctx.needs_input_grad[:3]
        out, inp = ptr.numel() - 1, x.shape[1]
        gx = gv = gb = None
        gyt = gy.t().contiguous()
        if need_x:
            wt = _csr(tptr, tidx, values[tperm], (inp, out))
            gx = torch.sparse.mm(wt, gyt).t().contiguous()
        if need_v:
            pattern = _csr(ptr, idx, torch.zeros_like(values), (out, inp))
            gv = torch.sparse.sampled_addmm(pattern, gyt, x.contiguous(), beta=0.0).values().clone()
        if need_b:
            gb = gy.sum(0)
        return gx, gv, gb, None, None, None, None, None


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with only the non-zeros of W stored and trained.

    ``format="csr"``: any sparsity pattern; buffers ``crow_indices`` (int64, out+1) and ``col_indices``
    (int32, nnz). ``format="nm"``: ``n`` kept weights per group of ``m`` consecutive inputs (2:4, 1:4, ...),
    buffer ``nm_offsets`` (uint8, out x in/m x n: offsets inside each group). In both formats the trainable
    parameter ``values`` holds the non-zeros in row-major (CSR) order, so for N:M it is a view of the compact
    ``(out, in/m, n)`` array. ``backend``: "auto" (C++ kernel on CPU when available, else "dense"), "cpp",
    "torch" (torch.sparse CSR ops) or "dense" (materialise W and call F.linear; fastest off-CPU).
    ``cpp_tile``: batch tile width of the C++ kernel, 0 = automatic (64 up to 128 features, else 32).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        sparsity: float | None = None,
        format: Format = "csr",
        n: int = 2,
        m: int = 4,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """A randomly initialised layer (nn.Linear's init), magnitude-pruned to ``sparsity`` (CSR, default 0.9)
        or to ``n:m`` (format "nm")."""
        super().__init__()
        if sparsity is None and format == "csr":
            sparsity = 0.9
        dense = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_from(
            dense.weight.detach(),
            None if dense.bias is None else dense.bias.detach(),
            _prune_mask(dense.weight.detach(), sparsity, format, n, m),
            format,
            n,
            m,
        )
        self.backend: Backend = backend
        self.cpp_tile = 0

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        linear_or_weight: nn.Linear | Tensor,
        sparsity: float | None = None,
        format: Format = "csr",
        n: int = 2,
        m: int = 4,
        bias: Tensor | None = None,
        backend: Backend = "auto",
    ) -> SparseLinear:
        """Magnitude-prune a dense layer (or an ``(out, in)`` weight + optional ``bias``).

        CSR keeps the ``round((1 - sparsity) * numel)`` largest |w| of the whole matrix (``sparsity=None``:
        keep the existing non-zeros). N:M keeps the ``n`` largest |w| of each group of ``m`` inputs
        (``sparsity``, if given, must equal ``1 - n/m``).
        """
        if isinstance(linear_or_weight, nn.Linear):
            weight = linear_or_weight.weight.detach()
            if bias is None and linear_or_weight.bias is not None:
                bias = linear_or_weight.bias.detach()
        else:
            weight = linear_or_weight.detach()
        if weight.ndim != 2:
            raise ValueError(f"SparseLinear.from_dense: weight must be 2-D, got shape {tuple(weight.shape)}")
        return cls.from_mask(weight, _prune_mask(weight, sparsity, format, n, m), bias, format, n, m, backend)

    @classmethod
    def from_mask(
        cls,
        weight: Tensor,
        mask: Tensor,
        bias: Tensor | None = None,
        format: Format = "csr",
        n: int = 2,
        m: int = 4,
        backend: Backend = "auto",
    ) -> SparseLinear:
        """Keep ``weight`` where ``mask`` is True (for "nm" the mask must have exactly n per group of m)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._init_from(weight.detach(), None if bias is None else bias.detach(), mask.to(torch.bool), format, n, m)
        self.backend = backend
        self.cpp_tile = 0
        return self

    def _init_from(self, weight: Tensor, bias: Tensor | None, mask: Tensor, format: Format, n: int, m: int) -> None:
        out_features, in_features = weight.shape
        if mask.shape != weight.shape:
            raise ValueError(f"SparseLinear: mask shape {tuple(mask.shape)} != weight shape {tuple(weight.shape)}")
        if format not in ("csr", "nm"):
            raise ValueError(f"SparseLinear: unknown format {format!r} (use 'csr' or 'nm')")
        self.in_features, self.out_features, self.format = in_features, out_features, format
        self.n, self.m = (n, m) if format == "nm" else (0, 0)
        rows, cols = mask.nonzero(as_tuple=True)  # row-major order = CSR order
        self.values = nn.Parameter(weight[rows, cols].clone().contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.clone().reshape(out_features))
        if format == "csr":
            counts = torch.bincount(rows, minlength=out_features)
            crow = torch.zeros(out_features + 1, dtype=torch.long, device=weight.device)
            crow[1:] = counts.cumsum(0)
            self.register_buffer("crow_indices", crow)
            self.register_buffer("col_indices", cols.to(torch.int32))
        else:
            _check_nm(in_features, n, m)
            groups = in_features // m
            counts = mask.reshape(out_features, groups, m).sum(-1)
            if not bool((counts == n).all()):
                raise ValueError(f"SparseLinear: mask is not {n}:{m} structured")
            self.register_buffer("nm_offsets", (cols % m).to(torch.uint8).reshape(out_features, groups, n))
        self._rebuild()

    def _rebuild(self) -> None:
        """Derive the kernel's CSR and transposed (CSC) structure from the persistent buffers."""
        dev = self.values.device
        if self.format == "csr":
            ptr, idx = self.crow_indices, self.col_indices
        else:
            groups = self.in_features // self.m
            base = torch.arange(groups, device=dev, dtype=torch.int32).mul_(self.m).view(1, groups, 1)
            idx = (self.nm_offsets.to(torch.int32) + base).reshape(-1)
            ptr = torch.arange(self.out_features + 1, device=dev, dtype=torch.long) * (groups * self.n)
        rows = torch.repeat_interleave(torch.arange(self.out_features, device=dev), ptr.diff())
        cols = idx.long()
        tperm = torch.argsort(cols * self.out_features + rows, stable=True)
        tptr = torch.zeros(self.in_features + 1, dtype=torch.long, device=dev)
        tptr[1:] = torch.bincount(cols, minlength=self.in_features).cumsum(0)
        for name, t in (
            ("_ptr", ptr),
            ("_idx", idx.to(torch.int32).contiguous()),
            ("_rows", rows),
            ("_tptr", tptr),
            ("_tidx", rows[tperm].to(torch.int32)),
            ("_tperm", tperm),
        ):
            self.register_buffer(name, t, persistent=False)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # the number of non-zeros may differ from this instance's: adopt the stored shapes, then rebuild
        for name in ("values", "crow_indices", "col_indices", "nm_offsets"):
            key = prefix + name
            if key in state_dict and hasattr(self, name) and getattr(self, name).shape != state_dict[key].shape:
                cur = getattr(self, name)
                new = torch.empty(state_dict[key].shape, dtype=cur.dtype, device=cur.device)
                if name == "values":
                    self.values.data = new
                else:
                    self._buffers[name] = new
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._rebuild()

    # -- inspection ----------------------------------------------------------------------------------------
    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / max(1, self.in_features * self.out_features)

    def mask(self) -> Tensor:
        """The ``(out, in)`` bool pattern of stored weights."""
        m = torch.zeros(self.out_features, self.in_features, dtype=torch.bool, device=self.values.device)
        m[self._rows, self._idx.long()] = True
        return m

    def to_dense(self) -> Tensor:
        """The ``(out, in)`` weight with zeros off the pattern (differentiable w.r.t. ``values``)."""
        w = self.values.new_zeros(self.out_features, self.in_features)
        return w.index_put((self._rows, self._idx.long()), self.values)

    def nm_compact(self) -> tuple[Tensor, Tensor]:
        """For format "nm": ``(values, offsets)`` shaped ``(out, in/m, n)``."""
        if self.format != "nm":
            raise ValueError("nm_compact: layer is not N:M")
        shape = (self.out_features, self.in_features // self.m, self.n)
        return self.values.view(shape), self.nm_offsets

    def to_linear(self) -> nn.Linear:
        """An equivalent dense ``nn.Linear`` (pruned weights are zeros)."""
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.values.device,
            dtype=self.values.dtype,
        )
        with torch.no_grad():
            lin.weight.copy_(self.to_dense())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self) -> str:
        fmt = f"nm={self.n}:{self.m}" if self.format == "nm" else "csr"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"{fmt}, sparsity={self.sparsity:.3f}, backend={self.backend}"
        )

    # -- compute -------------------------------------------------------------------------------------------
    def resolved_backend(self, x: Tensor) -> str:
        """The backend ``forward`` will use for this input."""
        if self.backend != "auto":
            return self.backend
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and _ext() is not None:
            return "cpp"
        return "dense"

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear: input has {x.shape[-1]} features, expected {self.in_features}")
        backend = self.resolved_backend(x)
        if backend == "dense":
            return F.linear(x, self.to_dense(), self.bias)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).contiguous()
        if x2.dtype != self.values.dtype:
            raise TypeError(f"SparseLinear: input dtype {x2.dtype} != weight dtype {self.values.dtype}")
        args = (x2, self.values, self.bias, self._ptr, self._idx, self._tptr, self._tidx, self._tperm)
        if backend == "cpp":
            if _ext() is None or x.device.type != "cpu":
                raise RuntimeError("SparseLinear: the C++ backend needs a CPU tensor and a built extension")
            y = _CppSparseLinearFn.apply(*args, self.cpp_tile)
        elif backend == "torch":
            y = _TorchSparseLinearFn.apply(*args)
        else:
            raise ValueError(f"SparseLinear: unknown backend {backend!r}")
        return y.reshape(*lead, self.out_features)


def _check_nm(in_features: int, n: int, m: int) -> None:
    if not (1 <= n <= m <= 255):
        raise ValueError(f"SparseLinear: need 1 <= n <= m <= 255 for N:M, got {n}:{m}")
    if in_features % m:
        raise ValueError(f"SparseLinear: in_features={in_features} is not a multiple of m={m}")


def _prune_mask(weight: Tensor, sparsity: float | None, format: Format, n: int, m: int) -> Tensor:
    """Magnitude-pruning mask (True = keep) for CSR (global top-k) or N:M (top-n per group of m)."""
    out_features, in_features = weight.shape
    mag = weight.abs()
    if format == "nm":
        _check_nm(in_features, n, m)
        if sparsity is not None and abs(sparsity - (1 - n / m)) > 1e-6:
            raise ValueError(f"SparseLinear: {n}:{m} means sparsity {1 - n / m:.4f}, got {sparsity}")
        groups = mag.reshape(out_features, in_features // m, m)
        keep = groups.topk(n, dim=-1).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
        return mask.reshape(out_features, in_features)
    if format != "csr":
        raise ValueError(f"SparseLinear: unknown format {format!r} (use 'csr' or 'nm')")
    if sparsity is None:
        return weight != 0
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"SparseLinear: sparsity must be in [0, 1], got {sparsity}")
    keep = int(round((1.0 - sparsity) * weight.numel()))
    mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    if keep > 0:
        mask[mag.reshape(-1).topk(keep).indices] = True
    return mask.reshape(out_features, in_features)


__all__ = [
    "gather_rows",
    "scatter_rows",
    "active_indices",
    "apply_on_active",
    "SparseLinear",
    "prefer_sparse",
    "cpp_available",
    "SPARSE_BREAK_EVEN",
    "SPARSE_MIN_WEIGHTS",
]
