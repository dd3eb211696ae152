"""Published sparse-view figures per protocol: reference rows for the leaderboard, never ranked with submissions.

Copied from the development data's notes (``shared/data/real/README.md``): dataset averages over each dataset's
scenes, as the papers report them, GPU methods. Our own rows are scored on the scenes actually run (the dev
scenes), so the two are comparable only as far as those scenes stand for the dataset: :data:`SCENES_NOTE` says so
wherever both appear. A figure stays text ("21.6-23.2" is a range across papers, not a number to rank).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

LABEL = "published (paper, dataset average)"
SOURCE = "the papers, averages over the dataset's scenes, GPU methods (listed in shared/data/real/README.md)"
SCENES_NOTE = (
    "Submitted rows are scored on the scenes actually run (dev scenes), not necessarily the full "
    "dataset; published rows are the papers' averages over the dataset's scenes."
)


@dataclass(frozen=True)
class PublishedRow:
    """One published figure: ``psnr`` as printed (a range stays a range)."""

    protocol: str
    method: str
    psnr: str
    setting: str  # what the figure measures, in the source's words
    source: str = SOURCE
    label: str = LABEL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(protocol: str, setting: str, figures: str) -> tuple[PublishedRow, ...]:
    """Rows from the source's "Method value, Method value" line, so the figures stay as they were copied."""
    pairs = (item.strip().rsplit(" ", 1) for item in figures.split(","))
    return tuple(PublishedRow(protocol, method, value, setting) for method, value in pairs)


PUBLISHED: dict[str, tuple[PublishedRow, ...]] = {
    "blender8": _rows(
        "blender8",
        "Blender 8-view PSNR",
        "3DGS 21.6-23.2, FreeNeRF 24.26, DNGaussian 24.31, CoR-GS 24.43, FSGS 24.64, DropGaussian 25.42",
    ),
    "llff3": _rows(
        "llff3",
        "LLFF 3-view PSNR (504x378)",
        "3DGS 19.22, DNGaussian 19.12, FSGS 20.31, CoR-GS 20.45, DropGaussian 20.76, Binocular3DGS 21.44",
    ),
    "dtu3": _rows(
        "dtu3",
        "DTU 3-view masked PSNR",
        "3DGS 17.65, DNGaussian 18.91, CoR-GS 19.21, FreeNeRF 19.92, Binocular3DGS 20.71, ReconFusion 20.74",
    ),
}


def published(protocol: str) -> tuple[PublishedRow, ...]:
    """The published rows of ``protocol`` (none for protocols without published figures here)."""
    return PUBLISHED.get(protocol, ())
