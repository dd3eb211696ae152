"""The browser viewer of `recon view OUT` and `recon reconstruct ... --view`: serve a run on a viser server.

This module picks the host and port (saying so when the asked one is taken), adds the visual hull as the point
layer when the run folder has no points.ply, prints the URL and keeps serving. The parts: ``run_contents``
(what a run folder holds, any representation), ``scene`` (the layers, GUI and live-training hooks),
``layers`` (Gaussians and cameras as viser nodes), ``framing`` (where the browser's camera starts and goes).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from apps.viewer.run_contents import RunContents, load_run
from apps.viewer.scene import Viewer
from recon.errors import ReconInputError

#: The viewer listens here unless told otherwise: viser has no authentication, and the run's photos, cameras and
#: splats must not be open to the network by default.
DEFAULT_HOST = "127.0.0.1"


def _family(host: str) -> socket.AddressFamily:
    """Address family of ``host``; ReconInputError when it is not an address or name of this machine."""
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise ReconInputError(f"--host {host!r} is not a usable address ({exc})") from None


def port_is_free(port: int, host: str = DEFAULT_HOST) -> bool:
    """True when nothing listens on ``port`` (we can bind it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_port(port: int) -> int:
    """``port`` when it is a TCP port number (0 = any free one); ReconInputError otherwise."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ReconInputError(f"--port must be between 0 and 65535, got {port!r}")
    return port


def start_server(port: int = 8080, host: str = DEFAULT_HOST, say: Callable[[str], None] = print) -> Any:
    """A viser server on ``port``, or on the next free port (said out loud) when that one is in use."""
    import viser

    wanted = check_port(port)
    _family(host)
    if wanted and not port_is_free(wanted, host):
        nxt = wanted + 1
        while nxt <= min(65535, wanted + 100) and not port_is_free(nxt, host):
            nxt += 1
        if nxt > min(65535, wanted + 100):
            raise ReconInputError(f"ports {wanted}-{nxt - 1} on {host} are all in use; pick another --port")
        say(f"port {wanted} is in use; using port {nxt} instead")
        port = nxt
    try:
        server = viser.ViserServer(host=host, port=port, verbose=False)
    except OSError as exc:
        raise ReconInputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    actual = server.get_port()
    if port and actual != port:  # lost a race for the port: viser moved on by itself
        say(f"port {port} is in use; using port {actual} instead")
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(
            f"warning: the viewer listens on {host}, without authentication: anyone who can reach this machine "
            f"there can see the run's photos, cameras and reconstruction"
        )
    return server


def url_of(server: Any) -> str:
    """The address to open in a browser."""
    host = server.get_host()
    host = "localhost" if host in ("0.0.0.0", "::", "", "127.0.0.1") else host
    return f"http://[{host}]:{server.get_port()}" if ":" in host else f"http://{host}:{server.get_port()}"


def hull_points(contents: RunContents, n: int = 4000) -> tuple[np.ndarray, np.ndarray] | None:
    """Visual-hull points (coloured from the input images) when the run's source had masks; else None."""
    if contents.masks is None or any(im is None for im in contents.images):
        return None
    from priors.visual_hull import carve_visual_hull

    hull = carve_visual_hull(contents.masks, contents.cameras, resolution=64)
    if hull.is_empty:
        return None
    pts = hull.points(n, seed=0)
    rgb = hull.colors_from_images(pts, list(contents.images), contents.cameras, masks=contents.masks)
    return pts.numpy(), rgb.numpy()


def open_viewer(
    run: str | Path, port: int = 8080, host: str = DEFAULT_HOST, say: Callable[[str], None] = print
) -> Viewer:
    """Load a run folder (clear ReconInputError when missing/broken), serve it, print the URL; returns the Viewer."""
    contents = load_run(run)  # fail before taking a port
    server = start_server(port, host, say=say)
    viewer = Viewer(server)
    show_run_folder(viewer, contents)
    say(f"viewer for {run} at {url_of(server)}")
    return viewer


def show_run_folder(viewer: Viewer, run: str | Path | RunContents) -> None:
    """Show a run folder on an existing viewer (e.g. after live training), with the hull as the point layer."""
    contents = run if isinstance(run, RunContents) else load_run(run)
    points = None if contents.points is not None else hull_points(contents)
    viewer.show_run(contents, points=points)


def start_live(port: int = 8080, host: str = DEFAULT_HOST, say: Callable[[str], None] = print) -> Viewer:
    """A viewer with no scene yet, for streaming training (use ``viewer.progress`` / ``viewer.snapshot``)."""
    server = start_server(port, host, say=say)
    viewer = Viewer(server)
    say(f"live viewer at {url_of(server)} (training progress streams here)")
    return viewer


def serve_forever(viewer: Viewer, say: Callable[[str], None] = print) -> None:
    """Block until Ctrl+C, then stop the server."""
    say("press Ctrl+C to stop the viewer")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.server.stop()
