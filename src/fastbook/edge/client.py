"""The Python API: run a replica and submit orders from a program.

    from fastbook.edge.node import client
    with client.Edge("alice", broker="mqtt://127.0.0.1:1883", market="BTC-USD") as edge:
        edge.wait_synced(10)
        report = edge.submit({"op": "new", "side": "buy", "price": "100.25", "qty": "1.5"}).result(10)
        print(report["type"], edge.version, hex(edge.state_hash), edge.depth(5))

`submit` returns a Future resolving to the command's answer (a report dict): "rejected", or
"accepted" for new orders, "amended", "cancelled", "cancelled_all" for the other ops. If
no answer comes within `retry_after` seconds the same message (same client order id) is sent again;
that is safe because the sequencer never executes a client order id twice. When the first copy of a
new order was accepted but its report was lost (the sequencer died between journaling and
publishing), the retry resolves to "rejected" with code DUPLICATE_CLIENT_ORDER_ID and a message
"... already accepted at seq N": the order was accepted, once, at seq N.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastbook.edge.liveness import EdgeStatus, SyncState
from fastbook.transport.config import DEFAULT_BROKER, RunnerConfig
from fastbook.transport.node import Outgoing
from fastbook.transport.runner import NodeRunner
from fastbook.wire.topics import DEFAULT_PREFIX

if TYPE_CHECKING:
    from fastbook.edge.node import EdgeNode

# The op answered by each report type ("rejected" answers any op; "cancelled" with reason "user"
# answers a cancel).
ANSWERED_OP = {"accepted": "new", "amended": "amend", "cancelled_all": "cancel_all"}


_OPS = frozenset({"new", "cancel", "amend", "cancel_all"})


class EdgeError(RuntimeError):
    """The edge cannot follow its market (raised by Edge.wait_synced; the message says why)."""


class NoSequencerError(EdgeError):
    """Nothing from a sequencer of the market (no log message, heartbeat or replay answer)."""


class DuplicateClientError(EdgeError):
    """Another, older process follows under this client id: this edge stopped (docs/security.md)."""


@dataclass
class _Pending:
    future: Future[dict[str, Any]]
    messages: list[Outgoing]
    sent_at: float
    attempts: int = 1
    trail: list[dict[str, Any]] = field(default_factory=list)


class Edge:
    """A replica (EdgeNode) connected through a NodeRunner; a context manager."""

    def __init__(
        self,
        client_id: str,
        broker: str = DEFAULT_BROKER,
        market: str = "BTC-USD",
        *,
        prefix: str = DEFAULT_PREFIX,
        retry_after: float = 3.0,
        max_attempts: int = 5,
        mqtt_client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | None = None,
        clean_session: bool = True,
    ) -> None:
        """With `username` (and its `password`, e.g. from os.environ["FASTBOOK_PASSWORD"]) the
        broker authenticates the connection; its ACL then requires client_id == username.
        `clean_session=False` asks the broker to keep this client's MQTT session (subscriptions,
        queued QoS1 messages) across disconnects: what lets a client fail over between the nodes
        of a NATS cluster (docs/brokers.md). Its MQTT client id must then be stable and unique.
        The public log is anonymous: the replica knows client order ids of this client's orders
        only (every order's owner number is in its book)."""
        from fastbook.edge.node import EdgeConfig, EdgeNode

        if username is not None and client_id != username:
            raise ValueError(f"client id {client_id!r} differs from user name {username!r}: the broker "
                             "only lets a user trade under its own name")
        node = EdgeNode(EdgeConfig(client_id=client_id, market=market, prefix=prefix))
        runner = NodeRunner(node, RunnerConfig(
            broker, mqtt_client_id or username or f"fastbook-api-{client_id}"[:128],
            name=f"edge-{client_id}", username=username, password=password, tls_ca=tls_ca,
            clean_session=clean_session))
        self._setup(node, runner, retry_after, max_attempts, owns_runner=True)

    @classmethod
    def over(cls, node: EdgeNode, runner: NodeRunner, *, retry_after: float = 3.0,
             max_attempts: int = 5) -> Edge:
        """The API over a node and runner that a program already runs (fastbook-edge with --web):
        the program starts and stops the runner; start()/close() here only start and stop the
        API's resends."""
        edge = cls.__new__(cls)
        edge._setup(node, runner, retry_after, max_attempts, owns_runner=False)
        return edge

    def _setup(self, node: EdgeNode, runner: NodeRunner, retry_after: float, max_attempts: int,
               owns_runner: bool) -> None:
        client_id = node.client_id
        self.client_id = client_id
        self.node = node
        self.runner = runner
        self._owns_runner = owns_runner
        self.retry_after = retry_after
        self.max_attempts = max_attempts
        # (op, client order id) -> commands awaiting their answer, oldest first. A cancel or amend
        # reuses the id of the order it targets, so the op is part of the key. Runner thread only.
        self._pending: dict[tuple[str, str], deque[_Pending]] = {}
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.node.add_listener(self._on_event)
        self._retry_stop = threading.Event()
        self._retry_thread = threading.Thread(target=self._retry_loop, name=f"edge-{client_id}-retry",
                                              daemon=True)

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Edge:
        if self._owns_runner:
            self.runner.start()
        self._retry_thread.start()
        return self

    def close(self) -> None:
        self._retry_stop.set()
        if self._owns_runner:
            self.runner.stop()
        for pending in [p for queue in self._pending.values() for p in queue]:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("edge closed before the order was answered"))
        self._pending.clear()

    def __enter__(self) -> Edge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- orders ---------------------------------------------------------------------------------

    def submit(self, order: dict[str, Any] | None = None, **fields: Any) -> Future[dict[str, Any]]:
        """Send one order (a wire-contract dict, or keyword fields); the future resolves to its
        accepted/rejected report. "op" defaults to "new" and the client order id is assigned if
        missing."""
        body = dict(order or {}, **fields)
        body.setdefault("op", "new")
        # A rejected report names the op only when it was a valid one; match it the same way.
        op = body["op"] if body["op"] in _OPS else ""
        future: Future[dict[str, Any]] = Future()

        def send() -> tuple[str, list[Outgoing]]:
            client_order_id, messages = self.node.submit(body)
            pending = _Pending(future, list(messages), time.monotonic())
            self._pending.setdefault((op, client_order_id), deque()).append(pending)
            return client_order_id, messages

        sent = self.runner.call_with_result(send)

        def failed(f: Future[str]) -> None:
            exc = f.exception()
            if exc is not None and not future.done():
                future.set_exception(exc)

        sent.add_done_callback(failed)
        return future

    def add_listener(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        """fn(kind, data) on the runner thread for every node event (report, book, trade, ...)."""
        self._listeners.append(fn)

    # ---- replica state --------------------------------------------------------------------------

    def _read(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        return self.runner.call_with_result(lambda: (fn(), [])).result(timeout)

    @property
    def version(self) -> int:
        return int(self._read(lambda: self.node.version))

    @property
    def state_hash(self) -> int:
        return int(self._read(lambda: self.node.state_hash))

    @property
    def in_sync(self) -> bool:
        return bool(self._read(lambda: self.node.in_sync))

    def depth(self, n: int = 10) -> dict[str, Any]:
        return dict(self._read(lambda: self.node.depth(n)))

    def own_orders(self) -> list[dict[str, Any]]:
        return list(self._read(lambda: self.node.own_orders()))

    def state(self) -> tuple[int, int, bool, int]:
        """(version, state_hash, in_sync, lag) read atomically on the runner thread."""
        node = self.node
        return tuple(self._read(lambda: (node.version, node.state_hash, node.in_sync, node.lag)))

    def view(self, levels: int = 10) -> dict[str, Any]:
        """Everything a screen shows of the replica, read at one instant on the runner thread:
        version, hash (hex), in_sync, synced_once, lag, resyncs, mismatch (why the last check
        failed, until resynced), connected (to the broker), and the book's `depth` and own `orders`."""
        node, runner = self.node, self.runner

        def read() -> dict[str, Any]:
            follower = node.follower
            return {
                "version": node.version, "hash": f"{node.state_hash:016x}", "in_sync": node.in_sync,
                "synced_once": node.synced_once, "lag": node.lag, "resyncs": follower.resyncs,
                "mismatch": follower.mismatch, "connected": runner.connected.is_set(),
                "depth": node.depth(levels), "orders": node.own_orders(),
            }

        return dict(self._read(read))

    def status(self) -> EdgeStatus:
        """The edge's state in one read: `sync` (SyncState: syncing, in_sync, behind, stalled,
        no_sequencer), version, hash, lag, `detail` (one line in words), `conflict` (another process
        under this client id), and the `stalled` / `in_sync` properties."""
        return self._read(self.node.status)  # type: ignore[no-any-return]

    def wait_synced(self, timeout: float, version: int | None = None) -> bool:
        """Wait until the replica is in sync (and at least at `version` if given); False if it is
        not by `timeout`. Raises NoSequencerError when no sequencer of the market is heard (at
        once once the edge says so, else at the timeout), DuplicateClientError when this edge
        stopped for an older process under its client id."""
        deadline = time.monotonic() + timeout
        while True:
            if self.node.presence.newer:
                raise DuplicateClientError(f"edge {self.client_id}: {self.node.presence.conflict}")
            try:
                status = self.status()
                synced_once = bool(self._read(lambda: self.node.synced_once))
            except Exception:
                return False
            if status.in_sync and synced_once and (version is None or status.version >= version):
                return True
            past = time.monotonic() >= deadline
            unheard = self.node.watch.heard_at is None and self.runner.connected.is_set()
            if status.sync is SyncState.NO_SEQUENCER or (past and unheard):
                waited = min(timeout, self.node.cfg.stall_timeout)
                raise NoSequencerError(
                    f"no sequencer for market {self.node.cfg.market} on broker {self._broker()}: no log "
                    f"message or heartbeat within {waited:.0f}s"
                )
            if past:
                return False
            time.sleep(0.05)

    def _broker(self) -> str:
        current = self.runner.current_broker
        return str(current) if current is not None else str(self.runner.config.brokers)

    # ---- runner thread --------------------------------------------------------------------------

    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "report":
            key = self._answered_key(data)
            queue = self._pending.get(key) if key is not None else None
            if queue:
                pending = queue.popleft()
                if not queue:
                    del self._pending[key]  # type: ignore[arg-type]
                if not pending.future.done():
                    pending.future.set_result(data)
        for fn in self._listeners:
            fn(kind, data)

    @staticmethod
    def _answered_key(report: dict[str, Any]) -> tuple[str, str] | None:
        """The (op, client order id) a report answers, if it is an answer."""
        client_order_id = report.get("id") or ""  # cancel_all without an id: answered with null
        if not isinstance(client_order_id, str):
            return None
        kind = report.get("type")
        if kind == "rejected":
            return str(report.get("op") or ""), client_order_id
        if kind == "cancelled":
            return ("cancel", client_order_id) if report.get("reason") == "user" else None
        op = ANSWERED_OP.get(str(kind))
        return (op, client_order_id) if op is not None else None

    def _retry_due(self) -> tuple[None, list[Outgoing]]:
        now = time.monotonic()
        resend: list[Outgoing] = []
        for key, queue in list(self._pending.items()):
            for pending in list(queue):
                if now - pending.sent_at < self.retry_after:
                    continue
                if pending.attempts >= self.max_attempts:
                    queue.remove(pending)
                    if not pending.future.done():
                        pending.future.set_exception(TimeoutError(
                            f"no answer to {key[0]} {key[1]} after {pending.attempts} sends"))
                    continue
                pending.attempts += 1
                pending.sent_at = now
                resend.extend(pending.messages)  # same bytes, same client order id: deduplicated
            if not queue:
                del self._pending[key]
        return None, resend

    def _retry_loop(self) -> None:
        while not self._retry_stop.wait(0.25):
            if not self.runner.running:
                return
            try:
                self.runner.call_with_result(self._retry_due).result(5)
            except Exception:  # stopping
                return
