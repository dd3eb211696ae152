"""`recon` command line: thin entry points over recon.*; user errors become one line and exit code 2."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Optional

import typer

from recon.errors import ReconInputError


def openmp_wait_settings(
    environ: Mapping[str, str],
    load1: float,
    cpus: int,
    others_running: Callable[[], int | None] = lambda: None,
) -> dict[str, str]:
    """How OpenMP threads wait between parallel regions, from how busy the machine is when the run starts.

    Spin-waiting threads stall badly when the cores are shared (dtu3 scan24, 150 steps with one other busy
    process on 2 cores: libgomp's default spin 44.9 s, passive 30.2 s, GOMP_SPINCOUNT=5000 37.2 s); on idle cores
    passive waking costs every parallel region a futex round trip (quiet: default 18.1 s, passive 21.9 s, spin
    5000 19.0 s). So: a short spin when the 1-minute load average is under a quarter of the cores (a run that
    starts on idle cores), passive otherwise. The load average lags by a minute: a run started right after
    another one ended would still see it and wait passively on idle cores (lego 8 views 135 s instead of 120 s),
    so ``others_running()`` = 0 (no other runnable task seen just now, ``_others_running``; only looked at when
    the load average says busy) also means idle.
    What the user set themselves is left alone."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return {}
    if load1 < 0.25 * max(1, cpus) or others_running() == 0:
        return {"GOMP_SPINCOUNT": "5000"}
    return {"OMP_WAIT_POLICY": "PASSIVE"}


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform: assume busy (the safe choice)
        return float("inf")


def _others_running(samples: int = 5, interval_s: float = 0.01) -> int | None:
    """The most runnable tasks besides this process seen in /proc/loadavg over a few samples ~10 ms apart
    (an instant view, unlike the load average); None where it cannot be read."""
    most = 0
    for i in range(samples):
        try:
            fields = Path("/proc/loadavg").read_text().split()
            running = int(fields[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        most = max(most, running - 1)  # this process is running while it reads
        if i + 1 < samples:
            time.sleep(interval_s)
    return most


# The entry point's choice, made before torch is imported (nothing above imports it).
os.environ.update(openmp_wait_settings(os.environ, _load_average(), os.cpu_count() or 1, _others_running))

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Sparse-view 3D reconstruction: 3-9 photos in, 3D Gaussians (and more) out.",
    pretty_exceptions_enable=False,
)

EXIT_USAGE = 2


def _fail(message: str) -> None:
    typer.echo(f"recon: error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


@app.command("make-scene")
def make_scene_cmd(
    out: Path = typer.Option(..., "--out", help="Folder to write the scene into (must not exist or be empty)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same scene."),
    width: int = typer.Option(400, help="Image width in pixels."),
    height: int = typer.Option(300, help="Image height in pixels."),
    cameras: int = typer.Option(49, help="Number of cameras on the spherical cap (49-64 like DTU)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty folder."),
) -> None:
    """Synthesize a SpaRe-style object scene (images, masks, depth, projection matrices, 3/9-view splits)."""
    from recon.bench.synth import make_scene

    path = make_scene(out, seed=seed, width=width, height=height, n_cameras=cameras, overwrite=overwrite)
    typer.echo(f"wrote scene to {path}")


@app.command()
def reconstruct(
    path: Path = typer.Argument(
        ..., help="SpaRe-style scene, transforms.json (or its folder), COLMAP model or image folder."
    ),
    out: Path = typer.Option(..., "--out", help="Run folder to write (built atomically)."),
    preset: Optional[str] = typer.Option(
        None, help="fast (default on CPU), quality (default on GPU) or plain (vanilla 3DGS)."
    ),
    iterations: Optional[int] = typer.Option(None, help="Override the preset's number of training steps."),
    max_side: Optional[int] = typer.Option(None, help="Downscale images so the longest side is at most this."),
    track: Optional[int] = typer.Option(None, help="SpaRe scenes: use the 3-view or 9-view track's input views."),
    seed: int = typer.Option(0, help="Random seed (recorded in config.json)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty run folder."),
    poses: str = typer.Option(
        "auto",
        help="Unposed image folders: auto (pycolmap set for few views; the built-in SfM for views it leaves out), "
        "own (built-in SfM only) or colmap (pycolmap's defaults).",
    ),
    pose_refine: bool = typer.Option(
        True, "--pose-refine/--no-pose-refine", help="Refine estimated poses photometrically during training."
    ),
    view: bool = typer.Option(
        False, "--view", help="Stream training into a live viser viewer (port 8080 or next free)."
    ),
    host: str = typer.Option(
        "127.0.0.1", help="--view: address the viewer listens on (0.0.0.0 = every network, no authentication)."
    ),
    port: int = typer.Option(8080, help="--view: port to serve on (the next free one when it is in use)."),
    representation: str = typer.Option(
        "gaussians",
        help="gaussians (splats.ply), mesh (mesh.ply from the Gaussians), "
        "hybrid (mesh + Gaussians in front of it) or neural (neural primitives).",
    ),
    prior: str = typer.Option("none", help="none, or diffusion (a repair model supervises unseen pseudo views)."),
    prior_weights: Optional[Path] = typer.Option(
        None, help="Local repair-model folder for --prior diffusion (default: the bundled one)."
    ),
    settings: list[str] = typer.Option(
        [],
        "--set",
        metavar="PATH=VALUE",
        help="Set any setting by its dotted path, e.g. --set densify.prune_opa=0.01 "
        "(repeatable; `recon settings` lists them).",
    ),
) -> None:
    """Reconstruct an object from 3-9 views as 3D Gaussians, a mesh, a hybrid or neural primitives.

    Views without cameras (a plain folder of photos) get their poses estimated first."""
    from recon.config import make_config, parse_settings
    from recon.pipeline import reconstruct as run_reconstruct

    if preset is None:
        import torch

        preset = "quality" if torch.cuda.is_available() else "fast"
    if poses not in ("auto", "own", "colmap"):
        _fail(f"--poses must be auto, own or colmap, got {poses!r}")
    try:
        if prior_weights is not None and not prior_weights.is_dir():
            _fail(f"{prior_weights}: --prior-weights must be a folder holding a saved repair model")
        chosen = {"poses.method": poses, "poses.refine": pose_refine}
        if prior_weights is not None:
            chosen["diffusion.weights"] = str(prior_weights)
        config = make_config(
            preset,
            iterations=iterations,
            max_side=max_side,
            track=track,
            seed=seed,
            representation=representation,
            prior=prior,
            settings={**chosen, **parse_settings(settings)},
        )
    except ValueError as exc:
        _fail(str(exc))
    from recon.io.atomic import check_output_dir

    check_output_dir(out, overwrite=overwrite, protect=[path])  # before any work
    live = None
    if view:
        from apps.viewer import start_live

        live = start_live(port=port, host=host, say=typer.echo)
    with _progress_bar("training") as update:
        progress = update if live is None else (lambda s, t, st: (update(s, t, st), live.progress(s, t, st)))
        summary = run_reconstruct(
            path, out, config, overwrite=overwrite, progress=progress, snapshot=None if live is None else live.snapshot
        )
    from recon.representations import representation as representation_entry

    what = representation_entry(config.representation).describe(summary)
    typer.echo(f"wrote {out}: {what}, train PSNR {summary['train_psnr']:.2f} dB, {summary['timings']['total_s']:.0f} s")
    if live is not None:
        from apps.viewer import serve_forever, show_run_folder

        show_run_folder(live, out)
        serve_forever(live, say=typer.echo)


def _progress_bar(label: str):
    """Context manager yielding a progress callback (step, total, stats) drawn with rich."""
    from contextlib import contextmanager

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    @contextmanager
    def cm():
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        # started at the first step: input that fails before training gets its one-line error alone
        bar: Progress | None = None
        task = None

        def update(step: int, total: int, stats: dict) -> None:
            nonlocal bar, task
            if bar is None:
                bar = Progress(*columns, transient=False)
                bar.start()
                task = bar.add_task(label, total=None, stats="")
            text = f"loss {stats.get('loss', 0):.4f} psnr {stats.get('psnr', 0):.2f} n={stats.get('gaussians', 0)}"
            bar.update(task, completed=step, total=total, stats=text)

        try:
            yield update
        finally:
            if bar is not None:
                bar.stop()

    return cm()


@app.command("settings")
def settings_cmd(
    preset: str = typer.Option("fast", help="Preset whose values to show: fast, quality or plain."),
) -> None:
    """List every setting `--set PATH=VALUE` takes, with the preset's value."""
    from recon.config import PRESETS, field_paths, get_field

    if preset not in PRESETS:
        _fail(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[preset]
    for path in field_paths(config):
        typer.echo(f"{path} = {get_field(config, path)!r}")


@app.command()
def view(
    run: Path = typer.Argument(..., help="Run folder written by `recon reconstruct`."),
    port: int = typer.Option(8080, help="Port to serve on (the next free one when it is in use)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 = every network, no authentication)."),
) -> None:
    """Open an interactive viser viewer on a run folder (prints the URL; Ctrl+C to stop)."""
    from apps.viewer import open_viewer, serve_forever

    serve_forever(open_viewer(run, port=port, host=host, say=typer.echo), say=typer.echo)


from apps.bench_cli import bench_app, leaderboard_app  # noqa: E402

app.add_typer(bench_app, name="bench")
app.add_typer(leaderboard_app, name="leaderboard")


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder written by `recon reconstruct` (or a 3DGS .ply file)."),
    to: Path = typer.Option(
        ...,
        "--to",
        help="Output file: .splat (antimatter15 layout) or .ply (3DGS layout); with --mesh the mesh file; "
        "with --cameras a folder.",
    ),
    mesh: Optional[str] = typer.Option(None, "--mesh", help="Export the run's mesh.ply instead, as obj, ply or glb."),
    cameras: Optional[str] = typer.Option(
        None,
        "--cameras",
        help="Export the run's cameras instead: colmap (cameras.txt, images.txt, points3D.txt) or nerfstudio "
        "(transforms.json), into the folder --to.",
    ),
    images: Optional[Path] = typer.Option(
        None, "--images", help="With --cameras: the folder holding the photos (default: the run's source folder)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --cameras: replace a non-empty --to folder."),
) -> None:
    """Export a reconstruction: splats to .splat / .ply, (--mesh obj|ply|glb) its mesh, or (--cameras
    colmap|nerfstudio) its cameras."""
    from renderers.gaussians.ply import read_ply, write_ply
    from renderers.gaussians.splat_format import write_splat

    if cameras is not None:
        from recon.export.cameras import export_cameras

        done = export_cameras(run, cameras, to, overwrite=overwrite, images=images)
        points = f" and {done.points} points" if cameras == "colmap" else ""
        typer.echo(f"wrote {cameras} cameras of {done.cameras} views{points} to {to}")
        if done.photos_missing:
            typer.echo(
                f"recon: note: photos not found for {len(done.photos_missing)} views (pass --images); the export "
                "names them images/NAME at the run's image size",
                err=True,
            )
        return
    if mesh is not None:
        from renderers.mesh.io import export_run_mesh

        path, faces = export_run_mesh(run, to, mesh)
        typer.echo(f"wrote {path} ({faces} faces)")
        return
    from recon.run_folder import RunFolder

    src = RunFolder(run).splats if run.is_dir() else run
    if not src.exists():
        _fail(f"{src}: no splats.ply here (is this a run folder from `recon reconstruct`?)")
    suffix = to.suffix.lower()
    if suffix not in (".splat", ".ply"):
        _fail(f"{to}: unknown export format {suffix or '(none)'}; use .splat or .ply")
    if to.is_dir():
        _fail(f"{to}: is a folder; give a file name")
    model = read_ply(src)
    try:
        (write_splat if suffix == ".splat" else write_ply)(to, model)
    except OSError as exc:
        _fail(f"{to}: cannot write ({exc.strerror or exc})")
    typer.echo(f"wrote {to} ({model.num_gaussians} Gaussians)")


class Terminated(BaseException):
    """SIGTERM/SIGHUP turned into an exception, so every `with` block cleans up (partial output folders)."""


def _on_signal(signum: int, frame: object) -> None:
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app, turning ReconInputError into one line on stderr and exit code 2.

    SIGTERM and SIGHUP unwind like Ctrl+C does (temporary folders removed), then exit 128 + signal."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        app(args=argv, standalone_mode=True)
    except ReconInputError as exc:
        typer.echo(f"recon: error: {_one_line(str(exc))}", err=True)
        sys.exit(EXIT_USAGE)
    except Terminated as exc:
        typer.echo(f"recon: stopped by signal {exc.args[0]}; partial output removed", err=True)
        sys.exit(128 + int(exc.args[0]))


def _one_line(text: str) -> str:
    """``text`` with control characters (newlines, escape sequences from file names) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


if __name__ == "__main__":
    main()
