"""The leaderboard store: one SQLite file (WAL journal) with methods, submissions and per-scene/per-image scores.

Two kinds of rows, each with a protocol, ranked only against rows of the same protocol: SpaRe submissions
(renders scored here against the hidden ground truth; protocol spare3/spare9, which follows from the track) and
real-data protocol results (a ``recon bench run --protocol`` results.json, scored by the submitter on the scenes
it ran: blender8, llff3, dtu3, ...). Published figures (:mod:`recon.bench.published`) are shown beside them as
reference rows, never ranked.

Every submission is validated and scored completely *before* the database is opened for writing, then stored
in one ``BEGIN IMMEDIATE`` transaction: a rejected submission leaves the database untouched, two processes
submitting at once are serialised by SQLite's lock (each waits up to ``timeout`` seconds) and both land, and
a process killed mid-write leaves only the last committed state (SQLite's journal rolls the rest back).
Thumbnails of each render are stored as small PNG blobs so the web page needs only the database file. The
ground truth of the test views is hidden, so no thumbnail of it is kept (databases of schema 1 had them: they
are erased when such a database is opened).

Names (of methods and submissions) end up in terminals and web pages: they must be plain text without control
characters, at most ``MAX_NAME_CHARS`` long (:func:`check_name`).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from recon.bench.dataset import SPLITS, TRACKS, Benchmark, check_track_split, load_benchmark
from recon.bench.protocols import PROTOCOLS
from recon.bench.published import PublishedRow, published
from recon.bench.scoring import HIGHER_IS_BETTER, METRICS, Scores, mean_or_none, score_renders
from recon.bench.submission import MAX_BYTES, Submission, SubmissionError, max_entries, open_zip, read_submission
from recon.errors import ReconInputError

DEFAULT_DB_NAME = "leaderboard.sqlite"
DEFAULT_METRIC = "psnr_m"
THUMB_WIDTH = 160
# 2: image_scores.gt_thumb dropped (it published the hidden ground truth); 3: protocol_results and
# protocol_scene_scores added (real-data protocol results; older databases get the empty tables on open).
SCHEMA_VERSION = 3
SPARE_PROTOCOLS = {1: "spare3", 2: "spare9"}  # a SpaRe submission's protocol follows from its track
ALL_PROTOCOLS = (*SPARE_PROTOCOLS.values(), *PROTOCOLS)
RESULT_METRICS = ("psnr", "ssim", "lpips")  # what a protocol's results.json reports, in its own convention
MAX_RESULTS_BYTES = 5 * 2**20  # a results.json of hundreds of scenes is well under this
MAX_RESULT_SCENES = 1000
MAX_NOTE_CHARS = 1000
MAX_NAME_CHARS = 200
INT64_MAX = 2**63 - 1  # SQLite's INTEGER range: larger ids cannot exist (and would raise OverflowError)
# Unicode categories a name must not hold: control, format (bidi overrides...), surrogate, private use, line breaks.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})

_METRIC_COLS = ", ".join(f"{m} REAL" for m in METRICS)
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS methods (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY,
    method_id INTEGER NOT NULL REFERENCES methods(id),
    name TEXT NOT NULL UNIQUE,
    track INTEGER NOT NULL CHECK (track IN (1, 2)),
    split TEXT NOT NULL CHECK (split IN ('dev', 'test')),
    created REAL NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    n_scenes INTEGER NOT NULL,
    n_images INTEGER NOT NULL,
    lpips_note TEXT,
    info TEXT NOT NULL,
    {_METRIC_COLS},
    {", ".join(f"{m}_std REAL" for m in METRICS)});
CREATE TABLE IF NOT EXISTS scene_scores (
    submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    scene TEXT NOT NULL, {_METRIC_COLS},
    PRIMARY KEY (submission_id, scene));
CREATE TABLE IF NOT EXISTS image_scores (
    submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
    scene TEXT NOT NULL, view TEXT NOT NULL, {_METRIC_COLS},
    render_thumb BLOB,
    PRIMARY KEY (submission_id, scene, view));
CREATE TABLE IF NOT EXISTS protocol_results (
    id INTEGER PRIMARY KEY,
    method_id INTEGER NOT NULL REFERENCES methods(id),
    name TEXT NOT NULL UNIQUE,
    protocol TEXT NOT NULL,
    created REAL NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    n_scenes INTEGER NOT NULL,
    lpips_note TEXT,
    info TEXT NOT NULL,
    psnr REAL, ssim REAL, lpips REAL);
CREATE TABLE IF NOT EXISTS protocol_scene_scores (
    result_id INTEGER NOT NULL REFERENCES protocol_results(id) ON DELETE CASCADE,
    scene TEXT NOT NULL, psnr REAL, ssim REAL, lpips REAL,
    PRIMARY KEY (result_id, scene));
"""


def _columns(con: sqlite3.Connection) -> dict[str, set[str]]:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: {r[0] for r in con.execute("SELECT name FROM pragma_table_info(?)", (t,))} for t in tables}


def _schema_columns() -> dict[str, set[str]]:
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(SCHEMA)
        return _columns(con)
    finally:
        con.close()


SCHEMA_COLUMNS = _schema_columns()


def _unsafe_char(value: str) -> str | None:
    return next((c for c in value if unicodedata.category(c) in UNSAFE_CATEGORIES), None)


def check_name(kind: str, value: str) -> str:
    """``value`` if it is a usable ``kind`` name (shown in terminals and HTML); else a one-line ReconInputError."""
    if not value.strip():
        raise ReconInputError(f"{kind} name must not be empty")
    if len(value) > MAX_NAME_CHARS:
        raise ReconInputError(f"{kind} name is {len(value)} characters long, more than the limit of {MAX_NAME_CHARS}")
    bad = _unsafe_char(value)
    if bad is not None:
        raise ReconInputError(f"{kind} name contains the control character U+{ord(bad):04X} (not allowed)")
    return value


def display_text(value: str, limit: int = MAX_NAME_CHARS) -> str:
    """``value`` safe to print (databases older than :func:`check_name` may hold anything): control characters
    written as escapes, cut to ``limit`` characters."""
    out = "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in UNSAFE_CATEGORIES else c
        for c in value[:limit]
    )
    return out + "…" if len(value) > limit else out


def _is_db_int(x: Any) -> bool:
    return isinstance(x, int) and -INT64_MAX - 1 <= x <= INT64_MAX


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ReconInputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def result_metric(metric: str) -> str:
    """What a protocol result is ranked by for ``metric``: its protocol's own PSNR/SSIM/LPIPS (masked already
    where the protocol masks, so PSNR-M and PSNR both mean the protocol's PSNR)."""
    return check_metric(metric).removesuffix("_m")


def check_protocol(protocol: str) -> str:
    if protocol not in ALL_PROTOCOLS:
        raise ReconInputError(f"unknown protocol {protocol!r}; known: {', '.join(ALL_PROTOCOLS)}")
    return protocol


DATASET_NAMES = {"blender": "NeRF-synthetic (Blender)", "llff": "LLFF", "dtu": "DTU"}
CONVENTIONS = {
    "white": "full image, composited on white",
    "full": "full image",
    "masked": "prediction and ground truth both masked, error over the whole image (RegNeRF)",
}


def protocol_summary(name: str) -> str:
    """One line on what a real-data protocol's numbers mean: data, inputs, scoring (dtu3 and dtu3m differ here)."""
    p = PROTOCOLS[name]
    return (
        f"{name}: {DATASET_NAMES.get(p.dataset, p.dataset)}, {p.n_views} input views "
        f"{'with' if p.input_masks else 'without'} masks; scored on the {CONVENTIONS.get(p.metric, p.metric)}"
    )


def _check_name_free(con: sqlite3.Connection, name: str) -> None:
    """Names are unique over SpaRe submissions and protocol results alike (one namespace on the page)."""
    for table in ("submissions", "protocol_results"):
        if con.execute(f"SELECT 1 FROM {table} WHERE name = ?", (name,)).fetchone():
            raise SubmissionError(f"a submission named {name!r} already exists (choose another --name)")


def thumbnail_png(img: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """Small RGB PNG of an HxWx3 uint8 or float image."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    h, w = a.shape[:2]
    if w > width:
        a = cv2.resize(a, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a[:, :, ::-1]))
    if not ok:
        raise OSError("thumbnail encoding failed")
    return buf.tobytes()


class Leaderboard:
    """The SQLite store. Open one per thread/process; every write is a single transaction."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        """Open (creating it if missing) the database; a path that is not one is a one-line ReconInputError."""
        self.path = Path(path)
        self.timeout = timeout
        if self.path.is_dir():
            raise ReconInputError("is a folder, not a leaderboard database", self.path)
        parent = next((p for p in self.path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ReconInputError(
                f"cannot create the leaderboard database: {parent} is a file, not a folder", self.path
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                self._check_schema(con)  # before writing anything: it may be some other program's database
                con.execute("PRAGMA journal_mode=WAL")
                # CREATE ... IF NOT EXISTS is idempotent, so concurrent first opens are harmless.
                con.executescript(SCHEMA)
                con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                self._erase_ground_truth(con)
                self._record_version(con)
        except sqlite3.Error as exc:
            raise ReconInputError(f"cannot use this leaderboard database ({exc})", self.path) from None
        except OSError as exc:  # e.g. a parent "folder" that is a file, or no permission to create it
            where = f": {exc.filename}" if exc.filename else ""
            raise ReconInputError(
                f"cannot create the leaderboard database ({exc.strerror or exc}{where})", self.path
            ) from None

    def _check_schema(self, con: sqlite3.Connection) -> None:
        have = _columns(con)  # the first read: "file is not a database" shows up here
        if not have:
            return
        if "meta" not in have:
            raise ReconInputError(f"not a leaderboard database (it holds tables {', '.join(sorted(have))})", self.path)
        for table, cols in SCHEMA_COLUMNS.items():
            missing = cols - have.get(table, set())
            if table in have and missing:
                raise ReconInputError(
                    f"not a leaderboard database (table {table} lacks {', '.join(sorted(missing))})", self.path
                )

    @staticmethod
    def _erase_ground_truth(con: sqlite3.Connection) -> None:
        """Schema 1 stored ground-truth thumbnails of the hidden test views: drop them, overwriting their pages."""
        if "gt_thumb" not in _columns(con).get("image_scores", set()):
            return
        con.execute("PRAGMA secure_delete=ON")  # freed pages are zeroed, so the PNGs do not linger in the file
        con.execute("BEGIN IMMEDIATE")
        try:
            if "gt_thumb" in _columns(con)["image_scores"]:  # another process may have done it meanwhile
                con.execute("UPDATE image_scores SET gt_thumb = NULL WHERE gt_thumb IS NOT NULL")
                try:
                    con.execute("ALTER TABLE image_scores DROP COLUMN gt_thumb")
                except sqlite3.OperationalError:  # SQLite < 3.35 cannot drop columns: it stays, empty
                    pass
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # copy the zeroed pages over the old ones in the main file

    @staticmethod
    def _record_version(con: sqlite3.Connection) -> None:
        """Schema 2 databases have just gained the (empty) protocol tables: say they are schema 3 now. A newer
        version number is left alone (its program added what it needs)."""
        con.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version' AND CAST(value AS INTEGER) < ?",
            (str(SCHEMA_VERSION), SCHEMA_VERSION),
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA synchronous=FULL")
            con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: taken with BEGIN IMMEDIATE (waits for other writers), rolled back on any error."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ------------------------------------------------------------------ writes
    def add(
        self,
        method: str,
        name: str,
        track: int,
        split: str,
        scores: Scores,
        *,
        source: str = "",
        sha256: str = "",
        thumbs: dict[tuple[str, str], bytes] | None = None,
        info: dict[str, Any] | None = None,
    ) -> int:
        """Store a scored submission in one transaction; returns its id. Duplicate names raise SubmissionError.

        ``thumbs[(scene, view)]`` is the render's thumbnail (PNG bytes)."""
        check_track_split(track, split)
        check_name("method", method)
        check_name("submission", name)
        thumbs = thumbs or {}
        with self.transaction() as con:
            _check_name_free(con, name)
            con.execute("INSERT OR IGNORE INTO methods (name, created) VALUES (?, ?)", (method, time.time()))
            method_id = con.execute("SELECT id FROM methods WHERE name = ?", (method,)).fetchone()[0]
            cols = ", ".join(METRICS) + ", " + ", ".join(f"{m}_std" for m in METRICS)
            values = [scores.mean[m] for m in METRICS] + [scores.std[m] for m in METRICS]
            cur = con.execute(
                f"INSERT INTO submissions (method_id, name, track, split, created, source, sha256, n_scenes, n_images,"
                f" lpips_note, info, {cols}) VALUES ({', '.join('?' * (11 + 2 * len(METRICS)))})",
                [
                    method_id,
                    name,
                    track,
                    split,
                    time.time(),
                    source,
                    sha256,
                    len(scores.per_scene),
                    len(scores.per_image),
                    scores.lpips_note,
                    json.dumps(info or {}),
                ]
                + values,
            )
            sid = int(cur.lastrowid)
            self._insert_scores(con, sid, scores, thumbs)
        return sid

    def _insert_scores(
        self, con: sqlite3.Connection, sid: int, scores: Scores, thumbs: dict[tuple[str, str], bytes]
    ) -> None:
        marks = ", ".join("?" * len(METRICS))
        con.executemany(
            f"INSERT INTO scene_scores (submission_id, scene, {', '.join(METRICS)}) VALUES (?, ?, {marks})",
            [[sid, scene] + [s[m] for m in METRICS] for scene, s in scores.per_scene.items()],
        )
        for r in scores.per_image:
            con.execute(
                f"INSERT INTO image_scores (submission_id, scene, view, {', '.join(METRICS)}, render_thumb)"
                f" VALUES (?, ?, ?, {marks}, ?)",
                [sid, r["scene"], r["view"]] + [r[m] for m in METRICS] + [thumbs.get((r["scene"], r["view"]))],
            )

    # ------------------------------------------------------------------ reads
    def rows(
        self, track: int | None = None, split: str | None = None, metric: str = DEFAULT_METRIC
    ) -> list[dict[str, Any]]:
        """SpaRe submissions ranked by ``metric`` (best first; missing values last) within each track and split,
        with a 1-based ``rank`` and their ``protocol`` (spare3/spare9)."""
        check_metric(metric)
        if track is not None and track not in TRACKS:
            raise ReconInputError(f"track must be 1 (3 input views) or 2 (9 input views), got {track}")
        if split is not None and split not in SPLITS:
            raise ReconInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        where, args = [], []
        if track is not None:
            where.append("s.track = ?")
            args.append(track)
        if split is not None:
            where.append("s.split = ?")
            args.append(split)
        order = "DESC" if HIGHER_IS_BETTER[metric] else "ASC"
        sql = (
            f"SELECT s.*, m.name AS method FROM submissions s JOIN methods m ON m.id = s.method_id"
            f"{' WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY s.track, s.split, s.{metric} IS NULL, s.{metric} {order}, s.id"
        )
        with self._connect() as con:
            out = [dict(r) for r in con.execute(sql, args)]
        ranks: dict[tuple[int, str], int] = {}
        for r in out:
            key = (r["track"], r["split"])
            ranks[key] = ranks.get(key, 0) + 1
            r["rank"] = ranks[key]
            r["protocol"] = SPARE_PROTOCOLS[r["track"]]
            r.pop("info", None)
        return out

    def submission(self, sid: int) -> dict[str, Any] | None:
        if not _is_db_int(sid):
            return None
        with self._connect() as con:
            r = con.execute(
                "SELECT s.*, m.name AS method FROM submissions s JOIN methods m ON m.id = s.method_id WHERE s.id = ?",
                (sid,),
            ).fetchone()
        return dict(r) if r else None

    def scene_rows(self, sid: int) -> list[dict[str, Any]]:
        if not _is_db_int(sid):
            return []
        with self._connect() as con:
            return [
                dict(r)
                for r in con.execute("SELECT * FROM scene_scores WHERE submission_id = ? ORDER BY scene", (sid,))
            ]

    def image_rows(self, sid: int, scene: str | None = None) -> list[dict[str, Any]]:
        """Per-image scores (without the thumbnail blobs)."""
        if not _is_db_int(sid):
            return []
        sql = f"SELECT submission_id, scene, view, {', '.join(METRICS)} FROM image_scores WHERE submission_id = ?"
        args: list[Any] = [sid]
        if scene is not None:
            sql += " AND scene = ?"
            args.append(scene)
        with self._connect() as con:
            return [dict(r) for r in con.execute(sql + " ORDER BY scene, view", args)]

    def thumbnail(self, sid: int, scene: str, view: str, kind: str = "render") -> bytes | None:
        """The render's thumbnail; None for any other ``kind`` (ground truth is never served)."""
        if kind != "render" or not _is_db_int(sid):
            return None
        with self._connect() as con:
            r = con.execute(
                "SELECT render_thumb FROM image_scores WHERE submission_id = ? AND scene = ? AND view = ?",
                (sid, scene, view),
            ).fetchone()
        return None if r is None else r[0]

    # ------------------------------------------------------------------ real-data protocol results
    def add_results(self, res: ProtocolResults, name: str, *, source: str = "") -> int:
        """Store a validated results.json (:func:`read_results`) in one transaction; returns its id."""
        check_name("submission", name)
        with self.transaction() as con:
            _check_name_free(con, name)
            con.execute("INSERT OR IGNORE INTO methods (name, created) VALUES (?, ?)", (res.method, time.time()))
            method_id = con.execute("SELECT id FROM methods WHERE name = ?", (res.method,)).fetchone()[0]
            cur = con.execute(
                "INSERT INTO protocol_results (method_id, name, protocol, created, source, sha256, n_scenes,"
                " lpips_note, info, psnr, ssim, lpips) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    method_id,
                    name,
                    res.protocol,
                    time.time(),
                    source,
                    res.sha256,
                    len(res.per_scene),
                    res.lpips_note,
                    json.dumps(res.info),
                ]
                + [res.mean[m] for m in RESULT_METRICS],
            )
            rid = int(cur.lastrowid)
            con.executemany(
                "INSERT INTO protocol_scene_scores (result_id, scene, psnr, ssim, lpips) VALUES (?, ?, ?, ?, ?)",
                [[rid, scene] + [row[m] for m in RESULT_METRICS] for scene, row in res.per_scene.items()],
            )
        return rid

    def result_rows(self, protocol: str | None = None, metric: str = "psnr") -> list[dict[str, Any]]:
        """Protocol results ranked by ``metric`` (psnr, ssim or lpips) within each protocol, with a 1-based
        ``rank`` and the ``scenes`` each was scored on."""
        if metric not in RESULT_METRICS:
            raise ReconInputError(
                f"unknown metric {metric!r} for protocol results; choose one of {', '.join(RESULT_METRICS)}"
            )
        where, args = ("WHERE r.protocol = ?", [check_protocol(protocol)]) if protocol is not None else ("", [])
        order = "DESC" if HIGHER_IS_BETTER[metric] else "ASC"
        sql = (
            f"SELECT r.*, m.name AS method FROM protocol_results r JOIN methods m ON m.id = r.method_id {where}"
            f" ORDER BY r.protocol, r.{metric} IS NULL, r.{metric} {order}, r.id"
        )
        with self._connect() as con:
            out = [dict(r) for r in con.execute(sql, args)]
            scenes: dict[int, list[str]] = {}
            for r in con.execute("SELECT result_id, scene FROM protocol_scene_scores ORDER BY result_id, scene"):
                scenes.setdefault(r[0], []).append(r[1])
        ranks: dict[str, int] = {}
        for r in out:
            ranks[r["protocol"]] = ranks.get(r["protocol"], 0) + 1
            r["rank"] = ranks[r["protocol"]]
            r["scenes"] = scenes.get(r["id"], [])
            r.pop("info", None)
        return out

    def result(self, rid: int) -> dict[str, Any] | None:
        """One protocol result with its ``info`` (warnings, machine, ...) decoded."""
        if not _is_db_int(rid):
            return None
        with self._connect() as con:
            r = con.execute(
                "SELECT r.*, m.name AS method FROM protocol_results r JOIN methods m"
                " ON m.id = r.method_id WHERE r.id = ?",
                (rid,),
            ).fetchone()
        if r is None:
            return None
        out = dict(r)
        try:
            info = json.loads(out["info"] or "{}")
        except ValueError:  # a hand-edited database: the scores still show
            info = {}
        out["info"] = info if isinstance(info, dict) else {}
        return out

    def result_scene_rows(self, rid: int) -> list[dict[str, Any]]:
        if not _is_db_int(rid):
            return []
        with self._connect() as con:
            return [
                dict(r)
                for r in con.execute("SELECT * FROM protocol_scene_scores WHERE result_id = ? ORDER BY scene", (rid,))
            ]

    def sections(
        self,
        protocol: str | None = None,
        metric: str = DEFAULT_METRIC,
        track: int | None = None,
        split: str | None = None,
    ) -> list[Section]:
        """The leaderboard as rankings, one per protocol (and split, for SpaRe): never two protocols in one.

        Real-data protocols with published figures get a section even before anything is submitted; ``track``
        and ``split`` are SpaRe's, so they leave the real-data protocols out."""
        check_metric(metric)
        if protocol is not None:
            check_protocol(protocol)
        spare = {v: k for k, v in SPARE_PROTOCOLS.items()}
        if protocol in PROTOCOLS and (track is not None or split is not None):
            raise ReconInputError(f"track and split are SpaRe's; protocol {protocol} has neither")
        if protocol in spare:
            if track is not None and track != spare[protocol]:
                raise ReconInputError(f"--protocol {protocol} is track {spare[protocol]}, not track {track}")
            track = spare[protocol]
        out: list[Section] = []
        if protocol is None or protocol in spare:
            groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
            for r in self.rows(track=track, split=split, metric=metric):
                groups.setdefault((r["track"], r["split"]), []).append(r)
            out += [Section(SPARE_PROTOCOLS[t], s, metric, rows) for (t, s), rows in sorted(groups.items())]
        if protocol not in spare and track is None and split is None:
            by_protocol: dict[str, list[dict[str, Any]]] = {}
            for r in self.result_rows(protocol, result_metric(metric)):
                by_protocol.setdefault(r["protocol"], []).append(r)
            for p in PROTOCOLS if protocol is None else (protocol,):
                if by_protocol.get(p) or published(p) or protocol is not None:
                    out.append(Section(p, None, result_metric(metric), by_protocol.get(p, []), published(p)))
        return out

    def counts(self) -> dict[str, int]:
        with self._connect() as con:
            return {
                t: int(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in (
                    "methods",
                    "submissions",
                    "scene_scores",
                    "image_scores",
                    "protocol_results",
                    "protocol_scene_scores",
                )
            }

    def integrity_ok(self) -> bool:
        with self._connect() as con:
            return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---------------------------------------------------------------------- the whole submit path
def expected_views(bench: Benchmark, split: str) -> dict[str, list[str]]:
    return {scene: [v.name for v in bench.test_views(scene)] for scene in bench.scenes[split]}


def infer_split(bench: Benchmark, path: Path) -> str:
    """The split whose scenes the submission's top-level folders name (dev when it cannot tell)."""
    names: set[str] = set()
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
    elif path.is_file():
        limit = max(max_entries(expected_views(bench, s)) for s in bench.scenes)
        try:  # open_zip checks the listing's size first; read_submission reports what is wrong
            with open_zip(path, max_entries=limit) as zf:
                names = {part for n in zf.namelist() for part in n.split("/")[:2]}
        except (SubmissionError, OSError):
            pass
    hits = {s: len(names & set(bench.scenes[s])) for s in bench.scenes}
    best = max(hits, key=lambda s: hits[s])
    return best if hits[best] else "dev"


def _sha256(path: Path) -> str:
    if path.is_dir():
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_thumbs(bench: Benchmark, sub: Submission) -> dict[tuple[str, str], bytes]:
    """Render thumbnails only: a ground-truth thumbnail would publish the hidden test views."""
    return {
        (scene, tv.name): thumbnail_png(views[tv.name])
        for scene, views in sub.images.items()
        for tv in bench.test_views(scene)
    }


def default_name(method: str, track: int, split: str, path: Path) -> str:
    """``method-trackT-split-time-stem``, the file stem cleaned of control characters and cut to fit."""
    stem = "".join("_" if unicodedata.category(c) in UNSAFE_CATEGORIES else c for c in path.stem)
    return f"{method}-track{track}-{split}-{time.strftime('%Y%m%d-%H%M%S')}-{stem}"[:MAX_NAME_CHARS]


def submit(
    db: str | Path,
    dataset: str | Path,
    path: str | Path,
    method: str,
    track: int,
    split: str | None = None,
    name: str | None = None,
    lpips_weights: str | Path | None = None,
    max_bytes: int = MAX_BYTES,
    info: dict[str, Any] | None = None,
) -> tuple[int, Scores]:
    """Validate, score and store a submission folder or zip; returns (submission id, scores).

    Any problem raises (SubmissionError / ReconInputError) before the database is written.
    """
    check_name("method", method)
    if name is not None:
        check_name("submission", name)
    bench = load_benchmark(dataset)
    path = Path(path)
    split = split or infer_split(bench, path)
    check_track_split(track, split)
    name = name or default_name(method, track, split, path)
    board = Leaderboard(db)
    with board._connect() as con:  # cheap early check; the transaction checks again
        _check_name_free(con, name)
    sub = read_submission(path, expected_views(bench, split), (bench.width, bench.height), max_bytes=max_bytes)
    scores = score_renders(bench, sub.images, lpips_weights)
    thumbs = make_thumbs(bench, sub)
    sid = board.add(
        method, name, track, split, scores, source=str(path), sha256=_sha256(path), thumbs=thumbs, info=info
    )
    return sid, scores


# ---------------------------------------------------------------------- real-data protocol results (results.json)
@dataclass
class Section:
    """One ranking: the rows of one protocol (and split, for SpaRe), ranked by ``metric``; ``published``:
    the protocol's reference rows, shown beside it and never ranked."""

    protocol: str
    split: str | None
    metric: str
    rows: list[dict[str, Any]]
    published: tuple[PublishedRow, ...] = ()

    @property
    def key(self) -> str:
        return self.protocol if self.split is None else f"{self.protocol}-{self.split}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "split": self.split,
            "metric": self.metric,
            "rows": self.rows,
            "published": [p.to_dict() for p in self.published],
        }


@dataclass
class ProtocolResults:
    """A validated results.json of `recon bench run --protocol`: per-scene and mean PSNR/SSIM/LPIPS."""

    protocol: str
    method: str
    per_scene: dict[str, dict[str, float | None]]
    mean: dict[str, float | None]
    lpips_note: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def _number(value: Any, where: str, optional: bool = False) -> float | None:
    """``value`` as a finite float; None only when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReconInputError(f"{where} must be a number, got {type(value).__name__}")
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise ReconInputError(f"{where} is not a finite number ({value if isinstance(value, float) else 'huge'})")
    return out


def _scores(row: Any, where: str) -> dict[str, float | None]:
    """PSNR and SSIM (required) and LPIPS (null when not computed) of one scene or the mean, in range."""
    if not isinstance(row, dict):
        raise ReconInputError(f"{where} must be an object with psnr, ssim and lpips")
    for m in ("psnr", "ssim"):
        if m not in row:
            raise ReconInputError(f"{where} lacks {m}")
    out = {m: _number(row.get(m), f"{where} {m}", optional=m == "lpips") for m in RESULT_METRICS}
    if not -1.0 <= out["ssim"] <= 1.0:
        raise ReconInputError(f"{where} ssim {out['ssim']} is outside [-1, 1]")
    if out["lpips"] is not None and out["lpips"] < 0:
        raise ReconInputError(f"{where} lpips {out['lpips']} is negative")
    return out


def _check_protocol_fields(data: dict[str, Any]) -> str:
    """The protocol a results.json names, checked against what it says it did (dtu3 is not dtu3m)."""
    name = data.get("protocol")
    if name in SPARE_PROTOCOLS.values():
        raise ReconInputError(
            f"protocol {name} is scored on hidden ground truth: submit its renders with `recon leaderboard submit`"
        )
    if not isinstance(name, str) or name not in PROTOCOLS:
        raise ReconInputError(f"unknown protocol {str(name)[:50]!r}; known: {', '.join(PROTOCOLS)}")
    p = PROTOCOLS[name]
    if "input_masks" in data and data["input_masks"] != p.input_masks:
        raise ReconInputError(
            f"says input_masks={data['input_masks']!r}, but {name} runs "
            f"{'with' if p.input_masks else 'without'} input masks"
        )
    if "metric" in data and data["metric"] != p.metric:
        raise ReconInputError(f"says metric {str(data['metric'])[:50]!r}, but {name} scores {p.metric!r}")
    return name


def _parse_results(data: Any) -> ProtocolResults:
    """Validate a decoded results.json; every problem is a one-line ReconInputError (without the path)."""
    if not isinstance(data, dict):
        raise ReconInputError("expected a JSON object (the results.json of `recon bench run --protocol`)")
    protocol = _check_protocol_fields(data)
    method = data.get("method")
    if not isinstance(method, str):
        raise ReconInputError('lacks the method name ("method": a string)')
    check_name("method", method)
    scenes = data.get("scenes")
    if not isinstance(scenes, dict) or not scenes:
        raise ReconInputError('lacks its scenes ("scenes": {name: {psnr, ssim, lpips}}, at least one)')
    if len(scenes) > MAX_RESULT_SCENES:
        raise ReconInputError(f"has {len(scenes)} scenes, more than the limit of {MAX_RESULT_SCENES}")
    per_scene = {check_name("scene", str(k)): _scores(v, f"scene {str(k)[:50]!r}") for k, v in scenes.items()}
    if "mean" not in data:
        raise ReconInputError('lacks the mean over its scenes ("mean")')
    mean = _scores(data["mean"], "mean")
    expect = {m: mean_or_none([row[m] for row in per_scene.values()]) for m in RESULT_METRICS}
    for m in RESULT_METRICS:  # rounding is fine, a mean that is not its scenes' is not
        if (expect[m] is None) != (mean[m] is None) or (
            expect[m] is not None and not math.isclose(expect[m], mean[m], rel_tol=1e-3, abs_tol=1e-4)
        ):
            raise ReconInputError(f"mean {m} {mean[m]} is not the mean of its scenes ({expect[m]})")
    note = data.get("lpips")
    info = {
        k: data[k]
        for k in ("preset", "metric", "input_masks", "published_split", "machine", "total_s", "warnings")
        if k in data
    }
    return ProtocolResults(
        protocol, method, per_scene, expect, note[:MAX_NOTE_CHARS] if isinstance(note, str) else None, info
    )


def read_results(path: str | Path) -> ProtocolResults:
    """Read and validate a results.json; a one-line ReconInputError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ReconInputError("results file not found" if not path.exists() else "not a results file", path)
    try:
        if path.stat().st_size > MAX_RESULTS_BYTES:
            raise ReconInputError(f"is {path.stat().st_size} bytes, more than the limit of {MAX_RESULTS_BYTES}")
        raw = path.read_bytes()
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ReconInputError("is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ReconInputError(f"malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise ReconInputError(f"malformed JSON ({display_text(str(exc).splitlines()[0], 200)})") from None
        except RecursionError:
            raise ReconInputError("malformed JSON (nested too deeply)") from None
        res = _parse_results(data)
    except ReconInputError as exc:
        raise ReconInputError(str(exc), path) from None
    except OSError as exc:
        raise ReconInputError(f"cannot read it ({exc.strerror or exc})", path) from None
    res.sha256 = hashlib.sha256(raw).hexdigest()
    return res


def default_results_name(method: str, protocol: str, path: Path) -> str:
    """``method-protocol-time-folder`` (the results.json's folder: the run's output), cut to fit."""
    folder = "".join("_" if unicodedata.category(c) in UNSAFE_CATEGORIES else c for c in path.resolve().parent.name)
    return f"{method}-{protocol}-{time.strftime('%Y%m%d-%H%M%S')}-{folder}"[:MAX_NAME_CHARS]


def check_results_name(db: str | Path, name: str | None) -> None:
    """Before a long run that ends in :func:`submit_results`: ``name`` (if given) is usable and not taken, and an
    existing database is a leaderboard (a missing one is created at the end, as by any submission)."""
    if name is not None:
        check_name("submission", name)
    if Path(db).exists():
        board = Leaderboard(db)
        if name is not None:
            with board._connect() as con:
                _check_name_free(con, name)


def submit_results(db: str | Path, path: str | Path, name: str | None = None) -> tuple[int, ProtocolResults]:
    """Validate and store a protocol run's results.json; returns (result id, results). A rejected file leaves
    the database untouched."""
    if name is not None:
        check_name("submission", name)
    path = Path(path)
    res = read_results(path)
    name = name or default_results_name(res.method, res.protocol, path)
    rid = Leaderboard(db).add_results(res, name, source=str(path.resolve()))
    return rid, res
