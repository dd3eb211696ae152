"""Regenerate the bundled sample scene data/sample with the project's own generator.

    .venv/bin/python data/make_sample.py            # writes data/sample (replacing it)
    .venv/bin/python data/make_sample.py --out DIR

The sample is seed 2 at 200x150 with the full 49-camera rig and both split files, but only the images,
masks and depth maps of the views the splits use (9 input views of the 9-view track, which include the
3-view track's, and the 10 test views), so it stays a few hundred KB. PNGs are then re-encoded at the
highest zlib level (lossless: the pixels do not change).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from recon.bench.synth import make_scene

SEED, WIDTH, HEIGHT, N_CAMERAS = 2, 200, 150, 49  # seed 2: four objects, a torus, varied textures
NAME = "sample"


def recompress_pngs(folder: Path) -> None:
    """Re-encode every PNG under ``folder`` at zlib level 9, checking that the pixels are unchanged."""
    for path in sorted(folder.rglob("*.png")):
        arr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok and np.array_equal(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), arr), path
        if len(buf) < path.stat().st_size:
            path.write_bytes(buf.tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sample")
    args = parser.parse_args(argv)
    out = make_scene(
        args.out, seed=SEED, width=WIDTH, height=HEIGHT, n_cameras=N_CAMERAS, views="splits", overwrite=True, name=NAME
    )
    recompress_pngs(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
