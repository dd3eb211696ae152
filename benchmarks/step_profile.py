"""Where a training step's time goes: the default pipeline's own ``train()`` with timers around its parts.

    python benchmarks/step_profile.py --protocol dtu3 --data ../shared/data/real/dtu --scene scan24
    python benchmarks/step_profile.py                       # a generated 3-view scene (object mode)
    python benchmarks/step_profile.py --protocol blender8 --data ../shared/data/real/blender --scene lego

The scene is set up the way ``recon reconstruct`` does it (protocol input views, mode decision, initialisation,
steps per view), then ``recon.pipeline.train`` runs unchanged while the functions it calls are wrapped with
``time.perf_counter`` sections (manual timers, not a sampling profiler; the wrappers cost ~1 us per call):

* render forward (``GaussianModel.render``), and inside it each C++ kernel call (projection, SH, tile binning,
  compositing);
* losses: ``metrics.rgb_loss`` (L1 + SSIM, each also timed) and the regularisers of ``priors.regularizers``;
* backward (``Tensor.backward``), split into the C++ kernel backwards and the autograd rest (SSIM, losses,
  activations, projection glue);
* optimiser (``Adam.step``, ``zero_grad``, the means learning-rate schedule);
* densification (the strategy's hooks, hull floater pruning);
* other = the step's wall time minus all of the above (the loop's own Python, targets, backgrounds, logging).

The cyclic garbage collector's pauses are timed through ``gc.callbacks`` (they fall inside the sections above).
``--gc freeze`` calls ``gc.freeze()`` after the setup, ``--gc off`` disables the collector for the training, to
measure what each would save. ``--torch-profile`` also prints torch.profiler's top operators (slower run).
``RECON_BENCH_ROOT=DIR`` imports ``recon`` from another tree (e.g. an older commit unpacked with ``git
archive``), so two trees can be profiled alternately on a loaded machine. Prints a table and writes
``benchmarks/results/step_profile.json`` (runs keyed by ``--label``; the rest of the file is kept).

On a machine shared with other jobs, compare trees in alternating runs, and prefer ``--threads 1``: two OpenMP
threads competing with another process for 2 cores can run several times slower than one.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_IMPORT_ROOT = os.environ.get("RECON_BENCH_ROOT") or str(ROOT)
# only when run as a script: a program that imports this module (for make_scene, say) keeps its own ``recon``
# (inserting here silently made both sides of such a program's before/after comparison run this tree)
if __name__ == "__main__" and _IMPORT_ROOT not in sys.path:
    sys.path.insert(0, _IMPORT_ROOT)

import torch

KERNEL_CALLS = ("project_fwd", "sh_fwd", "isect_tiles", "rasterize_fwd", "rasterize_bwd", "project_bwd", "sh_bwd")
REGULARISERS = (
    "alpha_mask_loss",
    "opacity_entropy",
    "scale_regularizer",
    "depth_smoothness",
    "stereo_depth_loss",
    "binocular_shift",
    "binocular_consistency",
    "decay_opacities",
)


class Timers:
    """Total seconds and call counts per label; ``wrap`` times a callable under a label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        return timed


class _TimedExtension:
    """The compiled kernel module with its calls timed (everything else passed through)."""

    def __init__(self, ext: Any, timers: Timers) -> None:
        self._ext = ext
        self._timed = {name: timers.wrap(f"kernel.{name}", getattr(ext, name)) for name in KERNEL_CALLS}

    def __getattr__(self, name: str) -> Any:
        return self._timed.get(name) or getattr(self._ext, name)


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def instrumented(timers: Timers) -> Iterator[None]:
    """Wrap what ``recon.pipeline.train`` calls with timers (restored on exit)."""
    import priors.regularizers as reg
    import priors.visual_hull as hull
    from recon import metrics
    from recon.kernels import cpu_raster
    from renderers.gaussians.model import GaussianModel
    from renderers.gaussians.strategy import DensifyStrategy

    ext = cpu_raster.extension()
    timed_ext = _TimedExtension(ext, timers) if ext is not None else None
    w = timers.wrap
    patches = [
        (GaussianModel, "render", w("render", GaussianModel.render)),
        (metrics, "rgb_loss", w("loss.rgb", metrics.rgb_loss)),
        (metrics, "l1", w("loss.rgb.l1", metrics.l1)),
        (metrics, "dssim_loss", w("loss.rgb.ssim", metrics.dssim_loss)),
        (metrics, "psnr", w("log.psnr", metrics.psnr)),
        *((reg, name, w("loss.reg", getattr(reg, name))) for name in REGULARISERS if hasattr(reg, name)),
        (torch.Tensor, "backward", w("backward", torch.Tensor.backward)),
        (torch.optim.Adam, "step", w("optim.step", torch.optim.Adam.step)),
        (torch.optim.Optimizer, "zero_grad", w("optim.zero_grad", torch.optim.Optimizer.zero_grad)),
        (torch.optim.lr_scheduler.ExponentialLR, "step", w("optim.lr", torch.optim.lr_scheduler.ExponentialLR.step)),
        (DensifyStrategy, "step_pre_backward", w("densify", DensifyStrategy.step_pre_backward)),
        (DensifyStrategy, "step_post_backward", w("densify", DensifyStrategy.step_post_backward)),
        (DensifyStrategy, "prune_mask", w("densify", DensifyStrategy.prune_mask)),
        (hull, "floater_mask", w("densify", hull.floater_mask)),
    ]
    if timed_ext is not None:
        patches.append((cpu_raster, "extension", lambda: timed_ext))
    with contextlib.ExitStack() as stack:
        for obj, name, value in patches:
            stack.enter_context(_patched(obj, name, value))
        yield


class GCTimer:
    """Time spent in the cyclic garbage collector (``gc.callbacks``), per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.collections[info["generation"]] += 1


def load_views(protocol: str | None, data: str | None, scene: str | None, seed: int) -> tuple[Any, str]:
    """The input views (ViewSet) and a description: a protocol scene, or a generated 3-view scene."""
    if protocol is None:
        from recon.bench.synth import synthesize
        from recon.io.types import ViewSet

        sc = synthesize(seed, 400, 300, views="splits")
        idx = sc.splits["track3"]["input_views"]
        views = ViewSet(
            names=[f"{i:03d}" for i in idx],
            images=[sc.images[i] for i in idx],
            cameras=[sc.cameras[i] for i in idx],
            masks=[sc.masks[i] for i in idx],
        )
        return views, f"generated scene seed {seed}, 3 views 400x300"
    from recon.bench.protocols import find_scenes, get_protocol, load_scene

    proto = get_protocol(protocol)
    dirs = find_scenes(proto, data, [scene] if scene else None)
    sc = load_scene(proto, dirs[0])
    h, w = sc.inputs.images[0].shape[:2]
    return sc.inputs, f"{protocol} {sc.name}, {len(sc.inputs)} views {w}x{h}"


def setup(views: Any, iterations: int | None, seed: int) -> tuple[Any, Any, Any, Any, dict[str, float]]:
    """As ``recon.pipeline.reconstruct`` up to training: (init, views, masks, config, setup timings)."""
    from recon import modes
    from recon.config import make_config
    from recon.pipeline import initialise, load_inputs
    from recon.representations import representation

    h, w = views.images[0].shape[:2]
    config = make_config("fast", iterations=iterations, max_side=max(h, w), seed=seed)
    t = time.perf_counter()
    views = load_inputs(views, config)
    decision = modes.decide_mode(views, config)
    masks = decision.masks
    if decision.mode == "scene":
        config = modes.scene_config(config)
    masks_s = time.perf_counter() - t
    t = time.perf_counter()
    init = initialise(views, views.cameras, masks, config)
    if config.steps_per_view > 0:
        config = config.for_views(len(views), scene=decision.mode == "scene")
    init.model = representation(config.representation).create(init, config)
    init_s = time.perf_counter() - t
    info = {"masks_s": masks_s, "init_s": init_s, "mode": decision.mode}
    return init, views, masks, config, info


def table_rows(timers: Timers, gct: GCTimer, steps: int, train_s: float) -> list[tuple[str, float]]:
    """(stage, ms per step) rows; indented names are parts of the row above them."""
    s = timers.seconds

    def ms(x: float) -> float:
        return 1000.0 * x / steps

    kern_fwd = sum(s[f"kernel.{k}"] for k in ("project_fwd", "sh_fwd", "isect_tiles", "rasterize_fwd"))
    kern_bwd = sum(s[f"kernel.{k}"] for k in ("rasterize_bwd", "project_bwd", "sh_bwd"))
    optim = s["optim.step"] + s["optim.zero_grad"] + s["optim.lr"]
    losses = s["loss.rgb"] + s["loss.reg"]
    named = s["render"] + losses + s["backward"] + optim + s["densify"] + s["log.psnr"]
    return [
        ("render forward", ms(s["render"])),
        ("  kernel: projection", ms(s["kernel.project_fwd"])),
        ("  kernel: SH colour", ms(s["kernel.sh_fwd"])),
        ("  kernel: tile binning", ms(s["kernel.isect_tiles"])),
        ("  kernel: compositing", ms(s["kernel.rasterize_fwd"])),
        ("  Python/torch rest", ms(s["render"] - kern_fwd)),
        ("losses", ms(losses)),
        ("  L1", ms(s["loss.rgb.l1"])),
        ("  SSIM", ms(s["loss.rgb.ssim"])),
        ("  regularisers", ms(s["loss.reg"])),
        ("backward", ms(s["backward"])),
        ("  kernel: compositing", ms(s["kernel.rasterize_bwd"])),
        ("  kernel: projection", ms(s["kernel.project_bwd"])),
        ("  kernel: SH colour", ms(s["kernel.sh_bwd"])),
        ("  autograd rest", ms(s["backward"] - kern_bwd)),
        ("optimiser (Adam, zero_grad, lr)", ms(optim)),
        ("densification", ms(s["densify"])),
        ("logging (PSNR every 10 steps)", ms(s["log.psnr"])),
        ("other (loop Python, targets)", ms(train_s - named)),
        ("total step", ms(train_s)),
        ("(GC pauses, inside the above)", ms(gct.seconds)),
    ]


def json_rows(rows: list[tuple[str, float]]) -> dict[str, float]:
    """Table rows as JSON keys: a part is named after its stage ("backward / kernel: compositing")."""
    out: dict[str, float] = {}
    parent = ""
    for name, v in rows:
        if name.startswith("  "):
            out[f"{parent} / {name.strip()}"] = round(v, 3)
        else:
            parent = name
            out[name] = round(v, 3)
    return out


def profile(args: argparse.Namespace) -> dict[str, Any]:
    from recon.pipeline import train

    torch.set_num_threads(args.threads)
    views, what = load_views(args.protocol, args.data, args.scene, args.scene_seed)
    init, views, masks, config, info = setup(views, args.iterations, args.seed)
    n0 = init.model.num_gaussians
    timers, gct = Timers(), GCTimer()
    if args.gc == "freeze":
        gc.collect()
        gc.freeze()
    elif args.gc == "off":
        gc.disable()
    gc.callbacks.append(gct)
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if args.torch_profile else None
    try:
        with instrumented(timers), prof or contextlib.nullcontext():
            result = train(init, views, views.cameras, masks, config)
    finally:
        gc.callbacks.remove(gct)
        gc.enable()
        gc.unfreeze()
    steps = config.iterations
    rows = table_rows(timers, gct, steps, result.seconds)
    print(f"{what}: {info['mode']} mode, {steps} steps, {n0} -> {init.model.num_gaussians} Gaussians, "
          f"{args.threads} threads, gc {args.gc}, import root {_IMPORT_ROOT}")  # fmt: skip
    print(f"train {result.seconds:.1f} s = {1000 * result.seconds / steps:.1f} ms/step, "
          f"{timers.calls['render'] / steps:g} renders per step; GC {gct.collections} "
          f"collections (gen 0/1/2), {gct.seconds:.2f} s")  # fmt: skip
    print("| stage | ms/step | % |\n|---|---:|---:|")
    total = rows[-2][1]
    for name, v in rows:
        print(f"| {name} | {v:.2f} | {100 * v / total:.1f} |")
    if prof is not None:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    last = result.history[-1] if result.history else {}
    return {
        "scene": what,
        "mode": info["mode"],
        "steps": steps,
        "threads": args.threads,
        "gc": args.gc,
        "import_root": _IMPORT_ROOT,
        "gaussians_start": n0,
        "gaussians_end": init.model.num_gaussians,
        "final_loss": last.get("loss"),
        "final_train_psnr_step": last.get("psnr"),
        "setup_s": {"masks_s": round(info["masks_s"], 2), "init_s": round(info["init_s"], 2)},
        "train_s": round(result.seconds, 2),
        "ms_per_step": json_rows(rows),
        "gc_collections": gct.collections,
        "gc_s": round(gct.seconds, 3),
        "calls_per_step": {k: round(v / steps, 2) for k, v in sorted(timers.calls.items())},
        "timer": "time.perf_counter sections around the functions train() calls (manual, not sampling)",
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "load_avg": os.getloadavg()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", help="a real-data protocol (dtu3, llff3, blender8...); none: a generated scene")
    ap.add_argument("--data", help="the protocol's dataset folder")
    ap.add_argument("--scene", help="one scene of the dataset (default: the first)")
    ap.add_argument("--iterations", type=int, default=None, help="training steps (default: the fast preset's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="reconstruction seed")
    ap.add_argument("--scene-seed", type=int, default=100, help="the generated scene's seed (no --protocol)")
    ap.add_argument("--gc", choices=("on", "freeze", "off"), default="on", help="the cyclic GC during training")
    ap.add_argument("--torch-profile", action="store_true", help="also print torch.profiler's top operators")
    ap.add_argument("--label", default=None, help="key of this run in the JSON (default: scene, gc and threads)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "step_profile.json")
    args = ap.parse_args()
    if args.protocol and not args.data:
        ap.error("--protocol needs --data")
    run = profile(args)
    scene = f"{args.protocol}-{args.scene}" if args.scene else args.protocol or f"generated{args.scene_seed}"
    label = args.label or f"{scene}-gc_{args.gc}-t{args.threads}"
    data: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {}
    data.setdefault("runs", {})[label] = run
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.json} ({label})")


if __name__ == "__main__":
    main()
