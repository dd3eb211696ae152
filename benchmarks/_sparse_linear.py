"""Sparse linear layer vs dense ``F.linear``: forward and backward time at 50/75/90/95% sparsity.

Shapes are those of the small networks here: square hidden layers of 64/128/256 features on batches of
4096-65536 rows (visible primitives or pixels). Backward = grads of input, weights (non-zero values for the
sparse layer) and bias, timed after an untimed forward. Each time is the best of ``repeats`` runs, and the
dense and sparse runs are interleaved, because this 2-core machine is shared with other work (the best run is
the one least disturbed by it). CSR rows use magnitude pruning to the given sparsity; N:M rows use 2:4, 1:4,
1:8 and 1:16 (50, 75, 87.5, 93.75%). The "torch" columns are the pure-PyTorch sparse fallback
(torch.sparse CSR SpMM + sampled_addmm), for reference.

    python benchmarks/_sparse_linear.py [--repeats 5] [--quick] [--threads 1 2] [--no-torch]
                                        [--json benchmarks/results/sparse_linear.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPARSITIES = (0.5, 0.75, 0.9, 0.95)
NM_PATTERNS = ((2, 4), (1, 4), (1, 8), (1, 16))
BATCHES = (4096, 16384, 65536)
FEATURES = (64, 128, 256)
QUICK_BATCHES = (4096,)
QUICK_FEATURES = (64, 256)


def _best_ms(fns: list[Callable[[], None]], repeats: int) -> list[float]:
    """Best-of-``repeats`` wall time in ms of each function, runs interleaved (one warm-up each)."""
    for f in fns:
        f()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            best[i] = min(best[i], (time.perf_counter() - t0) * 1e3)
    return best


def _fwd_bwd(layer_fn: Callable[[Any], Any], x: Any, grads_of: Callable[[], list[Any]], gy: Any):
    """(forward-only callable, backward-only callable) for one layer."""
    import torch

    state: dict[str, Any] = {}

    def fwd() -> None:
        with torch.no_grad():
            layer_fn(x)

    def bwd() -> None:
        y = state.pop("y", None)
        if y is None:  # the forward of this backward is not timed: it runs in prepare()
            y = layer_fn(x)
        torch.autograd.grad(y, [x, *grads_of()], gy)

    def prepare() -> None:
        state["y"] = layer_fn(x)

    return fwd, bwd, prepare


def _time_case(dense: Any, sparse: Any, x: Any, gy: Any, repeats: int, with_torch: bool) -> dict[str, float]:
    import torch.nn.functional as F

    d_fwd, d_bwd, d_prep = _fwd_bwd(
        lambda t: F.linear(t, dense.weight, dense.bias), x, lambda: [dense.weight, dense.bias], gy
    )
    sparse.backend = "cpp"
    s_fwd, s_bwd, s_prep = _fwd_bwd(sparse, x, lambda: [sparse.values, sparse.bias], gy)
    f = _best_ms([d_fwd, s_fwd], repeats)
    # backward: each timed call consumes a graph built by an untimed forward right before it
    bwd = [float("inf"), float("inf")]
    for prep, run in ((d_prep, d_bwd), (s_prep, s_bwd)):  # warm-up
        prep()
        run()
    for _ in range(repeats):
        for prep, run, k in ((d_prep, d_bwd, 0), (s_prep, s_bwd, 1)):
            prep()
            t0 = time.perf_counter()
            run()
            bwd[k] = min(bwd[k], (time.perf_counter() - t0) * 1e3)
    out = {"dense_fwd_ms": f[0], "sparse_fwd_ms": f[1], "dense_bwd_ms": bwd[0], "sparse_bwd_ms": bwd[1]}
    if with_torch:
        t = _torch_backend_ms(sparse, x, gy, max(1, repeats // 2))
        out.update(t)
    sparse.backend = "auto"
    return out


def _torch_backend_ms(sparse: Any, x: Any, gy: Any, repeats: int) -> dict[str, float]:
    sparse.backend = "torch"
    fwd, bwd, prep = _fwd_bwd(sparse, x, lambda: [sparse.values, sparse.bias], gy)
    (tf,) = _best_ms([fwd], repeats)
    tb = float("inf")
    for _ in range(repeats):
        prep()
        t0 = time.perf_counter()
        bwd()
        tb = min(tb, (time.perf_counter() - t0) * 1e3)
    sparse.backend = "cpp"
    return {"torch_sparse_fwd_ms": tf, "torch_sparse_bwd_ms": tb}


def bench_sparse_linear(
    repeats: int = 5, quick: bool = False, with_torch: bool | None = None, threads: int | None = None
) -> list[dict]:
    """Time dense F.linear vs SparseLinear (C++ kernel) on the shapes used here; one dict per case.

    ``threads``: intra-op threads for both (default: torch's current setting). One thread is the robust
    comparison when other processes share the cores: a 2-thread region stalls whenever one core is taken.
    """
    import torch

    if threads is not None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return bench_sparse_linear(repeats, quick, with_torch, None)
        finally:
            torch.set_num_threads(previous)

    from recon.kernels.sparse import SparseLinear, cpp_available

    if not cpp_available():
        print("sparse linear benchmark skipped: the C++ kernel could not be built", file=sys.stderr)
        return []
    with_torch = (not quick) if with_torch is None else with_torch
    batches, features = (QUICK_BATCHES, QUICK_FEATURES) if quick else (BATCHES, FEATURES)
    cases: list[tuple[str, float, dict[str, Any]]] = [("csr", s, {"sparsity": s}) for s in SPARSITIES]
    cases += [("nm", 1 - n / m, {"n": n, "m": m}) for n, m in NM_PATTERNS]
    rows: list[dict] = []
    gen = torch.Generator().manual_seed(0)
    for batch in batches:
        for feat in features:
            dense = torch.nn.Linear(feat, feat)
            x = torch.randn(batch, feat, generator=gen).requires_grad_(True)
            gy = torch.randn(batch, feat, generator=gen)
            for fmt, _sparsity, kw in cases:
                if quick and fmt == "nm" and kw["n"] != 2:
                    continue
                sparse = SparseLinear.from_dense(dense, format=fmt, **kw)
                t = _time_case(dense, sparse, x, gy, repeats, with_torch)
                rows.append(
                    {
                        "format": fmt if fmt == "csr" else f"nm{kw['n']}:{kw['m']}",
                        "sparsity": round(sparse.sparsity, 4),
                        "batch": batch,
                        "threads": torch.get_num_threads(),
                        "in_features": feat,
                        "out_features": feat,
                        **{k: round(v, 3) for k, v in t.items()},
                        "speedup_fwd": round(t["dense_fwd_ms"] / t["sparse_fwd_ms"], 2),
                        "speedup_bwd": round(t["dense_bwd_ms"] / t["sparse_bwd_ms"], 2),
                        "speedup_fwd_bwd": round(
                            (t["dense_fwd_ms"] + t["dense_bwd_ms"]) / (t["sparse_fwd_ms"] + t["sparse_bwd_ms"]), 2
                        ),
                    }
                )
    return rows


def break_even(rows: list[dict]) -> dict[str, Any]:
    """Smallest CSR sparsity at which the sparse layer wins at every batch size, per (threads, features)."""
    out: dict[str, Any] = {}
    for threads, feat in sorted({(r["threads"], r["in_features"]) for r in rows}):
        group = [r for r in rows if r["format"] == "csr" and r["threads"] == threads and r["in_features"] == feat]
        entry: dict[str, Any] = {}
        for key in ("speedup_fwd", "speedup_bwd", "speedup_fwd_bwd"):
            wins = [
                s
                for s in sorted({r["sparsity"] for r in group})
                if all(r[key] > 1.0 for r in group if r["sparsity"] == s)
            ]
            entry[key] = min(wins) if wins else None
        out[f"threads={threads} features={feat}"] = entry
    return out


def print_table(rows: list[dict]) -> None:
    cols = [
        "format",
        "sparsity",
        "threads",
        "batch",
        "in_features",
        "dense_fwd_ms",
        "sparse_fwd_ms",
        "speedup_fwd",
        "dense_bwd_ms",
        "sparse_bwd_ms",
        "speedup_bwd",
        "speedup_fwd_bwd",
    ]
    if rows and "torch_sparse_fwd_ms" in rows[0]:
        cols += ["torch_sparse_fwd_ms", "torch_sparse_bwd_ms"]
    head = [
        "fmt",
        "spars",
        "thr",
        "batch",
        "feat",
        "dense_f",
        "sparse_f",
        "x_f",
        "dense_b",
        "sparse_b",
        "x_b",
        "x_fb",
        "torch_f",
        "torch_b",
    ][: len(cols)]
    widths = [max(len(h), *(len(str(r[c])) for r in rows)) for h, c in zip(head, cols)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for r in rows:
        print("  ".join(str(r[c]).rjust(w) for c, w in zip(cols, widths)))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 4096 only, 64 and 256 features")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="intra-op thread counts to run (default: 1 2; 1 is robust on a shared machine)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the torch.sparse fallback columns")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "sparse_linear.json")
    args = parser.parse_args()

    import torch

    from recon.io.atomic import atomic_write_text
    from recon.kernels.sparse import _ext

    rows: list[dict] = []
    for threads in args.threads:
        rows += bench_sparse_linear(
            args.repeats, args.quick, with_torch=False if args.no_torch else None, threads=threads
        )
    if not rows:
        sys.exit(1)
    print_table(rows)
    be = break_even(rows)
    print("smallest CSR sparsity where sparse wins at every batch size:", json.dumps(be))
    ext = _ext()
    meta = {
        "machine": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "default_threads": torch.get_num_threads(),
        "avx512_kernel": bool(ext.built_with_avx512()) if ext is not None else False,
        "load_avg_1min": os.getloadavg()[0],
        "timing": f"best of {args.repeats}, dense and sparse interleaved, float32",
    }
    atomic_write_text(args.json, json.dumps({"meta": meta, "break_even": be, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
