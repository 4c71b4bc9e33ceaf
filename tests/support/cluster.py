"""A whole fastbook deployment of real processes for integration tests, on amqtt or on mosquitto.

- amqtt: `fastbook-broker` (broker + sequencer in one process, as shipped);
- mosquitto: a private mosquitto + `fastbook-sequencer`.
Edges are `fastbook-edge` processes. The test itself talks MQTT through `Traffic`: it publishes
orders for any client id and records every report, log message and replay request it sees.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastbook.apps.status import MarketStatus, StatusWatcher
from fastbook.transport.config import RunnerConfig
from fastbook.transport.node import Incoming, Outgoing
from fastbook.transport.runner import NodeRunner
from fastbook.wire.topics import Topics
from tests.support.brokers import (
    Broker,
    Proc,
    port_open,
    start_edge,
    start_fastbook_broker,
    start_mosquitto,
    start_sequencer,
    wait_for,
)

MARKET = "BTC-USD"
ANSWER_TYPES = frozenset({"accepted", "amended", "rejected", "cancelled_all"})


def count_answers(reports: Sequence[dict[str, Any]]) -> int:
    """How many commands these reports answer (one answer per command, see ANSWER_TYPES)."""
    return sum(
        1
        for r in reports
        if r.get("type") in ANSWER_TYPES or (r.get("type") == "cancelled" and r.get("reason") == "user")
    )


class TrafficNode:
    """Records reports (per client), public trades, replay requests; publishes what the test asks."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.lock = threading.Lock()
        self.reports: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.replay_requests: list[tuple[str, dict[str, Any]]] = []
        self.connects = 0

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(f"{self.topics.base}/reports/+", 1), (self.topics.replay_request_filter, 1)]

    def will(self) -> Outgoing | None:
        return None

    def on_connected(self) -> list[Outgoing]:
        self.connects += 1
        return []

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        with self.lock:
            for topic, payload in messages:
                client = topic.rsplit("/", 1)[-1]
                try:
                    doc = json.loads(payload)
                except ValueError:
                    continue
                if "/replay/request/" in topic:
                    self.replay_requests.append((client, doc))
                elif isinstance(doc, list):
                    self.reports[client].extend(r for r in doc if isinstance(r, dict))
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        return []

    def close(self) -> list[Outgoing]:
        return []


class Traffic:
    """The test's own MQTT client (a NodeRunner around TrafficNode)."""

    def __init__(self, url: str, topics: Topics, name: str) -> None:
        self.topics = topics
        self.node = TrafficNode(topics)
        self.runner = NodeRunner(self.node, RunnerConfig(url, name, reconnect_max=0.5))

    def __enter__(self) -> Traffic:
        self.runner.start()
        wait_for(lambda: self.node.connects >= 1, 20, "test traffic client subscribed")
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()

    def publish_orders(self, client: str, orders: Sequence[dict[str, Any]], per_message: int = 1) -> None:
        messages = []
        for i in range(0, len(orders), per_message):
            chunk = list(orders[i : i + per_message])
            body = chunk[0] if per_message == 1 else chunk
            messages.append(Outgoing(self.topics.orders(client), json.dumps(body).encode()))
        self.runner.call(lambda: messages).result(30)

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self.runner.call(lambda: [Outgoing(topic, payload)]).result(30)

    def reports_of(self, client: str) -> list[dict[str, Any]]:
        with self.node.lock:
            return list(self.node.reports.get(client, []))

    def answers(self, client: str) -> int:
        """Commands of `client` answered so far (one answer per command, see ANSWER_TYPES)."""
        return count_answers(self.reports_of(client))

    def requests_from(self, client: str) -> list[dict[str, Any]]:
        with self.node.lock:
            return [doc for who, doc in self.node.replay_requests if who == client]


class Cluster:
    def __init__(self, kind: str, workdir: Path, sequencer_args: Sequence[str] = ()) -> None:
        """sequencer_args: extra options for the sequencer (fastbook-broker's on amqtt)."""
        self.kind = kind
        self.sequencer_args = list(sequencer_args)
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.topics = Topics(MARKET)
        self.edges: dict[str, Proc] = {}
        self.broker: Broker
        self.sequencer: Proc
        if kind == "amqtt":
            self.broker, self.sequencer = start_fastbook_broker(
                workdir, [MARKET], self.data_dir, extra_args=self.sequencer_args
            )
        else:
            self.broker = start_mosquitto(workdir)
            self.sequencer = start_sequencer(
                workdir, self.broker.url, self.data_dir, MARKET, self.sequencer_args
            )
        self.url = self.broker.url
        self.watcher = StatusWatcher(self.url, MARKET, client_id=f"test-status-{self.broker.port}")
        self.watcher.__enter__()
        self.wait_sequencer()

    # -- processes ------------------------------------------------------------------------------

    def start_edge(self, client_id: str, *extra: str) -> Proc:
        proc = start_edge(self.workdir, self.url, client_id, MARKET, *extra)
        self.edges[client_id] = proc
        return proc

    def kill_sequencer(self) -> None:
        """SIGKILL the sequencer (on amqtt: the fastbook-broker process, broker and sequencer)."""
        self.sequencer.kill()

    def restart_sequencer(self) -> None:
        if self.kind == "amqtt":
            wait_for(lambda: not port_open(self.broker.port), 10, "old broker gone")
            broker, self.sequencer = start_fastbook_broker(
                self.workdir, [MARKET], self.data_dir, port=self.broker.port, extra_args=self.sequencer_args
            )
            self.broker.procs = broker.procs
        else:
            self.sequencer = start_sequencer(
                self.workdir, self.url, self.data_dir, MARKET, self.sequencer_args
            )

    def journal_path(self) -> Path:
        return self.data_dir / MARKET / "journal.log"

    def check_alive(self) -> None:
        for name, proc in [("sequencer", self.sequencer), *self.edges.items()]:
            assert proc.alive(), f"{name} died:\n{proc.output()[-3000:]}"

    def stop(self) -> None:
        self.watcher.__exit__()
        for proc in self.edges.values():
            proc.stop()
        if self.kind == "mosquitto":
            self.sequencer.stop()
        self.broker.stop()

    # -- state ----------------------------------------------------------------------------------

    def status(self) -> MarketStatus:
        return self.watcher.snapshot()

    def wait_sequencer(self, timeout: float = 30) -> None:
        wait_for(lambda: self.status().book_version is not None, timeout, "the sequencer's retained book")

    def wait_converged(
        self, clients: Sequence[str], timeout: float, version: int | None = None, min_version: int = 0
    ) -> MarketStatus:
        """Every named replica reports the sequencer's version and hash (and that version, if given;
        at least `min_version`)."""

        def converged() -> bool:
            self.check_alive()
            s = self.status()
            if not s.converged(clients) or s.book_version is None or s.book_version < min_version:
                return False
            return version is None or s.book_version == version

        try:
            wait_for(converged, timeout, f"replicas {list(clients)} to converge", interval=0.2)
        except AssertionError as exc:  # a timeout, or a process that died (check_alive says which)
            logs = "".join(f"\n--- {name}:\n{self.log_lines(name)}" for name in clients if name in self.edges)
            raise AssertionError(f"not converged ({exc}): {self.status().to_json()}{logs}") from None
        return self.status()

    def log_lines(self, name: str, last: int = 15) -> str:
        """The last log lines of an edge (its warnings and errors say why it is behind), without the
        report/trade lines it prints for every event (`#3 FILLED ...`, `TRADE ...`; with --json
        `report {...}`, `trade {...}`)."""
        lines = [line for line in self.edges[name].output().splitlines()
                 if not line.startswith(("report ", "trade ", "TRADE ", "#"))]
        return "\n".join(lines[-last:])


def qty(text: str | None) -> Decimal:
    return Decimal(text) if text else Decimal(0)
