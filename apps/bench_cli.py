"""`recon bench ...` and `recon leaderboard ...`: thin typer sub-apps over recon.bench (registered in apps.cli)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from recon.errors import ReconInputError

# Same values as recon.bench.leaderboard's; repeated so `recon --help` does not import torch (a test checks).
DEFAULT_DB_NAME = "leaderboard.sqlite"
DEFAULT_METRIC = "psnr_m"
DATASET_ENV = "RECON_BENCH_DATASET"
DB_ENV = "RECON_LEADERBOARD_DB"

bench_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                        help="SpaRe-style benchmark: make the dataset, export the inputs, run a built-in method.")
leaderboard_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                              help="Leaderboard (SQLite): submit, show, serve a web page.")

_DATASET_HELP = f"Benchmark dataset folder (made by `recon bench make-dataset`; default ${DATASET_ENV} or ./bench_data)."
_DB_HELP = f"Leaderboard database (default ${DB_ENV}, else leaderboard.sqlite in the dataset folder)."


def _dataset(path: Optional[Path]) -> Path:
    return path or Path(os.environ.get(DATASET_ENV, "bench_data"))


def _db(db: Optional[Path], dataset: Optional[Path]) -> Path:
    if db is not None:
        return db
    if os.environ.get(DB_ENV):
        return Path(os.environ[DB_ENV])
    return _dataset(dataset) / DEFAULT_DB_NAME


@bench_app.command("make-dataset")
def make_dataset_cmd(
    out: Path = typer.Option(..., "--out", help="Folder to write (must not exist or be empty)."),
    dev: int = typer.Option(2, help="Number of development scenes."),
    test: int = typer.Option(3, help="Number of test scenes."),
    width: int = typer.Option(400, help="Image width."),
    height: int = typer.Option(300, help="Image height."),
    seed: int = typer.Option(1000, help="Seed of the first scene (scenes use seed, seed+1, ...)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty folder."),
) -> None:
    """Generate the benchmark: ground truth (hidden) + participant inputs for tracks 1 and 2, dev and test."""
    from recon.bench.dataset import make_dataset

    path = make_dataset(out, n_dev=dev, n_test=test, width=width, height=height, first_seed=seed, overwrite=overwrite)
    typer.echo(f"wrote benchmark dataset to {path} ({dev} dev + {test} test scenes, {width}x{height})")


@bench_app.command("export-inputs")
def export_inputs_cmd(
    out: Path = typer.Option(..., "--out", help="Folder for the participant's view."),
    track: int = typer.Option(1, help="1 (3 input views) or 2 (9 input views)."),
    split: str = typer.Option("dev", help="dev or test."),
    dataset: Optional[Path] = typer.Option(None, help=_DATASET_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty folder."),
) -> None:
    """Write what a participant gets: input images + masks and every camera, no test images."""
    from recon.bench.dataset import export_inputs

    path = export_inputs(_dataset(dataset), track, split, out, overwrite=overwrite)
    typer.echo(f"wrote track {track} {split} inputs to {path}")


@bench_app.command("run")
def run_cmd(
    method: str = typer.Option("gaussians", help="Built-in method: gaussians (fast preset), gaussians-plain, "
                               "gaussians-diffusion, mesh, hybrid or neural."),
    track: int = typer.Option(1, help="1 (3 input views) or 2 (9 input views)."),
    split: str = typer.Option("dev", help="dev or test."),
    dataset: Optional[Path] = typer.Option(None, help=_DATASET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default bench_runs/<method>-track<T>-<split>)."),
    iterations: Optional[int] = typer.Option(None, help="Override the preset's training steps."),
    max_side: Optional[int] = typer.Option(None, help="Override the preset's training image size cap."),
    seed: int = typer.Option(0, help="Random seed."),
    lpips_weights: Optional[Path] = typer.Option(None, help="Local LPIPS alex.pth (with the AlexNet backbone next to it)."),
    submit: bool = typer.Option(False, "--submit", help="Also submit the renders to the leaderboard."),
    db: Optional[Path] = typer.Option(None, help=_DB_HELP),
    name: Optional[str] = typer.Option(None, help="Submission name (must be unique)."),
    representation: Optional[str] = typer.Option(None, help="Override the method's representation: "
                                                 "gaussians, mesh, hybrid or neural."),
    prior: Optional[str] = typer.Option(None, help="Override the method's prior: none or diffusion."),
    prior_weights: Optional[Path] = typer.Option(None, help="Local repair-model folder for --prior diffusion."),
    protocol: Optional[str] = typer.Option(None, help="A standard real-data protocol instead of the SpaRe tracks: "
                                           "blender8, blender3, llff3, llff6, llff9, dtu3, dtu6, dtu9, dtu3m, dtu9m "
                                           "(spare3/spare9 = --track 1/2); needs --data."),
    data: Optional[Path] = typer.Option(None, help="--protocol: a dataset folder in its own layout (one scene, or "
                                        "a folder of scenes), e.g. data/real/dtu."),
    scenes: Optional[str] = typer.Option(None, help="--protocol: only these scenes (comma-separated names)."),
) -> None:
    """Reconstruct every scene of a split (or a real-data protocol) with a built-in method, render the test views,
    score, write results.json."""
    from recon.bench.runner import run_benchmark

    extra = {"representation": representation, "prior": prior,
             "diffusion.weights": None if prior_weights is None else str(prior_weights)}
    if protocol in ("spare3", "spare9"):
        track, protocol = (1 if protocol == "spare3" else 2), None
    if protocol is not None:
        _run_protocol(protocol, data, method, out, scenes, iterations, max_side, seed, lpips_weights, extra)
        return
    if data is not None or scenes is not None:
        raise ReconInputError("--data and --scenes go with --protocol")
    out = out or Path("bench_runs") / f"{method}-track{track}-{split}"
    results = run_benchmark(_dataset(dataset), method, track, split, out, iterations=iterations, max_side=max_side,
                            seed=seed, lpips_weights=lpips_weights, db=_db(db, dataset) if submit else None,
                            submission_name=name, progress=typer.echo, extra=extra)
    res = results["results"]
    typer.echo(f"PSNR-M {res['psnr_m']:.2f} dB  PSNR {res['psnr']:.2f} dB  SSIM-M {res['ssim_m']:.4f}  "
               f"SSIM {res['ssim']:.4f}  total {results['timings']['total_s']:.1f} s")
    typer.echo(results["lpips"])
    typer.echo(f"wrote {out / 'results.json'}")
    if "submission_id" in results:
        typer.echo(f"submitted as #{results['submission_id']}")


def _run_protocol(protocol: str, data: Optional[Path], method: str, out: Optional[Path], scenes: Optional[str],
                  iterations: Optional[int], max_side: Optional[int], seed: int, lpips_weights: Optional[Path],
                  extra: dict) -> None:
    """`bench run --protocol`: run, print a per-scene table, say where results.json is."""
    from recon.bench.protocol_runner import run_protocol

    if data is None:
        raise ReconInputError(f"--protocol {protocol} needs --data: the dataset folder in its own layout")
    out = out or Path("bench_runs") / f"{method}-{protocol}"
    only = [s.strip() for s in scenes.split(",") if s.strip()] if scenes else None
    results = run_protocol(protocol, data, method, out, scenes=only, iterations=iterations, max_side=max_side,
                           seed=seed, lpips_weights=lpips_weights, extra=extra, progress=typer.echo)
    for scene, row in results["scenes"].items():
        typer.echo(f"{scene:>12}  PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.4f}  {row['wall_s']:6.1f} s  "
                   f"({row['mode']} mode)")
    mean = results["mean"]
    typer.echo(f"{'mean':>12}  PSNR {mean['psnr']:6.2f} dB  SSIM {mean['ssim']:.4f}  {mean['wall_s']:6.1f} s")
    typer.echo(results["lpips"])
    for w in results["warnings"]:
        typer.echo(f"recon: warning: {w}", err=True)
    typer.echo(f"wrote {out / 'results.json'}")


@leaderboard_app.command("submit")
def submit_cmd(
    path: Path = typer.Argument(..., help="Submission zip or folder (one folder per scene with the test views)."),
    method: str = typer.Option(..., "--method", help="Method name."),
    track: int = typer.Option(1, help="1 (3 input views) or 2 (9 input views)."),
    split: Optional[str] = typer.Option(None, help="dev or test (default: the split whose scenes it holds)."),
    name: Optional[str] = typer.Option(None, help="Submission name (unique; default method-track-split-time)."),
    dataset: Optional[Path] = typer.Option(None, help=_DATASET_HELP),
    db: Optional[Path] = typer.Option(None, help=_DB_HELP),
    lpips_weights: Optional[Path] = typer.Option(None, help="Local LPIPS alex.pth."),
) -> None:
    """Validate, score and store a submission (rejected submissions leave the database untouched)."""
    from recon.bench.leaderboard import submit

    sid, scores = submit(_db(db, dataset), _dataset(dataset), path, method, track, split, name=name,
                         lpips_weights=lpips_weights)
    m = scores.mean
    typer.echo(f"submission #{sid} stored: PSNR-M {m['psnr_m']:.2f} dB, SSIM-M {m['ssim_m']:.4f}")
    if scores.lpips_note:
        typer.echo(scores.lpips_note)


@leaderboard_app.command("show")
def show_cmd(
    track: Optional[int] = typer.Option(None, help="Only this track."),
    split: Optional[str] = typer.Option(None, help="Only this split."),
    metric: str = typer.Option(DEFAULT_METRIC, help="Rank by: psnr_m, psnr, ssim_m, ssim, lpips_m, lpips."),
    dataset: Optional[Path] = typer.Option(None, help=_DATASET_HELP),
    db: Optional[Path] = typer.Option(None, help=_DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the ranking as a table (names as plain text: never parsed as rich markup, control characters escaped)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from recon.bench.leaderboard import Leaderboard, display_text
    from recon.bench.scoring import METRICS
    from recon.errors import ReconInputError

    path = _db(db, dataset)
    if not path.exists():
        raise ReconInputError("leaderboard database not found (submit something first)", path)
    rows = Leaderboard(path).rows(track=track, split=split, metric=metric)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    labels = {"psnr_m": "PSNR-M", "psnr": "PSNR", "ssim_m": "SSIM-M", "ssim": "SSIM", "lpips_m": "LPIPS-M", "lpips": "LPIPS"}
    console = Console()
    groups: dict[tuple[int, str], list] = {}
    for r in rows:
        groups.setdefault((r["track"], r["split"]), []).append(r)
    if not groups:
        console.print("no submissions")
    for (t, s), grp in sorted(groups.items()):
        table = Table(title=f"Track {t} ({3 if t == 1 else 9} views), {s} split — ranked by {labels[metric]}")
        for col in ["#", "method", "submission"] + [labels[m] for m in METRICS]:
            table.add_column(col, justify="left" if col in ("method", "submission") else "right")
        for r in grp:
            cells = ["n/a" if r[m] is None else (f"{r[m]:.2f}" if m.startswith("psnr") else f"{r[m]:.4f}") for m in METRICS]
            table.add_row(str(r["rank"]), Text(display_text(r["method"])), Text(display_text(r["name"])), *cells)
        console.print(table)
        notes = {r["lpips_note"] for r in grp if r["lpips_note"]}
        for n in sorted(notes):
            console.print(Text(display_text(n, 1000)))


@leaderboard_app.command("serve")
def serve_cmd(
    dataset: Optional[Path] = typer.Option(None, help=_DATASET_HELP),
    db: Optional[Path] = typer.Option(None, help=_DB_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8765, help="Port."),
) -> None:
    """Serve the leaderboard web page (sortable tables, per-scene drill-down, thumbnails)."""
    from apps.leaderboard_web import serve

    serve(_db(db, dataset), host, port, say=typer.echo)
