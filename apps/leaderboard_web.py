"""`recon leaderboard serve`: a small stdlib web page over the leaderboard database.

Pages: ``/`` one section per protocol (``?protocol=`` shows one): a sortable ranking (click a column header;
inline JS, no CDN) per SpaRe track and split or per real-data protocol, ranked by ``?metric=`` (PSNR-M by
default; a protocol's own PSNR for real-data protocols), each real-data protocol followed by its published
figures as labelled reference rows outside the ranking; ``/submission/<id>`` the per-scene scores and, per scene
(``?scene=<name>``), each test view's render with its scores; ``/result/<id>`` a protocol result's per-scene
scores; ``/thumb/<id>/<scene>/<view>/render.png`` the render thumbnails stored in the database; ``/api/rows``
(SpaRe), ``/api/results`` (real-data protocols) and ``/api/published`` as JSON. Read-only.

Hostile input: every string from the database or the URL is HTML-escaped; errors are plain text (JSON under
``/api/``) with ``nosniff``; HTML pages carry a Content-Security-Policy that allows only our own inline script
(by hash). The hidden ground truth is never served. A request must arrive whole within a timeout, so
half-sent or dripped requests cannot hold the server's threads; the listen backlog absorbs bursts of clients.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import socket
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

from recon.bench.leaderboard import (
    ALL_PROTOCOLS,
    DEFAULT_METRIC,
    INT64_MAX,
    RESULT_METRICS,
    Leaderboard,
    Section,
    protocol_summary,
    result_metric,
)
from recon.bench.protocols import PROTOCOLS
from recon.bench.published import LABEL as PUBLISHED_LABEL
from recon.bench.published import PUBLISHED, SCENES_NOTE
from recon.bench.scoring import METRICS
from recon.errors import ReconInputError

LABELS = {
    "psnr_m": "PSNR-M",
    "psnr": "PSNR",
    "ssim_m": "SSIM-M",
    "ssim": "SSIM",
    "lpips_m": "LPIPS-M",
    "lpips": "LPIPS",
}
TRACK_NAMES = {1: "Track 1 (3 input views)", 2: "Track 2 (9 input views)"}

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td.t,th.t{text-align:left}
th.sortable{cursor:pointer;background:#f3f3f3;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
img{image-rendering:auto;display:block}
.note{color:#a60}
table.reference{color:#555;font-style:italic}
h3.reference{font-size:1em;margin:.5em 0 .2em} p.source{color:#555;margin:.2em 0}
section{margin-bottom:2em}
"""

# Sort a table's rows by the clicked column: numbers numerically (empty cells last), text alphabetically.
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th.sortable').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var num = th.dataset.type === 'num';
      rows.sort(function (a, b) {
        var x = a.cells[idx].dataset.v !== undefined ? a.cells[idx].dataset.v : a.cells[idx].textContent;
        var y = b.cells[idx].dataset.v !== undefined ? b.cells[idx].dataset.v : b.cells[idx].textContent;
        if (num) {
          var fx = x === '' ? NaN : parseFloat(x), fy = y === '' ? NaN : parseFloat(y);
          if (isNaN(fx) && isNaN(fy)) return 0;
          if (isNaN(fx)) return 1;
          if (isNaN(fy)) return -1;
          return asc ? fx - fy : fy - fx;
        }
        return asc ? x.localeCompare(y) : y.localeCompare(x);
      });
      rows.forEach(function (r) { body.appendChild(r); });
      table.dataset.sortedBy = th.dataset.key + (asc ? ':asc' : ':desc');
    });
  });
});
"""

REQUEST_TIMEOUT_S = 10.0  # a request not received whole within this many seconds is dropped
REQUEST_QUEUE_SIZE = 128  # listen backlog (socketserver's default of 5 refused bursts of clients)
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{base64.b64encode(hashlib.sha256(SORT_JS.encode()).digest()).decode()}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" if metric.startswith("psnr") else f"{v:.4f}"


def _metric_cells(row: dict[str, Any], metrics: tuple[str, ...] = METRICS) -> str:
    return "".join(
        f'<td data-v="{"" if row.get(m) is None else repr(float(row[m]))}">{_fmt(row.get(m), m)}</td>' for m in metrics
    )


def _metric_heads(metrics: tuple[str, ...] = METRICS) -> str:
    return "".join(f'<th class="sortable" data-type="num" data-key="{m}">{LABELS[m]}</th>' for m in metrics)


def _page(title: str, body: str) -> bytes:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{CSS}</style>"
        f"</head><body>{body}<script>{SORT_JS}</script></body></html>"
    ).encode()


def _when(created: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(created))


def _query(metric: str, protocol: str | None) -> str:
    return f"?metric={quote(metric, safe='')}" + ("" if protocol is None else f"&protocol={quote(protocol, safe='')}")


def _nav(metric: str, protocol: str | None, shown: list[str]) -> str:
    """Rank-by links (keeping the protocol) and the protocol selector (keeping the metric)."""
    ranks = " ".join(f'<a href="/{_e(_query(m, protocol))}">{_e(LABELS[m])}</a>' for m in METRICS)
    protos = " ".join(
        f'<a href="/{_e(_query(metric, p))}"{" aria-current=page" if p == protocol else ""}>{_e(p)}</a>'
        for p in ALL_PROTOCOLS
        if p in shown or p == protocol
    )
    return (
        f"<p>Ranked by <b>{_e(LABELS[metric])}</b> (real-data protocols: their own "
        f"{_e(LABELS[result_metric(metric)])}). Rank by: {ranks}. Click a column header to sort.</p>"
        f'<nav id="protocols"><p>One ranking per protocol, never mixed. Protocol: '
        f'<a href="/{_e(_query(metric, None))}"{" aria-current=page" if protocol is None else ""}>all</a> {protos}'
        "</p></nav>"
    )


def _spare_section(sec: Section) -> str:
    """A SpaRe track and split: renders scored here against the hidden ground truth."""
    track = 1 if sec.protocol == "spare3" else 2
    split = sec.split or ""
    parts = [
        f"<h2>{_e(sec.protocol)}: {_e(TRACK_NAMES.get(track, f'Track {track}'))}, {_e(split)} split</h2>",
        f'<table class="sortable leaderboard" id="{_e(f"track{track}-{split}")}" data-track="{_e(track)}" '
        f'data-split="{_e(split)}" data-protocol="{_e(sec.protocol)}"><thead><tr>'
        '<th class="sortable" data-type="num" data-key="rank">#</th>'
        '<th class="sortable t" data-type="text" data-key="method">Method</th>'
        '<th class="sortable t" data-type="text" data-key="name">Submission</th>'
        f'{_metric_heads()}<th class="sortable" data-type="num" data-key="created">Date</th></tr></thead><tbody>',
    ]
    for r in sec.rows:
        parts.append(
            f'<tr data-id="{int(r["id"])}"><td data-v="{r["rank"]}">{r["rank"]}</td>'
            f'<td class="t">{_e(r["method"])}</td>'
            f'<td class="t"><a href="/submission/{int(r["id"])}">{_e(r["name"])}</a></td>{_metric_cells(r)}'
            f'<td data-v="{float(r["created"])!r}">{_when(r["created"])}</td></tr>'
        )
    parts.append("</tbody></table>")
    return "".join(parts) + _notes(sec.rows)


def _notes(rows: list[dict[str, Any]]) -> str:
    notes = sorted({r["lpips_note"] for r in rows if r.get("lpips_note")})
    return "".join(f"<p class='note'>{_e(n)}</p>" for n in notes)


def _protocol_heading(name: str) -> str:
    return (
        f"<h2>{_e(protocol_summary(name))}</h2><p>Split: {_e(PROTOCOLS[name].published)}. Results are scored "
        "by the submitter's own `recon bench run --protocol` (results.json), on the scenes listed.</p>"
    )


def _result_section(sec: Section) -> str:
    """A real-data protocol: its submitted results ranked, then its published figures (not ranked)."""
    parts = [_protocol_heading(sec.protocol)]
    if sec.rows:
        parts.append(
            f'<table class="sortable leaderboard results" id="{_e(f"protocol-{sec.protocol}")}" '
            f'data-protocol="{_e(sec.protocol)}"><thead><tr>'
            '<th class="sortable" data-type="num" data-key="rank">#</th>'
            '<th class="sortable t" data-type="text" data-key="method">Method</th>'
            '<th class="sortable t" data-type="text" data-key="name">Submission</th>'
            '<th class="sortable t" data-type="text" data-key="scenes">Scenes</th>'
            f'{_metric_heads(RESULT_METRICS)}<th class="sortable" data-type="num" data-key="created">Date</th>'
            "</tr></thead><tbody>"
        )
        for r in sec.rows:
            parts.append(
                f'<tr data-result-id="{int(r["id"])}"><td data-v="{r["rank"]}">{r["rank"]}</td>'
                f'<td class="t">{_e(r["method"])}</td>'
                f'<td class="t"><a href="/result/{int(r["id"])}">{_e(r["name"])}</a></td>'
                f'<td class="t">{_e(", ".join(r["scenes"]))}</td>{_metric_cells(r, RESULT_METRICS)}'
                f'<td data-v="{float(r["created"])!r}">{_when(r["created"])}</td></tr>'
            )
        parts.append("</tbody></table>")
    else:
        parts.append(f"<p class='empty'>No {_e(sec.protocol)} results submitted yet.</p>")
    return "".join(parts) + _notes(sec.rows) + _published_table(sec)


def _published_table(sec: Section) -> str:
    """Reference rows: published dataset averages, each labelled as such, outside the ranking."""
    if not sec.published:
        return ""
    first = sec.published[0]
    rows = "".join(
        f'<tr class="published"><td class="t">{_e(p.method)}</td><td>{_e(p.psnr)}</td>'
        f'<td class="t">{_e(p.label)}</td></tr>'
        for p in sec.published
    )
    return (
        f"<h3 class='reference'>{_e(PUBLISHED_LABEL)}: reference rows, not ranked</h3>"
        f"<p class='source'>{_e(first.setting)}; source: {_e(first.source)}.</p>"
        f'<table class="reference" id="{_e(f"published-{sec.protocol}")}" data-protocol="{_e(sec.protocol)}">'
        '<thead><tr><th class="t">Method</th><th>PSNR</th><th class="t">Kind</th></tr></thead>'
        f"<tbody>{rows}</tbody></table><p class='note scenes-note'>{_e(SCENES_NOTE)}</p>"
    )


def index_page(board: Leaderboard, metric: str = DEFAULT_METRIC, protocol: str | None = None) -> bytes:
    """The leaderboard: one ranked, sortable table per protocol (and split, for SpaRe), each real-data protocol
    followed by its published reference rows."""
    everything = board.sections(None, metric)
    sections = everything if protocol is None else board.sections(protocol, metric)
    parts = [
        "<h1>Sparse-view reconstruction leaderboard</h1>",
        _nav(metric, protocol, [s.protocol for s in everything]),
    ]
    if not any(s.rows for s in sections):
        parts.append("<p id='empty'>No submissions yet.</p>")
    for sec in sections:
        body = _spare_section(sec) if sec.split is not None else _result_section(sec)
        parts.append(f'<section id="{_e(f"p-{sec.key}")}" data-protocol="{_e(sec.protocol)}">{body}</section>')
    return _page("Leaderboard", "".join(parts))


def result_page(board: Leaderboard, rid: int) -> bytes | None:
    """Per-scene scores of a protocol result, as its results.json reported them."""
    res = board.result(rid)
    if res is None:
        return None
    parts = [
        f'<p><a href="/">&larr; leaderboard</a></p><h1>{_e(res["name"])}</h1>'
        f"<p>Method <b>{_e(res['method'])}</b>, protocol {_e(res['protocol'])}, {_e(res['n_scenes'])} scenes, "
        f"submitted {_when(res['created'])}. Scored by the submitter's run (results.json) on these scenes.</p>"
    ]
    if res.get("lpips_note"):
        parts.append(f"<p class='note'>{_e(res['lpips_note'])}</p>")
    warnings = res["info"].get("warnings")
    for w in (warnings if isinstance(warnings, list) else [])[:20]:
        parts.append(f"<p class='note warning'>Warning from the run: {_e(str(w)[:500])}</p>")
    parts.append(
        '<h2>Per scene</h2><table class="sortable" id="scenes"><thead><tr>'
        '<th class="sortable t" data-type="text" data-key="scene">Scene</th>'
        f"{_metric_heads(RESULT_METRICS)}</tr></thead><tbody>"
    )
    for r in board.result_scene_rows(rid):
        parts.append(f'<tr><td class="t">{_e(r["scene"])}</td>{_metric_cells(r, RESULT_METRICS)}</tr>')
    parts.append("</tbody></table>")
    return _page(res["name"], "".join(parts))


def submission_page(board: Leaderboard, sid: int, scene: str | None = None) -> bytes | None:
    """Per-scene scores of a submission; with ``scene``, every test view's render and scores (no ground truth:
    it is the hidden test set)."""
    sub = board.submission(sid)
    if sub is None:
        return None
    parts = [
        f'<p><a href="/">&larr; leaderboard</a></p><h1>{_e(sub["name"])}</h1>'
        f"<p>Method <b>{_e(sub['method'])}</b>, track {_e(sub['track'])}, {_e(sub['split'])} split, "
        f"{_e(sub['n_scenes'])} scenes, {_e(sub['n_images'])} images.</p>"
    ]
    if sub.get("lpips_note"):
        parts.append(f"<p class='note'>{_e(sub['lpips_note'])}</p>")
    parts.append(
        '<h2>Per scene</h2><table class="sortable" id="scenes"><thead><tr>'
        '<th class="sortable t" data-type="text" data-key="scene">Scene</th>'
        f"{_metric_heads()}</tr></thead><tbody>"
    )
    for r in board.scene_rows(sid):
        link = f"/submission/{sid}?scene={quote(r['scene'], safe='')}"
        parts.append(f'<tr><td class="t"><a href="{_e(link)}">{_e(r["scene"])}</a></td>{_metric_cells(r)}</tr>')
    parts.append("</tbody></table>")
    if scene is not None:
        parts.append(
            f'<h2>Scene {_e(scene)}</h2><table class="sortable" id="views"><thead><tr>'
            '<th class="sortable t" data-type="text" data-key="view">View</th><th>Render</th>'
            f"{_metric_heads()}</tr></thead><tbody>"
        )
        for r in board.image_rows(sid, scene):
            base = f"/thumb/{sid}/{quote(r['scene'], safe='')}/{quote(r['view'], safe='')}"
            parts.append(
                f'<tr><td class="t">{_e(r["view"])}</td>'
                f'<td><img src="{_e(base)}/render.png" alt="render"></td>'
                f"{_metric_cells(r)}</tr>"
            )
        parts.append("</tbody></table>")
    return _page(sub["name"], "".join(parts))


def _json(obj: Any) -> bytes:
    """JSON with <, > and & as \\u escapes: the same data, but inert even if something renders it as HTML."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def _submission_id(text: str) -> int | None:
    """The id in a URL, or None when it cannot be one (SQLite integers are 64-bit)."""
    return int(text) if len(text) <= 19 and int(text) <= INT64_MAX else None


class _DeadlineReader(io.RawIOBase):
    """Socket reads that fail once ``deadline`` passes: a per-recv timeout alone lets a client drip one byte
    at a time for ever."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")
        self.sock.settimeout(left)
        return self.sock.recv_into(buf)


def make_handler(board: Leaderboard, timeout: float | None = REQUEST_TIMEOUT_S) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``board``; ``timeout``: seconds to receive a request (and per send)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "recon-leaderboard/1"

        def setup(self) -> None:
            super().setup()  # applies self.timeout to the socket
            if timeout is not None:
                self.rfile = io.BufferedReader(_DeadlineReader(self.connection, time.monotonic() + timeout))

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet by default
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")  # no browser may read text or JSON as HTML
            if ctype.startswith("text/html"):
                self.send_header("Content-Security-Policy", CSP)
            self.end_headers()
            self.wfile.write(body)

        def _html(self, body: bytes) -> None:
            self._send(200, body, "text/html; charset=utf-8")

        def _error(self, status: int, message: str, as_json: bool = False) -> None:
            if as_json:
                self._send(status, _json({"error": message}), "application/json")
            else:
                self._send(status, (message + "\n").encode("utf-8", "replace"), "text/plain; charset=utf-8")

        def do_GET(self) -> None:  # http.server's name
            self.connection.settimeout(timeout)  # the request is in: the full timeout again for the answer
            url = urlparse(self.path)
            q = parse_qs(url.query)
            api = url.path.startswith("/api/")
            try:
                metric = q.get("metric", [DEFAULT_METRIC])[0]
                protocol = q.get("protocol", [None])[0]
                if url.path == "/":
                    return self._html(index_page(board, metric, protocol))
                if url.path == "/api/rows":
                    return self._send(200, _json(board.rows(metric=metric)), "application/json")
                if url.path == "/api/results":
                    rows = board.result_rows(protocol, result_metric(metric))
                    return self._send(200, _json(rows), "application/json")
                if url.path == "/api/published":
                    rows = [r.to_dict() for rows in PUBLISHED.values() for r in rows]
                    return self._send(200, _json(rows), "application/json")
                m = re.fullmatch(r"/result/(\d+)", url.path)
                if m:
                    rid = _submission_id(m.group(1))
                    page = None if rid is None else result_page(board, rid)
                    return self._html(page) if page else self._error(404, "no such result")
                m = re.fullmatch(r"/submission/(\d+)", url.path)
                if m:
                    sid = _submission_id(m.group(1))
                    page = None if sid is None else submission_page(board, sid, q.get("scene", [None])[0])
                    return self._html(page) if page else self._error(404, "no such submission")
                m = re.fullmatch(r"/thumb/(\d+)/([^/]+)/([^/]+)/render\.png", url.path)
                if m:
                    sid = _submission_id(m.group(1))
                    data = None if sid is None else board.thumbnail(sid, unquote(m.group(2)), unquote(m.group(3)))
                    return self._send(200, data, "image/png") if data else self._error(404, "no thumbnail")
                return self._error(404, "not found", api)
            except ReconInputError as exc:
                return self._error(400, str(exc), api)
            except (ConnectionError, TimeoutError):  # the client went away or stopped reading
                self.close_connection = True
            except Exception as exc:  # one bad request must not kill the connection without an answer
                sys.stderr.write(f"leaderboard: {self.command} {url.path!r} failed: {exc!r}\n")
                return self._error(500, "internal error", api)

    Handler.timeout = timeout  # StreamRequestHandler.setup applies it to the connection's socket
    return Handler


class LeaderboardServer(ThreadingHTTPServer):
    """A threaded HTTP server with a listen backlog sized for bursts of clients."""

    request_queue_size = REQUEST_QUEUE_SIZE


def make_server(
    db: str | Path, host: str = "127.0.0.1", port: int = 8765, timeout: float | None = REQUEST_TIMEOUT_S
) -> ThreadingHTTPServer:
    """A threaded HTTP server over the database at ``db`` (port 0 picks a free port: see server.server_port).

    ``timeout``: seconds a connection may stay silent before it is dropped. Bad ports, ports in use and
    unusable databases raise a one-line ReconInputError.
    """
    db = Path(db)
    if not db.exists():
        raise ReconInputError("leaderboard database not found (submit something first)", db)
    if not 0 <= port <= 65535:
        raise ReconInputError(f"port must be 0-65535 (0 picks a free one), got {port}")
    board = Leaderboard(db)
    try:
        return LeaderboardServer((host, port), make_handler(board, timeout))
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ReconInputError(f"cannot listen on {host}:{port} ({reason})") from None


def serve(db: str | Path, host: str = "127.0.0.1", port: int = 8765, say: Callable[[str], None] = print) -> None:
    """Serve until interrupted; ``say`` gets the page's address once the socket is bound."""
    server = make_server(db, host, port)
    say(f"serving http://{host}:{server.server_port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
