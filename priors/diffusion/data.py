"""Training pairs for the repair model: (corrupted render, alpha, clean view) images and crops of them.

Pairs come from the project's own reconstructions (GaussianObject-style self-generated data): renders of a
sparse-view reconstruction at views it never saw, and renders of noise-perturbed Gaussians at the views it did
see, each next to the true image (object on black). Nothing here reconstructs; the callers (the training
script, the pipeline's prior stage) make the renders and hand the images over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recon.errors import ReconInputError


@dataclass
class PairSet:
    """Lists of HxWx3 renders, HxW alphas and HxWx3 clean images (float32 [0, 1]), index-aligned, and optionally
    HxWx4 guides (the nearest input photo warped into the view and its validity, :mod:`priors.diffusion.guide`):
    either every pair has one or none has."""

    renders: list[np.ndarray] = field(default_factory=list)
    alphas: list[np.ndarray] = field(default_factory=list)
    cleans: list[np.ndarray] = field(default_factory=list)
    guides: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.renders)

    @property
    def has_guides(self) -> bool:
        return len(self.guides) > 0 and len(self.guides) == len(self.renders)

    def add(self, render: np.ndarray, alpha: np.ndarray, clean: np.ndarray, guide: np.ndarray | None = None) -> None:
        if render.shape != clean.shape or render.shape[:2] != alpha.shape:
            raise ValueError(f"pair shapes differ: {render.shape}, {alpha.shape}, {clean.shape}")
        if guide is not None and guide.shape != (*alpha.shape, 4):
            raise ValueError(f"guide shape {guide.shape} does not match the pair {alpha.shape} (expected HxWx4)")
        if len(self.renders) and (guide is not None) != self.has_guides:
            raise ValueError("a pair set has guides for every pair or for none")
        self.renders.append(np.asarray(render, dtype=np.float32))
        self.alphas.append(np.asarray(alpha, dtype=np.float32))
        self.cleans.append(np.asarray(clean, dtype=np.float32))
        if guide is not None:
            self.guides.append(np.asarray(guide, dtype=np.float32))

    def extend(self, other: PairSet) -> PairSet:
        if len(self) and len(other) and self.has_guides != other.has_guides:
            raise ValueError("cannot mix pair sets with and without guides")
        self.renders += other.renders
        self.alphas += other.alphas
        self.cleans += other.cleans
        self.guides += other.guides
        return self

    def save(self, path: str | Path) -> Path:
        """All pairs in one compressed .npz (float16 to keep it small); images of one size per file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        arrays = {
            "renders": np.stack(self.renders).astype(np.float16),
            "alphas": np.stack(self.alphas).astype(np.float16),
            "cleans": np.stack(self.cleans).astype(np.float16),
        }
        if self.has_guides:
            arrays["guides"] = np.stack(self.guides).astype(np.float16)
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PairSet:
        path = Path(path)
        try:
            with np.load(path) as z:
                r, a, c = z["renders"], z["alphas"], z["cleans"]
                g = z["guides"] if "guides" in z.files else None
        except (OSError, KeyError, ValueError) as exc:
            raise ReconInputError(f"not a repair-pair file: {exc}", path) from exc
        out = cls()
        for i in range(len(r)):
            guide = None if g is None else g[i].astype(np.float32)
            out.add(r[i].astype(np.float32), a[i].astype(np.float32), c[i].astype(np.float32), guide)
        return out


def random_crops(
    pairs: PairSet, count: int, size: int, rng: np.random.Generator, object_bias: float = 0.9
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``count`` random ``size``x``size`` crops as [N,3,s,s] render, [N,1,s,s] alpha, [N,3,s,s] clean tensors and
    [N,4,s,s] guides (None when the pairs have none).

    With probability ``object_bias`` a crop is centred on a pixel where the render or the clean image shows the
    object (alpha > 0.05 or non-black), so training concentrates on the object rather than empty background.
    Images smaller than ``size`` are edge-padded. Random horizontal flips augment the data.
    """
    if len(pairs) == 0:
        raise ValueError("random_crops: no pairs")
    rs, als, cs, gs = [], [], [], []
    guided = pairs.has_guides
    for _ in range(count):
        k = int(rng.integers(len(pairs)))
        r, a, c = pairs.renders[k], pairs.alphas[k], pairs.cleans[k]
        g = pairs.guides[k] if guided else np.zeros((*a.shape, 0), np.float32)
        h, w = a.shape
        if h < size or w < size:
            ph, pw = max(0, size - h), max(0, size - w)
            r = np.pad(r, ((0, ph), (0, pw), (0, 0)), mode="edge")
            c = np.pad(c, ((0, ph), (0, pw), (0, 0)), mode="edge")
            g = np.pad(g, ((0, ph), (0, pw), (0, 0)), mode="edge")
            a = np.pad(a, ((0, ph), (0, pw)), mode="edge")
            h, w = a.shape
        y0 = int(rng.integers(0, h - size + 1))
        x0 = int(rng.integers(0, w - size + 1))
        if rng.random() < object_bias:
            ys, xs = np.nonzero((a > 0.05) | (c.max(axis=2) > 0.02))
            if len(ys):
                j = int(rng.integers(len(ys)))
                y0 = int(np.clip(ys[j] - size // 2, 0, h - size))
                x0 = int(np.clip(xs[j] - size // 2, 0, w - size))
        sl = (slice(y0, y0 + size), slice(x0, x0 + size))
        rr, aa, cc, gg = r[sl], a[sl], c[sl], g[sl]
        if rng.random() < 0.5:
            rr, aa, cc, gg = rr[:, ::-1], aa[:, ::-1], cc[:, ::-1], gg[:, ::-1]
        rs.append(np.ascontiguousarray(rr))
        als.append(np.ascontiguousarray(aa))
        cs.append(np.ascontiguousarray(cc))
        gs.append(np.ascontiguousarray(gg))
    to_t = lambda xs: torch.from_numpy(np.stack(xs))
    return (
        to_t(rs).permute(0, 3, 1, 2).contiguous(),
        to_t(als)[:, None].contiguous(),
        to_t(cs).permute(0, 3, 1, 2).contiguous(),
        to_t(gs).permute(0, 3, 1, 2).contiguous() if guided else None,
    )


@torch.no_grad()
def perturb_gaussians(model, strength: float, generator: torch.Generator, scene_scale: float = 1.0):
    """A noisy copy of a GaussianModel (GaussianObject's "noisy Gaussians" corruption).

    Means move by N(0, (strength * scene_scale * 0.05)^2), log-scales by N(0, strength^2 * 0.25), opacity logits
    by N(0, strength^2), a random ``strength * 30%`` of the Gaussians are dropped: renders of the copy at the
    input views look like renders of a poorer reconstruction, giving repair pairs with known clean images.
    """
    out = model.copy()
    sp = out.splats
    dev = sp["means"].device

    def noise(t: Tensor) -> Tensor:
        return torch.randn(t.shape, generator=generator).to(dev)

    sp["means"].data += noise(sp["means"]) * (strength * scene_scale * 0.05)
    sp["scales"].data += noise(sp["scales"]) * (strength * 0.5)
    sp["opacities"].data += noise(sp["opacities"]) * strength
    keep = torch.rand(sp["means"].shape[0], generator=generator) >= strength * 0.3
    if int(keep.sum()) == 0:
        return out
    return out.subset(keep.to(dev))
