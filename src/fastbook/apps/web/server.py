"""The edge's web server: one page, its script, the view as Server-Sent Events, and orders in.

Standard library only (http.server, one thread per request): a page for one person, served next
to the replica it shows. Routes:

    GET  /            the page (static/index.html; app.js, style.css beside it)
    GET  /api/view    the current view document (JSON)
    GET  /events      the view pushed as Server-Sent Events, one `data:` line per change
    POST /api/orders  one order in the wire contract (JSON object); answers with its report

Access rules (loopback, basic auth, Host and Origin checks): fastbook.apps.web.access.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastbook.apps.web.access import WebAccess
from fastbook.apps.web.live import LiveView
from fastbook.edge.client import Edge

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
MAX_BODY = 64 * 1024  # an order is ~150 bytes; anything near this is not one
ANSWER_TIMEOUT = 10.0  # seconds an order request waits for its report
PING_SECONDS = 2.0  # an event stream with no change sends a ping this often (the page's liveness)
MAX_STREAMS = 16  # open event streams (each holds a thread)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    web: WebServer


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "fastbook-edge"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web %s: " + format, self.address_string(), *args)

    # ---- checks ---------------------------------------------------------------------------------

    def _admitted(self) -> bool:
        access = self.server.web.access
        if not access.host_allowed(self.headers.get("Host")):
            self._send_json(HTTPStatus.FORBIDDEN, {"error": "this page answers only on a loopback host name"})
            return False
        if not access.authorized(self.headers.get("Authorization")):
            body = b'{"error":"the edge\'s MQTT user name and password are needed"}'
            self.send_response(HTTPStatus.UNAUTHORIZED)
            self.send_header("WWW-Authenticate", 'Basic realm="fastbook-edge", charset="UTF-8"')
            self._finish_headers("application/json", len(body))
            self.wfile.write(body)
            return False
        return True

    # ---- responses ------------------------------------------------------------------------------

    def _finish_headers(self, content_type: str, length: int | None) -> None:
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")  # no clickjacking of the cancel buttons
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
        self.end_headers()

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self._finish_headers(content_type, len(body))
        self.wfile.write(body)

    def _send_json(self, status: HTTPStatus, doc: Any) -> None:
        self._send(status, "application/json", json.dumps(doc, separators=(",", ":")).encode())

    # ---- routes ---------------------------------------------------------------------------------

    def do_GET(self) -> None:  # http.server's name
        if not self._admitted():
            return
        path = self.path.split("?", 1)[0]
        web = self.server.web
        if path in STATIC:
            name, content_type = STATIC[path]
            self._send(HTTPStatus.OK, content_type, web.static(name))
        elif path == "/api/view":
            number, document = web.live.current()
            if number == 0:
                self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the replica was not read yet"})
            else:
                self._send(HTTPStatus.OK, "application/json", document)
        elif path == "/events":
            self._stream()
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path[:100]}"})

    def do_POST(self) -> None:
        if not self._admitted():
            return
        access = self.server.web.access
        if not access.same_origin(self.headers.get("Origin"), self.headers.get("Host")):
            self._send_json(HTTPStatus.FORBIDDEN, {"error": "orders come only from this page's origin"})
            return
        if self.path != "/api/orders":
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {self.path[:100]}"})
            return
        if self.headers.get_content_type() != "application/json":
            self._send_json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            {"error": "send the order as application/json"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send_json(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
            return
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            {"error": f"an order is at most {MAX_BODY} bytes"})
            return
        try:
            order = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": f"not JSON: {exc}"})
            return
        if not isinstance(order, dict):
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": "an order is a JSON object"})
            return
        status, answer = self.server.web.submit(order)
        self._send_json(status, answer)

    def _stream(self) -> None:
        web = self.server.web
        if not web.streams.acquire(blocking=False):
            self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"at most {MAX_STREAMS} open pages"})
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.close_connection = True
            self._finish_headers("text/event-stream", None)
            number, document = web.live.current()
            self.wfile.write(b"retry: 1000\n\n" + (b"data: " + document + b"\n\n" if number else b""))
            self.wfile.flush()
            while not web.live.closed:
                newer = web.live.wait_newer(number, PING_SECONDS)
                if newer is None:
                    self.wfile.write(b"event: ping\ndata: {}\n\n")
                else:
                    number, document = newer
                    self.wfile.write(b"data: " + document + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the page went away
        finally:
            web.streams.release()


class WebServer:
    """Serves the page of one Edge on one address; `start()`, then `close()` (which closes the
    Edge too when `owns_edge`)."""

    def __init__(self, edge: Edge, access: WebAccess, market: str, owns_edge: bool = False) -> None:
        self.edge = edge
        self.owns_edge = owns_edge
        self.access = access
        self.live = LiveView(edge, market)
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._static: dict[str, bytes] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WebServer:
        """Bind (raises OSError if the address is taken), then serve on a thread."""
        httpd_cls = _HTTPServer6 if ":" in self.access.host else _HTTPServer
        self._httpd = httpd_cls((self.access.host, self.access.port), _Handler)
        self._httpd.web = self
        self.live.start()
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="web-http", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def close(self) -> None:
        self.live.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self.owns_edge:
            self.edge.close()

    def static(self, name: str) -> bytes:
        data = self._static.get(name)
        if data is None:
            data = resources.files("fastbook.apps.web").joinpath("static").joinpath(name).read_bytes()
            self._static[name] = data
        return data

    def submit(self, order: dict[str, Any]) -> tuple[HTTPStatus, Any]:
        """Send one order through the Edge and wait for its report: (HTTP status, answer)."""
        try:
            report = self.edge.submit(order).result(ANSWER_TIMEOUT)
        except (FutureTimeout, TimeoutError):  # (one class from Python 3.11 on)
            return HTTPStatus.GATEWAY_TIMEOUT, {
                "error": f"no answer within {ANSWER_TIMEOUT:.0f} s; the edge keeps resending it "
                         "(same id), watch your orders"}
        except ValueError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        except Exception as exc:  # the edge stopping
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"not sent: {exc}"}
        return HTTPStatus.OK, report

