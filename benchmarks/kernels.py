"""Benchmark the CPU kernels: Gaussian rasterisation (C++ kernel vs PyTorch reference, same run) and the
sparse linear layer vs dense (from benchmarks/_sparse_linear.py when present).

Each (N Gaussians, resolution) case runs in its own subprocess per backend so that the peak resident
memory (VmHWM from /proc/self/status) belongs to that case alone. Times are medians over repeats of the
full CPU path: projection + SH (degree 3) + binning + compositing (forward), and loss.backward().

    python benchmarks/kernels.py [--repeats 5] [--ref-repeats 2] [--json benchmarks/results/kernels.json] [--quick]
                                 [--baseline REV]

``--baseline REV`` also times the C++ path of an older commit's ``recon`` package (``git archive`` into a temporary
folder; its kernel builds into its own cache folder) case by case in the same run, alternating with this
tree's, and records ``speedup_vs_baseline`` (a before/after figure that does not depend on the machine's load
at two different times).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# a baseline worker imports ``recon`` from the older tree named by RECON_BENCH_ROOT
_IMPORT_ROOT = os.environ.get("RECON_BENCH_ROOT") or str(ROOT)
# only when run as a script: a program that imports this module (for make_scene, say) keeps its own ``recon``
# (inserting here silently made both sides of such a program's before/after comparison run this tree)
if __name__ == "__main__" and _IMPORT_ROOT not in sys.path:
    sys.path.insert(0, _IMPORT_ROOT)

GAUSSIANS = (5_000, 20_000, 100_000)
RESOLUTIONS = ((128, 128), (256, 256), (400, 300))
QUICK_GAUSSIANS = (5_000, 20_000)
QUICK_RESOLUTIONS = ((128, 128), (256, 256))
TARGET = {
    "n": 20_000,
    "res": (256, 256),
    "max_fwd_bwd_s": 0.35,
    "min_speedup": 20.0,
    "min_speedup_vs_baseline": 1.5,  # issue 21: forward+backward against the commit before its changes
    "mem_case": (100_000, (400, 300)),
    "max_mem_mb": 2048,
}


def make_scene(n: int, width: int, height: int, seed: int = 0, sh_degree: int = 3):
    """Random Gaussians in a [-1,1]^3 box seen from 3.5 units away with a 60 degree horizontal FOV.

    Scales are log-normal around 0.03 (each Gaussian covers a few 16x16 tiles), opacities sigmoid(N(0,1.5)).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * 2 - 1
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.3 + math.log(0.03))
    opacities = torch.sigmoid(torch.randn(n, generator=g) * 1.5)
    sh = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.2
    f = 0.5 * width / math.tan(math.radians(30.0))
    viewmat = torch.eye(4)[None].clone()
    viewmat[0, 2, 3] = 3.5
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])[None]
    return [means, quats, scales, opacities, sh], viewmat, K


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(
    backend: str, n: int, width: int, height: int, repeats: int, warmup: int, budget_s: float = 60.0
) -> dict[str, Any]:
    """Time forward and backward of ``rasterize`` for one case in this process.

    Stops repeating once ``budget_s`` seconds of timed runs have passed (at least one run): the PyTorch
    reference takes minutes on the largest case.
    """
    import torch

    from recon.kernels import rasterize

    params, viewmat, K = make_scene(n, width, height)
    leaves = [p.requires_grad_(True) for p in params]
    fwd, bwd, fwd_cpu, bwd_cpu = [], [], [], []
    meta: dict[str, Any] = {}
    for i in range(warmup + repeats):
        for p in leaves:
            p.grad = None
        t0, c0 = time.perf_counter(), time.process_time()
        colors, alphas, meta = rasterize(*leaves, viewmat, K, width, height, sh_degree=3, backend=backend)
        t1, c1 = time.perf_counter(), time.process_time()
        (colors.sum() + alphas.sum()).backward()
        t2, c2 = time.perf_counter(), time.process_time()
        if i >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            fwd_cpu.append(c1 - c0)
            bwd_cpu.append(c2 - c1)
        alpha_mean = float(alphas.detach().mean())
        if fwd and sum(fwd) + sum(bwd) > budget_s:
            break
    return {
        "backend": meta.get("backend", backend),
        "fwd_s": statistics.median(fwd),
        "bwd_s": statistics.median(bwd),
        "fwd_bwd_s": statistics.median([a + b for a, b in zip(fwd, bwd)]),
        "fwd_bwd_min_s": min(a + b for a, b in zip(fwd, bwd)),
        # CPU seconds of all threads: less sensitive than wall time to other jobs on a busy machine
        "fwd_bwd_cpu_s": statistics.median([a + b for a, b in zip(fwd_cpu, bwd_cpu)]),
        "repeats": len(fwd),
        "peak_rss_mb": peak_rss_mb(),
        "n_isects": int(meta["isect_ids"].numel()),
        "visible": int((meta["radii"] > 0).sum()),
        "alpha_mean": alpha_mean,
        "threads": torch.get_num_threads(),
    }


def run_case(
    backend: str, n: int, width: int, height: int, repeats: int, warmup: int, root: Path | None = None
) -> dict[str, Any]:
    """Run ``worker`` in a fresh interpreter (importing ``recon`` from ``root``, default this tree); parse its JSON."""
    cmd = [sys.executable, __file__, "--worker", backend, str(n), str(width), str(height), str(repeats), str(warmup)]
    env = dict(os.environ)
    if root is not None:
        env["RECON_BENCH_ROOT"] = str(root)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root or ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed ({backend}, {n}, {width}x{height}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def checkout_baseline(rev: str, dest: Path) -> Path:
    """``recon`` of commit ``rev`` extracted under ``dest``; its kernel is built once there (outside the timings)."""
    archive = subprocess.run(["git", "archive", rev, "recon"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    env = dict(os.environ, RECON_BENCH_ROOT=str(dest))
    code = "from recon.kernels import cpu_raster; assert cpu_raster.available()"
    subprocess.run([sys.executable, "-c", code], cwd=dest, env=env, check=True)
    return dest


def bench_raster(repeats: int, ref_repeats: int, quick: bool, baseline: Path | None = None) -> list[dict[str, Any]]:
    rows = []
    gaussians = QUICK_GAUSSIANS if quick else GAUSSIANS
    resolutions = QUICK_RESOLUTIONS if quick else RESOLUTIONS
    # build the extension once up front so no case pays the compile
    from recon.kernels import cpu_raster

    cpu_raster.available()
    for n in gaussians:
        for width, height in resolutions:
            base = run_case("cpp", n, width, height, repeats, warmup=1, root=baseline) if baseline else None
            k = run_case("cpp", n, width, height, repeats, warmup=1)
            r = run_case(
                "reference", n, width, height, ref_repeats, warmup=1 if n * width * height <= 20_000 * 65_536 else 0
            )
            rows.append(
                {
                    "n_gaussians": n,
                    "width": width,
                    "height": height,
                    "kernel": k,
                    "reference": r,
                    "speedup_fwd": r["fwd_s"] / k["fwd_s"],
                    "speedup_bwd": r["bwd_s"] / k["bwd_s"],
                    "speedup": r["fwd_bwd_s"] / k["fwd_bwd_s"],
                }
            )
            if base is not None:
                rows[-1]["baseline"] = base
                rows[-1]["speedup_vs_baseline"] = base["fwd_bwd_s"] / k["fwd_bwd_s"]
                rows[-1]["speedup_vs_baseline_fwd"] = base["fwd_s"] / k["fwd_s"]
                rows[-1]["speedup_vs_baseline_bwd"] = base["bwd_s"] / k["bwd_s"]
                rows[-1]["speedup_vs_baseline_min"] = base["fwd_bwd_min_s"] / k["fwd_bwd_min_s"]
                rows[-1]["speedup_vs_baseline_cpu"] = base["fwd_bwd_cpu_s"] / k["fwd_bwd_cpu_s"]
            print(
                f"  {n:>7} {width}x{height}: kernel {k['fwd_bwd_s'] * 1e3:.1f} ms, "
                f"reference {r['fwd_bwd_s'] * 1e3:.0f} ms"
                + (f", baseline {base['fwd_bwd_s'] * 1e3:.1f} ms" if base else ""),
                file=sys.stderr,
                flush=True,
            )
    return rows


def print_raster_table(rows: list[dict[str, Any]]) -> None:
    headers = [
        "N",
        "res",
        "isects",
        "fwd ms",
        "bwd ms",
        "f+b ms",
        "ref fwd ms",
        "ref bwd ms",
        "ref runs",
        "speedup",
        "peak MB",
        "ref peak MB",
    ]
    body = [
        [
            f"{r['n_gaussians']:,}",
            f"{r['width']}x{r['height']}",
            f"{r['kernel']['n_isects']:,}",
            f"{r['kernel']['fwd_s'] * 1e3:.1f}",
            f"{r['kernel']['bwd_s'] * 1e3:.1f}",
            f"{r['kernel']['fwd_bwd_s'] * 1e3:.1f}",
            f"{r['reference']['fwd_s'] * 1e3:.0f}",
            f"{r['reference']['bwd_s'] * 1e3:.0f}",
            f"{r['reference']['repeats']}",
            f"{r['speedup']:.1f}x",
            f"{r['kernel']['peak_rss_mb']:.0f}",
            f"{r['reference']['peak_rss_mb']:.0f}",
        ]
        for r in rows
    ]
    if rows and "baseline" in rows[0]:
        headers += ["base f+b ms", "vs base", "vs base (CPU s)"]
        for line, r in zip(body, rows):
            line += [f"{r['baseline']['fwd_bwd_s'] * 1e3:.1f}", f"{r['speedup_vs_baseline']:.2f}x"]
            line += [f"{r['speedup_vs_baseline_cpu']:.2f}x"]
    _print_table("Gaussian rasterisation, CPU (projection + SH3 + binning + compositing)", headers, body)


def print_generic_table(title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    headers = list(rows[0].keys())
    body = [[_fmt(r.get(h)) for h in headers] for r in rows]
    _print_table(title, headers, body)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print_table(title: str, headers: list[str], body: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for h in headers:
            table.add_column(h, justify="right")
        for row in body:
            table.add_row(*row)
        Console(width=max(160, Console().width)).print(table)
    except ImportError:  # plain text
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
        for row in body:
            print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def check_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's acceptance figures, evaluated on this run."""
    out: dict[str, Any] = {}
    for r in rows:
        if r["n_gaussians"] == TARGET["n"] and (r["width"], r["height"]) == TARGET["res"]:
            out["fwd_bwd_s_20k_256"] = r["kernel"]["fwd_bwd_s"]
            out["fwd_bwd_ok"] = r["kernel"]["fwd_bwd_s"] <= TARGET["max_fwd_bwd_s"]
            out["speedup_20k_256"] = r["speedup"]
            out["speedup_ok"] = r["speedup"] >= TARGET["min_speedup"]
            if "speedup_vs_baseline" in r:
                out["speedup_vs_baseline_20k_256"] = r["speedup_vs_baseline"]
                out["speedup_vs_baseline_cpu_20k_256"] = r["speedup_vs_baseline_cpu"]
                out["speedup_vs_baseline_ok"] = r["speedup_vs_baseline"] >= TARGET["min_speedup_vs_baseline"]
        n_mem, res_mem = TARGET["mem_case"]
        if r["n_gaussians"] == n_mem and (r["width"], r["height"]) == res_mem:
            out["peak_rss_mb_100k_400x300"] = r["kernel"]["peak_rss_mb"]
            out["memory_ok"] = r["kernel"]["peak_rss_mb"] < TARGET["max_mem_mb"]
    return out


def _git_head() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the C++ kernel per case")
    parser.add_argument("--ref-repeats", type=int, default=2, help="timed repeats of the (slow) reference per case")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "kernels.json")
    parser.add_argument("--quick", action="store_true", help="small cases only (5k/20k at 128^2/256^2)")
    parser.add_argument("--no-sparse", action="store_true", help="skip the sparse linear benchmark")
    parser.add_argument("--baseline", metavar="REV", help="also time the C++ path of this older commit, case by case")
    parser.add_argument(
        "--worker", nargs=6, metavar=("BACKEND", "N", "W", "H", "REPEATS", "WARMUP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.worker:
        backend, n, w, h, reps, warm = args.worker
        print(json.dumps(worker(backend, int(n), int(w), int(h), int(reps), int(warm))))
        return 0

    started = time.time()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="recon-baseline-") as tmp:
        baseline = checkout_baseline(args.baseline, Path(tmp)) if args.baseline else None
        rows = bench_raster(args.repeats, args.ref_repeats, args.quick, baseline)
    print_raster_table(rows)
    sparse_rows: list[dict[str, Any]] | None = None
    if not args.no_sparse:
        try:
            from benchmarks._sparse_linear import bench_sparse_linear
        except ImportError:
            bench_sparse_linear = None  # type: ignore[assignment]
        if bench_sparse_linear is not None:
            sparse_rows = bench_sparse_linear(repeats=args.repeats, quick=args.quick, threads=1)
            print_generic_table("Sparse linear vs dense", sparse_rows)
    targets = check_targets(rows)
    if targets:
        print("targets:", json.dumps(targets))

    import torch

    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "load_avg_at_start": load_before,
            # other jobs on the machine inflate every time (both sides of a baseline comparison alike)
            "under_load": bool(load_before and load_before[0] > 0.5 * (os.cpu_count() or 1)),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "settings": {
            "repeats": args.repeats,
            "ref_repeats": args.ref_repeats,
            "quick": args.quick,
            "sh_degree": 3,
            "baseline": args.baseline,
            "commit": _git_head(),
        },
        "rasterization": rows,
        "sparse_linear": sparse_rows,
        "targets": targets,
        "elapsed_s": time.time() - started,
    }
    from recon.io.atomic import atomic_write_text

    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
