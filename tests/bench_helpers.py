"""Helpers shared by the benchmark / leaderboard test files (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from recon.bench.dataset import load_benchmark

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def write_submission(dataset: Path, out: Path, split: str = "dev", offset: int = 10) -> Path:
    """A valid submission: the ground-truth test views brightened by ``offset`` grey levels."""
    bench = load_benchmark(dataset)
    for scene in bench.scenes[split]:
        (out / scene).mkdir(parents=True, exist_ok=True)
        for v in bench.test_views(scene):
            img = cv2.imread(str(v.image), cv2.IMREAD_COLOR).astype(np.int32) + offset
            cv2.imwrite(str(out / scene / v.name), np.clip(img, 0, 255).astype(np.uint8))
    return out


def chromium_dom(url: str, profile: Path) -> str:
    """The DOM headless Chromium builds for ``url`` (scripts run), with its profile in ``profile``."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
