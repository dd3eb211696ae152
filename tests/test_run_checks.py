"""No run reports success for nonsense: empty masks, automatic masks that found nothing, black renders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recon.errors import ReconInputError
from recon.io.images import save_image
from recon.run_checks import black_renders, decide_masks

RECON = [sys.executable, "-c", "from apps.cli import main; main()"]


def _masks(*coverages: float, size: int = 40) -> list[np.ndarray]:
    out = []
    for c in coverages:
        m = np.zeros((size, size), np.float32)
        m.flat[: int(round(c * m.size))] = 1.0
        out.append(m)
    return out


def test_input_masks_all_empty_is_an_error() -> None:
    with pytest.raises(ReconInputError, match="every mask is empty"):
        decide_masks(["a", "b", "c"], _masks(0, 0, 0), from_input=True)


def test_input_masks_empty_on_some_views_are_named() -> None:
    d = decide_masks(["v1.png", "v2.png", "v3.png"], _masks(0.3, 0.0, 0.2), from_input=True)
    assert d.use and len(d.warnings) == 1 and "v2.png" in d.warnings[0]
    assert "v1.png" not in d.warnings[0] and "v3.png" not in d.warnings[0]
    assert d.to_dict()["coverage"]["v2.png"] == 0.0


def test_automatic_masks_that_found_nothing_are_not_used() -> None:
    d = decide_masks(["a", "b", "c"], _masks(0.01, 0.0, 0.02), from_input=False)
    assert not d.use and "whole image" in d.reason
    assert decide_masks(["a", "b", "c"], _masks(0.3, 0.25, 0.2), from_input=False).use


def test_black_renders_are_found_inside_the_mask() -> None:
    img = np.full((20, 20, 3), 0.6, np.float32)
    good, black = img.copy(), np.zeros_like(img)
    assert black_renders(["g", "b"], [good, black], [img, img], None) == ["b"]
    mask = np.zeros((20, 20), np.float32)
    mask[:5] = 1.0
    dark_outside = img.copy()
    dark_outside[5:] = 0
    assert black_renders(["g"], [dark_outside], [img], [mask]) == []


def _scene_with_masks(tiny_scene: Path, tmp_path: Path, blank: int | None) -> Path:
    """A copy of the tiny scene whose masks are blank: all of them (blank=None) or that of input view ``blank``
    of the 3-view track."""
    from recon.io.spare import image_name, read_split

    src = tmp_path / "scene"
    shutil.copytree(tiny_scene, src)
    inputs = next(iter(read_split(src / "splits" / "track3.json").values()))["input_views"]
    for i in inputs if blank is None else [inputs[blank]]:
        save_image(src / "masks" / image_name(i), np.zeros((72, 96), np.float32))
    return src


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(RECON + list(args), capture_output=True, text=True, env=env, timeout=600)


def test_blank_mask_files_are_a_one_line_error(tiny_scene: Path, tmp_path: Path) -> None:
    src = _scene_with_masks(tiny_scene, tmp_path, None)
    proc = _run("reconstruct", str(src), "--out", str(tmp_path / "run"), "--track", "3", "--iterations", "5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "every mask is empty" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_warnings_reach_the_terminal_and_metrics_say_what_was_scored(tiny_scene: Path, tmp_path: Path) -> None:
    src = _scene_with_masks(tiny_scene, tmp_path, 0)
    out = tmp_path / "run"
    proc = _run("reconstruct", str(src), "--out", str(out), "--track", "3", "--iterations", "5")
    assert proc.returncode == 0, proc.stderr
    assert "recon: warning: the masks of 1 view(s) are empty" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["masks"]["used"] and metrics["masks"]["source"] == "input"
    assert min(metrics["masks"]["coverage"].values()) == 0.0
    # a blank mask empties the visual hull: the run says so and trains on the whole images (scene mode)
    assert "switching to scene mode" in proc.stderr
    assert metrics["mode"]["mode"] == "scene" and "hull" in metrics["mode"]["reason"]
    assert metrics["train_psnr_over"] == "the whole image"
    assert "masks of 1 view(s) are empty" in (out / "run.log").read_text()


# ----------------------------------------------------------------------------- warnings name the likely cause
_FITS = {"a.png": 30.0, "b.png": 31.0, "c.png": 30.5, "d.png": 22.0}  # d fits 8.5 dB worse


def _cov(d: float) -> dict[str, float]:
    return {"a.png": 0.3, "b.png": 0.3, "c.png": 0.3, "d.png": d}


def test_diagnosis_masking_failure_is_not_blamed_on_poses() -> None:
    from recon.run_checks import ViewEvidence, diagnose_views

    ev = ViewEvidence(
        _FITS,
        mask_coverage=_cov(0.003),
        mask_source="automatic",
        pose_method="colmap",
        pose_residual_px=dict.fromkeys(_FITS, 0.5),
    )
    d = diagnose_views(ev)
    assert d.causes == {"d.png": "masks"}
    assert len(d.warnings) == 1 and "masks" in d.warnings[0] and "d.png" in d.warnings[0]
    assert "--poses" not in d.warnings[0]


def test_diagnosis_pose_failure_never_suggests_the_method_in_use() -> None:
    from recon.run_checks import ViewEvidence, diagnose_views

    res = {"a.png": 0.4, "b.png": 0.5, "c.png": 0.6, "d.png": 6.0}
    d = diagnose_views(ViewEvidence(_FITS, mask_coverage=_cov(0.3), pose_method="colmap", pose_residual_px=res))
    assert d.causes == {"d.png": "poses"}
    assert "estimated poses" in d.warnings[0] and "6.0 px" in d.warnings[0]
    assert "--poses colmap" not in d.warnings[0] and "--poses own" in d.warnings[0]
    d = diagnose_views(ViewEvidence(_FITS, pose_method="own", pose_correction_deg={"d.png": 7.0}))
    assert d.causes == {"d.png": "poses"} and "--poses own" not in d.warnings[0] and "--poses colmap" in d.warnings[0]
    d = diagnose_views(ViewEvidence(_FITS, pose_method="own", pose_rms_px=4.5))  # only the overall residual
    assert d.causes == {"d.png": "poses"} and "4.5 px overall" in d.warnings[0]
    assert diagnose_views(ViewEvidence(_FITS, pose_method="own", pose_rms_px=0.4)).causes == {"d.png": "unknown"}
    # auto reports the estimator it ran: that one is never suggested either
    d = diagnose_views(ViewEvidence(_FITS, pose_method="auto (pycolmap)", pose_residual_px=res))
    assert "--poses colmap" not in d.warnings[0] and "--poses own" in d.warnings[0]
    d = diagnose_views(ViewEvidence(_FITS, pose_method="auto (own SfM)", pose_residual_px=res))
    assert "--poses own" not in d.warnings[0] and "--poses colmap" in d.warnings[0]


def test_diagnosis_both_causes_and_neither() -> None:
    from recon.run_checks import ViewEvidence, diagnose_views

    both = ViewEvidence(
        _FITS, mask_coverage=_cov(0.99), mask_source="automatic", pose_method="auto", pose_residual_px={"d.png": 9.0}
    )
    d = diagnose_views(both)
    assert d.causes == {"d.png": "masks and poses"} and "both" in d.warnings[0]
    neither = diagnose_views(ViewEvidence(_FITS, mask_coverage=_cov(0.3), pose_method=None))
    assert neither.causes == {"d.png": "unknown"} and "--poses" not in neither.warnings[0]
    assert "masks look sound" in neither.warnings[0]
    fine = diagnose_views(ViewEvidence({"a.png": 30.0, "b.png": 31.0, "c.png": 29.0}, pose_method="auto"))
    assert fine.suspects == {} and fine.warnings == []


def test_diagnosis_names_black_renders_with_their_cause() -> None:
    from recon.run_checks import ViewEvidence, diagnose_views

    fits = {"a.png": 30.0, "b.png": 30.0, "c.png": 30.0}
    d = diagnose_views(ViewEvidence(fits, mask_coverage={"a.png": 0.001, "b.png": 0.3, "c.png": 0.3}, black=["a.png"]))
    assert d.causes == {"a.png": "masks"} and "black render" in d.warnings[0]


def test_automatic_masks_without_confidence_fall_back_to_scene_mode() -> None:
    masks = _masks(0.3, 0.25, 0.2, 0.3)
    assert decide_masks(list("abcd"), masks, from_input=False, confidence=[0.9, 0.8, 0.9, 0.7]).use
    d = decide_masks(list("abcd"), masks, from_input=False, confidence=[0.9, 0.2, 0.1, 0.7])
    assert not d.use and "confident" in d.reason and "2 of 4" in d.reason
