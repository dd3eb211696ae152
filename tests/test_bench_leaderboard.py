"""Benchmark dataset, submission validation (every rejection case leaves the database untouched), leaderboard
store (ranking, concurrent submissions, a submitter killed mid-transaction), the `recon bench/leaderboard` CLI."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon.bench.dataset import GT_DIR, load_benchmark, make_dataset
from recon.bench.leaderboard import Leaderboard, submit
from recon.bench.submission import SubmissionError, read_submission
from recon.errors import ReconInputError

ROOT = Path(__file__).resolve().parents[1]
from bench_helpers import write_submission  # noqa: E402

W, H = 64, 48


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("bench") / "data", n_dev=2, n_test=1, width=W, height=H)


def zip_folder(folder: Path, dest: Path, extra: list[tuple[zipfile.ZipInfo | str, bytes]] = ()) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
        for info, data in extra:
            zf.writestr(info, data)
    return dest


def snapshot(db: Path) -> tuple:
    board = Leaderboard(db)
    return board.counts(), [(r["id"], r["name"], r["psnr_m"]) for r in board.rows()]


# ------------------------------------------------------------------------------------------ dataset
def test_dataset_hides_test_images_from_participants(dataset: Path) -> None:
    bench = load_benchmark(dataset)
    assert len(bench.scenes["dev"]) == 2 and len(bench.scenes["test"]) == 1
    assert not set(bench.scenes["dev"]) & set(bench.scenes["test"])
    for track, n_inputs in ((1, 3), (2, 9)):
        for split in ("dev", "test"):
            for scene in bench.scenes[split]:
                part = bench.inputs_dir(track, split) / scene
                tests = {v.name for v in bench.test_views(scene)}
                images = {p.name for p in (part / "images").iterdir()}
                assert len(tests) == 10 and len(images) == n_inputs
                assert not images & tests, "a test image leaked into the participant folder"
                assert len(list((part / "cameras").iterdir())) == 49  # every camera
                assert "generator" not in (part / "scene.json").read_text()
                assert all((dataset / GT_DIR / scene / "images" / t).exists() for t in tests)


# ------------------------------------------------------------------------------------------ accepted
def test_valid_zip_is_scored_and_stored(dataset: Path, tmp_path: Path) -> None:
    sub = write_submission(dataset, tmp_path / "sub")
    db = tmp_path / "lb.sqlite"
    sid, scores = submit(db, dataset, zip_folder(sub, tmp_path / "s.zip"), "m1", track=1)
    floor = -10 * np.log10((10 / 255) ** 2)  # every pixel off by 10 grey levels, less where 255 clips
    assert floor - 0.01 < scores.mean["psnr"] < floor + 3
    assert scores.mean["psnr_m"] == pytest.approx(floor, abs=0.5)  # the object is not saturated
    assert scores.mean["lpips"] is None and "LPIPS not computed" in scores.lpips_note
    board = Leaderboard(db)
    assert board.counts() == {
        "methods": 1,
        "submissions": 1,
        "scene_scores": 2,
        "image_scores": 20,
        "protocol_results": 0,
        "protocol_scene_scores": 0,
    }
    row = board.rows()[0]
    assert (row["id"], row["split"], row["track"], row["method"]) == (sid, "dev", 1, "m1")
    first = board.image_rows(sid)[0]
    assert board.thumbnail(sid, first["scene"], first["view"], "render").startswith(b"\x89PNG")
    assert board.thumbnail(sid, first["scene"], first["view"], "gt") is None  # the hidden ground truth is not kept
    # A zip whose members sit under one wrapper folder is accepted too (split inferred: dev).
    wrapped = tmp_path / "wrapped"
    shutil.copytree(sub, wrapped / "my_renders")
    submit(db, dataset, zip_folder(wrapped, tmp_path / "w.zip"), "m2", track=2)
    assert Leaderboard(db).counts()["submissions"] == 2


def test_ranking_by_metric(dataset: Path, tmp_path: Path) -> None:
    db = tmp_path / "lb.sqlite"
    for method, offset in (("bad", 40), ("good", 3), ("mid", 15)):
        submit(db, dataset, write_submission(dataset, tmp_path / method, offset=offset), method, track=1)
    assert [r["method"] for r in Leaderboard(db).rows(metric="psnr_m")] == ["good", "mid", "bad"]
    assert [r["rank"] for r in Leaderboard(db).rows()] == [1, 2, 3]
    with pytest.raises(ReconInputError, match="unknown metric"):
        Leaderboard(db).rows(metric="nope")


# ------------------------------------------------------------------------------------------ rejected
def _corrupt(folder: Path, case: str, tmp: Path) -> Path:
    """Apply one defect to a valid submission folder; returns what to submit (folder or zip)."""
    scene = sorted(p for p in folder.iterdir())[0]
    first = sorted(scene.iterdir())[0]
    if case == "missing_view":
        first.unlink()
    elif case == "missing_scene":
        shutil.rmtree(scene)
    elif case == "wrong_size":
        cv2.imwrite(str(first), np.zeros((H + 2, W, 3), np.uint8))
    elif case == "corrupt_png":
        first.write_bytes(first.read_bytes()[:60])
    elif case == "not_png":
        ok, buf = cv2.imencode(".jpg", np.zeros((H, W, 3), np.uint8))
        first.write_bytes(buf.tobytes())
    elif case == "extra_file":
        (scene / "notes.txt").write_text("hello")
    elif case == "extra_view":
        shutil.copy(first, scene / "cam_099_3_0000.png")
    elif case == "folder_symlink":
        first.unlink()
        first.symlink_to(sorted(scene.iterdir())[0])
    elif case == "folder_case_duplicate":
        shutil.copy(first, scene / first.name.upper())
    else:
        extra: list = []
        if case == "zip_traversal":
            extra = [(f"../{first.name}", b"x")]
        elif case == "zip_absolute":
            extra = [("/tmp/evil.png", b"x")]
        elif case == "zip_symlink":
            info = zipfile.ZipInfo(f"{scene.name}/link.png")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            extra = [(info, b"/etc/passwd")]
        elif case == "zip_duplicate":
            extra = [(f"{scene.name}/{first.name}", first.read_bytes())]
        elif case == "zip_garbage":
            bad = tmp / "bad.zip"
            bad.write_bytes(b"PK\x03\x04 not really a zip")
            return bad
        else:
            raise AssertionError(case)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
            return zip_folder(folder, tmp / "s.zip", extra)
    return folder


CASES = {
    "missing_view": "missing views",
    "missing_scene": "is missing",
    "wrong_size": "expected 64x48",
    "corrupt_png": "corrupt PNG",
    "not_png": "not a PNG",
    "extra_file": "unexpected file",
    "extra_view": "not a test view",
    "folder_symlink": "symbolic link",
    "folder_case_duplicate": "twice",
    "zip_traversal": "outside the submission",
    "zip_absolute": "absolute",
    "zip_symlink": "symbolic link",
    "zip_duplicate": "twice",
    "zip_garbage": "not a readable zip",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_submission_is_rejected_and_database_untouched(dataset: Path, tmp_path: Path, case: str) -> None:
    db = tmp_path / "lb.sqlite"
    submit(db, dataset, write_submission(dataset, tmp_path / "ok"), "baseline", track=1, name="first")
    before = snapshot(db)
    target = _corrupt(write_submission(dataset, tmp_path / "sub"), case, tmp_path)
    with pytest.raises(SubmissionError, match=CASES[case]):
        submit(db, dataset, target, "intruder", track=1)
    assert snapshot(db) == before
    assert Leaderboard(db).integrity_ok()


def test_oversized_zip_and_zip_bomb_are_rejected(dataset: Path, tmp_path: Path) -> None:
    db = tmp_path / "lb.sqlite"
    Leaderboard(db)
    before = snapshot(db)
    z = zip_folder(write_submission(dataset, tmp_path / "sub"), tmp_path / "s.zip")
    with pytest.raises(SubmissionError, match="more than the limit"):
        submit(db, dataset, z, "big", track=1, max_bytes=1000)
    bench = load_benchmark(dataset)
    expected = {s: [v.name for v in bench.test_views(s)] for s in bench.scenes["dev"]}
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{bench.scenes['dev'][0]}/cam_001_3_0000.png", b"\0" * 5_000_000)
    assert bomb.stat().st_size < 20_000
    with pytest.raises(SubmissionError, match="unpacks to"):
        read_submission(bomb, expected, (W, H), max_unpacked_bytes=1_000_000)
    assert snapshot(db) == before


def test_duplicate_submission_name_is_rejected(dataset: Path, tmp_path: Path) -> None:
    db = tmp_path / "lb.sqlite"
    sub = write_submission(dataset, tmp_path / "sub")
    submit(db, dataset, sub, "m", track=1, name="run-1")
    before = snapshot(db)
    with pytest.raises(SubmissionError, match="already exists"):
        submit(db, dataset, sub, "m", track=1, name="run-1")
    assert snapshot(db) == before


# ------------------------------------------------------------------------------------------ concurrency, crashes
def test_concurrent_submissions_both_land(dataset: Path, tmp_path: Path) -> None:
    db = tmp_path / "lb.sqlite"
    subs = [write_submission(dataset, tmp_path / f"s{k}", offset=5 + k) for k in range(2)]
    Leaderboard(db)
    # A writer holds the lock while a second submission arrives: it waits, then lands.
    board = Leaderboard(db)
    held = threading.Event()

    def hold() -> None:
        with board.transaction():
            held.set()
            time.sleep(1.0)

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    t0 = time.perf_counter()
    submit(db, dataset, subs[0], "threaded", track=1, name="threaded")
    assert time.perf_counter() - t0 > 0.5  # it really waited for the lock
    t.join()
    # Two processes at once.
    code = (
        "import sys; from recon.bench.leaderboard import submit; "
        "submit(sys.argv[1], sys.argv[2], sys.argv[3], 'proc', 1, name=sys.argv[4])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(db), str(dataset), str(s), f"proc-{k}"], cwd=ROOT)
        for k, s in enumerate(subs)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    names = sorted(r["name"] for r in Leaderboard(db).rows())
    assert names == ["proc-0", "proc-1", "threaded"]
    assert Leaderboard(db).counts()["image_scores"] == 3 * 20  # 2 dev scenes x 10 views each


def test_killed_submitter_leaves_database_consistent(dataset: Path, tmp_path: Path) -> None:
    db = tmp_path / "lb.sqlite"
    sub = write_submission(dataset, tmp_path / "sub")
    submit(db, dataset, sub, "before", track=1, name="before")
    before = snapshot(db)
    # The child stops inside the transaction, after the submission and scene rows are written, and is killed.
    code = (
        "import sys, time\n"
        "from recon.bench import leaderboard as lb\n"
        "orig = lb.Leaderboard._insert_scores\n"
        "def slow(self, con, sid, scores, thumbs):\n"
        "    orig(self, con, sid, scores, thumbs)\n"
        "    print('inside', flush=True)\n"
        "    time.sleep(60)\n"
        "lb.Leaderboard._insert_scores = slow\n"
        "lb.submit(sys.argv[1], sys.argv[2], sys.argv[3], 'victim', 1, name='victim')\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(db), str(dataset), str(sub)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "inside"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    assert Leaderboard(db).integrity_ok()
    assert snapshot(db) == before
    submit(db, dataset, sub, "after", track=1, name="after")
    assert Leaderboard(db).counts()["submissions"] == 2


# ------------------------------------------------------------------------------------------ CLI
def test_cli_submit_show_and_export(dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from apps.cli import app

    runner = CliRunner()
    db = tmp_path / "lb.sqlite"
    sub = zip_folder(write_submission(dataset, tmp_path / "sub"), tmp_path / "s.zip")
    res = runner.invoke(
        app,
        [
            "leaderboard",
            "submit",
            str(sub),
            "--method",
            "clitest",
            "--dataset",
            str(dataset),
            "--db",
            str(db),
            "--name",
            "cli-1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "stored" in res.output
    res = runner.invoke(
        app, ["leaderboard", "show", "--db", str(db), "--track", "1", "--metric", "ssim_m"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert "clitest" in res.output and "SSIM-M" in res.output and "LPIPS not computed" in res.output
    res = runner.invoke(
        app,
        [
            "bench",
            "export-inputs",
            "--dataset",
            str(dataset),
            "--track",
            "2",
            "--split",
            "test",
            "--out",
            str(tmp_path / "inputs"),
        ],
    )
    assert res.exit_code == 0, res.output
    scene = load_benchmark(dataset).scenes["test"][0]
    assert len(list((tmp_path / "inputs" / scene / "images").iterdir())) == 9


def test_cli_rejection_is_one_line_and_exit_code_2(dataset: Path, tmp_path: Path, capsys) -> None:
    from apps.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "leaderboard",
                "submit",
                str(bad),
                "--method",
                "x",
                "--dataset",
                str(dataset),
                "--db",
                str(tmp_path / "lb.sqlite"),
            ]
        )
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("recon: error: ") and "submission is empty" in err and err.count("\n") == 1


def test_cli_defaults_match_the_store_and_import_light() -> None:
    import apps.bench_cli as cli
    from recon.bench import leaderboard

    assert (cli.DEFAULT_DB_NAME, cli.DEFAULT_METRIC) == (leaderboard.DEFAULT_DB_NAME, leaderboard.DEFAULT_METRIC)
    code = "import sys, apps.bench_cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert out == "False"
