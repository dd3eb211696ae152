"""Real-data protocol results on the leaderboard: schema migration of older databases, results.json validation
(one-line errors, database untouched), one ranking per protocol (dtu3 and dtu3m never share a table), published
figures as labelled reference rows (page and `show`), hostile names in the new tables, `bench run --submit`.

Fast: hand-made results.json files and SpaRe scores, no shared data, a server on 127.0.0.1 only."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import CHROMIUM, chromium_dom

from recon.bench.leaderboard import SCHEMA_VERSION, Leaderboard, read_results, submit_results
from recon.bench.published import LABEL, PUBLISHED, SCENES_NOTE
from recon.bench.scoring import METRICS, Scores
from recon.errors import ReconInputError

XSS_METHOD = '"><script>alert(1)</script>'
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_SCENE = "<b onmouseover=alert(3)>scan</b>"


def results_json(protocol: str, method: str, scenes: dict[str, float], **extra: Any) -> dict[str, Any]:
    """What `recon bench run --protocol` writes, with the given per-scene PSNRs."""
    rows = {s: {"psnr": p, "ssim": 0.5 + p / 100, "lpips": None, "wall_s": 1.0} for s, p in scenes.items()}
    mean = {m: sum(r[m] for r in rows.values()) / len(rows) for m in ("psnr", "ssim")}
    return {
        "protocol": protocol,
        "method": method,
        "scenes": rows,
        "mean": {**mean, "lpips": None, "wall_s": 1.0},
        "lpips": "LPIPS not computed: no local LPIPS weights given",
        "warnings": [],
        **extra,
    }


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def spare_scores(psnr_m: float) -> Scores:
    """SpaRe scores of one scene and one view, for a submission stored without rendering anything."""
    vals = {m: (psnr_m if m.startswith("psnr") else 0.8 if m.startswith("ssim") else None) for m in METRICS}
    return Scores(
        per_image=[{"scene": "s0", "view": "cam_001_3_0000.png", **vals}],
        per_scene={"s0": vals},
        mean=dict(vals),
        std={m: 0.0 if vals[m] is not None else None for m in METRICS},
    )


def _get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def table(page: str, table_id: str, tag: str = "table") -> str:
    """The HTML of the element with id ``table_id`` (tables and sections are never nested on these pages)."""
    m = re.search(rf'<{tag}[^>]* id="{re.escape(table_id)}"[^>]*>.*?</{tag}>', page, re.S)
    assert m, f"no {tag} {table_id}"
    return m.group(0)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """A database with a SpaRe submission, dtu3, dtu3m and llff3 results and hostile names, served locally."""
    from apps.leaderboard_web import make_server

    root = tmp_path_factory.mktemp("protocol_board")
    db = root / "lb.sqlite"
    Leaderboard(db).add("spare-method", "spare-sub", 1, "dev", spare_scores(25.0))
    ids = {}
    for name, protocol, method, scenes in (
        ("dtu3-low", "dtu3", "gaussians", {"scan24": 14.0, "scan37": 16.0}),
        ("dtu3-high", "dtu3", "gaussians-plain", {"scan24": 18.0, "scan37": 19.0}),
        ("dtu3m-best", "dtu3m", "gaussians", {"scan24": 30.0}),
        ("llff3-fern", "llff3", "gaussians", {"fern": 17.5}),
        (XSS_NAME, "dtu3", XSS_METHOD, {XSS_SCENE: 12.0}),
    ):
        path = write(root / f"r{len(ids)}.json", results_json(protocol, method, scenes))
        ids[name] = submit_results(db, path, name=name)[0]
    server = make_server(db, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"db": db, "url": f"http://127.0.0.1:{server.server_port}", "ids": ids, "root": root}
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------------------------------ schema migration
def make_schema2_db(path: Path) -> None:
    """A database as schema 2 left it: SpaRe tables only, version 2, one submission."""
    Leaderboard(path).add("old-method", "old-sub", 2, "test", spare_scores(21.0))
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE protocol_scene_scores")
        con.execute("DROP TABLE protocol_results")
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()


def test_schema2_database_is_migrated_and_keeps_its_submissions(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    make_schema2_db(db)
    board = Leaderboard(db)
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    con.close()
    assert {"protocol_results", "protocol_scene_scores"} <= tables and version == str(SCHEMA_VERSION) == "3"
    (row,) = board.rows()
    assert (row["name"], row["track"], row["protocol"], row["psnr_m"]) == ("old-sub", 2, "spare9", 21.0)
    assert [s.key for s in board.sections() if s.rows] == ["spare9-test"]
    rid, _ = submit_results(db, write(tmp_path / "r.json", results_json("dtu3", "old-method", {"scan24": 15.0})))
    assert board.counts()["protocol_results"] == 1 and board.result(rid)["method"] == "old-method"
    assert board.integrity_ok()


def test_newer_schema_version_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "new.sqlite"
    Leaderboard(db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    con.close()
    Leaderboard(db)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "7"
    con.close()


# ------------------------------------------------------------------------------------------ validation
GOOD = results_json("dtu3", "m", {"scan24": 15.0, "scan37": 17.0})
BAD_CASES: dict[str, tuple[Any, str]] = {
    "malformed": ('{"protocol": "dtu3", "method": ', "malformed JSON"),
    "not_utf8": ("\udcff", "not UTF-8"),
    "deep": ("[" * 100_000, "malformed JSON"),
    "huge_int": ('{"x": ' + "9" * 5000 + "}", "malformed JSON"),
    "not_object": ([GOOD], "expected a JSON object"),
    "unknown_protocol": ({**GOOD, "protocol": "dtu4"}, "unknown protocol 'dtu4'"),
    "spare_protocol": ({**GOOD, "protocol": "spare3"}, "hidden ground truth"),
    "no_protocol": ({k: v for k, v in GOOD.items() if k != "protocol"}, "unknown protocol"),
    "masks_mismatch": ({**GOOD, "input_masks": True}, "dtu3 runs without input masks"),
    "metric_mismatch": ({**GOOD, "metric": "full"}, "dtu3 scores 'masked'"),
    "no_method": ({k: v for k, v in GOOD.items() if k != "method"}, "lacks the method name"),
    "method_control_char": ({**GOOD, "method": "a\x1b[2Jb"}, "control character U\\+001B"),
    "no_scenes": ({k: v for k, v in GOOD.items() if k != "scenes"}, "lacks its scenes"),
    "empty_scenes": ({**GOOD, "scenes": {}}, "lacks its scenes"),
    "scene_without_psnr": ({**GOOD, "scenes": {"scan24": {"ssim": 0.5}}}, "scene 'scan24' lacks psnr"),
    "scene_name_control": ({**GOOD, "scenes": {"a\nb": GOOD["scenes"]["scan24"]}}, "control character U\\+000A"),
    "nan": ('{"protocol": "dtu3", "method": "m", "scenes": {"s": {"psnr": NaN, "ssim": 0.5}}}', "not a finite"),
    "infinity": (
        '{"protocol": "dtu3", "method": "m", "scenes": {"s": {"psnr": Infinity, "ssim": 0.5}}}',
        "not a finite",
    ),
    "overflow": ('{"protocol": "dtu3", "method": "m", "scenes": {"s": {"psnr": 1e999, "ssim": 0.5}}}', "not a finite"),
    "big_int": (
        '{"protocol": "dtu3", "method": "m", "scenes": {"s": {"psnr": 1' + "0" * 400 + ', "ssim": 0.5}}}',
        "not a finite",
    ),
    "string_number": ({**GOOD, "scenes": {"s": {"psnr": "15", "ssim": 0.5}}}, "must be a number, got str"),
    "bool_number": ({**GOOD, "scenes": {"s": {"psnr": True, "ssim": 0.5}}}, "must be a number, got bool"),
    "ssim_out_of_range": ({**GOOD, "scenes": {"s": {"psnr": 15.0, "ssim": 3.0}}}, "outside \\[-1, 1\\]"),
    "no_mean": ({k: v for k, v in GOOD.items() if k != "mean"}, "lacks the mean"),
    "mean_not_of_scenes": (
        {**GOOD, "mean": {"psnr": 25.0, "ssim": GOOD["mean"]["ssim"]}},
        "mean psnr 25.0 is not the mean of its scenes \\(16.0\\)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_results_json_is_a_one_line_error_and_stores_nothing(tmp_path: Path, case: str) -> None:
    data, message = BAD_CASES[case]
    path = tmp_path / "results.json"
    if case == "not_utf8":
        path.write_bytes(b'{"protocol": "\xff"}')
    else:
        write(path, data)
    db = tmp_path / "lb.sqlite"
    submit_results(db, write(tmp_path / "ok.json", GOOD), name="first")
    before = Leaderboard(db).counts()
    with pytest.raises(ReconInputError, match=message) as exc:
        submit_results(db, path)
    text = str(exc.value)
    assert text.startswith(f"{path}: ") and "\n" not in text and len(text) < 400
    assert Leaderboard(db).counts() == before


def test_missing_file_folder_and_oversized_file(tmp_path: Path, monkeypatch) -> None:
    from recon.bench import leaderboard

    with pytest.raises(ReconInputError, match="results file not found"):
        read_results(tmp_path / "nope.json")
    with pytest.raises(ReconInputError, match="not a results file"):
        read_results(tmp_path)
    monkeypatch.setattr(leaderboard, "MAX_RESULTS_BYTES", 100)
    with pytest.raises(ReconInputError, match="more than the limit of 100"):
        read_results(write(tmp_path / "big.json", GOOD))


def test_names_are_checked_and_unique_across_spare_and_protocol_rows(tmp_path: Path) -> None:
    db = tmp_path / "lb.sqlite"
    Leaderboard(db).add("m", "taken", 1, "dev", spare_scores(20.0))
    path = write(tmp_path / "r.json", GOOD)
    for name, message in (
        ("taken", "already exists"),
        ("x" * 201, "more than the limit of 200"),
        ("a\u202eb", "control character U\\+202E"),
        ("  ", "must not be empty"),
    ):
        with pytest.raises(ReconInputError, match=message):
            submit_results(db, path, name=name)
    assert Leaderboard(db).counts()["protocol_results"] == 0
    rid, res = submit_results(db, path)  # default name: method-protocol-time-folder
    row = Leaderboard(db).result(rid)
    assert row["name"].startswith("m-dtu3-") and row["name"].endswith(tmp_path.name)
    assert row["source"] == str(path.resolve()) and row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert res.mean["psnr"] == 16.0 and row["n_scenes"] == 2 and row["info"]["warnings"] == []


def test_cli_submit_results_and_its_one_line_error(tmp_path: Path, capsys) -> None:
    from typer.testing import CliRunner

    from apps.cli import app, main

    db = tmp_path / "lb.sqlite"
    path = write(tmp_path / "results.json", GOOD)
    res = CliRunner().invoke(app, ["leaderboard", "submit-results", str(path), "--db", str(db), "--name", "cli"])
    assert res.exit_code == 0, res.output
    assert "result #1 stored" in res.output and "dtu3, 2 scenes, mean PSNR 16.00 dB" in res.output
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", "submit-results", str(write(tmp_path / "bad.json", "{")), "--db", str(db)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(f"recon: error: {tmp_path / 'bad.json'}: malformed JSON")
    assert err.count("\n") == 1


# ------------------------------------------------------------------------------------------ one ranking per protocol
def test_each_protocol_is_ranked_on_its_own(site: dict) -> None:
    board = Leaderboard(site["db"])
    sections = {s.key: s for s in board.sections()}
    assert list(sections) == ["spare3-dev", "blender8", "llff3", "dtu3", "dtu3m"]
    assert [r["name"] for r in sections["dtu3"].rows] == ["dtu3-high", "dtu3-low", XSS_NAME]
    assert [r["rank"] for r in sections["dtu3"].rows] == [1, 2, 3]
    assert [(r["name"], r["rank"]) for r in sections["dtu3m"].rows] == [("dtu3m-best", 1)]
    for sec in sections.values():
        assert {r["protocol"] for r in sec.rows} <= {sec.protocol}
    assert [s.key for s in board.sections("dtu3m")] == ["dtu3m"]
    assert [s.key for s in board.sections("spare3")] == ["spare3-dev"]
    assert [s.key for s in board.sections(track=1)] == ["spare3-dev"]  # SpaRe filters leave real data out
    assert [s.key for s in board.sections("dtu6")] == ["dtu6"] and not board.sections("dtu6")[0].rows
    with pytest.raises(ReconInputError, match="unknown protocol"):
        board.sections("dtu4")
    with pytest.raises(ReconInputError, match="track 1, not track 2"):
        board.sections("spare3", track=2)
    with pytest.raises(ReconInputError, match="protocol dtu3 has neither"):
        board.sections("dtu3", split="dev")
    assert [r["name"] for r in board.result_rows(metric="ssim") if r["protocol"] == "dtu3"][0] == "dtu3-high"


def test_page_never_mixes_dtu3_and_dtu3m(site: dict) -> None:
    status, body, headers = _get(site["url"] + "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    dtu3, dtu3m = table(page, "protocol-dtu3"), table(page, "protocol-dtu3m")
    assert "dtu3-high" in dtu3 and "dtu3-low" in dtu3 and "dtu3m-best" not in dtu3
    assert "dtu3m-best" in dtu3m and "dtu3-high" not in dtu3m and "dtu3-low" not in dtu3m
    assert dtu3.index("dtu3-high") < dtu3.index("dtu3-low")  # served in rank order
    assert "scan24, scan37" in dtu3
    assert "spare-sub" in table(page, "track1-dev") and "spare-sub" not in dtu3
    status, body, _ = _get(site["url"] + "/?protocol=dtu3m")
    assert status == 200 and b"dtu3m-best" in body and b"dtu3-high" not in body and b"spare-sub" not in body
    status, body, headers = _get(site["url"] + "/?protocol=%3Cscript%3E")
    assert status == 400 and headers["Content-Type"].startswith("text/plain") and b"unknown protocol" in body
    rows = json.loads(_get(site["url"] + "/api/results?protocol=dtu3")[1])
    assert [r["name"] for r in rows] == ["dtu3-high", "dtu3-low", XSS_NAME]
    assert {r["protocol"] for r in json.loads(_get(site["url"] + "/api/rows")[1])} == {"spare3"}


def test_result_page_shows_its_scenes(site: dict) -> None:
    rid = site["ids"]["dtu3-high"]
    status, body, _ = _get(f"{site['url']}/result/{rid}")
    page = body.decode()
    assert status == 200 and "dtu3-high" in page and "protocol dtu3" in page
    assert "18.00" in table(page, "scenes") and "19.00" in table(page, "scenes")
    for path in ("/result/999", "/result/" + "9" * 23):
        status, _, headers = _get(site["url"] + path)
        assert status == 404 and headers["Content-Type"].startswith("text/plain")


# ------------------------------------------------------------------------------------------ published reference rows
def test_published_rows_are_labelled_on_the_page_and_not_ranked(site: dict) -> None:
    page = _get(site["url"] + "/")[1].decode()
    for protocol, rows in PUBLISHED.items():
        ref, section = table(page, f"published-{protocol}"), table(page, f"p-{protocol}", "section")
        assert ref.count('<tr class="published">') == len(rows) and ref.count(LABEL) == len(rows)
        assert f"{LABEL}: reference rows, not ranked</h3>" in section and "source: the papers" in section
        for r in rows:
            assert f'<td class="t">{r.method}</td><td>{r.psnr}</td>' in ref
        if protocol in ("dtu3", "llff3"):
            assert "ReconFusion" not in table(page, f"protocol-{protocol}")  # not among the submissions
    assert "<td>21.6-23.2</td>" in table(page, "published-blender8")  # a range stays text
    assert "<td>20.74</td>" in table(page, "published-dtu3")
    assert "published-dtu3m" not in page and "published-spare3" not in page  # none published for these here
    assert SCENES_NOTE.replace("'", "&#x27;") in page
    assert "No blender8 results submitted yet." in page
    published = json.loads(_get(site["url"] + "/api/published")[1])
    assert {(r["protocol"], r["method"], r["psnr"], r["label"]) for r in published} == {
        (r.protocol, r.method, r.psnr, LABEL) for rows in PUBLISHED.values() for r in rows
    }


def test_show_prints_one_table_per_protocol_and_the_reference_rows(site: dict) -> None:
    from typer.testing import CliRunner

    from apps.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["leaderboard", "show", "--db", str(site["db"])], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = res.output
    assert out.count(LABEL) >= 2 * len(PUBLISHED)  # each table's title and every row's kind
    assert "21.6-23.2" in out and "ReconFusion" in out and "20.74" in out and "source: the papers" in out
    assert SCENES_NOTE[:60] in out.replace("\n", " ")
    # dtu3's table ends before dtu3m's begins: their rows are never in one table
    dtu3 = out[out.index("dtu3: DTU, 3 input views without masks") : out.index("dtu3m: DTU")]
    assert "dtu3-high" in dtu3 and "dtu3m-best" not in dtu3
    res = runner.invoke(app, ["leaderboard", "show", "--db", str(site["db"]), "--protocol", "dtu3m", "--json"])
    sections = json.loads(res.output)
    assert [(s["protocol"], [r["name"] for r in s["rows"]], s["published"]) for s in sections] == [
        ("dtu3m", ["dtu3m-best"], [])
    ]
    res = runner.invoke(
        app, ["leaderboard", "show", "--db", str(site["db"]), "--protocol", "dtu3"], env={"COLUMNS": "200"}
    )
    assert "dtu3m-best" not in res.output and "spare-sub" not in res.output and "ReconFusion" in res.output


# ------------------------------------------------------------------------------------------ hostile names
def test_hostile_method_name_and_scene_are_escaped_in_the_new_tables(site: dict) -> None:
    status, body, headers = _get(site["url"] + "/")
    page = body.decode()
    dtu3 = table(page, "protocol-dtu3")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in dtu3
    assert "<script>alert" not in page and "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in dtu3
    assert "<b onmouseover" not in page and "&lt;b onmouseover=alert(3)&gt;scan&lt;/b&gt;" in dtu3
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in headers["Content-Security-Policy"]
    status, body, headers = _get(f"{site['url']}/result/{site['ids'][XSS_NAME]}")
    assert status == 200 and b"<img src=x" not in body and b"<script>alert" not in body and b"<b onmouse" not in body
    assert b"&lt;b onmouseover=alert(3)&gt;scan&lt;/b&gt;" in body and "Content-Security-Policy" in headers
    api = _get(site["url"] + "/api/results")[1]
    assert b"<" not in api and XSS_NAME in {r["name"] for r in json.loads(api)}


def test_hostile_names_print_as_plain_text_in_show(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from apps.cli import app

    db = tmp_path / "lb.sqlite"
    submit_results(
        db,
        write(tmp_path / "r.json", results_json("llff3", "[bold]m[/bold]", {"[red]s": 15.0})),
        name="[link=http://evil.example]click[/link]",
    )
    res = CliRunner().invoke(
        app, ["leaderboard", "show", "--db", str(db), "--protocol", "llff3"], env={"COLUMNS": "300"}
    )
    assert res.exit_code == 0, res.output
    assert "[link=http://evil.example]click[/link]" in res.output and "[bold]m[/bold]" in res.output
    assert "[red]s" in res.output and "\x1b" not in res.output


# ------------------------------------------------------------------------------------------ bench run --submit
def _fake_run(calls: list) -> Any:
    """Stands in for run_protocol: writes the results.json a run would and returns it."""

    def run(protocol, data, method, out, **kw):
        calls.append(protocol)
        res = results_json(protocol, method, {"scan24": 15.5}, metric="masked", input_masks=False)
        res["scenes"]["scan24"]["mode"] = "scene"
        Path(out).mkdir(parents=True, exist_ok=True)
        write(Path(out) / "results.json", res)
        return res

    return run


def test_bench_run_protocol_submit_stores_results_json(tmp_path: Path, monkeypatch, capsys) -> None:
    from typer.testing import CliRunner

    from apps.cli import app, main
    from recon.bench import protocol_runner

    calls: list = []
    monkeypatch.setattr(protocol_runner, "run_protocol", _fake_run(calls))
    db = tmp_path / "lb.sqlite"
    args = [
        "bench",
        "run",
        "--protocol",
        "dtu3",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
        "--submit",
        "--db",
        str(db),
        "--name",
        "run-1",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "result #1 stored" in res.output and calls == ["dtu3"]
    (row,) = Leaderboard(db).result_rows("dtu3")
    assert (row["name"], row["psnr"], row["scenes"]) == ("run-1", 15.5, ["scan24"])
    # A taken name is refused before the run starts, in one line.
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "already exists" in err and err.count("\n") == 1 and calls == ["dtu3"]
    # Without --submit nothing is stored (the current behaviour).
    res = CliRunner().invoke(app, args[:-5] + ["--db", str(db)])
    assert res.exit_code == 0 and calls == ["dtu3", "dtu3"] and Leaderboard(db).counts()["protocol_results"] == 1


# ------------------------------------------------------------------------------------------ in a real browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_page_with_protocols_loads_in_headless_chromium(site: dict, tmp_path: Path) -> None:
    dom = chromium_dom(site["url"] + "/", tmp_path / "profile")
    for tid in (
        "track1-dev",
        "protocol-dtu3",
        "protocol-dtu3m",
        "protocol-llff3",
        "published-dtu3",
        "published-blender8",
    ):
        assert f'id="{tid}"' in dom, tid
    assert dom.count('<tr class="published">') == sum(len(r) for r in PUBLISHED.values())
    assert dom.count("<tr data-result-id=") == 5
    assert "<script>alert" not in dom and "<img src=x" not in dom and "<b onmouseover" not in dom
