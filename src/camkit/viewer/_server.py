"""The viewer's HTTP server: the standard library's ``ThreadingHTTPServer``, read-only, local by default.

Routes (nothing else exists; every other path, ``..`` in any spelling included, is a 404):

====================  ===========================================================================
``/``                 the page (``camkit/viz/static/index.html``)
``/viewer.js``,       the page's script and stylesheet (package data, from a fixed table: no URL
``/viewer.css``       ever names a file)
``/data/info.js``     the source's summary as a script (``window.CAMKIT_VIEW``), fresh every load
``/api/info``         the same as JSON
``/api/records``      one page of records: ``offset``, ``limit``, ``q``, ``show``, ``label``,
                      ``pred``, ``sort`` (``name``, ``confidence``, ``metric``), ``metric``, ``order``
``/api/image``        ``?key=``: the input image as PNG
``/api/map``          ``?key=&method=&k=`` (``&layer=``: one layer's map): a heatmap as PNG
``/api/agreement``    ``?sample=N``: the methods' pairwise Spearman correlation over N records
====================  ===========================================================================
"""

from __future__ import annotations

import json
import math
import socket
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from camkit.viewer._source import Filters, Source, spearman
from camkit.viz.page import script_json, static_file

__all__ = ["STATIC", "ViewerServer", "agreement", "api_url", "make_server"]

#: the page's files: URL path → (package file, content type)
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/viewer.css": ("viewer.css", "text/css; charset=utf-8"),
}
#: what the page may load: only this server (no network, no inline script)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: records in one agreement sample by default, and at most
SAMPLE, MAX_SAMPLE = 64, 1000


def api_url(path: str, **params: Any) -> str:
    """A URL of the API with its query string quoted.

    Example:
        >>> api_url("/api/map", key="a b/<x>.png", method="gradcam", k=0)
        '/api/map?key=a+b%2F%3Cx%3E.png&method=gradcam&k=0'
    """
    return f"{path}?{urllib.parse.urlencode(params)}"


def agreement(source: Source, sample: int = SAMPLE) -> dict[str, Any]:
    """Pairwise Spearman rank correlation of the methods' maps, averaged over a sample of records.

    For each sampled record, each pair of methods' maps of the first explained class (at a common
    resolution) gets ρ; the table holds the mean over the records and how many entered it
    (constant maps, whose ρ is undefined, are left out).

    Args:
        source: the store or folder.
        sample: how many records, spread evenly over the store in name order.

    Returns:
        ``{"methods": [...], "rho": [[...]], "n": [[...]], "sample": int}``; ``rho[i][j]`` is
        ``None`` where no record gave a value.
    """
    methods = source.methods
    size = len(methods)
    sums = [[0.0] * size for _ in range(size)]
    counts = [[0] * size for _ in range(size)]
    keys = source.sample_keys(sample)
    for key in keys:
        maps = source.maps(key)
        if maps is None:
            continue
        for i, a in enumerate(methods):
            for j in range(i, size):
                b = methods[j]
                if a not in maps or b not in maps:
                    continue
                rho = 1.0 if i == j else spearman(maps[a], maps[b])
                if math.isnan(rho):
                    continue
                for x, y in ((i, j), (j, i)) if i != j else ((i, i),):
                    sums[x][y] += rho
                    counts[x][y] += 1
    rho_table = [[sums[i][j] / counts[i][j] if counts[i][j] else None for j in range(size)] for i in range(size)]
    return {"methods": methods, "rho": rho_table, "n": counts, "sample": len(keys)}


class ViewerServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that knows its source and caches the agreement tables.

    Args:
        address: ``(host, port)``; port 0 picks a free one.
        source: what to show.
    """

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int], source: Source) -> None:
        self.source = source
        self.agreements: dict[tuple[int, int], dict[str, Any]] = {}
        self.agreement_lock = threading.Lock()
        if ":" in address[0]:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, ViewerHandler)

    @property
    def url(self) -> str:
        """The page's address (``http://127.0.0.1:PORT/``)."""
        address, port = self.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else str(address)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def agreement(self, sample: int) -> dict[str, Any]:
        """:func:`agreement` cached per sample size and record count (new records: a new table)."""
        key = (sample, self.source.info()["records"])
        with self.agreement_lock:
            if key not in self.agreements:
                self.agreements[key] = agreement(self.source, sample)
            return self.agreements[key]


def _int(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    text = (query.get(name) or [""])[0]
    try:
        value = int(text)
    except ValueError:
        return default
    return max(low, min(high, value))


def with_urls(record: dict[str, Any], methods: list[str], layers: list[str] | None = None) -> dict[str, Any]:
    """A record summary with the URLs of its image and maps (the page builds no URL itself).

    With ``layers``, ``layer_maps`` holds the URLs of each layer's maps too (layer → method → URLs).

    Example:
        >>> with_urls({"key": "a.png", "targets": [[3, "x"]]}, ["gradcam"])["maps"]
        {'gradcam': ['/api/map?key=a.png&method=gradcam&k=0']}
        >>> with_urls({"key": "a.png", "targets": []}, ["gradcam"], ["layer4"])["layer_maps"]
        {'layer4': {'gradcam': ['/api/map?key=a.png&method=gradcam&k=0&layer=layer4']}}
    """
    key = record["key"]
    count = max(1, len(record["targets"]))

    def urls(layer: str) -> dict[str, list[str]]:
        extra = {"layer": layer} if layer else {}
        return {m: [api_url("/api/map", key=key, method=m, k=k, **extra) for k in range(count)] for m in methods}

    out = {**record, "image": api_url("/api/image", key=key), "maps": urls("")}
    if layers:
        out["layer_maps"] = {layer: urls(layer) for layer in layers}
    return out


class ViewerHandler(BaseHTTPRequestHandler):
    """Answers GET and HEAD on the routes of the module docstring; anything else is refused."""

    server: ViewerServer
    server_version = "camkit-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal shows the address and errors, not every request."""

    def _send(self, status: int, body: bytes, kind: str, cache: str = "no-cache") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any) -> None:
        self._send(HTTPStatus.OK, json.dumps(value, allow_nan=False).encode(), "application/json; charset=utf-8")

    def _missing(self, what: str = "not found") -> None:
        self._send(HTTPStatus.NOT_FOUND, f"404: {what}\n".encode(), "text/plain; charset=utf-8")

    def _host_ok(self) -> bool:
        """Refuse a request whose Host header names another machine (DNS rebinding) on a loopback server."""
        host = str(self.server.server_address[0])
        if host not in ("127.0.0.1", "::1", "localhost"):
            return True
        given = (self.headers.get("Host") or "").strip().lower()
        name = given.rsplit(":", 1)[0] if not given.endswith("]") else given
        return name in ("127.0.0.1", "localhost", "[::1]", "")

    def do_HEAD(self) -> None:
        """As GET, without the body."""
        self.do_GET()

    def do_GET(self) -> None:
        """Route a request; a problem in the source is a 500 with one line, never a traceback page."""
        if not self._host_ok():
            self._send(HTTPStatus.FORBIDDEN, b"403: unknown Host\n", "text/plain; charset=utf-8")
            return
        raw, _, query_text = self.path.partition("?")
        path = urllib.parse.unquote(raw)
        if ".." in path or "\\" in path or "\0" in path or not path.startswith("/"):
            self._missing()
            return
        query = urllib.parse.parse_qs(query_text, keep_blank_values=True)
        try:
            self._route(path, query)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as error:  # one bad record must not stop the server: say what failed
            message = f"500: {type(error).__name__}: {error}\n".encode()
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, message, "text/plain; charset=utf-8")

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        source = self.server.source
        if path in STATIC:
            name, kind = STATIC[path]
            self._send(HTTPStatus.OK, static_file(name), kind)
        elif path == "/data/info.js":
            info = {**source.info(), "mode": "api"}
            body = "window.CAMKIT_VIEW = " + script_json(info) + ";\n"
            self._send(HTTPStatus.OK, body.encode(), "text/javascript; charset=utf-8")
        elif path == "/api/info":
            self._json(source.info())
        elif path == "/api/records":
            offset = _int(query, "offset", 0, 0, 1 << 40)
            limit = _int(query, "limit", 24, 0, 500)
            total, records = source.page(Filters.parse(query), offset, limit)
            methods, layers = source.methods, source.layers
            rows = [with_urls(r, methods, layers) for r in records]
            self._json({"total": total, "offset": offset, "records": rows})
        elif path in ("/api/image", "/api/map"):
            key = (query.get("key") or [""])[0]
            if path == "/api/image":
                png = source.image_png(key)
            else:
                method = (query.get("method") or [""])[0]
                layer = (query.get("layer") or [""])[0]
                png = source.map_png(key, method, _int(query, "k", 0, 0, 1 << 20), layer)
            if png is None:
                self._missing("no such image")
            else:
                self._send(HTTPStatus.OK, png, "image/png", "private, max-age=3600")
        elif path == "/api/agreement":
            self._json(self.server.agreement(_int(query, "sample", SAMPLE, 1, MAX_SAMPLE)))
        else:
            self._missing()

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"405: the viewer is read-only\n", "text/plain; charset=utf-8")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse


def make_server(source: Source, host: str = "127.0.0.1", port: int = 8765) -> ViewerServer:
    """Bind the viewer's server (not started: call ``serve_forever``).

    Args:
        source: what to show (:func:`~camkit.viewer.open_source`).
        host: the address to listen on (default: this machine only).
        port: the port (0: any free one).

    Returns:
        The bound server; its :attr:`~ViewerServer.url` is the page's address.

    Raises:
        ValueError: when the port is in use or the address cannot be bound (one line with the fix).
    """
    try:
        return ViewerServer((host, port), source)
    except OSError as error:
        import errno

        if error.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {host} is in use (another camkit view?): pass --port N with a free "
                "port, or --port 0 for any free one"
            ) from None
        raise ValueError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
