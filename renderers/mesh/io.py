"""Triangle mesh files: PLY and OBJ through open3d, binary glTF (GLB) written directly; all writes atomic.

open3d 0.20 writes GLB files it cannot read back itself, so GLB (positions, indices, vertex colours as
COLOR_0) is written here from the glTF 2.0 spec: a 12-byte header, a JSON chunk and a BIN chunk.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_bytes
from recon.run_folder import MESH

MESH_FORMATS = ("ply", "obj", "glb")


def _as_arrays(
    vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    v = np.ascontiguousarray(np.asarray(vertices, dtype=np.float64).reshape(-1, 3))
    f = np.ascontiguousarray(np.asarray(triangles, dtype=np.int64).reshape(-1, 3))
    c = None if colors is None else np.clip(np.asarray(colors, dtype=np.float64).reshape(-1, 3), 0.0, 1.0)
    if c is not None and len(c) != len(v):
        raise ValueError(f"{len(v)} vertices but {len(c)} colours")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError("triangle indices out of range")
    return v, f, c


def glb_bytes(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None) -> bytes:
    """A binary glTF 2.0 file holding one triangle mesh (float32 positions, uint32 indices, float32 colours)."""
    v, f, c = _as_arrays(vertices, triangles, colors)
    pos = v.astype("<f4").tobytes()
    idx = f.astype("<u4").tobytes()
    col = b"" if c is None else c.astype("<f4").tobytes()
    views = [
        {"buffer": 0, "byteOffset": 0, "byteLength": len(idx), "target": 34963},
        {"buffer": 0, "byteOffset": len(idx), "byteLength": len(pos), "target": 34962},
    ]
    accessors = [
        {"bufferView": 0, "componentType": 5125, "count": int(f.size), "type": "SCALAR"},
        {
            "bufferView": 1,
            "componentType": 5126,
            "count": len(v),
            "type": "VEC3",
            "min": (v.min(axis=0) if len(v) else np.zeros(3)).astype(np.float32).tolist(),
            "max": (v.max(axis=0) if len(v) else np.zeros(3)).astype(np.float32).tolist(),
        },
    ]
    attributes = {"POSITION": 1}
    if c is not None:
        views.append({"buffer": 0, "byteOffset": len(idx) + len(pos), "byteLength": len(col), "target": 34962})
        accessors.append({"bufferView": 2, "componentType": 5126, "count": len(v), "type": "VEC3"})
        attributes["COLOR_0"] = 2
    binary = idx + pos + col
    doc = {
        "asset": {"version": "2.0", "generator": "recon renderers.mesh"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": 0, "mode": 4}]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (
        struct.pack("<III", 0x46546C67, 2, total)
        + struct.pack("<II", len(js), 0x4E4F534A)
        + js
        + struct.pack("<II", len(binary), 0x004E4942)
        + binary
    )


def read_glb(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices, triangles, colours or None) of the first primitive of a GLB written by :func:`glb_bytes`."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 20 or struct.unpack_from("<I", data, 0)[0] != 0x46546C67:
        raise ReconInputError("not a binary glTF file", path)
    jlen = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20 : 20 + jlen])
    binary = data[20 + jlen + 8 :]
    prim = doc["meshes"][0]["primitives"][0]

    def accessor(i: int) -> np.ndarray:
        acc = doc["accessors"][i]
        view = doc["bufferViews"][acc["bufferView"]]
        dtype = {5125: "<u4", 5126: "<f4", 5123: "<u2"}[acc["componentType"]]
        width = {"SCALAR": 1, "VEC3": 3}[acc["type"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        arr = np.frombuffer(binary, dtype=dtype, count=acc["count"] * width, offset=start)
        return arr.reshape(-1, width) if width > 1 else arr

    v = accessor(prim["attributes"]["POSITION"]).astype(np.float64)
    f = accessor(prim["indices"]).astype(np.int64).reshape(-1, 3)
    c = accessor(prim["attributes"]["COLOR_0"]).astype(np.float64) if "COLOR_0" in prim["attributes"] else None
    return v, f, c


def write_mesh(path: str | Path, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write a mesh as .ply (binary), .obj or .glb, chosen by the suffix; atomically (temp file + rename)."""
    import open3d as o3d

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise ReconInputError(f"unknown mesh format {path.suffix!r}; use one of .ply, .obj, .glb", path)
    v, f, c = _as_arrays(vertices, triangles, colors)
    if fmt == "glb":
        atomic_write_bytes(path, glb_bytes(v, f, c))
        return path
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32)))
    if c is not None:
        mesh.vertex_colors = o3d.utility.Vector3dVector(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent)
    tmp = Path(tmp_dir) / path.name  # open3d picks the format from the suffix, so keep the name
    try:
        if not o3d.io.write_triangle_mesh(str(tmp), mesh, write_ascii=False, write_vertex_normals=False):
            raise OSError(f"open3d could not write {path}")
        for extra in Path(tmp_dir).iterdir():  # .obj comes with a .mtl only when textured; move whatever it wrote
            os.replace(extra, path.parent / extra.name)
    finally:
        for left in Path(tmp_dir).glob("*"):
            left.unlink(missing_ok=True)
        os.rmdir(tmp_dir)
    return path


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices [V,3], triangles [F,3], vertex colours [V,3] in [0,1] or None); ReconInputError when unusable."""
    import open3d as o3d

    path = Path(path)
    if not path.is_file():
        raise ReconInputError("mesh file not found", path)
    if path.suffix.lower() == ".glb":
        v, f, c = read_glb(path)
    else:
        mesh = o3d.io.read_triangle_mesh(str(path))
        v, f = np.asarray(mesh.vertices), np.asarray(mesh.triangles, dtype=np.int64)
        c = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
    if len(v) == 0 or len(f) == 0:
        raise ReconInputError("mesh file holds no triangles (unreadable or empty)", path)
    return v, f, c


def export_run_mesh(run: str | Path, to: str | Path, fmt: str | None = None) -> tuple[Path, int]:
    """Copy a run folder's mesh.ply (or a mesh file) to ``to`` in format ``fmt`` (ply|obj|glb; default: the
    suffix of ``to``, which is replaced by ``fmt`` when both are given). Returns (path written, faces)."""
    run, to = Path(run), Path(to)
    src = run / MESH if run.is_dir() else run
    if not src.exists():
        raise ReconInputError("no mesh.ply here (reconstruct with --representation mesh or hybrid)", src)
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in MESH_FORMATS:
            raise ReconInputError(f"unknown mesh format {fmt!r}; use one of {', '.join(MESH_FORMATS)}", to)
        to = to.with_suffix("." + fmt)
    v, f, c = read_mesh(src)
    return write_mesh(to, v, f, c), len(f)
