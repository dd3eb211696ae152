"""Fixtures shared by the end-to-end test files."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI entry point does (before torch is imported)

import pytest

from recon.bench.synth import make_scene


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 96x72 generated SpaRe-style scene (seed 3, split views only); read-only for the tests that use it."""
    path = tmp_path_factory.mktemp("scene") / "tiny"
    make_scene(path, seed=3, width=96, height=72, views="splits")
    return path
