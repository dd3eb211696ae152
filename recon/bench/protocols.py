"""The standard sparse-view protocols on real data: which views are inputs, which are test views, how to score.

- blender8 (blender3): a NeRF-synthetic scene (transforms_{train,test}.json). Inputs: DietNeRF's train frames
  26, 86, 2, 55, 75, 93, 16, 73 (the first 3); test: frames whose id is a multiple of 8 (25 of 200); full image,
  both on white.
- llff3/6/9: an LLFF scene (poses_bounds.npy, images_8/). RegNeRF: every 8th image held out as a test view, n
  inputs spread by round(linspace) over the rest; full image.
- dtu3/6/9: a DTU scan (IDR or RegNeRF layout). RegNeRF train ids 25, 22, 28, 40, 44, 48, 0, 8, 13 (first n),
  **without** masks; test: 0..48 minus the train ids and 3-7, 16-21, 36-39 (25 views); both images masked.
- dtu3m/9m: the same views **with** their masks (SpaRe, object-centric methods).

SpaRe scenes (spare3/9) keep their own harness (``recon bench run --track``). The split helpers reproduce the
published index lists exactly; :func:`score_view` applies each protocol's metric convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon import metrics
from recon.errors import ReconInputError
from recon.io.types import ViewSet

DIETNERF_TRAIN_FRAMES = (26, 86, 2, 55, 75, 93, 16, 73)
BLENDER_TEST_EVERY = 8
LLFF_HOLD = 8
DTU_TRAIN_IDS = (25, 22, 28, 40, 44, 48, 0, 8, 13)
DTU_EXCLUDED_IDS = (3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 36, 37, 38, 39)
DTU_VIEWS = 49


@dataclass(frozen=True)
class Protocol:
    """One protocol: ``dataset`` layout, ``n_views`` inputs, whether inputs keep their masks, the metric
    convention ("white": full image on white, "full": full image, "masked": both masked, RegNeRF)."""

    name: str
    dataset: str
    n_views: int
    metric: str
    input_masks: bool = False
    published: str = ""  # where the split comes from


PROTOCOLS: dict[str, Protocol] = {
    "blender8": Protocol("blender8", "blender", 8, "white", input_masks=True, published="DietNeRF / FreeNeRF / FSGS"),
    "blender3": Protocol("blender3", "blender", 3, "white", input_masks=True, published="DietNeRF frames 26, 86, 2"),
    **{f"llff{n}": Protocol(f"llff{n}", "llff", n, "full", published="RegNeRF") for n in (3, 6, 9)},
    **{f"dtu{n}": Protocol(f"dtu{n}", "dtu", n, "masked", published="RegNeRF") for n in (3, 6, 9)},
    **{
        f"dtu{n}m": Protocol(f"dtu{n}m", "dtu", n, "masked", input_masks=True, published="SpaRe / object-centric")
        for n in (3, 9)
    },
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ReconInputError listing the known ones otherwise."""
    if name not in PROTOCOLS:
        raise ReconInputError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# ----------------------------------------------------------------------------- splits (published index lists)
def llff_split(n_images: int, n_views: int) -> tuple[list[int], list[int]]:
    """RegNeRF's LLFF split: every 8th image is a test view; the inputs are ``round(linspace)`` over the rest
    (Python's round, as RegNeRF's code)."""
    test = list(range(0, n_images, LLFF_HOLD))
    rest = [i for i in range(n_images) if i not in test]
    if n_views > len(rest):
        raise ReconInputError(f"{n_images} images leave {len(rest)} training views, fewer than {n_views}")
    picks = [round(float(x)) for x in np.linspace(0, len(rest) - 1, n_views)]
    return [rest[i] for i in picks], test


def dtu_split(n_views: int, n_images: int = DTU_VIEWS) -> tuple[list[int], list[int]]:
    """RegNeRF's DTU split: inputs are the first ``n_views`` of 25, 22, 28, 40, 44, 48, 0, 8, 13; test views
    are all the others except 3-7, 16-21 and 36-39 (25 views)."""
    if n_images < DTU_VIEWS:
        raise ReconInputError(f"a DTU scan has {DTU_VIEWS} views; found {n_images}")
    train = list(DTU_TRAIN_IDS[:n_views])
    test = [i for i in range(DTU_VIEWS) if i not in DTU_TRAIN_IDS and i not in DTU_EXCLUDED_IDS]
    return train, test


def blender_split(train_ids: list[int], test_ids: list[int], n_views: int) -> tuple[list[int], list[int]]:
    """Positions (in the train and test frame lists) of DietNeRF's input frames and of every 8th test frame,
    selected by the frame ids in the file names (r_26 -> 26), so full and pre-thinned test sets agree."""
    where = {fid: k for k, fid in enumerate(train_ids)}
    missing = [f for f in DIETNERF_TRAIN_FRAMES[:n_views] if f not in where]
    if missing:
        raise ReconInputError(f"the train split lacks DietNeRF's frames {missing}")
    train = [where[f] for f in DIETNERF_TRAIN_FRAMES[:n_views]]
    test = [k for k, fid in enumerate(test_ids) if fid % BLENDER_TEST_EVERY == 0]
    return train, test


# ----------------------------------------------------------------------------- scoring conventions
def score_view(
    protocol: Protocol, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, lpips_fn: Any = None
) -> dict[str, float | None]:
    """PSNR / SSIM (/ LPIPS when a function is given) of one test render under the protocol's convention.

    ``pred`` must already be rendered on the protocol's background (white for Blender) and ``gt`` composited
    on it. "masked": prediction and ground truth both multiplied by the mask, error over the whole image
    (RegNeRF's DTU convention); a test view with an empty mask is an error, not a 100 dB score."""
    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))
    g = torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32))
    if protocol.metric == "masked":
        if mask is None or float(np.asarray(mask).mean()) < 1e-4:
            raise ReconInputError(f"{protocol.name}: a test view has no object mask to score within")
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
        out = {"psnr": float(metrics.masked_psnr(p, g, m)), "ssim": float(metrics.masked_ssim(p, g, m))}
        p, g = p * m[..., None], g * m[..., None]
    else:
        out = {"psnr": float(metrics.psnr(p, g)), "ssim": float(metrics.ssim(p, g))}
    out["lpips"] = None if lpips_fn is None else float(lpips_fn(p, g))
    return out


# ----------------------------------------------------------------------------- scenes
@dataclass
class ProtocolScene:
    """One scene under a protocol: the input views (what a method gets) and the test views (hidden)."""

    name: str
    inputs: ViewSet
    test: ViewSet
    background: float  # grey level the renders and ground truth are composited on for scoring


def find_scenes(protocol: Protocol, data: str | Path, only: list[str] | None = None) -> list[Path]:
    """Scene folders of the protocol's layout under ``data`` (or ``data`` itself when it is one scene)."""
    from recon.io.blender import is_blender_scene
    from recon.io.dtu import is_dtu_idr_scene, is_dtu_rect_scene
    from recon.io.llff import is_llff_scene

    probe = {
        "blender": is_blender_scene,
        "llff": is_llff_scene,
        "dtu": lambda p: is_dtu_idr_scene(p) or is_dtu_rect_scene(p),
    }[protocol.dataset]
    data = Path(data)
    if not data.is_dir():
        raise ReconInputError("data folder not found", data)
    scenes = [data] if probe(data) else sorted(p for p in data.iterdir() if p.is_dir() and probe(p))
    if only:
        names = {s.name: s for s in scenes}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ReconInputError(
                f"no {protocol.dataset} scene(s) {', '.join(unknown)} here (found: {', '.join(names) or 'none'})", data
            )
        scenes = [names[n] for n in only]
    if not scenes:
        raise ReconInputError(f"no {protocol.dataset} scene found (expected the dataset's own layout)", data)
    return scenes


def load_scene(protocol: Protocol, scene: Path) -> ProtocolScene:
    """The protocol's input and test views of one scene, read in the dataset's own layout."""
    if protocol.dataset == "blender":
        from recon.io.blender import read_blender

        train = read_blender(scene, split="train", background=(1.0, 1.0, 1.0))
        test = read_blender(scene, split="test", background=(1.0, 1.0, 1.0))
        tr, te = blender_split(train.meta["frame_ids"], test.meta["frame_ids"], protocol.n_views)
        inputs, tests = train.subset(tr), test.subset(te)
        background = 1.0
    elif protocol.dataset == "llff":
        from recon.io.llff import read_llff

        views = read_llff(scene, factor=8)
        tr, te = llff_split(len(views), protocol.n_views)
        inputs, tests = views.subset(tr), views.subset(te)
        background = 0.0
    elif protocol.dataset == "dtu":
        from recon.io.dtu import read_dtu

        views = read_dtu(scene, with_masks=True)
        tr, te = dtu_split(protocol.n_views, len(views))
        inputs, tests = views.subset(tr), views.subset(te)
        if not protocol.input_masks:
            inputs.masks = None  # as published: the methods get the photos only; masks score the test views
        background = 0.0
    else:
        raise ReconInputError(f"protocol {protocol.name}: unsupported dataset {protocol.dataset!r}")
    inputs.meta = {**inputs.meta, "protocol": protocol.name, "split": "inputs"}
    return ProtocolScene(name=scene.name, inputs=inputs, test=tests, background=background)
