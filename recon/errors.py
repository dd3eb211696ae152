"""User-facing errors: anything the user can fix (bad input folder, malformed file) raises ReconInputError.

The CLI turns it into one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ReconInputError(Exception):
    """Bad user input. The message names the file and the problem, in one line."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        full = f"{path}: {message}" if path is not None else message
        super().__init__(full)
