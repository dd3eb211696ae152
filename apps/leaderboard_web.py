"""`recon leaderboard serve`: a small stdlib web page over the leaderboard database.

Pages: ``/`` one sortable table per track and split (click a column header; inline JS, no CDN), ranked by
``?metric=`` (PSNR-M by default); ``/submission/<id>`` the per-scene scores and, per scene
(``?scene=<name>``), each test view's render with its scores; ``/thumb/<id>/<scene>/<view>/render.png`` the
render thumbnails stored in the database; ``/api/rows`` the ranking as JSON. Read-only.

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlparse

from recon.bench.leaderboard import DEFAULT_METRIC, INT64_MAX, Leaderboard
from recon.bench.scoring import METRICS
from recon.errors import ReconInputError

LABELS = {"psnr_m": "PSNR-M", "psnr": "PSNR", "ssim_m": "SSIM-M", "ssim": "SSIM", "lpips_m": "LPIPS-M", "lpips": "LPIPS"}
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
CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
       f"script-src 'sha256-{base64.b64encode(hashlib.sha256(SORT_JS.encode()).digest()).decode()}'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" if metric.startswith("psnr") else f"{v:.4f}"


def _metric_cells(row: dict[str, Any]) -> str:
    return "".join(f'<td data-v="{"" if row.get(m) is None else repr(float(row[m]))}">{_fmt(row.get(m), m)}</td>'
                   for m in METRICS)


def _metric_heads() -> str:
    return "".join(f'<th class="sortable" data-type="num" data-key="{m}">{LABELS[m]}</th>' for m in METRICS)


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{CSS}</style>"
            f"</head><body>{body}<script>{SORT_JS}</script></body></html>").encode("utf-8")


def index_page(board: Leaderboard, metric: str = DEFAULT_METRIC) -> bytes:
    """The leaderboard: one ranked, sortable table per (track, split)."""
    rows = board.rows(metric=metric)
    links = " ".join(f'<a href="/?metric={_e(m)}">{_e(LABELS[m])}</a>' for m in METRICS)
    parts = [f"<h1>Sparse-view reconstruction leaderboard</h1><p>Ranked by <b>{_e(LABELS[metric])}</b>. Rank by: {links}."
             " Click a column header to sort.</p>"]
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["track"], r["split"]), []).append(r)
    if not groups:
        parts.append("<p id='empty'>No submissions yet.</p>")
    for (track, split), grp in sorted(groups.items()):
        tid = _e(f"track{track}-{split}")
        parts.append(f"<h2>{_e(TRACK_NAMES.get(track, f'Track {track}'))}, {_e(split)} split</h2>")
        parts.append(
            f'<table class="sortable leaderboard" id="{tid}" data-track="{_e(track)}" data-split="{_e(split)}"><thead><tr>'
            '<th class="sortable" data-type="num" data-key="rank">#</th>'
            '<th class="sortable t" data-type="text" data-key="method">Method</th>'
            '<th class="sortable t" data-type="text" data-key="name">Submission</th>'
            f'{_metric_heads()}<th class="sortable" data-type="num" data-key="created">Date</th></tr></thead><tbody>')
        for r in grp:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created"]))
            parts.append(
                f'<tr data-id="{int(r["id"])}"><td data-v="{r["rank"]}">{r["rank"]}</td><td class="t">{_e(r["method"])}</td>'
                f'<td class="t"><a href="/submission/{int(r["id"])}">{_e(r["name"])}</a></td>{_metric_cells(r)}'
                f'<td data-v="{float(r["created"])!r}">{when}</td></tr>')
        parts.append("</tbody></table>")
        notes = {r["lpips_note"] for r in grp if r.get("lpips_note")}
        for n in sorted(notes):
            parts.append(f"<p class='note'>{_e(n)}</p>")
    return _page("Leaderboard", "".join(parts))


def submission_page(board: Leaderboard, sid: int, scene: str | None = None) -> bytes | None:
    """Per-scene scores of a submission; with ``scene``, every test view's render and scores (no ground truth:
    it is the hidden test set)."""
    sub = board.submission(sid)
    if sub is None:
        return None
    parts = [f'<p><a href="/">&larr; leaderboard</a></p><h1>{_e(sub["name"])}</h1>'
             f'<p>Method <b>{_e(sub["method"])}</b>, track {_e(sub["track"])}, {_e(sub["split"])} split, '
             f'{_e(sub["n_scenes"])} scenes, {_e(sub["n_images"])} images.</p>']
    if sub.get("lpips_note"):
        parts.append(f"<p class='note'>{_e(sub['lpips_note'])}</p>")
    parts.append('<h2>Per scene</h2><table class="sortable" id="scenes"><thead><tr>'
                 f'<th class="sortable t" data-type="text" data-key="scene">Scene</th>{_metric_heads()}</tr></thead><tbody>')
    for r in board.scene_rows(sid):
        link = f'/submission/{sid}?scene={quote(r["scene"], safe="")}'
        parts.append(f'<tr><td class="t"><a href="{_e(link)}">{_e(r["scene"])}</a></td>{_metric_cells(r)}</tr>')
    parts.append("</tbody></table>")
    if scene is not None:
        parts.append(f'<h2>Scene {_e(scene)}</h2><table class="sortable" id="views"><thead><tr>'
                     '<th class="sortable t" data-type="text" data-key="view">View</th><th>Render</th>'
                     f'{_metric_heads()}</tr></thead><tbody>')
        for r in board.image_rows(sid, scene):
            base = f"/thumb/{sid}/{quote(r['scene'], safe='')}/{quote(r['view'], safe='')}"
            parts.append(f'<tr><td class="t">{_e(r["view"])}</td><td><img src="{_e(base)}/render.png" alt="render"></td>'
                         f'{_metric_cells(r)}</tr>')
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

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            self.connection.settimeout(timeout)  # the request is in: the full timeout again for the answer
            url = urlparse(self.path)
            q = parse_qs(url.query)
            api = url.path.startswith("/api/")
            try:
                if url.path == "/":
                    return self._html(index_page(board, q.get("metric", [DEFAULT_METRIC])[0]))
                if url.path == "/api/rows":
                    rows = board.rows(metric=q.get("metric", [DEFAULT_METRIC])[0])
                    return self._send(200, _json(rows), "application/json")
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


def make_server(db: str | Path, host: str = "127.0.0.1", port: int = 8765,
                timeout: float | None = REQUEST_TIMEOUT_S) -> ThreadingHTTPServer:
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
