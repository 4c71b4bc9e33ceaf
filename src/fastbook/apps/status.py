"""`fastbook status`: read the retained book and replicas/+ topics and say who is where.

Everything shown comes from retained messages: the sequencer's book (its version and hash) and each
edge's status (online/offline via last will, version, hash, lag). No node state is touched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastbook.transport.config import RunnerConfig, parse_broker_urls
from fastbook.transport.node import Incoming, Outgoing
from fastbook.transport.runner import NodeRunner
from fastbook.wire.topics import DEFAULT_PREFIX, Topics, client_from_topic

QUIET_SECONDS = 0.3  # retained messages arrive right after the SUBACK; stop once they pause
# Replica entries `fastbook status --prune` clears: edges that went away (their last will, or a
# clean stop, says offline) and payloads that are no status at all. An online edge republishes
# its status every second, so clearing it would not last anyway.
STALE_STATES = frozenset({"offline", "unreadable", "?"})


def _json_object(payload: bytes) -> dict[str, Any] | None:
    """A retained message as a JSON object, or None when it is not one (anyone may publish there)."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _int_field(doc: dict[str, Any], name: str) -> int | None:
    value = doc.get(name)
    return value if type(value) is int else None  # bool is not a version


def _best_price(levels: Any) -> str | None:
    if isinstance(levels, list) and levels and isinstance(levels[0], list) and levels[0]:
        price = levels[0][0]
        return price if isinstance(price, str) else None
    return None


@dataclass
class ReplicaStatus:
    client_id: str
    state: str
    version: int | None
    hash: str | None
    lag: int | None
    sync: str | None = None  # the edge's SyncState ("stalled", "no_sequencer", ...), if it says

    @property
    def shown_state(self) -> str:
        """online/offline, or what is wrong with an online replica (stalled, no_sequencer)."""
        if self.state == "online" and self.sync in ("stalled", "no_sequencer"):
            return self.sync
        return self.state

    @classmethod
    def from_payload(cls, client_id: str, payload: bytes) -> ReplicaStatus:
        doc = _json_object(payload)
        if doc is None:
            return cls(client_id, "unreadable", None, None, None)
        state = doc.get("state")
        return cls(
            client_id,
            state if isinstance(state, str) else "?",
            _int_field(doc, "version"),
            doc.get("hash") if isinstance(doc.get("hash"), str) else None,
            _int_field(doc, "lag"),
            doc.get("sync") if isinstance(doc.get("sync"), str) else None,
        )


@dataclass
class MarketStatus:
    market: str
    book_version: int | None = None
    book_hash: str | None = None
    best_bid: str | None = None
    best_ask: str | None = None
    replicas: dict[str, ReplicaStatus] = field(default_factory=dict)
    # What the sequencer's retained book says is wrong ("journal", "snapshots"; docs/wire.md, "Book")
    health: dict[str, dict[str, Any]] = field(default_factory=dict)

    def converged(self, clients: Sequence[str] | None = None) -> bool:
        """Every (named) replica reports the sequencer's version and hash."""
        names = list(clients) if clients is not None else list(self.replicas)
        if self.book_version is None or not names:
            return False
        for name in names:
            r = self.replicas.get(name)
            if r is None or r.version != self.book_version or r.hash != self.book_hash:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "market": self.market,
            "sequencer": {"version": self.book_version, "hash": self.book_hash,
                          **({"health": self.health} if self.health else {})},
            "best_bid": self.best_bid,
            "best_ask": self.best_ask,
            "replicas": [vars(r) for r in sorted(self.replicas.values(), key=lambda r: r.client_id)],
        }


class _StatusCollector:
    """A node that only listens (retained book + replica statuses)."""

    def __init__(self, topics: Topics, qos: int = 1) -> None:
        self.topics = topics
        self.qos = qos
        self.status = MarketStatus(topics.market)
        self.subscribed_at: float | None = None
        self.last_message_at = 0.0
        self.clear_on_close: list[str] = []  # clients whose retained replicas/<id> entry to clear

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.topics.book, self.qos), (self.topics.replicas_filter, self.qos)]

    def will(self) -> Outgoing | None:
        return None

    def on_connected(self) -> list[Outgoing]:
        self.subscribed_at = time.monotonic()
        return []

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        self.last_message_at = time.monotonic()
        for topic, payload in messages:
            if topic == self.topics.book:
                self._book(payload)
            elif payload:
                client = client_from_topic(topic)
                self.status.replicas[client] = ReplicaStatus.from_payload(client, payload)
        return []

    def _book(self, payload: bytes) -> None:
        doc = _json_object(payload)
        if doc is None:
            return
        version = _int_field(doc, "version")
        if version is not None:
            self.status.book_version = version
        if isinstance(doc.get("hash"), str):
            self.status.book_hash = doc["hash"]
        self.status.best_bid = _best_price(doc.get("bids"))
        self.status.best_ask = _best_price(doc.get("asks"))
        health = doc.get("health")
        self.status.health = (
            {k: v for k, v in health.items() if isinstance(k, str) and isinstance(v, dict)}
            if isinstance(health, dict) else {}
        )

    def on_tick(self, now: float) -> list[Outgoing]:
        return []

    def next_deadline(self, now: float) -> float | None:
        return None  # no timers: woken by messages only

    def close(self) -> list[Outgoing]:
        # An empty retained message deletes the retained one; sent at close so the runner waits
        # for the broker's acknowledgements before it disconnects.
        return [Outgoing(self.topics.replica(client), b"", retain=True) for client in self.clear_on_close]


class StatusWatcher:
    """A live view of a market's retained status topics (used by the demo and tests to wait for
    convergence): `snapshot()` returns a copy of what has been seen so far. `qos` 1 (the default)
    for a live view that must not miss an update; a one-shot read uses 0 (see read_status)."""

    def __init__(self, broker: str | Sequence[str], market: str, prefix: str = DEFAULT_PREFIX,
                 client_id: str | None = None, *, username: str | None = None,
                 password: str | None = None, tls_ca: str | None = None, qos: int = 1) -> None:
        self._collector = _StatusCollector(Topics(market, prefix), qos)
        # With credentials the MQTT client id must be the user name (the broker's ACL rule).
        self.runner = NodeRunner(self._collector, RunnerConfig(
            broker, client_id or username or f"fastbook-status-{time.monotonic_ns() % 10**9}",
            username=username, password=password, tls_ca=tls_ca))

    def __enter__(self) -> StatusWatcher:
        self.runner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()

    def snapshot(self) -> MarketStatus:
        def copy() -> tuple[MarketStatus, list[Outgoing]]:
            s = self._collector.status
            return MarketStatus(s.market, s.book_version, s.book_hash, s.best_bid, s.best_ask,
                                dict(s.replicas), dict(s.health)), []

        return self.runner.call_with_result(copy).result(5)

    def wait_settled(self, timeout: float) -> bool:
        """Connected, subscribed, and the burst of retained messages is over."""
        deadline = time.monotonic() + timeout
        collector = self._collector
        while time.monotonic() < deadline:
            now = time.monotonic()
            if (collector.subscribed_at is not None and now - collector.subscribed_at > QUIET_SECONDS
                    and now - collector.last_message_at > QUIET_SECONDS):
                return True
            time.sleep(0.05)
        return False


def read_status(broker: str | Sequence[str], market: str, prefix: str = DEFAULT_PREFIX,
                timeout: float = 5.0, *, username: str | None = None,
                password: str | None = None, tls_ca: str | None = None) -> MarketStatus:
    """Collect the retained messages from the first broker URL that answers (each URL of `broker`
    in turn, up to `timeout` seconds each), then disconnect. TimeoutError, saying what each URL
    did (no answer, refused the connection, refused the subscriptions), if none answers."""
    outcomes = []
    for address in parse_broker_urls(broker):
        # QoS 0: retained messages arrive all the same, and on NATS a QoS 1 subscription is a new
        # JetStream consumer, which cannot be created while any node of the cluster is down.
        with StatusWatcher(str(address), market, prefix, username=username, password=password,
                           tls_ca=tls_ca, qos=0) as watcher:
            outcome = _settle(watcher, timeout)
            if outcome is None:
                return watcher.snapshot()
            outcomes.append(f"{address} {outcome}")
    raise TimeoutError(f"no MQTT broker answered for market {market}: " + "; ".join(outcomes))


def _settle(watcher: StatusWatcher, timeout: float) -> str | None:
    """None once connected, subscribed and the retained burst is over; else what the broker did.
    A refusal ends the attempt at once: another try at the same URL would be refused the same way."""
    deadline = time.monotonic() + timeout
    runner = watcher.runner
    while time.monotonic() < deadline:
        if runner.refusal is not None:
            return f"refused the connection: {runner.refusal}"
        failure = runner.last_failure
        if failure is not None and failure.startswith("accepted the connection"):
            return failure
        if runner.wait_connected(0.05):
            break
    else:
        failure = runner.last_failure
        return f"did not answer within {timeout:.0f}s" + (f" ({failure})" if failure else "")
    if not watcher.wait_settled(max(0.0, deadline - time.monotonic()) + QUIET_SECONDS * 2):
        return f"connected but sent nothing within {timeout:.0f}s"
    return None


def prune_replicas(broker: str | Sequence[str], market: str, prefix: str = DEFAULT_PREFIX,
                   timeout: float = 5.0, *, username: str | None = None, password: str | None = None,
                   tls_ca: str | None = None) -> tuple[MarketStatus, list[ReplicaStatus]]:
    """Clear the retained replicas/<id> entries of stale replicas (STALE_STATES); returns the status
    as read before and the entries cleared. TimeoutError as read_status."""
    with StatusWatcher(broker, market, prefix, username=username, password=password,
                       tls_ca=tls_ca) as watcher:
        if not watcher.runner.wait_connected(timeout) or not watcher.wait_settled(timeout):
            refusal = watcher.runner.refusal
            if refusal is not None:
                raise TimeoutError(f"the MQTT broker at {broker} refused the connection: {refusal}")
            raise TimeoutError(f"no answer from the MQTT broker at {broker} within {timeout:.0f}s")
        status = watcher.snapshot()
        stale = [r for r in sorted(status.replicas.values(), key=lambda r: r.client_id)
                 if r.state in STALE_STATES]

        def mark() -> tuple[None, list[Outgoing]]:
            watcher._collector.clear_on_close = [r.client_id for r in stale]
            return None, []

        watcher.runner.call_with_result(mark).result(timeout)
    return status, stale


def _since(ms: object) -> str:
    if type(ms) is not int or ms < 0:
        return "?"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))
    except (OverflowError, OSError, ValueError):
        return "?"


def health_lines(health: dict[str, dict[str, Any]]) -> list[str]:
    """The sequencer's problems as `fastbook status` prints them (nothing when all is well)."""
    lines = []
    journal = health.get("journal")
    if journal is not None:
        retry = ", retrying" if journal.get("retrying") else ""
        lines.append(f"journal unavailable since {_since(journal.get('since'))}{retry} (every order is "
                     f"rejected): {journal.get('error', '?')}")
    snapshots = health.get("snapshots")
    if snapshots is not None:
        since = _since(snapshots.get("since"))
        lines.append(f"snapshots failing since {since}: {snapshots.get('error', '?')}")
    return lines


def format_status(status: MarketStatus) -> str:
    lines = [f"market {status.market}"]
    if status.book_version is None:
        lines.append("  sequencer: no retained book (no sequencer has published for this market)")
    else:
        lines.append(f"  sequencer: version {status.book_version} hash {status.book_hash} "
                     f"best bid {status.best_bid or '-'} best ask {status.best_ask or '-'}")
        lines.extend(f"  {line}" for line in health_lines(status.health))
    if not status.replicas:
        lines.append("  replicas: none reported")
        return "\n".join(lines)
    lines.append(f"  {'replica':<24} {'state':<12} {'version':>10} {'hash':<16} {'lag':>6}  match")
    for r in sorted(status.replicas.values(), key=lambda r: r.client_id):
        behind = (
            status.book_version - r.version
            if status.book_version is not None and r.version is not None
            else None
        )
        match = ("yes" if r.version == status.book_version and r.hash == status.book_hash
                 else f"behind {behind}" if behind is not None and behind > 0 else "no")
        version = r.version if r.version is not None else "-"
        lines.append(f"  {r.client_id:<24} {r.shown_state[:12]:<12} {version:>10} "
                     f"{r.hash or '-':<16} {r.lag if r.lag is not None else '-':>6}  {match}")
    return "\n".join(lines)
