"""`recon bench run --protocol P --data DIR`: a built-in method on every scene of a standard real-data protocol.

Per scene: the protocol's input views (recon.bench.protocols) are reconstructed at the protocol's resolution,
the test cameras are rendered on the protocol's background and scored with its metric convention. Writes
``OUT/results.json`` = ``{"protocol", "method", "scenes": {name: {"psnr", "ssim", "lpips", "wall_s", ...}},
"mean": {...}}``, the runs under ``OUT/runs/`` and the test renders under ``OUT/renders/<scene>/``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recon.bench.protocols import find_scenes, get_protocol, load_scene, score_view
from recon.bench.scoring import load_lpips, mean_or_none
from recon.config import ReconstructConfig, make_config
from recon.errors import ReconInputError
from recon.io.atomic import atomic_write_text
from recon.io.images import save_image

#: A scene whose mean test PSNR is below this scored like an empty or black render: reported, never hidden.
SUSPICIOUS_PSNR = 10.0


def scene_config(
    preset: str,
    overrides: dict[str, Any],
    image_size: tuple[int, int],
    iterations: int | None = None,
    max_side: int | None = None,
    seed: int = 0,
) -> ReconstructConfig:
    """The run config for one scene: the method's preset and settings, trained at the protocol's image size
    unless ``max_side`` says otherwise. ``iterations`` and ``max_side`` may also come as settings (``--set
    max_side=N``); the argument wins when both are given. A bad setting is a ReconInputError naming it."""
    settings = dict(overrides)
    for name, option in (("seed", "--seed"), ("preset", "--method")):
        if name in settings:  # run arguments of their own (make_config would see them twice)
            raise ReconInputError(f"{name} is not a setting here: give it with {option}")
    given = {"iterations": iterations, "max_side": max_side}
    for name, value in given.items():
        from_setting = settings.pop(name, None)
        given[name] = value if value is not None else from_setting
    try:
        return make_config(
            preset, iterations=given["iterations"], max_side=given["max_side"] or max(image_size), seed=seed, **settings
        )
    except (ValueError, TypeError) as exc:
        raise ReconInputError(str(exc)) from None


def run_protocol(
    protocol_name: str,
    data: str | Path,
    method: str,
    out: str | Path,
    *,
    scenes: list[str] | None = None,
    iterations: int | None = None,
    max_side: int | None = None,
    seed: int = 0,
    lpips_weights: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``method`` (a name of recon.bench.runner.METHODS) under the protocol on every scene found in
    ``data``; returns the results dict written to ``out/results.json``."""
    from recon.bench.runner import METHODS
    from recon.pipeline import load_run_model, reconstruct, render_views

    protocol = get_protocol(protocol_name)
    if method not in METHODS:
        raise ReconInputError(f"unknown method {method!r}; built-in methods: {', '.join(METHODS)}")
    scene_dirs = find_scenes(protocol, data, scenes)
    lpips_fn, lpips_note = load_lpips(lpips_weights)
    preset, overrides = METHODS[method]
    overrides = {**overrides, **{k: v for k, v in (extra or {}).items() if v is not None}}
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "protocol": protocol.name,
        "method": method,
        "preset": preset,
        "published_split": protocol.published,
        "metric": protocol.metric,
        "input_masks": protocol.input_masks,
        "scenes": {},
        "warnings": [],
    }
    t_all = time.perf_counter()
    config = None
    for scene_dir in scene_dirs:
        scene = load_scene(protocol, scene_dir)
        h, w = scene.inputs.images[0].shape[:2]
        config = scene_config(preset, overrides, (h, w), iterations=iterations, max_side=max_side, seed=seed)
        say(
            f"{protocol.name} {scene.name}: {len(scene.inputs)} input views, {len(scene.test)} test views, "
            f"{method} ({config.steps_label()})"
        )
        t0 = time.perf_counter()
        run_dir = out / "runs" / scene.name
        summary = reconstruct(scene.inputs, run_dir, config, overwrite=True)
        wall = time.perf_counter() - t0
        model = load_run_model(run_dir)
        renders = render_views(model, list(scene.test.cameras or []), background=scene.background)
        per_view = []
        for k, (name, img) in enumerate(zip(scene.test.names, renders)):
            save_image(out / "renders" / scene.name / f"{Path(name).stem}.png", img)
            mask = None if scene.test.masks is None else scene.test.masks[k]
            per_view.append({"view": name, **score_view(protocol, img, scene.test.images[k], mask, lpips_fn)})
        row = {m: mean_or_none([v[m] for v in per_view]) for m in ("psnr", "ssim", "lpips")}
        row.update(
            {
                "wall_s": round(wall, 1),
                "train_s": round(float(summary["timings"]["train_s"]), 1),
                "num_gaussians": summary["num_gaussians"],
                "train_psnr": summary["train_psnr"],
                "mode": summary.get("mode", {}).get("mode"),
                "views": per_view,
                "input_views": list(scene.inputs.names),
                "black_renders": summary.get("black_renders", []),
            }
        )
        if row["psnr"] is not None and row["psnr"] < SUSPICIOUS_PSNR:
            msg = (
                f"{scene.name}: test PSNR {row['psnr']:.2f} dB is what an empty or black render scores; "
                f"look at {out / 'renders' / scene.name} and {run_dir / 'run.log'}"
            )
            results["warnings"].append(msg)
            say(f"warning: {msg}")
        results["scenes"][scene.name] = row
        say(f"{protocol.name} {scene.name}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}, {wall:.0f} s")
    rows = list(results["scenes"].values())
    results["mean"] = {m: mean_or_none([r[m] for r in rows]) for m in ("psnr", "ssim", "lpips", "wall_s")}
    results["lpips"] = lpips_note or "computed (AlexNet, local weights)"
    results["config"] = None if config is None else config.to_dict()
    results["machine"] = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
    }
    results["total_s"] = round(time.perf_counter() - t_all, 1)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results
