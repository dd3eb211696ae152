"""`recon leaderboard serve`: a small stdlib web page over the leaderboard database.

Pages: ``/`` one sortable table per track and split (click a column header; inline JS, no CDN), ranked by
``?metric=`` (PSNR-M by default); ``/submission/<id>`` the per-scene scores and, per scene
(``?scene=<name>``), each test view's render with its scores; ``/thumb/<id>/<scene>/<view>/render.png`` the
render thumbnails stored in the database; ``/api/rows`` the ranking as JSON. Read-only. The hidden ground
truth is never served.
"""
from __future__ import annotations

import html
import json
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlparse

from recon.bench.leaderboard import DEFAULT_METRIC, Leaderboard
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
    links = " ".join(f'<a href="/?metric={m}">{LABELS[m]}</a>' for m in METRICS)
    parts = [f"<h1>Sparse-view reconstruction leaderboard</h1><p>Ranked by <b>{LABELS[metric]}</b>. Rank by: {links}."
             " Click a column header to sort.</p>"]
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["track"], r["split"]), []).append(r)
    if not groups:
        parts.append("<p id='empty'>No submissions yet.</p>")
    for (track, split), grp in sorted(groups.items()):
        tid = f"track{track}-{split}"
        parts.append(f"<h2>{_e(TRACK_NAMES.get(track, f'Track {track}'))}, {_e(split)} split</h2>")
        parts.append(
            f'<table class="sortable leaderboard" id="{tid}" data-track="{track}" data-split="{_e(split)}"><thead><tr>'
            '<th class="sortable" data-type="num" data-key="rank">#</th>'
            '<th class="sortable t" data-type="text" data-key="method">Method</th>'
            '<th class="sortable t" data-type="text" data-key="name">Submission</th>'
            f'{_metric_heads()}<th class="sortable" data-type="num" data-key="created">Date</th></tr></thead><tbody>')
        for r in grp:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created"]))
            parts.append(
                f'<tr data-id="{r["id"]}"><td data-v="{r["rank"]}">{r["rank"]}</td><td class="t">{_e(r["method"])}</td>'
                f'<td class="t"><a href="/submission/{r["id"]}">{_e(r["name"])}</a></td>{_metric_cells(r)}'
                f'<td data-v="{r["created"]!r}">{when}</td></tr>')
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
             f'<p>Method <b>{_e(sub["method"])}</b>, track {sub["track"]}, {_e(sub["split"])} split, '
             f'{sub["n_scenes"]} scenes, {sub["n_images"]} images.</p>']
    if sub.get("lpips_note"):
        parts.append(f"<p class='note'>{_e(sub['lpips_note'])}</p>")
    parts.append('<h2>Per scene</h2><table class="sortable" id="scenes"><thead><tr>'
                 f'<th class="sortable t" data-type="text" data-key="scene">Scene</th>{_metric_heads()}</tr></thead><tbody>')
    for r in board.scene_rows(sid):
        link = f'/submission/{sid}?scene={quote(r["scene"])}'
        parts.append(f'<tr><td class="t"><a href="{_e(link)}">{_e(r["scene"])}</a></td>{_metric_cells(r)}</tr>')
    parts.append("</tbody></table>")
    if scene is not None:
        parts.append(f'<h2>Scene {_e(scene)}</h2><table class="sortable" id="views"><thead><tr>'
                     '<th class="sortable t" data-type="text" data-key="view">View</th><th>Render</th>'
                     f'{_metric_heads()}</tr></thead><tbody>')
        for r in board.image_rows(sid, scene):
            base = f"/thumb/{sid}/{quote(r['scene'])}/{quote(r['view'])}"
            parts.append(f'<tr><td class="t">{_e(r["view"])}</td><td><img src="{_e(base)}/render.png" alt="render"></td>'
                         f'{_metric_cells(r)}</tr>')
        parts.append("</tbody></table>")
    return _page(sub["name"], "".join(parts))


def make_handler(board: Leaderboard) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``board``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "recon-leaderboard/1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet by default
            pass

        def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            url = urlparse(self.path)
            q = parse_qs(url.query)
            try:
                if url.path == "/":
                    metric = q.get("metric", [DEFAULT_METRIC])[0]
                    return self._send(200, index_page(board, metric))
                if url.path == "/api/rows":
                    metric = q.get("metric", [DEFAULT_METRIC])[0]
                    return self._send(200, json.dumps(board.rows(metric=metric)).encode(), "application/json")
                m = re.fullmatch(r"/submission/(\d+)", url.path)
                if m:
                    page = submission_page(board, int(m.group(1)), q.get("scene", [None])[0])
                    return self._send(200, page) if page else self._send(404, b"no such submission")
                m = re.fullmatch(r"/thumb/(\d+)/([^/]+)/([^/]+)/render\.png", url.path)
                if m:
                    data = board.thumbnail(int(m.group(1)), unquote(m.group(2)), unquote(m.group(3)))
                    return self._send(200, data, "image/png") if data else self._send(404, b"no thumbnail")
                return self._send(404, b"not found")
            except ReconInputError as exc:
                return self._send(400, str(exc).encode())

    return Handler


def make_server(db: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A threaded HTTP server over the database at ``db`` (port 0 picks a free port: see server.server_port)."""
    db = Path(db)
    if not db.exists():
        raise ReconInputError("leaderboard database not found (submit something first)", db)
    return ThreadingHTTPServer((host, port), make_handler(Leaderboard(db)))


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
