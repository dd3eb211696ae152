"""Seeded mutations of small valid input files: bytes, numbers in text, and JSON structure.

Each mutator takes the file's bytes and a numpy Generator and returns (new bytes, a short description), so a
failing case can be named and replayed from its seed alone.
"""

from __future__ import annotations

import copy
import io
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

Mutator = Callable[[bytes, np.random.Generator], tuple[bytes, str]]

# Integers that break size arithmetic: zero, sign and width boundaries, counts that dwarf any file.
INTERESTING_INTS = (0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**62, 2**63 - 1, 2**64 - 1)
# Number spellings for text files: huge, tiny, negative, zero, non-finite, overlong.
INTERESTING_NUMBERS = (
    "0",
    "-0",
    "-1",
    "1e308",
    "-1e308",
    "1e999",
    "1e-320",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "4611686018427387904",
    "18446744073709551616",
    "0.5",
    "1e-9",
    "3.14159",
    "1" * 40,
)
# Replacement values for JSON nodes ("__DEEP__" is expanded to arrays nested thousands deep).
JSON_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**64,
    -(2**63),
    1e308,
    -1e308,
    1e-320,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "x",
    "../../etc/passwd",
    "x" * 5000,
    [],
    {},
    [0] * 1000,
    [[1, 0], [0, 1]],
    "__DEEP__",
)
_NUMBER = re.compile(rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _pos(data: bytes, rng: np.random.Generator, header_bias: float) -> int:
    """A byte offset, with probability ``header_bias`` in the first 64 bytes (where formats keep sizes)."""
    n = max(1, len(data))
    if rng.random() < header_bias:
        return int(rng.integers(0, min(n, 64)))
    return int(rng.integers(0, n))


def flip_bits(data: bytes, rng: np.random.Generator, header_bias: float = 0.0) -> tuple[bytes, str]:
    if not data:
        return b"\x00", "flip(empty)"
    buf = bytearray(data)
    k = int(rng.integers(1, 9))
    for _ in range(k):
        buf[_pos(data, rng, header_bias)] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf), f"flip {k} bits"


def truncate(data: bytes, rng: np.random.Generator, header_bias: float = 0.0) -> tuple[bytes, str]:
    k = _pos(data, rng, header_bias) if data else 0
    return data[:k], f"truncate at {k}"


def insert_random(data: bytes, rng: np.random.Generator, header_bias: float = 0.0) -> tuple[bytes, str]:
    at = _pos(data, rng, header_bias) if data else 0
    junk = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
    return data[:at] + junk + data[at:], f"insert {len(junk)} bytes at {at}"


def duplicate_chunk(data: bytes, rng: np.random.Generator, header_bias: float = 0.0) -> tuple[bytes, str]:
    if not data:
        return data, "duplicate(empty)"
    a = _pos(data, rng, header_bias)
    b = min(len(data), a + int(rng.integers(1, 257)))
    times = int(rng.choice([1, 2, 10, 100]))
    at = int(rng.integers(0, len(data) + 1))
    return data[:at] + data[a:b] * times + data[at:], f"duplicate [{a}:{b}] x{times} at {at}"


def delete_chunk(data: bytes, rng: np.random.Generator, header_bias: float = 0.0) -> tuple[bytes, str]:
    if not data:
        return data, "delete(empty)"
    a = _pos(data, rng, header_bias)
    b = min(len(data), a + int(rng.integers(1, 65)))
    return data[:a] + data[b:], f"delete [{a}:{b}]"


def overwrite_int(data: bytes, rng: np.random.Generator, header_bias: float = 0.0) -> tuple[bytes, str]:
    """An interesting integer written over 1, 2, 4 or 8 bytes, either endianness (binary counts and sizes)."""
    width = int(rng.choice([1, 2, 4, 8]))
    value = int(rng.choice(INTERESTING_INTS)) % (1 << (8 * width))
    endian = "<" if rng.random() < 0.5 else ">"
    fmt = endian + {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
    at = _pos(data, rng, header_bias) if data else 0
    if rng.random() < 0.5:
        at -= at % width  # aligned, as record fields usually are
    buf = bytearray(data)
    buf[at : at + width] = struct.pack(fmt, value)
    return bytes(buf), f"int{8 * width}{endian}={value} at {at}"


INTERESTING_DOUBLES = (float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 1e308, -1e308, 1e-308, 5e-324, 1e7)


def overwrite_double(data: bytes, rng: np.random.Generator, header_bias: float = 0.0) -> tuple[bytes, str]:
    """An interesting float64 written over 8 bytes (camera matrices, poses, points are doubles)."""
    value = float(rng.choice(INTERESTING_DOUBLES))
    at = _pos(data, rng, header_bias) if data else 0
    buf = bytearray(data)
    buf[at : at + 8] = struct.pack("<d", value)
    return bytes(buf), f"double={value} at {at}"


BYTE_MUTATORS: tuple[Mutator, ...] = (
    flip_bits,
    truncate,
    insert_random,
    duplicate_chunk,
    delete_chunk,
    overwrite_int,
    overwrite_double,
)


def _dimension(rng: np.random.Generator) -> int:
    """An image side: mostly log-uniform in 1..2^20 (decompression bombs live there), sometimes an extreme."""
    if rng.random() < 0.2:
        return int(rng.choice([0, 1, 60000, 65535, 2**31 - 1, 2**32 - 1]))
    return int(np.exp(rng.uniform(0.0, np.log(2.0**20))))


def image_dimensions(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """New width/height written into a PNG IHDR or the first JPEG frame header (the decoder's allocation size)."""
    w, h = _dimension(rng), _dimension(rng)
    buf = bytearray(data)
    if data.startswith(b"\x89PNG") and len(buf) >= 24:
        struct.pack_into(">II", buf, 16, w % 2**32, h % 2**32)
        return bytes(buf), f"PNG size {w}x{h}"
    sof = next((m.start() for m in re.finditer(rb"\xff[\xc0-\xc3\xc5-\xc7\xc9-\xcb\xcd-\xcf]", data)), -1)
    if data.startswith(b"\xff\xd8") and 0 <= sof and sof + 9 <= len(buf):
        struct.pack_into(">HH", buf, sof + 5, h % 2**16, w % 2**16)
        return bytes(buf), f"JPEG size {w % 2**16}x{h % 2**16}"
    return flip_bits(data, rng)


def replace_numbers(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """1-3 numbers in a text file replaced by huge, negative, zero, tiny or non-finite spellings."""
    spans = [m.span() for m in _NUMBER.finditer(data)]
    if not spans:
        return flip_bits(data, rng)
    k = int(rng.integers(1, 4))
    picks = sorted(set(int(i) for i in rng.integers(0, len(spans), k)), reverse=True)
    out = data
    names = []
    for i in picks:
        a, b = spans[i]
        new = str(rng.choice(INTERESTING_NUMBERS)).encode()
        out = out[:a] + new + out[b:]
        names.append(new.decode())
    return out, "numbers -> " + ",".join(names)


def edit_lines(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Duplicate, delete or swap whole lines (records of text formats)."""
    lines = data.split(b"\n")
    i = int(rng.integers(0, len(lines)))
    op = str(rng.choice(["dup", "del", "swap", "repeat"]))
    if op == "dup":
        lines.insert(i, lines[i])
    elif op == "del":
        del lines[i]
    elif op == "swap":
        j = int(rng.integers(0, len(lines)))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        lines[i:i] = [lines[i]] * 50
    return b"\n".join(lines), f"line {op} {i}"


def _json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys/indices) to every node of parsed JSON, root included."""
    out = [prefix]
    stack = [(value, prefix)]
    while stack:
        node, path = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append(path + (k,))
            stack.append((v, path + (k,)))
    return out


def _get(root: Any, path: tuple) -> Any:
    for k in path:
        root = root[k]
    return root


def mutate_json(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One structural edit of a JSON document: a node replaced, deleted, duplicated, wrapped or rescaled."""
    try:
        root = json.loads(data)
    except (ValueError, RecursionError):
        return replace_numbers(data, rng)
    paths = _json_paths(root)
    path = paths[int(rng.integers(0, len(paths)))]
    op = str(rng.choice(["replace", "delete", "duplicate", "wrap", "scale", "add_key", "swap"]))
    if not path:
        op = "replace" if op in ("delete", "duplicate", "swap") else op
    parent = _get(root, path[:-1]) if path else None
    key = path[-1] if path else None
    node = _get(root, path)
    deep = int(rng.choice([100, 1000, 3000, 100000]))

    def put(value: Any) -> None:
        nonlocal root
        if path:
            parent[key] = value
        else:
            root = value

    if op == "replace":
        put(copy.deepcopy(JSON_VALUES[int(rng.integers(0, len(JSON_VALUES)))]))
    elif op == "delete":
        del parent[key]
    elif op == "duplicate":
        if isinstance(parent, list):
            parent.insert(key, json.loads(json.dumps(node)))
        else:
            parent[f"{key}_copy"] = node
    elif op == "wrap":
        put([node])
    elif op == "scale":
        factor = float(rng.choice([-1.0, 0.0, 2.0, 1e6, 1e-6, 1e300]))
        put(node * factor if isinstance(node, (int, float)) and not isinstance(node, bool) else factor)
    elif op == "add_key":
        if isinstance(node, dict):
            value = JSON_VALUES[int(rng.integers(0, len(JSON_VALUES)))]
            node[f"extra{int(rng.integers(0, 99))}"] = copy.deepcopy(value)
        else:
            put({"value": node})
    elif op == "swap" and isinstance(parent, list) and len(parent) > 1:
        j = int(rng.integers(0, len(parent)))
        parent[key], parent[j] = parent[j], parent[key]
    text = json.dumps(root, allow_nan=True).replace('"__DEEP__"', "[" * deep + "]" * deep)
    return text.encode(), f"json {op} at {'/'.join(map(str, path)) or 'root'}"


def mutate_npz_member(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One member of an .npz archive mutated and the archive rewritten, so the zip checksums pass and the
    mutation reaches numpy's .npy parsing and the reader's checks."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = {info.filename: z.read(info) for info in z.infolist()}
    except Exception:  # an archive an earlier round broke (any of zipfile's many errors): mutate it as bytes
        return flip_bits(data, rng)
    if not members:
        return data, "npz(empty)"
    name = sorted(members)[int(rng.integers(0, len(members)))]
    choices = (overwrite_double, overwrite_double, overwrite_int, flip_bits, truncate, insert_random)
    fn = choices[int(rng.integers(0, len(choices)))]
    members[name], note = fn(members[name], rng, 0.5)
    if rng.random() < 0.1:
        del members[name]
        note = "deleted"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return out.getvalue(), f"npz {name}: {note}"


#: Mutators per kind of file, with their weights.
BY_KIND: dict[str, tuple[tuple[Mutator, float], ...]] = {
    "json": (
        (mutate_json, 0.55),
        (replace_numbers, 0.25),
        (truncate, 0.05),
        (flip_bits, 0.05),
        (duplicate_chunk, 0.05),
        (insert_random, 0.05),
    ),
    "text": (
        (replace_numbers, 0.45),
        (edit_lines, 0.25),
        (flip_bits, 0.1),
        (truncate, 0.1),
        (duplicate_chunk, 0.05),
        (insert_random, 0.05),
    ),
    "binary": (
        (overwrite_int, 0.3),
        (overwrite_double, 0.15),
        (flip_bits, 0.15),
        (truncate, 0.1),
        (insert_random, 0.1),
        (duplicate_chunk, 0.1),
        (delete_chunk, 0.1),
    ),
    "npz": ((mutate_npz_member, 0.7), (flip_bits, 0.1), (truncate, 0.1), (overwrite_int, 0.1)),
    "image": (
        (image_dimensions, 0.2),
        (overwrite_int, 0.2),
        (flip_bits, 0.2),
        (truncate, 0.1),
        (insert_random, 0.1),
        (duplicate_chunk, 0.1),
        (delete_chunk, 0.1),
    ),
    "ply": (
        (replace_numbers, 0.3),
        (edit_lines, 0.15),
        (overwrite_int, 0.2),
        (flip_bits, 0.15),
        (truncate, 0.1),
        (duplicate_chunk, 0.1),
    ),
}
# Byte mutators of images aim at the header half the time: the sizes live there.
_HEADER_BIAS = {"image": 0.5, "binary": 0.2, "ply": 0.3}


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute the CRC of every whole PNG chunk, so that a mutated size reaches the decoder instead of
    failing libpng's checksum test first."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    buf = bytearray(data)
    pos = 8
    while pos + 12 <= len(buf):
        (length,) = struct.unpack_from(">I", buf, pos)
        end = pos + 12 + length
        if end > len(buf):
            break
        struct.pack_into(">I", buf, end - 4, zlib.crc32(bytes(buf[pos + 4 : end - 4])))
        pos = end
    return bytes(buf)


def mutate(data: bytes, kind: str, rng: np.random.Generator, rounds: int = 1) -> tuple[bytes, str]:
    """``rounds`` mutations of a file of ``kind`` (json, text, binary, npz, image, ply); returns (bytes, note).
    Mutated PNGs get their chunk checksums fixed most of the time."""
    mutators, weights = zip(*BY_KIND[kind])
    p = np.asarray(weights) / sum(weights)
    notes = []
    for _ in range(rounds):
        fn = mutators[int(rng.choice(len(mutators), p=p))]
        if fn in BYTE_MUTATORS:
            data, note = fn(data, rng, _HEADER_BIAS.get(kind, 0.0))
        else:
            data, note = fn(data, rng)
        notes.append(note)
    if kind == "image" and rng.random() < 0.7:
        data = fix_png_crcs(data)
    return data, "; ".join(notes)
