"""Sanity checks that keep a run from reporting success for nonsense: empty masks, black renders.

A metric over an empty mask is 100 dB; a run whose masks cover nothing trains nothing. These checks turn such
inputs into a clear error (nothing to reconstruct), a switch the log explains (automatic masks that found no
object: train on the whole image) or a warning that names the likely cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recon.errors import ReconInputError

#: A mask covering less than this fraction of its image counts as empty.
EMPTY_MASK_FRACTION = 0.001
#: Automatic masks covering less than this fraction on average found no object: the whole image is used.
MIN_AUTO_MASK_FRACTION = 0.02
#: A render whose mean brightness is below this fraction of its target's is called black.
BLACK_RENDER_RATIO = 0.05


@dataclass
class MaskDecision:
    """What the run does with its masks, and why (recorded in metrics.json)."""

    use: bool
    source: str  # "input" (mask files / alpha) or "automatic"
    coverage: dict[str, float]  # per view: fraction of pixels inside the mask
    warnings: list[str] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "used": self.use,
            "source": self.source,
            "reason": self.reason,
            "mean_coverage": float(np.mean(list(self.coverage.values()))) if self.coverage else 0.0,
            "coverage": {k: round(v, 5) for k, v in self.coverage.items()},
        }


def mask_coverage(mask: np.ndarray) -> float:
    """Fraction of the image inside a soft mask (mean of the mask values)."""
    return float(np.asarray(mask, dtype=np.float64).mean()) if np.asarray(mask).size else 0.0


def decide_masks(names: list[str], masks: list[np.ndarray], from_input: bool) -> MaskDecision:
    """Check the masks' coverage.

    Masks from the input that are empty on every view are a ReconInputError (nothing to reconstruct); empty
    on some views, a warning naming them. Automatic masks that found (almost) nothing are not used: the run
    trains on the whole image, and the decision says why.
    """
    cov = {n: mask_coverage(m) for n, m in zip(names, masks)}
    empty = [n for n, c in cov.items() if c < EMPTY_MASK_FRACTION]
    source = "input" if from_input else "automatic"
    if from_input:
        if len(empty) == len(names):
            raise ReconInputError(
                "every mask is empty (blank mask files or fully transparent alpha): there is no "
                "object to reconstruct; give real masks or images without alpha"
            )
        warnings = []
        if empty:
            warnings.append(
                f"the masks of {len(empty)} view(s) are empty, so these views only teach the "
                f"background: {', '.join(empty)} (blank mask file or fully transparent alpha?)"
            )
        return MaskDecision(use=True, source=source, coverage=cov, warnings=warnings, reason="masks from the input")
    mean = float(np.mean(list(cov.values()))) if cov else 0.0
    if mean < MIN_AUTO_MASK_FRACTION or len(empty) > len(names) // 2:
        reason = (
            f"automatic segmentation found no single object (masks cover {100 * mean:.1f}% of the pixels on "
            f"average, {len(empty)} of {len(names)} empty): training on the whole image without masks or "
            f"visual hull (a scene, or an object the segmentation cannot separate; give masks to use them)"
        )
        return MaskDecision(use=False, source=source, coverage=cov, warnings=[reason], reason=reason)
    warnings = []
    if empty:
        warnings.append(f"automatic segmentation found nothing in {len(empty)} view(s): {', '.join(empty)}")
    return MaskDecision(use=True, source=source, coverage=cov, warnings=warnings, reason="automatic segmentation")


def black_renders(
    names: list[str], renders: list[np.ndarray], images: list[np.ndarray], masks: list[np.ndarray] | None
) -> list[str]:
    """Views whose render is (nearly) black where the photo is not (inside the mask when there is one)."""
    out = []
    for k, (r, im) in enumerate(zip(renders, images)):
        w = np.ones(im.shape[:2], dtype=np.float64) if masks is None else np.asarray(masks[k], dtype=np.float64)
        if w.sum() < 1:
            continue
        target = float((im.mean(axis=-1) * w).sum() / w.sum())
        got = float((r.mean(axis=-1) * w).sum() / w.sum())
        if target > 0.02 and got < BLACK_RENDER_RATIO * target:
            out.append(names[k])
    return out
