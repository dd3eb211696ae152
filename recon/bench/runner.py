"""`recon bench run`: run a built-in method end to end on a track and split, score it, write a results JSON.

For every scene of the split the method reconstructs from the participant folder only (``inputs/``: input
images, masks, all cameras), renders the hidden test cameras at the ground-truth resolution into a
submission folder (``submission/<scene>/cam_XXX_3_0000.png``), which is then validated and scored exactly
like an uploaded submission. ``results.json`` follows ``ns-eval``'s layout (``results`` holds each metric's
mean and ``<metric>_std``) plus per-scene/per-image scores and timings.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recon.bench.dataset import TRACKS, check_track_split, load_benchmark
from recon.cameras import Camera
from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_text
from recon.io.images import save_image
from recon.io.spare import camera_file_name, image_name, read_projection, read_split

# built-in method -> (reconstruction preset, config overrides)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "gaussians": ("fast", {}),
    "gaussians-plain": ("plain", {}),
    "gaussians-diffusion": ("fast", {"prior": "diffusion"}),
    "mesh": ("fast", {"representation": "mesh"}),
    "hybrid": ("fast", {"representation": "hybrid"}),
    "neural": ("fast", {"representation": "neural"}),
}


def test_cameras(scene_dir: Path, track: int) -> list[tuple[str, Camera]]:
    """(submission file name, Camera at full resolution) for each test view of a participant scene."""
    info = json.loads((scene_dir / "scene.json").read_text())
    entries = read_split(scene_dir / "splits" / f"{TRACKS[track][1]}.json")
    entry = entries.get(info["name"]) or next(iter(entries.values()))
    out = []
    for i in entry["test_views"]:
        P = read_projection(scene_dir / "cameras" / camera_file_name(i))
        out.append((image_name(i), Camera.from_projection(P, int(info["width"]), int(info["height"]))))
    return out


def run_benchmark(
    dataset: str | Path,
    method: str,
    track: int,
    split: str,
    out: str | Path,
    *,
    iterations: int | None = None,
    max_side: int | None = None,
    seed: int = 0,
    lpips_weights: str | Path | None = None,
    db: str | Path | None = None,
    submission_name: str | None = None,
    progress: Callable[[str], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``method`` on every scene of ``split``, score it, write ``out/results.json``; submit to ``db`` if given.

    ``extra`` holds further config overrides (e.g. ``{"prior_weights": path}``), applied over the method's own.

    Returns the results dict (with ``submission_id`` when submitted).
    """
    from recon.bench.leaderboard import expected_views, submit
    from recon.bench.scoring import score_renders
    from recon.bench.submission import read_submission
    from recon.config import make_config
    from recon.pipeline import load_run_model, reconstruct, render_views

    if method not in METHODS:
        raise ReconInputError(f"unknown method {method!r}; built-in methods: {', '.join(METHODS)}")
    check_track_split(track, split)
    bench = load_benchmark(dataset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    preset, overrides = METHODS[method]
    overrides = {**overrides, **{k: v for k, v in (extra or {}).items() if v is not None}}
    try:
        config = make_config(
            preset,
            iterations=iterations,
            max_side=max_side,
            track=int(TRACKS[track][1].removeprefix("track")),
            seed=seed,
            **overrides,
        )
    except ValueError as exc:
        raise ReconInputError(str(exc)) from None
    say = progress or (lambda _msg: None)
    t_start = time.perf_counter()
    timings: dict[str, dict[str, float]] = {}
    submission = out / "submission"
    if submission.exists():  # renders of an earlier run (maybe another split) would be rejected as extra files
        shutil.rmtree(submission)
    for scene in bench.scenes[split]:
        scene_dir = bench.inputs_dir(track, split) / scene
        say(f"{scene}: reconstructing ({method}, preset {config.preset}, {config.steps_label()})")
        t0 = time.perf_counter()
        summary = reconstruct(scene_dir, out / "runs" / scene, config, overwrite=True)
        t1 = time.perf_counter()
        model = load_run_model(out / "runs" / scene)
        names, cams = zip(*test_cameras(scene_dir, track))
        renders = render_views(model, list(cams), background=0.0)
        for name, img in zip(names, renders):
            save_image(submission / scene / name, img)
        t2 = time.perf_counter()
        timings[scene] = {
            "reconstruct_s": t1 - t0,
            "train_s": float(summary["timings"]["train_s"]),
            "render_s": t2 - t1,
            "render_fps": len(renders) / max(t2 - t1, 1e-9),
        }
        say(f"{scene}: {t1 - t0:.1f} s, {summary['num_gaussians']} Gaussians ({config.representation})")
    sub = read_submission(submission, expected_views(bench, split), (bench.width, bench.height))
    scores = score_renders(bench, sub.images, lpips_weights)
    total = time.perf_counter() - t_start
    results: dict[str, Any] = {
        "experiment_name": f"{method}-track{track}-{split}",
        "method_name": method,
        "checkpoint": str(out / "runs"),
        "track": track,
        "split": split,
        "preset": config.preset,
        "config": config.to_dict(),
        "results": {
            **{k: v for k, v in scores.mean.items()},
            **{f"{k}_std": v for k, v in scores.std.items()},
            "fps": sum(len(expected_views(bench, split)[s]) for s in timings)
            / max(sum(t["render_s"] for t in timings.values()), 1e-9),
        },
        "lpips": scores.lpips_note or "computed (AlexNet, local weights)",
        "per_scene": scores.per_scene,
        "per_image": scores.per_image,
        "timings": {"total_s": total, "per_scene": timings},
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "threads": torch.get_num_threads(),
        },
        "submission": str(submission),
    }
    if db is not None:
        sid, _ = submit(
            db,
            dataset,
            submission,
            method,
            track,
            split,
            name=submission_name,
            lpips_weights=lpips_weights,
            info={"results_json": str(out / "results.json"), "timings": results["timings"]},
        )
        results["submission_id"] = sid
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results
