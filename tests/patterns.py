"""Synthetic images shared by the diffusion-prior tests."""

from __future__ import annotations

import numpy as np


def smooth_pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size x 3 image of one random low-frequency sine wave per channel, values in [0.1, 0.9]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    f = rng.uniform(1, 3, size=(3, 2))
    ph = rng.uniform(0, 6.28, size=3)
    return np.stack([0.5 + 0.4 * np.sin(6.28 * (f[c, 0] * xx + f[c, 1] * yy) + ph[c]) for c in range(3)], -1)
