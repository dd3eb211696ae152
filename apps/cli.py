"""`recon` command line: thin entry points over recon.*; user errors become one line and exit code 2."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from recon.errors import ReconInputError

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


def _not_built(command: str, issue: str) -> None:
    typer.echo(f"recon {command}: not built yet ({issue}); nothing was done.", err=True)
    raise typer.Exit(EXIT_USAGE)


@app.command("make-scene")
def make_scene_cmd(
    out: Path = typer.Option(..., "--out", help="Folder to write the scene into (must not exist or be empty)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same scene."),
    width: int = typer.Option(400, help="Image width in pixels."),
    height: int = typer.Option(300, help="Image height in pixels."),
    cameras: int = typer.Option(49, help="Number of cameras on the spherical cap (49-64 like DTU)."),
) -> None:
    """Synthesize a SpaRe-style object scene (images, masks, depth, projection matrices, 3/9-view splits)."""
    from recon.bench.synth import make_scene

    path = make_scene(out, seed=seed, width=width, height=height, n_cameras=cameras)
    typer.echo(f"wrote scene to {path}")


@app.command()
def reconstruct(
    path: Path = typer.Argument(..., help="Image folder, transforms.json, COLMAP model folder or SpaRe-style scene."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
) -> None:
    """Reconstruct an object from 3-9 views as 3D Gaussians."""
    _not_built("reconstruct", "issue #4: Gaussian reconstruction")


@app.command()
def view(run: Path = typer.Argument(..., help="Run folder written by `recon reconstruct`.")) -> None:
    """Open an interactive viser viewer on a run folder."""
    _not_built("view", "issue #7: interactive viewer")


@app.command()
def bench(scenes: Optional[Path] = typer.Argument(None, help="Folder of SpaRe-style scenes.")) -> None:
    """Benchmark a method on SpaRe-style scenes (3-view and 9-view tracks)."""
    _not_built("bench", "issue #6: benchmark harness")


@app.command()
def leaderboard() -> None:
    """Show and manage benchmark scores."""
    _not_built("leaderboard", "issue #6: leaderboard")


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder written by `recon reconstruct`."),
    to: Path = typer.Option(..., "--to", help="Output file (.ply or .splat)."),
) -> None:
    """Export a reconstruction to another format (.splat, .ply)."""
    _not_built("export", "issue #4: Gaussian reconstruction")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app, turning ReconInputError into one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=True)
    except ReconInputError as exc:
        typer.echo(f"recon: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
