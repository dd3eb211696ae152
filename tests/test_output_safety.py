"""A user's files are never lost: the output folder's final move, --overwrite guards, bad --out paths, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recon.errors import ReconInputError
from recon.io.atomic import atomic_output_dir, check_output_dir, sweep_stale_partials

RECON = [sys.executable, "-c", "from apps.cli import main; main()"]


def _recon(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(RECON + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("recon: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_folder_created_at_out_during_the_run_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "r1"
    with pytest.raises(ReconInputError, match="created or changed by someone else") as err:
        with atomic_output_dir(out) as tmp:
            (tmp / "result.txt").write_text("new")
            out.mkdir()
            (out / "f").write_text("mine")
    assert (out / "f").read_text() == "mine"
    assert (tmp_path / "r1-2" / "result.txt").read_text() == "new"
    assert "r1-2" in str(err.value)
    assert not list(tmp_path.glob(".*.partial"))


def test_empty_folder_created_during_the_run_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "r1"
    with pytest.raises(ReconInputError):
        with atomic_output_dir(out) as tmp:
            (tmp / "result.txt").write_text("new")
            out.mkdir()
    assert out.is_dir() and not any(out.iterdir())
    assert (tmp_path / "r1-2" / "result.txt").is_file()


def test_two_runs_to_one_out_keep_both_results(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(ReconInputError, match="result is in"):
        with atomic_output_dir(out) as second:
            with atomic_output_dir(out) as first:
                (first / "who").write_text("first")
            (second / "who").write_text("second")
    assert (out / "who").read_text() == "first"
    assert (tmp_path / "run-2" / "who").read_text() == "second"


def test_overwrite_replaces_an_unchanged_folder_only(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old").write_text("old")
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    with pytest.raises(ReconInputError, match="changed by someone else"):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "newer").write_text("x")
            (out / "added-meanwhile").write_text("mine")
    assert (out / "added-meanwhile").read_text() == "mine" and (out / "new").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_block_leaves_nothing_and_keeps_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as tmp:
            (tmp / "new").write_text("new")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and (out / "old").is_file()


@pytest.mark.parametrize("layout", ["same", "ancestor"])
def test_overwrite_never_removes_the_input(tmp_path: Path, layout: str) -> None:
    src = tmp_path / "s"
    (src / "images").mkdir(parents=True)
    (src / "images" / "a.png").write_bytes(b"x")
    out = src if layout == "same" else tmp_path
    with pytest.raises(ReconInputError, match="is the input|holds the input"):
        check_output_dir(out, overwrite=True, protect=[src / "images"])
    assert (src / "images" / "a.png").is_file()


def test_cli_overwrite_onto_the_input_folder_is_refused(tiny_scene: Path, tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "s"
    shutil.copytree(tiny_scene, src)
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    for out in (src, tmp_path):
        line = _one_line_error(_recon("reconstruct", str(src), "--out", str(out), "--overwrite", "--iterations", "2"))
        assert "refusing" in line
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before


def test_bad_out_paths_fail_before_any_work(tiny_scene: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    work = tmp_path / "cwd"
    work.mkdir()
    cases = {
        str(a_file): "not a folder",
        str(a_file / "run"): "which is a file",
        "/proc/recon-cannot-write-here": "cannot create",
        str(tmp_path / ("x" * 300)): "too long",
        str(dangling): "dangling",
        ".": "working folder",
    }
    for out, expected in cases.items():
        t = time.perf_counter()
        line = _one_line_error(_recon("reconstruct", str(tiny_scene), "--out", out, "--iterations", "500", cwd=work))
        assert expected in line, (out, line)
        assert time.perf_counter() - t < 60, "the error must come before the training"
    assert not list(tmp_path.rglob("*.partial")) and not any(work.iterdir())
    assert a_file.read_text() == "x"


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--iterations", "0"], "iterations"),
        (["--iterations", "-5"], "iterations"),
        (["--max-side", "1"], "max_side"),
        (["--track", "4"], "track"),
        (["--view", "--port", "70000"], "--port"),
        (["--view", "--host", "no-such-host.invalid"], "--host"),
    ],
)
def test_bad_numbers_on_the_command_line(tiny_scene: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    line = _one_line_error(_recon("reconstruct", str(tiny_scene), "--out", str(tmp_path / "r"), *args))
    assert expected in line
    assert not (tmp_path / "r").exists()


def test_stale_partials_of_dead_processes_are_swept(tmp_path: Path) -> None:
    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".run.pid{dead.pid}.abcd1234.partial"
    alive = tmp_path / f".run.pid{os.getppid()}.abcd1234.partial"
    other = tmp_path / f".other.pid{dead.pid}.abcd1234.partial"
    for p in (stale, alive, other):
        p.mkdir()
    assert sweep_stale_partials(out) == [stale]
    assert alive.is_dir() and other.is_dir() and not stale.exists()


def test_sigterm_and_sighup_remove_the_partial_folder(tiny_scene: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        out = tmp_path / f"run{int(sig)}"
        proc = subprocess.Popen(
            RECON + ["reconstruct", str(tiny_scene), "--out", str(out), "--iterations", "100000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.time() + 120
        while not list(tmp_path.glob(f".run{int(sig)}.*.partial")) and time.time() < deadline:
            time.sleep(0.2)
        assert list(tmp_path.glob(f".run{int(sig)}.*.partial")), "the run never started"
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + int(sig), err
        assert "Traceback" not in err
        assert not list(tmp_path.glob(f".run{int(sig)}.*")) and not out.exists()


def test_export_to_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    import numpy as np

    from renderers.gaussians import GaussianModel
    from renderers.gaussians.ply import write_ply

    run = tmp_path / "run"
    run.mkdir()
    write_ply(run / "splats.ply", GaussianModel.from_points(np.zeros((4, 3)), np.full((4, 3), 0.5)))
    for to, expected in (
        ("/proc/recon-x.splat", "cannot write"),
        (str(tmp_path), "unknown export format"),
        (str(run / "splats.ply" / "x.ply"), "cannot write"),
    ):
        line = _one_line_error(_recon("export", str(run), "--to", to))
        assert expected in line, line
