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

bench_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="SpaRe-style benchmark: make the dataset, export the inputs, run a built-in method.",
)
leaderboard_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Leaderboard (SQLite): submit, show, serve a web page.",
)

_DATASET_HELP = (
    f"Benchmark dataset folder (made by `recon bench make-dataset`; default ${DATASET_ENV} or ./bench_data)."
)
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
    method: str = typer.Option(
        "gaussians",
        help="Built-in method: gaussians (fast preset), gaussians-plain, gaussians-diffusion, mesh, hybrid or neural.",
    ),
    track: int = typer.Option(1, help="1 (3 input views) or 2 (9 input views)."),
    split: str = typer.Option("dev", help="dev or test."),
    dataset: Optional[Path] = typer.Option(None, help=_DATASET_HELP),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder (default bench_runs/<method>-track<T>-<split>)."
    ),
    iterations: Optional[int] = typer.Option(None, help="Override the preset's training steps."),
    max_side: Optional[int] = typer.Option(None, help="Override the preset's training image size cap."),
    seed: int = typer.Option(0, help="Random seed."),
    lpips_weights: Optional[Path] = typer.Option(
        None, help="Local LPIPS alex.pth (with the AlexNet backbone next to it)."
    ),
    submit: bool = typer.Option(
        False, "--submit", help="Also submit to the leaderboard (the renders; with --protocol, results.json)."
    ),
    db: Optional[Path] = typer.Option(None, help=_DB_HELP),
    name: Optional[str] = typer.Option(None, help="Submission name (must be unique)."),
    representation: Optional[str] = typer.Option(
        None, help="Override the method's representation: gaussians, mesh, hybrid or neural."
    ),
    prior: Optional[str] = typer.Option(None, help="Override the method's prior: none or diffusion."),
    prior_weights: Optional[Path] = typer.Option(None, help="Local repair-model folder for --prior diffusion."),
    protocol: Optional[str] = typer.Option(
        None,
        help="A standard real-data protocol instead of the SpaRe tracks: "
        "blender8, blender3, llff3, llff6, llff9, dtu3, dtu6, dtu9, dtu3m, dtu9m "
        "(spare3/spare9 = --track 1/2); needs --data.",
    ),
    data: Optional[Path] = typer.Option(
        None,
        help="--protocol: a dataset folder in its own layout (one scene, or a folder of scenes), e.g. data/real/dtu.",
    ),
    scenes: Optional[str] = typer.Option(None, help="--protocol: only these scenes (comma-separated names)."),
    settings: list[str] = typer.Option(
        [],
        "--set",
        metavar="PATH=VALUE",
        help="Set any reconstruction setting by its dotted path (repeatable; `recon settings` lists them).",
    ),
) -> None:
    """Reconstruct every scene of a split (or a real-data protocol) with a built-in method, render the test views,
    score, write results.json."""
    from recon.bench.runner import run_benchmark
    from recon.config import parse_settings

    try:
        chosen = parse_settings(settings)
    except ValueError as exc:
        raise ReconInputError(str(exc)) from None
    extra = {
        "representation": representation,
        "prior": prior,
        "diffusion.weights": None if prior_weights is None else str(prior_weights),
        **chosen,
    }
    if protocol in ("spare3", "spare9"):
        track, protocol = (1 if protocol == "spare3" else 2), None
    if protocol is not None:
        target = _db(db, dataset) if submit else None
        _run_protocol(
            protocol, data, method, out, scenes, iterations, max_side, seed, lpips_weights, extra, target, name
        )
        return
    if data is not None or scenes is not None:
        raise ReconInputError("--data and --scenes go with --protocol")
    out = out or Path("bench_runs") / f"{method}-track{track}-{split}"
    results = run_benchmark(
        _dataset(dataset),
        method,
        track,
        split,
        out,
        iterations=iterations,
        max_side=max_side,
        seed=seed,
        lpips_weights=lpips_weights,
        db=_db(db, dataset) if submit else None,
        submission_name=name,
        progress=typer.echo,
        extra=extra,
    )
    res = results["results"]
    typer.echo(
        f"PSNR-M {res['psnr_m']:.2f} dB  PSNR {res['psnr']:.2f} dB  SSIM-M {res['ssim_m']:.4f}  "
        f"SSIM {res['ssim']:.4f}  total {results['timings']['total_s']:.1f} s"
    )
    typer.echo(results["lpips"])
    typer.echo(f"wrote {out / 'results.json'}")
    if "submission_id" in results:
        typer.echo(f"submitted as #{results['submission_id']}")


def _run_protocol(
    protocol: str,
    data: Optional[Path],
    method: str,
    out: Optional[Path],
    scenes: Optional[str],
    iterations: Optional[int],
    max_side: Optional[int],
    seed: int,
    lpips_weights: Optional[Path],
    extra: dict,
    db: Optional[Path] = None,
    name: Optional[str] = None,
) -> None:
    """`bench run --protocol`: run, print a per-scene table, say where results.json is; with ``db`` (--submit)
    store results.json on the leaderboard too."""
    from recon.bench.protocol_runner import run_protocol

    if data is None:
        raise ReconInputError(f"--protocol {protocol} needs --data: the dataset folder in its own layout")
    if db is not None:  # a bad or taken name must not wait for the end of a long run
        from recon.bench.leaderboard import check_results_name

        check_results_name(db, name)
    out = out or Path("bench_runs") / f"{method}-{protocol}"
    only = [s.strip() for s in scenes.split(",") if s.strip()] if scenes else None
    results = run_protocol(
        protocol,
        data,
        method,
        out,
        scenes=only,
        iterations=iterations,
        max_side=max_side,
        seed=seed,
        lpips_weights=lpips_weights,
        extra=extra,
        progress=typer.echo,
    )
    for scene, row in results["scenes"].items():
        typer.echo(
            f"{scene:>12}  PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.4f}  {row['wall_s']:6.1f} s  "
            f"({row['mode']} mode)"
        )
    mean = results["mean"]
    typer.echo(f"{'mean':>12}  PSNR {mean['psnr']:6.2f} dB  SSIM {mean['ssim']:.4f}  {mean['wall_s']:6.1f} s")
    typer.echo(results["lpips"])
    for w in results["warnings"]:
        typer.echo(f"recon: warning: {w}", err=True)
    typer.echo(f"wrote {out / 'results.json'}")
    if db is not None:
        _submit_results(db, out / "results.json", name, after_run=True)


def _submit_results(db: Path, path: Path, name: Optional[str], after_run: bool = False) -> None:
    """Store a protocol results.json and say where it went."""
    from recon.bench.leaderboard import submit_results

    try:
        rid, res = submit_results(db, path, name)
    except ReconInputError as exc:
        if not after_run:
            raise
        raise ReconInputError(
            f"{exc} (not submitted: `recon leaderboard submit-results {path}` stores it later)"
        ) from None
    psnr = res.mean["psnr"]
    typer.echo(f"result #{rid} stored in {db}: {res.protocol}, {len(res.per_scene)} scenes, mean PSNR {psnr:.2f} dB")


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

    sid, scores = submit(
        _db(db, dataset), _dataset(dataset), path, method, track, split, name=name, lpips_weights=lpips_weights
    )
    m = scores.mean
    typer.echo(f"submission #{sid} stored: PSNR-M {m['psnr_m']:.2f} dB, SSIM-M {m['ssim_m']:.4f}")
    if scores.lpips_note:
        typer.echo(scores.lpips_note)


@leaderboard_app.command("submit-results")
def submit_results_cmd(
    path: Path = typer.Argument(
        ..., help="results.json of `recon bench run --protocol P` (blender8, llff3, dtu3, ...)."
    ),
    name: Optional[str] = typer.Option(None, help="Submission name (unique; default method-protocol-time-folder)."),
    dataset: Optional[Path] = typer.Option(None, help=_DATASET_HELP),
    db: Optional[Path] = typer.Option(None, help=_DB_HELP),
) -> None:
    """Validate and store a real-data protocol result (a rejected file leaves the database untouched)."""
    _submit_results(_db(db, dataset), path, name)


_LABELS = {
    "psnr_m": "PSNR-M",
    "psnr": "PSNR",
    "ssim_m": "SSIM-M",
    "ssim": "SSIM",
    "lpips_m": "LPIPS-M",
    "lpips": "LPIPS",
}


def _cell(value: Optional[float], metric: str) -> str:
    return "n/a" if value is None else (f"{value:.2f}" if metric.startswith("psnr") else f"{value:.4f}")


@leaderboard_app.command("show")
def show_cmd(
    protocol: Optional[str] = typer.Option(
        None,
        help="Only this protocol: spare3, spare9 (SpaRe tracks 1/2), "
        "blender8, blender3, llff3/6/9, dtu3/6/9, dtu3m, dtu9m (default: all, "
        "one table each).",
    ),
    track: Optional[int] = typer.Option(None, help="Only this SpaRe track (leaves out the real-data protocols)."),
    split: Optional[str] = typer.Option(None, help="Only this SpaRe split (leaves out the real-data protocols)."),
    metric: str = typer.Option(
        DEFAULT_METRIC,
        help="Rank by: psnr_m, psnr, ssim_m, ssim, lpips_m, lpips "
        "(real-data protocols: their own psnr, ssim or lpips).",
    ),
    dataset: Optional[Path] = typer.Option(None, help=_DATASET_HELP),
    db: Optional[Path] = typer.Option(None, help=_DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per ranking) instead of tables."),
) -> None:
    """Print one ranking per protocol (and SpaRe split), real-data protocols followed by their published figures
    (names as plain text: never parsed as rich markup, control characters escaped)."""
    from rich.console import Console
    from rich.text import Text

    from recon.bench.leaderboard import Leaderboard
    from recon.bench.published import SCENES_NOTE

    path = _db(db, dataset)
    if not path.exists():
        raise ReconInputError("leaderboard database not found (submit something first)", path)
    sections = Leaderboard(path).sections(protocol, metric, track=track, split=split)
    if as_json:
        typer.echo(json.dumps([sec.to_dict() for sec in sections], indent=1))
        return
    console = Console()
    if not any(sec.rows for sec in sections):
        console.print("no submissions")
    for sec in sections:
        for item in _spare_table(sec) if sec.split is not None else _protocol_tables(sec):
            console.print(item)
    if any(sec.published for sec in sections):
        console.print(Text(SCENES_NOTE))


def _spare_table(sec) -> list:
    """A SpaRe track and split: the ranking and its LPIPS note."""
    from rich.table import Table
    from rich.text import Text

    from recon.bench.leaderboard import display_text
    from recon.bench.scoring import METRICS

    track, views = (1, 3) if sec.protocol == "spare3" else (2, 9)
    table = Table(
        title=Text(
            f"{sec.protocol}: Track {track} ({views} views), {sec.split} split — ranked by {_LABELS[sec.metric]}"
        )
    )
    for col in ["#", "method", "submission"] + [_LABELS[m] for m in METRICS]:
        table.add_column(col, justify="left" if col in ("method", "submission") else "right")
    for r in sec.rows:
        table.add_row(
            str(r["rank"]),
            Text(display_text(r["method"])),
            Text(display_text(r["name"])),
            *[_cell(r[m], m) for m in METRICS],
        )
    notes = sorted({r["lpips_note"] for r in sec.rows if r["lpips_note"]})
    return [table] + [Text(display_text(n, 1000)) for n in notes]


def _protocol_tables(sec) -> list:
    """A real-data protocol: its ranking (or a line saying there is none yet), then its published reference rows."""
    from rich.table import Table
    from rich.text import Text

    from recon.bench.leaderboard import RESULT_METRICS, display_text, protocol_summary
    from recon.bench.published import LABEL

    what = protocol_summary(sec.protocol)
    out: list = []
    if sec.rows:
        table = Table(title=Text(f"{what} — ranked by {_LABELS[sec.metric]}"))
        for col in ["#", "method", "submission", "scenes"] + [_LABELS[m] for m in RESULT_METRICS]:
            table.add_column(col, justify="left" if col in ("method", "submission", "scenes") else "right")
        for r in sec.rows:
            table.add_row(
                str(r["rank"]),
                Text(display_text(r["method"])),
                Text(display_text(r["name"])),
                Text(display_text(", ".join(r["scenes"]), 300)),
                *[_cell(r[m], m) for m in RESULT_METRICS],
            )
        out.append(table)
        notes = sorted({r["lpips_note"] for r in sec.rows if r["lpips_note"]})
        out += [Text(display_text(n, 1000)) for n in notes]
    else:
        out.append(Text(f"{what}: no results submitted yet"))
    if sec.published:
        ref = Table(
            title=Text(f"{sec.protocol}: {LABEL} — reference rows, not ranked"),
            caption=Text(f"{sec.published[0].setting}; source: {sec.published[0].source}"),
        )
        for col in ("method", "PSNR", "kind"):
            ref.add_column(col, justify="right" if col == "PSNR" else "left")
        for row in sec.published:
            ref.add_row(Text(row.method), Text(row.psnr), Text(row.label))
        out.append(ref)
    return out


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
