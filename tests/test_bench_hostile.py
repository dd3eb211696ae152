"""Hostile input to the leaderboard: script in URLs and names (web page, JSON, terminal), the hidden ground truth
(never stored, never served, erased from old databases), zip and PNG bombs (checked before anything is read or
decoded), unusable databases, ids and ports (one-line errors), and slow clients holding the web server."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import sqlite3
import struct
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from bench_helpers import write_submission

from recon.bench import submission as submission_mod
from recon.bench.dataset import load_benchmark, make_dataset
from recon.bench.leaderboard import Leaderboard, expected_views, submit
from recon.bench.submission import SubmissionError, read_submission
from recon.errors import ReconInputError

W, H = 64, 48
HUGE_ID = "9" * 23  # beyond SQLite's 64-bit integers


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("hostile") / "data", n_dev=1, n_test=1, width=W, height=H)


@pytest.fixture(scope="module")
def site(dataset: Path, tmp_path_factory) -> dict:
    """A database with a test-split submission and two hostile names, served on 127.0.0.1."""
    from apps.leaderboard_web import make_server

    root = tmp_path_factory.mktemp("site")
    db = root / "lb.sqlite"
    sid = submit(db, dataset, write_submission(dataset, root / "t", "test"), "plain", 1, name="plain")[0]
    submit(
        db,
        dataset,
        write_submission(dataset, root / "d"),
        '"><script>alert(1)</script>',
        1,
        name="<img src=x onerror=alert(1)>",
    )
    server = make_server(db, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {
        "db": db,
        "url": f"http://127.0.0.1:{server.server_port}",
        "sid": sid,
        "scene": load_benchmark(dataset).scenes["test"][0],
    }
    server.shutdown()
    server.server_close()


def _get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _main(argv: list[str], capsys) -> str:
    """Run the CLI expecting a one-line error and exit code 2; returns the line."""
    from apps.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert err.startswith("recon: error: ") and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------------------------ 1: script injection
def test_bad_query_values_are_answered_as_plain_text_or_json(site: dict) -> None:
    xss = "%3Cscript%3Ealert(1)%3C/script%3E"
    status, body, headers = _get(f"{site['url']}/?metric={xss}")
    assert status == 400 and headers["Content-Type"].startswith("text/plain")
    assert headers["X-Content-Type-Options"] == "nosniff" and b"unknown metric" in body
    status, body, headers = _get(f"{site['url']}/api/rows?metric={xss}")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert b"<" not in body and "<script>" in json.loads(body)["error"]  # same text, inert bytes
    for path in ("/nope", f"/submission/{site['sid']}x", "/api/nope"):
        status, body, headers = _get(site["url"] + path)
        assert status == 404 and not headers["Content-Type"].startswith("text/html"), path


def test_hostile_names_and_scene_are_escaped_and_only_our_script_may_run(site: dict) -> None:
    status, body, headers = _get(site["url"] + "/")
    page = body.decode()
    assert status == 200
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script>alert" not in page and "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The page's only script is allowed by its hash; nothing else (injected inline script, other origins) is.
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    csp = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    assert csp["script-src"] == f"'sha256-{digest}'" and csp["default-src"] == "'none'"
    rows = json.loads(_get(site["url"] + "/api/rows")[1])
    hostile = next(r for r in rows if r["name"].startswith("<img"))
    status, body, _ = _get(f"{site['url']}/submission/{hostile['id']}?scene=%3Cscript%3Ealert(2)%3C/script%3E")
    assert status == 200 and b"<script>alert" not in body and b"&lt;script&gt;alert(2)" in body
    assert b"<img src=x" not in body


# ------------------------------------------------------------------------------------------ 2: hidden ground truth
def test_ground_truth_of_test_views_is_neither_stored_nor_served(site: dict, dataset: Path) -> None:
    board = Leaderboard(site["db"])
    with sqlite3.connect(site["db"]) as con:
        assert "gt_thumb" not in {r[1] for r in con.execute("PRAGMA table_info(image_scores)")}
    sid, scene = site["sid"], site["scene"]
    status, body, _ = _get(f"{site['url']}/submission/{sid}?scene={scene}")
    assert status == 200 and body.count(b"render.png") == 10 and b"gt.png" not in body
    assert b"Ground truth" not in body
    for v in load_benchmark(dataset).test_views(scene):
        assert board.thumbnail(sid, scene, v.name, "gt") is None
        assert _get(f"{site['url']}/thumb/{sid}/{scene}/{v.name}/gt.png")[0] == 404
        status, png, _ = _get(f"{site['url']}/thumb/{sid}/{scene}/{v.name}/render.png")
        render = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert status == 200 and not np.array_equal(render, cv2.imread(str(v.image)))  # the render, +10 grey


def test_old_database_ground_truth_thumbnails_are_erased_on_open(dataset: Path, tmp_path: Path) -> None:
    from apps.leaderboard_web import make_server

    db = tmp_path / "lb.sqlite"
    sid = submit(db, dataset, write_submission(dataset, tmp_path / "t", "test"), "m", 1, name="old")[0]
    secret = b"\x89PNG-GROUND-TRUTH-OF-A-HIDDEN-VIEW-" * 300
    with sqlite3.connect(db) as con:  # what a schema-1 database looks like
        con.execute("ALTER TABLE image_scores ADD COLUMN gt_thumb BLOB")
        con.execute("UPDATE image_scores SET gt_thumb = ?", (secret,))
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    on_disk = lambda: b"".join(p.read_bytes() for p in (db, tmp_path / "lb.sqlite-wal") if p.exists())
    assert secret[:40] in on_disk()
    server = make_server(db, "127.0.0.1", 0)  # opening it erases them
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        scene = load_benchmark(dataset).scenes["test"][0]
        view = Leaderboard(db).image_rows(sid)[0]["view"]
        assert _get(f"http://127.0.0.1:{server.server_port}/thumb/{sid}/{scene}/{view}/gt.png")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
    with sqlite3.connect(db) as con:
        assert "gt_thumb" not in {r[1] for r in con.execute("PRAGMA table_info(image_scores)")}
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
    con.close()
    assert secret[:40] not in on_disk()  # not just unlinked: overwritten
    assert Leaderboard(db).integrity_ok() and Leaderboard(db).thumbnail(sid, scene, view, "render")


# ------------------------------------------------------------------------------------------ 3: names
@pytest.mark.parametrize(
    "name, message",
    [
        ("\x1b[2J\x1b[Hcleared", "control character U\\+001B"),
        ("evil\u202egnp.exe", "control character U\\+202E"),
        ("two\nlines", "control character U\\+000A"),
        ("A" * 201, "201 characters long, more than the limit of 200"),
        ("A" * 100_000, "100000 characters long"),
        ("   ", "must not be empty"),
    ],
)
def test_unsafe_submission_names_are_rejected_before_scoring(
    dataset: Path, tmp_path: Path, name: str, message: str
) -> None:
    db = tmp_path / "lb.sqlite"
    sub = write_submission(dataset, tmp_path / "sub")
    with pytest.raises(ReconInputError, match=message) as exc:
        submit(db, dataset, sub, "m", 1, name=name)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 300
    with pytest.raises(ReconInputError, match=message.replace("submission", "method")):
        submit(db, dataset, sub, name, 1, name="fine")
    assert not db.exists() or Leaderboard(db).counts()["submissions"] == 0


def test_cli_rejects_a_long_name_in_one_line(dataset: Path, tmp_path: Path, capsys) -> None:
    sub = write_submission(dataset, tmp_path / "sub")
    err = _main(
        [
            "leaderboard",
            "submit",
            str(sub),
            "--method",
            "m",
            "--dataset",
            str(dataset),
            "--db",
            str(tmp_path / "lb.sqlite"),
            "--name",
            "x" * 100_000,
        ],
        capsys,
    )
    assert "more than the limit of 200" in err and len(err) < 200


def test_show_prints_names_as_plain_text(dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from apps.cli import app

    db = tmp_path / "lb.sqlite"
    sub = write_submission(dataset, tmp_path / "sub")
    for name in ("[/bold]", "[link=http://evil.example]click[/link]", "[red]plain[/red]"):
        submit(db, dataset, sub, "m", 1, name=name)
    # A database written before names were checked may hold anything.
    with sqlite3.connect(db) as con:
        con.execute(
            "UPDATE submissions SET name = ? WHERE name = '[red]plain[/red]'",
            ("\x1b[2J\x1b]8;;http://evil.example\x07wipe" + "B" * 100_000,),
        )
    con.close()
    runner = CliRunner()
    for _ in range(2):  # "[/bold]" used to break every later `show`
        res = runner.invoke(app, ["leaderboard", "show", "--db", str(db)], env={"COLUMNS": "400"})
        assert res.exit_code == 0, res.output
        assert "[/bold]" in res.output and "[link=http://evil.example]click[/link]" in res.output
        assert "\x1b" not in res.output and "\x07" not in res.output
        assert "\\x1b[2J\\x1b]8;;http://evil.example\\x07wipe" in res.output
        assert "B" * 300 not in res.output and len(res.output) < 20_000


# ------------------------------------------------------------------------------------------ 4: zip and PNG bombs
def _zip_of(
    folder: Path, dest: Path, extra: list[tuple[zipfile.ZipInfo | str, bytes]] = (), skip: str | None = None
) -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.name != skip:
                zf.write(p, p.relative_to(folder).as_posix())
        for info, data in extra:
            zf.writestr(info, data)
    return dest


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * (1 + 3 * width) * 64, 9)  # a few rows; a decoder would allocate them all
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )


def _patch_central_record(path: Path, name: str, offset: int, fmt: str, value: int) -> None:
    """Overwrite a field of ``name``'s central directory record (what zipfile trusts) in place."""
    data = bytearray(path.read_bytes())
    rec = data.rfind(b"PK\x01\x02", 0, data.rfind(name.encode()))
    assert data[rec + 46 : rec + 46 + len(name)] == name.encode()
    data[rec + offset : rec + offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def _bomb_case(case: str, dataset: Path, tmp: Path) -> tuple[Path, str, dict]:
    """(zip, expected error, read_submission kwargs) for one hostile zip."""
    bench = load_benchmark(dataset)
    scene = bench.scenes["dev"][0]
    first = bench.test_views(scene)[0].name
    sub = write_submission(dataset, tmp / "sub")
    big = b"\0" * 3_000_000  # more than any 64x48 PNG can need; deflates to ~3 KB
    if case == "entry_larger_than_a_png":
        return _zip_of(sub, tmp / "z.zip", [(f"{scene}/{first}", big)], skip=first), "more than a 64x48 PNG needs", {}
    if case == "total_over_budget":
        return _zip_of(sub, tmp / "z.zip"), "unpacks to", {"max_unpacked_bytes": 10_000}
    if case == "extra_entry":
        return _zip_of(sub, tmp / "z.zip", [(f"{scene}/zz.png", big)]), "unexpected file", {}
    if case == "too_many_entries":
        extra = [(f"{scene}/d{k}/", b"") for k in range(40)]
        return _zip_of(sub, tmp / "z.zip", extra), "entries, more than the", {}
    if case == "unexpected_folder":
        return _zip_of(sub, tmp / "z.zip", [("junk/", b"")]), "unexpected folder", {}
    if case == "encrypted_entry":
        path = _zip_of(sub, tmp / "z.zip", [(f"{scene}/{first}", b"x" * 100)], skip=first)
        _patch_central_record(path, f"{scene}/{first}", 8, "<H", 0x1)  # general purpose flag: encrypted
        return path, "encrypted", {}
    if case == "traversal_name":
        return _zip_of(sub, tmp / "z.zip", [("../../etc/cron.d/x", big)]), "outside the submission", {}
    raise AssertionError(case)


BOMBS = [
    "entry_larger_than_a_png",
    "total_over_budget",
    "extra_entry",
    "too_many_entries",
    "unexpected_folder",
    "encrypted_entry",
    "traversal_name",
]


@pytest.mark.parametrize("case", BOMBS)
def test_zip_listing_is_checked_before_any_entry_is_read(dataset: Path, tmp_path: Path, case: str, monkeypatch) -> None:
    path, message, kwargs = _bomb_case(case, dataset, tmp_path)
    expected = expected_views(load_benchmark(dataset), "dev")

    def no_read(*args, **kw):
        raise AssertionError("an entry was read before the listing was validated")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_read)
    with pytest.raises(SubmissionError, match=message):
        read_submission(path, expected, (W, H), **kwargs)


def test_zip_lying_about_sizes_is_read_with_a_bound(dataset: Path, tmp_path: Path) -> None:
    """The central directory says 900 bytes; the entry inflates to 50 MB: rejected, never held in memory."""
    bench = load_benchmark(dataset)
    scene = bench.scenes["dev"][0]
    first = bench.test_views(scene)[0].name
    path = _zip_of(write_submission(dataset, tmp_path / "sub"), tmp_path / "z.zip", skip=first)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf, zf.open(f"{scene}/{first}", "w") as f:
        for _ in range(50):
            f.write(b"\0" * 1_000_000)
    _patch_central_record(path, f"{scene}/{first}", 24, "<I", 900)  # uncompressed size
    tracemalloc.start()
    try:
        with pytest.raises(SubmissionError, match="cannot be read|unpacks to more"):
            read_submission(path, expected_views(bench, "dev"), (W, H))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


def test_folder_listing_is_checked_before_any_file_is_read(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    bench = load_benchmark(dataset)
    scene = bench.scenes["dev"][0]
    expected = expected_views(bench, "dev")
    sub = write_submission(dataset, tmp_path / "sub")
    monkeypatch.setattr(submission_mod, "_read_file", lambda *a: pytest.fail("a file was read too early"))
    first = sub / scene / bench.test_views(scene)[0].name
    for size, message in ((3_000_000, "more than a 64x48 PNG needs"), (50_000_000, "more than the limit")):
        with open(first, "wb") as f:
            f.truncate(size)  # sparse: costs no disk
        with pytest.raises(SubmissionError, match=message):
            read_submission(sub, expected, (W, H))
    first.unlink()
    write_submission(dataset, sub)
    (sub / scene / "junk").mkdir()
    with pytest.raises(SubmissionError, match="unexpected folder"):
        read_submission(sub, expected, (W, H))


def test_png_header_size_is_checked_before_decoding(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    bench = load_benchmark(dataset)
    scene = bench.scenes["dev"][0]
    sub = write_submission(dataset, tmp_path / "sub")
    (sub / scene / bench.test_views(scene)[0].name).write_bytes(_png_header(30000, 30000))  # 2.7 GB of pixels
    decoded = []
    real = submission_mod.cv2.imdecode
    monkeypatch.setattr(submission_mod.cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or real(buf, flags))
    with pytest.raises(SubmissionError, match="is 30000x30000, expected 64x48"):
        read_submission(sub, expected_views(bench, "dev"), (W, H))
    assert all(n < 100_000 for n in decoded)  # only the genuine 64x48 views before it were decoded


# ------------------------------------------------------------------------------------------ 5: one-line errors
@pytest.mark.parametrize("case", ["garbage_file", "directory", "under_a_file", "other_programs_sqlite"])
def test_unusable_database_is_a_one_line_error(dataset: Path, tmp_path: Path, case: str, capsys) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not an SQLite database\n" * 100)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE submissions (x TEXT)")
    con.close()
    before = other.read_bytes()
    (tmp_path / "adir").mkdir()
    db = {
        "garbage_file": garbage,
        "directory": tmp_path / "adir",
        "under_a_file": garbage / "lb.sqlite",
        "other_programs_sqlite": other,
    }[case]
    if db.exists():
        err = _main(["leaderboard", "show", "--db", str(db)], capsys)
        assert str(db) in err
        err = _main(["leaderboard", "serve", "--db", str(db), "--port", "0"], capsys)
    err = _main(
        [
            "leaderboard",
            "submit",
            str(write_submission(dataset, tmp_path / "sub")),
            "--method",
            "m",
            "--dataset",
            str(dataset),
            "--db",
            str(db),
        ],
        capsys,
    )
    assert "database" in err or "folder" in err
    assert other.read_bytes() == before  # another program's database is not touched


def test_ids_beyond_sqlite_integers_are_not_found(site: dict, capsys) -> None:
    board = Leaderboard(site["db"])
    huge = int(HUGE_ID)
    assert board.submission(huge) is None and board.scene_rows(huge) == [] and board.image_rows(huge) == []
    assert board.thumbnail(huge, site["scene"], "v", "render") is None
    for path in (f"/submission/{HUGE_ID}", f"/submission/{HUGE_ID}?scene=x", f"/thumb/{HUGE_ID}/a/b/render.png"):
        status, body, headers = _get(site["url"] + path)
        assert status == 404 and headers["Content-Type"].startswith("text/plain"), path
    err = _main(["leaderboard", "show", "--db", str(site["db"]), "--track", HUGE_ID], capsys)
    assert "track must be 1" in err
    assert _get(site["url"] + "/")[0] == 200  # the server is unharmed


def test_serve_on_a_bad_or_busy_port_is_a_one_line_error(site: dict, capsys) -> None:
    for port in ("70000", "-1"):
        assert "port must be 0-65535" in _main(
            ["leaderboard", "serve", "--db", str(site["db"]), "--port", port], capsys
        )
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        err = _main(["leaderboard", "serve", "--db", str(site["db"]), "--host", "127.0.0.1", "--port", port], capsys)
        assert "cannot listen on 127.0.0.1:" in err
    finally:
        busy.close()


# ------------------------------------------------------------------------------------------ 6: slow clients
def test_half_sent_request_is_dropped_and_others_are_served(site: dict) -> None:
    from apps.leaderboard_web import REQUEST_QUEUE_SIZE, REQUEST_TIMEOUT_S, make_server

    assert REQUEST_QUEUE_SIZE >= 128 and REQUEST_TIMEOUT_S <= 30
    server = make_server(site["db"], "127.0.0.1", 0, timeout=0.5)
    assert server.request_queue_size >= 128
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    halves = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            halves.append(s)
        t0 = time.monotonic()
        assert _get(url + "/")[0] == 200  # answered while the half-sent requests wait
        for s in halves:
            try:
                assert s.recv(100) == b""  # closed by the server, no answer
            except ConnectionResetError:
                pass
        assert time.monotonic() - t0 < 5
        # A client dripping a byte every 0.2 s never idles for the timeout, but must still finish within it.
        drip = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
        halves.append(drip)
        t0 = time.monotonic()
        with pytest.raises(OSError):
            for byte in b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:  # bounded: about 20 s
                drip.sendall(bytes([byte]))
                time.sleep(0.2)
        assert time.monotonic() - t0 < 5
        results = []
        clients = [threading.Thread(target=lambda: results.append(_get(url + "/api/rows")[0])) for _ in range(32)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=30)
        assert results == [200] * 32
    finally:
        for s in halves:
            s.close()
        server.shutdown()
        server.server_close()
