"""The edge's web server over HTTP, without a browser or a broker: who may connect (loopback, basic
auth, Host and Origin), what bad requests get, the event stream, and orders passed to the Edge.

The Edge here is a stand-in with the API the server uses (view, add_listener, submit); the real
one, a real sequencer and a real browser are in test_web_browser.py."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from fastbook.apps.web.access import AccessError, WebAccess, is_loopback, parse_listen
from fastbook.apps.web.server import WebServer
from tests.apps.test_cli import run
from tests.support.brokers import free_port, program, wait_for


class StandInEdge:
    """What WebServer reads of an Edge; records submitted orders and answers them at once."""

    client_id = "web-test"

    def __init__(self) -> None:
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.orders: list[dict[str, Any]] = []
        self.version = 7
        self.lock = threading.Lock()

    def add_listener(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        self.listeners.append(fn)

    def view(self, levels: int = 10) -> dict[str, Any]:
        with self.lock:
            version = self.version
        return {"version": version, "hash": "00000000000000ab", "in_sync": True, "synced_once": True,
                "lag": 0, "resyncs": 0, "mismatch": None, "connected": True,
                "depth": {"bids": [["100.10", "0.100", 1], ["100.00", "0.200", 2]],
                          "asks": [["100.20", "1.000", 1]]},
                "orders": [{"id": "o-1", "side": "buy", "price": "100.00", "qty": "0.100"},
                           {"id": "o-2", "side": "buy", "price": "100.00", "qty": "0.100"}]}

    def submit(self, order: dict[str, Any]) -> Future[dict[str, Any]]:
        self.orders.append(order)
        future: Future[dict[str, Any]] = Future()
        future.set_result({"type": "accepted", "id": order.get("id", "x-1"), "seq": 8})
        return future

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        for fn in self.listeners:
            fn(kind, data)

    def close(self) -> None:
        pass


def serve(access: WebAccess) -> tuple[WebServer, StandInEdge]:
    edge = StandInEdge()
    server = WebServer(edge, access, "BTC-USD").start()  # type: ignore[arg-type]
    wait_for(lambda: server.live.current()[0] > 0, 10, "the first view")
    return server, edge


@pytest.fixture
def open_server() -> Iterator[tuple[WebServer, StandInEdge]]:
    server, edge = serve(WebAccess("127.0.0.1", free_port()))
    try:
        yield server, edge
    finally:
        server.close()


def request(server: WebServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.access.host, server.access.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


JSON = {"Content-Type": "application/json"}


# ---- the access rule ----------------------------------------------------------------------------


def test_listen_addresses_parse_or_say_why() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen("localhost:0") == ("localhost", 0)
    for bad, says in [("8080", "HOST:PORT"), ("127.0.0.1:http", "number"), ("127.0.0.1:70000", "0-65535"),
                      ("example.org:8080", "IP address or localhost")]:
        with pytest.raises(AccessError, match=says):
            parse_listen(bad)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


def test_other_addresses_need_the_edges_credentials() -> None:
    with pytest.raises(AccessError, match="loopback only"):
        WebAccess("0.0.0.0", 8080)
    with pytest.raises(AccessError, match="both"):
        WebAccess("0.0.0.0", 8080, username="alice")
    assert WebAccess("0.0.0.0", 8080, username="alice", password="pw").needs_password
    assert not WebAccess("127.0.0.1", 8080).needs_password


def test_basic_auth_wants_exactly_the_pair() -> None:
    access = WebAccess("127.0.0.1", 8080, username="alice", password="s3cret:x")

    def basic(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert access.authorized(basic("alice:s3cret:x"))
    for wrong in [None, "", basic("alice:s3cret"), basic("bob:s3cret:x"), basic("alice"), "Basic !!!",
                  "Bearer abc"]:
        assert not access.authorized(wrong)


def test_host_and_origin_checks() -> None:
    access = WebAccess("127.0.0.1", 8080)
    for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "localhost"]:
        assert access.host_allowed(host), host
    for host in [None, "", "evil.example:8080", "evil.example", "10.0.0.1:8080"]:
        assert not access.host_allowed(host), host
    assert access.same_origin(None, "127.0.0.1:8080")
    assert access.same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not access.same_origin("http://evil.example", "127.0.0.1:8080")


def test_edge_program_refuses_an_open_page_off_loopback() -> None:
    result = run(program("fastbook-edge"), "--client-id", "web-x", "--web", "0.0.0.0:8080", "--no-tty")
    assert result.returncode == 2
    assert "loopback only" in result.stderr and "--username" in result.stderr
    result = run(program("fastbook-edge"), "--client-id", "web-x", "--web", "8080", "--no-tty")
    assert result.returncode == 2 and "HOST:PORT" in result.stderr


# ---- the server ---------------------------------------------------------------------------------


def test_page_and_view(open_server: tuple[WebServer, StandInEdge]) -> None:
    server, edge = open_server
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"/app.js" in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    for path in ["/app.js", "/style.css"]:
        assert request(server, "GET", path)[0] == 200
    status, _headers, body = request(server, "GET", "/api/view")
    view = json.loads(body)
    assert view["verified"] and view["replica"]["version"] == 7
    # cumulative and own quantities summed exactly, as decimals
    assert [(b["price"], b["cum"], b["mine"]) for b in view["bids"]] == [
        ("100.10", "0.100", None), ("100.00", "0.300", "0.200")]
    assert request(server, "GET", "/nope")[0] == 404


def test_orders_go_to_the_edge_and_come_back_answered(open_server: tuple[WebServer, StandInEdge]) -> None:
    server, edge = open_server
    order = {"op": "new", "id": "w-1", "side": "buy", "price": "100.00", "qty": "1"}
    status, _h, body = request(server, "POST", "/api/orders", json.dumps(order).encode(), JSON)
    assert status == 200 and json.loads(body) == {"type": "accepted", "id": "w-1", "seq": 8}
    assert edge.orders == [order]


@pytest.mark.parametrize("body, headers, status, says", [
    (b"side=buy", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
    (b"{not json", JSON, 400, "not JSON"),
    (b"[1, 2]", JSON, 400, "JSON object"),
    (b"{}", {**JSON, "Origin": "http://evil.example"}, 403, "origin"),
    (b"x" * (64 * 1024 + 1), JSON, 413, "at most"),
])
def test_bad_order_requests_are_refused_with_a_reason(
    open_server: tuple[WebServer, StandInEdge], body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    server, edge = open_server
    got, _h, answer = request(server, "POST", "/api/orders", body, headers)
    assert got == status and says in json.loads(answer)["error"]
    assert edge.orders == []
    assert request(server, "GET", "/api/view")[0] == 200  # and the server goes on


def test_a_foreign_host_name_is_refused(open_server: tuple[WebServer, StandInEdge]) -> None:
    server, _edge = open_server
    status, _h, body = request(server, "GET", "/", headers={"Host": "rebound.example:8080"})
    assert status == 403 and b"loopback" in body


def test_with_credentials_every_request_asks_for_them() -> None:
    server, edge = serve(WebAccess("127.0.0.1", free_port(), username="alice", password="pw"))
    try:
        status, headers, _body = request(server, "GET", "/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert request(server, "POST", "/api/orders", b"{}", JSON)[0] == 401 and edge.orders == []
        good = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
        assert request(server, "GET", "/", headers=good)[0] == 200
        # with a password the Host check is not needed (a rebound page has no credentials)
        assert request(server, "GET", "/api/view", headers={**good, "Host": "edge.lan:8080"})[0] == 200
    finally:
        server.close()


def test_event_stream_pushes_each_change(open_server: tuple[WebServer, StandInEdge]) -> None:
    server, edge = open_server
    conn = http.client.HTTPConnection(server.access.host, server.access.port, timeout=10)
    try:
        conn.request("GET", "/events")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"

        def next_data() -> dict[str, Any]:
            while True:
                line = response.fp.readline()
                assert line, "stream ended"
                if line.startswith(b"data: ") and line != b"data: {}\n":
                    return dict(json.loads(line[6:]))

        assert next_data()["replica"]["version"] == 7
        with edge.lock:
            edge.version = 8
        edge.emit("trade", {"trade_id": "8-1", "seq": 8, "price": "100.20", "qty": "0.500",
                            "taker_side": "buy"})
        wait_for(lambda: next_data()["replica"]["version"] == 8, 10, "the pushed change")
        view = json.loads(request(server, "GET", "/api/view")[2])
        assert view["trades"][0]["trade_id"] == "8-1"
    finally:
        conn.close()
