"""Fuzz every input reader with seeded mutations of small valid files; print a table, write JSON.

Readers: transforms.json, COLMAP text, COLMAP binary, SpaRe scene (split JSON, scene.json, projection
matrices, images, masks), image folder (PNG/JPEG headers and data), 3DGS PLY (binary and ASCII). Each case
must end in a valid result or a one-line ReconInputError: any other exception, a hang past the per-case
timeout or a worker crash is a failure, and the worker may allocate at most --mem-gb beyond its imports
(RLIMIT_AS). The engine is benchmarks/_fuzz/. Exit code 1 when any case failed.

    python benchmarks/fuzz_readers.py [--cases 2000] [--seed 0] [--timeout 10] [--mem-gb 2]
                                      [--readers transforms,ply] [--keep-failures DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from benchmarks._fuzz import READERS, format_table, run_fuzz

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="mutated inputs per reader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--mem-gb", type=float, default=2.0, help="allocation cap beyond the worker's imports")
    parser.add_argument("--readers", default=",".join(READERS), help=f"comma-separated subset of {','.join(READERS)}")
    parser.add_argument("--keep-failures", type=Path, default=None, help="copy the input of every failed case here")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_readers.json")
    args = parser.parse_args(argv)
    readers = [r for r in args.readers.split(",") if r]
    unknown = [r for r in readers if r not in READERS]
    if unknown:
        parser.error(f"unknown reader(s) {', '.join(unknown)}; choose from {', '.join(READERS)}")

    def progress(reader: str, i: int, r) -> None:
        if r.outcome in ("exception", "hang", "crash"):
            print(
                f"  FAIL {reader} #{i} ({r.variant}) {r.outcome} {r.type}: {r.detail[:160]} <- {r.mutation[:120]}",
                flush=True,
            )
        elif (i + 1) % 500 == 0:
            print(f"  {reader}: {i + 1}/{args.cases}", flush=True)

    started = time.time()
    report = run_fuzz(
        readers,
        cases=args.cases,
        seed=args.seed,
        timeout_s=args.timeout,
        mem_bytes=int(args.mem_gb * 1024**3),
        keep_failures=args.keep_failures,
        progress=progress,
    )
    print(format_table(report.stats))
    print(
        f"worker baseline RSS {report.settings['baseline_rss_mb']:.0f} MB (libraries); 'max extra MB' is the "
        f"largest rise above it during one case; cap {args.mem_gb:g} GB beyond the imports"
    )

    import cv2
    import numpy
    import pycolmap
    from PIL import Image

    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "versions": {
            "numpy": numpy.__version__,
            "opencv": cv2.__version__,
            "pycolmap": pycolmap.__version__,
            "pillow": Image.__version__,
        },
        **report.to_json(),
        "elapsed_s": round(time.time() - started, 1),
    }
    from recon.io.atomic import atomic_write_text

    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 1 if report.failures() else 0


if __name__ == "__main__":
    raise SystemExit(main())
