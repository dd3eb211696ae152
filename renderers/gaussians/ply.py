"""3D Gaussians to and from the de-facto 3DGS PLY (the layout of the INRIA code, read by splat viewers).

One ``vertex`` element, binary little-endian, all properties float32, in this order:

    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3*(K-1)-1)  opacity  scale_0..2  rot_0..3

f_rest is channel-major (all K-1 higher-band coefficients of R, then of G, then of B); opacity is the logit,
scales are logs, rot is the raw (unnormalised) quaternion w x y z; normals are written as zeros.
The reader also accepts big-endian and ASCII files, other numeric property types, extra properties, other
elements before the vertex element (fixed-size ones) and SH degrees 0 to 3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_bytes
from recon.io.files import read_bytes
from renderers.gaussians.model import GaussianModel, num_sh_bases, sh_degree_from_bases

_PLY_TYPES: dict[str, str] = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_MAX_HEADER_BYTES = 1 << 20
#: Largest PLY read: ~16 million degree-3 splats.
MAX_PLY_BYTES = 4 * 1024**3


def ply_property_names(n_rest: int) -> list[str]:
    """Vertex property names in the de-facto order, for ``n_rest`` f_rest values (3 * (K-1))."""
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def _to_columns(model: GaussianModel) -> tuple[list[str], np.ndarray]:
    """Model -> (property names, float32 [N, P] table) in the de-facto layout."""
    s = {k: v.detach().float().cpu() for k, v in model.splats.items()}
    n = model.num_gaussians
    rest = s["shN"].transpose(1, 2).reshape(n, -1)  # [N, 3, K-1] -> channel-major
    table = torch.cat(
        [
            s["means"],
            torch.zeros((n, 3)),
            s["sh0"].reshape(n, 3),
            rest,
            s["opacities"][:, None],
            s["scales"],
            s["quats"],
        ],
        dim=1,
    )
    return ply_property_names(rest.shape[1]), table.numpy().astype(np.float32)


def ply_bytes(model: GaussianModel) -> bytes:
    """The complete PLY file for ``model`` as bytes."""
    names, table = _to_columns(model)
    header = (
        "\n".join(
            ["ply", "format binary_little_endian 1.0", f"element vertex {len(table)}"]
            + [f"property float {name}" for name in names]
            + ["end_header"]
        )
        + "\n"
    )
    return header.encode("ascii") + np.ascontiguousarray(table, dtype="<f4").tobytes()


def write_ply(path: str | Path, model: GaussianModel) -> Path:
    """Write ``model`` as a 3DGS PLY, atomically (a reader never sees half a file)."""
    path = Path(path)
    atomic_write_bytes(path, ply_bytes(model))
    return path


# ----------------------------------------------------------------------------- reading
def _parse_header(path: Path, data: bytes) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    """-> (format, [(element name, count, [(property name, numpy type)])], offset of the body)."""
    if not data.startswith(b"ply"):
        raise ReconInputError("not a PLY file (no 'ply' magic)", path)
    end = data.find(b"end_header", 0, _MAX_HEADER_BYTES)
    if end < 0:
        raise ReconInputError("malformed PLY: no end_header", path)
    nl = data.find(b"\n", end)
    body = len(data) if nl < 0 else nl + 1
    try:
        lines = data[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise ReconInputError("malformed PLY: header is not ASCII", path) from None
    fmt = ""
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for raw in lines[1:]:
        tok = raw.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format" and len(tok) >= 2:
            fmt = tok[1]
        elif tok[0] == "element" and len(tok) == 3:
            count = int(tok[2]) if tok[2].isascii() and tok[2].isdigit() else -1
            if count < 0:
                raise ReconInputError(f"malformed PLY header line {_clip(raw)!r}: count must be a whole number", path)
            elements.append((tok[1], count, []))
        elif tok[0] == "property" and elements and len(tok) >= 3:
            if tok[1] == "list" and len(tok) == 5:
                elements[-1][2].append((tok[-1], "list"))
            elif len(tok) == 3 and tok[1] in _PLY_TYPES:
                elements[-1][2].append((tok[2], _PLY_TYPES[tok[1]]))
            else:
                raise ReconInputError(f"malformed PLY header line {_clip(raw)!r}", path)
        else:
            raise ReconInputError(f"malformed PLY header line {_clip(raw)!r}", path)
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise ReconInputError(f"unsupported PLY format {_clip(fmt)!r}", path)
    for name, _, props in elements:
        names = [n for n, _ in props]
        if len(set(names)) != len(names):
            raise ReconInputError(f"malformed PLY: element {_clip(name)!r} has a property listed twice", path)
    return fmt, elements, body


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_vertices(path: Path) -> np.ndarray:
    """The vertex element of the PLY at ``path`` as a numpy structured array."""
    data = read_bytes(path, "PLY file", MAX_PLY_BYTES)
    fmt, elements, body = _parse_header(path, data)
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise ReconInputError("not a 3DGS splat PLY: no vertex element", path)
    vi = names.index("vertex")
    _, count, props = elements[vi]
    if any(t == "list" for _, t in props):
        raise ReconInputError("not a 3DGS splat PLY: vertex element has list properties", path)
    if not props:
        raise ReconInputError("not a 3DGS splat PLY: vertex element has no properties", path)
    if fmt == "ascii":
        text = data[body:].decode("ascii", errors="replace").splitlines()
        skip = sum(e[1] for e in elements[:vi])
        rows = [ln.split() for ln in text[skip : skip + count]]
        if len(rows) != count or any(len(r) != len(props) for r in rows):
            raise ReconInputError(f"truncated or malformed ASCII PLY (expected {count} vertices)", path)
        try:
            table = np.array(rows, dtype=np.float64).reshape(count, len(props))
        except ValueError:
            raise ReconInputError("malformed ASCII PLY: a vertex value is not a number", path) from None
        out = np.empty(count, dtype=[(n, "f8") for n, _ in props])
        for i, (n, _) in enumerate(props):
            out[n] = table[:, i]
        return out
    endian = "<" if fmt == "binary_little_endian" else ">"
    offset = body
    for _, ecount, eprops in elements[:vi]:
        if any(t == "list" for _, t in eprops):
            raise ReconInputError("unsupported PLY: list-property element before the vertex element", path)
        offset += ecount * int(np.dtype([(n, endian + t) for n, t in eprops]).itemsize)
    dtype = np.dtype([(n, endian + t) for n, t in props])
    needed = count * dtype.itemsize
    if len(data) < offset + needed:
        raise ReconInputError(
            f"truncated PLY: {count} vertices need {needed} bytes, file has {max(0, len(data) - offset)}", path
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset)


def read_ply(path: str | Path, device: str | torch.device = "cpu") -> GaussianModel:
    """Read a 3DGS PLY into a GaussianModel; ReconInputError naming the file if it is not one.

    The SH degree comes from the number of f_rest properties (0, 9, 24 or 45 -> degree 0..3); the model's
    ``active_sh_degree`` is set to that degree, ready to render as saved.
    """
    path = Path(path)
    v = _read_vertices(path)
    fields = set(v.dtype.names or ())
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    required += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    missing = [f for f in required if f not in fields]
    if missing:
        raise ReconInputError(f"not a 3DGS splat PLY: missing vertex properties {', '.join(missing)}", path)
    n_rest = sum(1 for f in fields if f.startswith("f_rest_"))
    if n_rest % 3 or any(f"f_rest_{i}" not in fields for i in range(n_rest)):
        raise ReconInputError(f"not a 3DGS splat PLY: f_rest properties are not f_rest_0..{n_rest - 1} in threes", path)
    try:
        degree = sh_degree_from_bases(n_rest // 3 + 1)
    except ValueError:
        raise ReconInputError(f"not a 3DGS splat PLY: {n_rest} f_rest values is not SH degree 0-3", path) from None
    n = len(v)

    def cols(names: list[str]) -> torch.Tensor:
        if not names:
            return torch.zeros((n, 0))
        return torch.from_numpy(np.stack([np.asarray(v[c], dtype=np.float32) for c in names], axis=1))

    k1 = num_sh_bases(degree) - 1
    rest = cols([f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k1).transpose(1, 2)
    params = {
        "means": cols(["x", "y", "z"]),
        "quats": cols([f"rot_{i}" for i in range(4)]),
        "scales": cols([f"scale_{i}" for i in range(3)]),
        "opacities": cols(["opacity"])[:, 0],
        "sh0": cols(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :],
        "shN": rest,
    }
    if not all(torch.isfinite(t).all() for t in params.values()):
        raise ReconInputError("3DGS PLY holds NaN or infinite values", path)
    return GaussianModel(params, sh_degree=degree, active_sh_degree=degree).to(device)
