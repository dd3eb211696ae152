"""Real-data protocols: our default method against --preset plain (vanilla 3DGS on the same code), per scene.

    python benchmarks/real.py --run blender8=../shared/data/real/blender --run llff3=../shared/data/real/llff \
        --run dtu3=../shared/data/real/dtu --work /tmp/real_runs

Each ``--run PROTOCOL=DATA`` runs both methods with ``recon bench run --protocol`` (recon.bench.protocol_runner)
on every scene found under DATA. Prints a table and writes benchmarks/results/real.json (per scene: PSNR, SSIM,
wall time, mode; both methods, the difference, and the published figures of the protocol for reference).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recon.bench.protocol_runner import run_protocol
from recon.io.atomic import atomic_write_text

# Published dataset averages (GPU methods; ../shared/data/real/README.md), for reference only.
PUBLISHED = {
    "blender8": {"3DGS": "21.6-23.2", "FSGS": 24.64, "DropGaussian": 25.42},
    "llff3": {"3DGS": 19.22, "FSGS": 20.31, "CoR-GS": 20.45, "Binocular3DGS": 21.44},
    "dtu3": {"3DGS": 17.65, "CoR-GS": 19.21, "FreeNeRF": 19.92, "Binocular3DGS": 20.71},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="PROTOCOL=DATA",
        help="a protocol and the dataset folder to run it on (repeatable)",
    )
    ap.add_argument("--methods", default="gaussians,gaussians-plain", help="built-in methods to compare")
    ap.add_argument("--work", type=Path, default=Path("bench_runs/real"), help="where the runs go")
    ap.add_argument("--iterations", type=int, default=None, help="override the presets' steps (quick checks)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real.json")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="take WORK/PROTOCOL-METHOD/results.json when it exists (a run made earlier) instead of running again",
    )
    ap.add_argument(
        "--replace", action="store_true", help="start the JSON afresh (default: keep the other protocols' rows)"
    )
    ap.add_argument(
        "--keep-other-methods",
        action="store_true",
        help="keep the rows of methods not run now (default: a protocol that runs again loses all its old rows)",
    )
    ap.add_argument(
        "--note", action="append", default=[], help="a line on how this was measured, kept in the JSON (repeatable)"
    )
    args = ap.parse_args()
    table: dict = {}
    kept_methods: list[str] = []
    if args.out.exists() and not args.replace:
        old = json.loads(args.out.read_text())
        table = {p: rows for p, rows in old.get("table", {}).items()}
        kept_methods = list(old.get("methods") or []) if args.keep_other_methods else []
    for item in args.run:
        protocol, _, data = item.partition("=")
        if not args.keep_other_methods:
            table.pop(protocol, None)  # this protocol's rows are measured again
        for method in args.methods.split(","):
            work = args.work / f"{protocol}-{method}"
            if args.reuse and (work / "results.json").exists():
                res = json.loads((work / "results.json").read_text())
                print(f"{protocol} {method}: reusing {work / 'results.json'}")
            else:
                res = run_protocol(protocol, data, method, work, iterations=args.iterations, progress=print)
            for scene, row in res["scenes"].items():
                entry = table.setdefault(protocol, {}).setdefault(scene, {})
                entry[method] = {
                    k: row[k] for k in ("psnr", "ssim", "lpips", "wall_s", "train_s", "num_gaussians", "mode")
                }
                entry[method]["warnings"] = [w for w in res["warnings"] if w.startswith(f"{scene}:")]
    methods = args.methods.split(",")
    print("\n| protocol | scene | " + " | ".join(f"{m} PSNR | {m} SSIM | {m} s" for m in methods) + " | diff dB |")
    print("|---|---|" + "---|---|---|" * len(methods) + "---|")
    for protocol, scenes in table.items():
        for scene, entry in scenes.items():
            cells = " | ".join(
                f"{entry[m]['psnr']:.2f} | {entry[m]['ssim']:.4f} | {entry[m]['wall_s']:.0f}"
                if m in entry
                else "- | - | -"
                for m in methods
            )
            both = len(methods) > 1 and all(m in entry for m in methods)
            diff = f"{entry[methods[0]]['psnr'] - entry[methods[-1]]['psnr']:+.2f}" if both else "-"
            print(f"| {protocol} | {scene} | {cells} | {diff} |")
    out = {
        "table": table,
        "published": {p: PUBLISHED.get(p) for p in table},
        "methods": list(dict.fromkeys([*kept_methods, *methods])),
        "iterations": args.iterations,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "notes": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
