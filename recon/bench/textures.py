"""Solid (3D) procedural textures for synthetic scenes.

A texture maps points in an object's local frame to RGB albedo, so the appearance of a surface point is the
same from every view (what multi-view reconstruction needs) and no UV unwrapping is required. Two families:

* procedural: checker, stripes, cells (Voronoi), dots, gradient;
* photo-like: marble, wood, granite, and multi-octave coloured noise ("fbm"), which have the irregular
  multi-scale detail of real materials.

Everything is vectorised numpy and fully determined by the ``numpy.random.Generator`` that built it.
Products of Nx3 arrays use ``einsum`` rather than ``@``: BLAS threads fight open3d's ray-casting threads
(measured 4x slower scene synthesis with multi-threaded OpenBLAS).
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

PROCEDURAL = ("checker", "stripes", "cells", "dots", "gradient")
PHOTO_LIKE = ("marble", "wood", "granite", "fbm")
KINDS = PROCEDURAL + PHOTO_LIKE

_LATTICE = 32  # periodic lattice of the value noise (power of two)


class ValueNoise:
    """Smooth 3D value noise on a periodic random lattice, with fractal (fbm) sums of octaves."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.table = rng.random(_LATTICE**3).astype(np.float32)
        # A random rotation and offset per octave hides the lattice axes and the period.
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        self.rotation = q
        self.offsets = rng.uniform(0, _LATTICE, size=(8, 3))

    def value(self, p: np.ndarray) -> np.ndarray:
        """Noise in [0, 1] at points p (Nx3), one lattice cell per unit."""
        f = np.floor(p)
        t = p - f
        t = t * t * (3.0 - 2.0 * t)  # smoothstep: no visible lattice creases
        i = f.astype(np.int64) & (_LATTICE - 1)
        i1 = (i + 1) & (_LATTICE - 1)
        xs, ys, zs = (i[:, 0], i1[:, 0]), (i[:, 1], i1[:, 1]), (i[:, 2], i1[:, 2])
        out = np.zeros(len(p), dtype=np.float64)
        for a in (0, 1):
            wa = t[:, 0] if a else 1.0 - t[:, 0]
            for b in (0, 1):
                wb = t[:, 1] if b else 1.0 - t[:, 1]
                for c in (0, 1):
                    wc = t[:, 2] if c else 1.0 - t[:, 2]
                    idx = (xs[a] * _LATTICE + ys[b]) * _LATTICE + zs[c]
                    out += wa * wb * wc * self.table[idx]
        return out

    def fbm(self, p: np.ndarray, octaves: int = 4, gain: float = 0.5) -> np.ndarray:
        """Fractal sum of ``octaves`` octaves, normalised to about [0, 1]."""
        total, amp, norm = np.zeros(len(p)), 1.0, 0.0
        q = np.asarray(p, dtype=np.float64)
        for k in range(octaves):
            total += amp * self.value(q + self.offsets[k % len(self.offsets)])
            norm += amp
            amp *= gain
            q = np.einsum("ij,kj->ik", q, self.rotation) * 2.0
        return total / norm


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


def random_palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` colours around a random hue (analogous, triadic or complementary), dark to light: nx3 in [0, 1].

    Values are spread from dark to light so that any two palette entries are told apart by brightness too
    (features a matcher can find, even for similar hues).
    """
    h0 = rng.random()
    spread = rng.choice([0.08, 0.5, 0.33])
    values = np.linspace(0.25, 0.95, n) + rng.uniform(-0.05, 0.05, n)
    cols = [_hsv(h0 + spread * k + rng.normal(0, 0.03), rng.uniform(0.3, 0.9), values[k]) for k in range(n)]
    return np.stack(cols)


def _ramp(t: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Piecewise-linear colour ramp through ``colours`` for t in [0, 1]."""
    t = np.clip(t, 0.0, 1.0) * (len(colours) - 1)
    k = np.minimum(np.floor(t).astype(np.int64), len(colours) - 2)
    w = (t - k)[:, None]
    return colours[k] * (1 - w) + colours[k + 1] * w


@dataclass
class Texture:
    """A solid texture: ``texture(points Nx3) -> albedo Nx3 float32``; ``scale`` is its feature size.

    The pattern is evaluated at ``points / scale + offset``.
    """

    kind: str
    scale: float
    offset: np.ndarray
    _eval: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        if len(points) == 0:
            return np.zeros((0, 3), dtype=np.float32)
        rgb = self._eval(np.asarray(points, dtype=np.float64) / self.scale + self.offset)
        return np.clip(rgb, 0.0, 1.0).astype(np.float32)

    def describe(self) -> dict:
        """JSON-friendly description for scene metadata."""
        return {"kind": self.kind, "scale": round(float(self.scale), 4)}


def make_texture(kind: str, rng: np.random.Generator, scale: float = 1.0) -> Texture:
    """Build a texture of ``kind`` (one of KINDS) with random colours and parameters drawn from ``rng``."""
    if kind not in KINDS:
        raise ValueError(f"unknown texture kind {kind!r}; expected one of {KINDS}")
    noise = ValueNoise(rng)
    # Shifting the pattern off the origin keeps lattice boundaries (checker edges) off flat faces at z = 0.
    offset = rng.uniform(0.2, 0.8, size=3)
    pal = random_palette(rng, 4)
    grime = rng.uniform(0.05, 0.2)  # low-frequency shading variation, as on real objects

    def dirty(p: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        return rgb * (1.0 - grime + 2 * grime * noise.fbm(p * 0.7 + 11.0, 3))[:, None]

    if kind == "checker":
        f = rng.uniform(1.2, 2.5)

        def ev(p):
            parity = (np.floor(p * f).astype(np.int64).sum(axis=1) & 1).astype(bool)
            return dirty(p, np.where(parity[:, None], pal[0], pal[3]))

    elif kind == "stripes":
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        f = rng.uniform(1.0, 2.5)
        sharp = rng.uniform(2.0, 8.0)

        def ev(p):
            s = np.sin(2 * np.pi * f * np.einsum("ij,j->i", p, d))
            t = 0.5 + 0.5 * np.tanh(sharp * s)
            return dirty(p, _ramp(t, pal[[0, 3]]))

    elif kind == "cells":
        n = int(rng.integers(60, 160))
        seeds = rng.uniform(-2.5, 2.5, size=(n, 3))
        tree = cKDTree(seeds)
        cell_cols = np.clip(pal[rng.integers(0, 4, n)] + rng.normal(0, 0.06, (n, 3)), 0, 1)
        border = rng.uniform(0.02, 0.06)

        def ev(p):
            dist, idx = tree.query(p, k=2)
            edge = np.clip((dist[:, 1] - dist[:, 0]) / border, 0.0, 1.0)[:, None]
            return dirty(p, cell_cols[idx[:, 0]] * (0.35 + 0.65 * edge))

    elif kind == "dots":
        f = rng.uniform(1.3, 2.5)
        rad = rng.uniform(0.22, 0.4)

        def ev(p):
            q = p * f
            d = np.linalg.norm(q - np.round(q), axis=1)
            inside = (0.5 + 0.5 * np.tanh((rad - d) * 30.0))[:, None]
            return dirty(p, pal[0] * inside + pal[3] * (1 - inside))

    elif kind == "gradient":
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)

        def ev(p):
            t = 0.5 + 0.5 * np.tanh(np.einsum("ij,j->i", p, d) * 1.5 + 0.6 * (noise.fbm(p * 2.0, 3) - 0.5))
            return dirty(p, _ramp(t, pal[:3]))

    elif kind == "marble":
        base = _hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.8, 0.95))
        vein = _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.15, 0.45))
        f = rng.uniform(2.0, 4.0)
        turb = rng.uniform(4.0, 8.0)

        def ev(p):
            s = np.sin(f * (p[:, 0] + 0.3 * p[:, 2]) + turb * noise.fbm(p * 1.5, 5))
            t = np.abs(s) ** 0.35
            return _ramp(t, np.stack([vein, (vein + base) / 2, base]))

    elif kind == "wood":
        light = _hsv(rng.uniform(0.05, 0.11), rng.uniform(0.45, 0.7), rng.uniform(0.6, 0.85))
        dark = light * rng.uniform(0.45, 0.65)
        rings = rng.uniform(2.5, 5.0)
        axis = rng.integers(0, 3)

        def ev(p):
            q = np.delete(p, axis, axis=1)
            r = np.linalg.norm(q + 0.35 * (noise.fbm(p * 1.2, 3)[:, None] - 0.5), axis=1) * rings
            r = r + 0.8 * noise.fbm(p * 6.0 + 3.0, 2)
            t = (r - np.floor(r)) ** 2.5
            grain = 0.85 + 0.3 * noise.fbm(p * 10.0, 2)
            return _ramp(t, np.stack([light, dark])) * grain[:, None]

    elif kind == "granite":
        speck = np.clip(pal + rng.normal(0, 0.05, pal.shape), 0, 1)

        def ev(p):
            a = noise.fbm(p * 3.0, 4)
            b = noise.fbm(p * 6.0 + 7.0, 3)
            rgb = _ramp((a - 0.25) / 0.5, speck[1:])
            dots = (b > 0.68)[:, None]
            return np.where(dots, speck[0] * 0.5, rgb)

    else:  # "fbm": multi-octave coloured noise, each channel a differently coloured layer

        def ev(p):
            t = noise.fbm(p * 2.0, 6)
            u = noise.fbm(p * 5.0 + 17.0, 4)
            rgb = _ramp((t - 0.2) / 0.6, pal[:3])
            return rgb * (0.75 + 0.5 * u[:, None])

    return Texture(kind=kind, scale=float(scale), offset=offset, _eval=ev)


def random_texture(rng: np.random.Generator, scale: float = 1.0, family: str | None = None) -> Texture:
    """A texture of a random kind; ``family`` in {None, "procedural", "photo"} restricts the choice."""
    kinds = {None: KINDS, "procedural": PROCEDURAL, "photo": PHOTO_LIKE}[family]
    return make_texture(str(rng.choice(kinds)), rng, scale)
