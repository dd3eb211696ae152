"""Export 3D Gaussians to the compact ``.splat`` format of antimatter15's WebGL viewer (and others).

32 bytes per Gaussian, no header, little-endian:

    position  3 x float32
    scale     3 x float32   activated (exp of the log-scale)
    colour    4 x uint8     RGB from the SH DC term (0.5 + C0 * f_dc), A = sigmoid(opacity), each * 255
    rotation  4 x uint8     normalised quaternion w x y z mapped by q * 128 + 128

Gaussians are sorted by ``prod(scale) * opacity`` descending, the order that viewer expects (big, opaque
splats first). View-dependent SH bands are dropped: the format has no room for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_bytes
from renderers.gaussians.model import GaussianModel, sh0_to_rgb

SPLAT_DTYPE = np.dtype(
    [("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("color", "u1", (4,)), ("rotation", "u1", (4,))]
)
assert SPLAT_DTYPE.itemsize == 32


def splat_bytes(model: GaussianModel) -> bytes:
    """The ``.splat`` file content for ``model`` (32 * N bytes)."""
    means = model.splats["means"].detach().float().cpu().numpy()
    log_scales = model.splats["scales"].detach().float().cpu().numpy().astype(np.float64)
    opacity = model.opacities.detach().float().cpu().numpy().astype(np.float64)
    rgb = sh0_to_rgb(model.splats["sh0"][:, 0]).detach().float().cpu().numpy()
    quats = model.quats.detach().float().cpu().numpy()  # normalised

    order = np.argsort(-(np.exp(log_scales.sum(axis=1)) * opacity), kind="stable")
    out = np.empty(len(means), dtype=SPLAT_DTYPE)
    out["position"] = means[order]
    out["scale"] = np.exp(log_scales[order])
    rgba = np.concatenate([rgb[order], opacity[order, None]], axis=1)
    out["color"] = np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)
    out["rotation"] = np.clip(np.round(quats[order] * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return out.tobytes()


def write_splat(path: str | Path, model: GaussianModel) -> Path:
    """Write ``model`` as a ``.splat`` file, atomically."""
    path = Path(path)
    atomic_write_bytes(path, splat_bytes(model))
    return path


def read_splat(path: str | Path) -> dict[str, np.ndarray]:
    """Decode a ``.splat`` file into float arrays: position [N,3], scale [N,3], rgb [N,3], opacity [N],
    quat [N,4] (w x y z, as stored, within 1/128). ReconInputError if the size is not a multiple of 32."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReconInputError(".splat file not found", path) from None
    if len(data) % SPLAT_DTYPE.itemsize:
        raise ReconInputError(f"not a .splat file: {len(data)} bytes is not a multiple of 32", path)
    rec = np.frombuffer(data, dtype=SPLAT_DTYPE)
    color = rec["color"].astype(np.float32) / 255.0
    return {
        "position": rec["position"].astype(np.float32),
        "scale": rec["scale"].astype(np.float32),
        "rgb": color[:, :3],
        "opacity": color[:, 3],
        "quat": (rec["rotation"].astype(np.float32) - 128.0) / 128.0,
    }
