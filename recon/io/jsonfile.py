"""Reading JSON files that users hand us: a malformed one is a one-line ReconInputError naming the file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recon.errors import ReconInputError


def read_json_object(path: str | Path) -> dict[str, Any]:
    """Parse ``path``, whose top level must be a JSON object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReconInputError(f"not valid JSON ({exc})", path) from None
    if not isinstance(data, dict):
        raise ReconInputError("must be a JSON object", path)
    return data
