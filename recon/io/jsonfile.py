"""Reading JSON files that users hand us: any problem is a one-line ReconInputError naming the file.

Limits, so that a hostile file costs neither a traceback nor gigabytes: the size (a transforms.json of 30,000
frames is ~15 MB) and the nesting depth (real inputs nest 5 levels; json.loads itself raises RecursionError
near 1000 levels, and a value nested just below that would break json.dumps of the run folder's files later).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recon.errors import ReconInputError
from recon.io.files import read_bytes

#: Largest JSON input read, in bytes.
MAX_JSON_BYTES = 32 * 1024 * 1024
#: Deepest nesting of arrays/objects accepted.
MAX_JSON_DEPTH = 64


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def read_json(path: str | Path, what: str = "file", invalid: str = "not valid JSON") -> Any:
    """Parse the JSON file ``path``. ``what`` names the file in messages ("split file"); ``invalid`` starts the
    message for a file that is not JSON (callers keep their established wording)."""
    path = Path(path)
    data = read_bytes(path, what, MAX_JSON_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ReconInputError(f"{invalid}: not UTF-8 text", path) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReconInputError(f"{invalid} at line {exc.lineno} column {exc.colno}: {exc.msg}", path) from None
    except RecursionError:
        raise ReconInputError(f"{invalid}: nested too deeply", path) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit conversion limit
        raise ReconInputError(f"{invalid}: {str(exc).splitlines()[0]}", path) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ReconInputError(f"{invalid}: nested more than {MAX_JSON_DEPTH} levels deep", path)
    return value


def read_json_object(path: str | Path, what: str = "file", invalid: str = "not valid JSON") -> dict[str, Any]:
    """Parse ``path``, whose top level must be a JSON object."""
    data = read_json(path, what, invalid)
    if not isinstance(data, dict):
        raise ReconInputError("must be a JSON object", path)
    return data
