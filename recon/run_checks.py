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
#: A view's automatic mask is confident at or above this (priors.segmentation.view_confidence).
MIN_VIEW_CONFIDENCE = 0.5
#: Automatic masks are used (object mode) only when at least this fraction of the views is confident.
MIN_CONFIDENT_FRACTION = 0.75
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


def decide_masks(
    names: list[str], masks: list[np.ndarray], from_input: bool, confidence: list[float] | None = None
) -> MaskDecision:
    """Check the masks' coverage (and, for automatic masks, the segmenter's per-view ``confidence``).

    Masks from the input that are empty on every view are a ReconInputError (nothing to reconstruct); empty
    on some views, a warning naming them. Automatic masks that found (almost) nothing, or that are confident
    on fewer than ``MIN_CONFIDENT_FRACTION`` of the views, are not used: the run trains on the whole image,
    and the decision says why.
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
    if confidence is not None:
        sure = [n for n, c in zip(names, confidence) if c >= MIN_VIEW_CONFIDENCE]
        if len(sure) < MIN_CONFIDENT_FRACTION * len(names):
            reason = (
                f"automatic segmentation is confident of one object in only {len(sure)} of {len(names)} views "
                f"(median confidence {float(np.median(confidence)):.2f}, need {MIN_VIEW_CONFIDENCE} in "
                f"{100 * MIN_CONFIDENT_FRACTION:.0f}% of the views): training on the whole image (scene mode); "
                f"give masks to use them"
            )
            return MaskDecision(use=False, source=source, coverage=cov, reason=reason)
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


SUSPECT_VIEW_DB = 5.0  # a view fitting this much worse than the median of the others is named
#: A mask covering less than this fraction of its image is "tiny" (the segmentation kept almost nothing).
TINY_MASK_FRACTION = 0.02
#: A mask covering more than this fraction is "the whole image" (the segmentation separated nothing).
FULL_MASK_FRACTION = 0.95
#: A view's reprojection residual (pixels, from the pose estimator) above this points at its pose.
HIGH_RESIDUAL_PX = 2.0
#: A photometric pose correction (degrees, during training) above this points at the estimated pose.
LARGE_CORRECTION_DEG = 2.0


def poorly_fitting_views(per_view: dict[str, float], gap_db: float = SUSPECT_VIEW_DB) -> dict[str, float]:
    """Views whose train PSNR is more than ``gap_db`` below the median of the other views, with their gap.

    A wrong pose, a wrong mask, a blurred photo or a moved object look the same here; ``diagnose_views``
    weighs the evidence. On ground-truth poses of the 9-view benchmark scenes the largest gap was 4.6 dB; a
    view 19 deg off showed 6.3 dB."""
    names, ps = list(per_view), np.array(list(per_view.values()))
    if len(ps) < 3:
        return {}
    gaps = {n: float(np.median(np.delete(ps, i)) - ps[i]) for i, n in enumerate(names)}
    return {n: g for n, g in gaps.items() if g > gap_db}


@dataclass
class ViewEvidence:
    """What a run knows about its views, for ``diagnose_views`` (every field optional but the PSNRs)."""

    train_psnr: dict[str, float]
    mask_coverage: dict[str, float] | None = None  # per view, when masks were used
    mask_source: str | None = None  # "input" or "automatic"
    pose_method: str | None = None  # the --poses method used; None: cameras came with the input
    pose_residual_px: dict[str, float] | None = None  # per-view reprojection RMS from the pose estimator
    pose_rms_px: float | None = None  # the estimator's overall reprojection RMS (used without per-view values)
    pose_correction_deg: dict[str, float] | None = None  # photometric refinement's per-view rotation change
    black: list[str] = field(default_factory=list)  # views whose render is black


@dataclass
class Diagnosis:
    """Views that fit badly, the likely cause of each ("masks", "poses", "masks and poses", "unknown") and
    the warnings to print."""

    suspects: dict[str, float]
    causes: dict[str, str]
    warnings: list[str]


def _mask_problem(coverage: float | None) -> str | None:
    if coverage is None:
        return None
    if coverage < TINY_MASK_FRACTION:
        return f"mask covers {100 * coverage:.1f}% of the image"
    if coverage > FULL_MASK_FRACTION:
        return f"mask covers {100 * coverage:.0f}% of the image"
    return None


def _pose_problem(name: str, ev: ViewEvidence) -> str | None:
    if ev.pose_method is None:
        return None
    res = (ev.pose_residual_px or {}).get(name)
    if res is not None and res > HIGH_RESIDUAL_PX:
        return f"reprojection residual {res:.1f} px"
    if res is None and ev.pose_rms_px is not None and ev.pose_rms_px > HIGH_RESIDUAL_PX:
        return f"the pose estimate's reprojection residual is {ev.pose_rms_px:.1f} px overall"
    corr = (ev.pose_correction_deg or {}).get(name)
    if corr is not None and corr > LARGE_CORRECTION_DEG:
        return f"pose moved {corr:.1f} deg during training"
    return None


def _engine(method: str | None) -> str | None:
    """The estimator that actually ran: "colmap" or "own" (from "colmap", "own", "auto (pycolmap)",
    "auto (own SfM)"...), None when unknown."""
    m = (method or "").lower()
    if "colmap" in m:
        return "colmap"
    if "own" in m:
        return "own"
    return None


def _pose_advice(method: str | None) -> str:
    """What to try for doubtful estimated poses, never the estimator that produced them."""
    used = _engine(method)
    others = [m for m in ("colmap", "own") if m != used]
    tries = " or ".join(f"--poses {m}" for m in others)
    return f"try {tries}, give cameras, or leave these views out"


def _mask_advice(source: str | None) -> str:
    if source == "input":
        return "check the mask files of these views"
    return "give masks (a masks/ folder beside the photos) or --set mode=scene to train on the whole image"


def diagnose_views(ev: ViewEvidence, gap_db: float = SUSPECT_VIEW_DB) -> Diagnosis:
    """Name the likely cause of views that fit badly (or render black) from the evidence: mask coverage
    (tiny or whole-image masks), pose residuals / large pose corrections (estimated poses only), or neither.
    A pure function: the pipeline prints its warnings."""
    suspects = poorly_fitting_views(ev.train_psnr, gap_db)
    flagged = list(suspects) + [n for n in ev.black if n not in suspects]
    causes: dict[str, str] = {}
    detail: dict[str, list[str]] = {}
    for n in flagged:
        m = _mask_problem((ev.mask_coverage or {}).get(n))
        p = _pose_problem(n, ev)
        causes[n] = "masks and poses" if m and p else "masks" if m else "poses" if p else "unknown"
        detail[n] = [x for x in (m, p) if x]

    def what(n: str) -> str:
        bits = [f"{suspects[n]:.1f} dB below the median view"] if n in suspects else ["black render"]
        return f"{n} ({', '.join(bits + detail[n])})"

    warnings = []
    by_cause: dict[str, list[str]] = {}
    for n, c in causes.items():
        by_cause.setdefault(c, []).append(n)
    head = "these views fit much worse than the others"
    if "masks" in by_cause:
        names = ", ".join(what(n) for n in by_cause["masks"])
        warnings.append(f"{head}, most likely because of their masks: {names}; {_mask_advice(ev.mask_source)}")
    if "poses" in by_cause:
        names = ", ".join(what(n) for n in by_cause["poses"])
        advice = _pose_advice(ev.pose_method)
        warnings.append(f"{head}, most likely because of their estimated poses: {names}; {advice}")
    if "masks and poses" in by_cause:
        names = ", ".join(what(n) for n in by_cause["masks and poses"])
        warnings.append(
            f"{head}, and both their masks and their poses are doubtful: {names}; fix the masks first "
            f"({_mask_advice(ev.mask_source)}), then {_pose_advice(ev.pose_method)}"
        )
    if "unknown" in by_cause:
        names = ", ".join(what(n) for n in by_cause["unknown"])
        known = []
        if ev.mask_coverage is not None:
            known.append("their masks look sound")
        if ev.pose_method is not None and (ev.pose_residual_px or ev.pose_rms_px is not None):
            known.append("their pose residuals are low")
        elif ev.pose_method is not None and ev.pose_correction_deg:
            known.append("pose refinement barely turned them")
        why = f" ({' and '.join(known)})" if known else ""
        guess = "a blurred photo or a moved object"
        if ev.pose_method is not None:
            guess = "a wrong pose, " + guess
        advice = f"; {_pose_advice(ev.pose_method)}" if ev.pose_method is not None else ""
        warnings.append(f"{head}{why}: {names}; the cause may be {guess}{advice}")
    return Diagnosis(suspects=suspects, causes=causes, warnings=warnings)
