"""The public feed is anonymous: no client id or client order id in the log, the retained snapshot
or public trades; each client learns its own names privately, so a restarted edge still makes its
reports, a late joiner starts from the snapshot, and self-trade prevention keeps working."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fastbook.edge.node import EdgeConfig, EdgeNode
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import Outgoing
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

T = Topics("BTC-USD")
SPEC = MarketSpec.parse("BTC-USD")
pytestmark = pytest.mark.usefixtures("backend")

CLIENTS = ("alice-7f3", "bob-c41")
COIDS = ("rest-a1-x9", "take-b1-q2", "stp-a2-k5", "more-a3-z8")


class Net:
    """The sequencer and edges driven by hand; `public` records every non-private payload."""

    def __init__(self, tmp_path: Path) -> None:
        self.seq = SequencerNode(SequencerConfig(SPEC, tmp_path / "d"))
        self.retained: dict[str, bytes] = {o.topic: o.payload for o in self.seq.on_connected()}
        self.public: list[tuple[str, bytes]] = list(self.retained.items())
        self.edges: list[EdgeNode] = []
        self.drop_reports = False
        self.now = 0.0

    def edge(self, name: str) -> tuple[EdgeNode, list[dict[str, Any]]]:
        node = EdgeNode(EdgeConfig(client_id=name))
        reports: list[dict[str, Any]] = []
        node.add_listener(lambda kind, data: reports.append(data) if kind == "report" else None)
        node.clock = lambda: self.now
        node.on_connected()
        self.edges.append(node)
        self.flow([o for o in node.on_messages(list(self.retained.items()))])
        return node, reports

    def flow(self, pending: list[Outgoing]) -> None:
        """Deliver messages until nothing more is sent (ticking the edges' timers)."""
        for _ in range(50):
            to_seq = [
                (o.topic, o.payload)
                for o in pending
                if "/orders/" in o.topic or "/replay/request/" in o.topic
            ]
            out = self.seq.on_messages(to_seq) if to_seq else []
            for o in out:
                if o.retain:
                    self.retained[o.topic] = o.payload
                if "/replay/response/" not in o.topic and "/reports/" not in o.topic:
                    self.public.append((o.topic, o.payload))
            pending = []
            for edge in self.edges:
                subs = dict(edge.subscriptions())
                mine = [
                    (o.topic, o.payload) for o in out
                    if o.topic in subs and not (self.drop_reports and "/reports/" in o.topic)
                ]  # fmt: skip
                pending += edge.on_messages(mine) if mine else []
            self.now += 0.5
            for edge in self.edges:
                pending += [o for o in edge.on_tick(self.now) if "/replay/request/" in o.topic]
            if not out and not [o for o in pending if "/replicas/" not in o.topic]:
                return

    def send(self, edge: EdgeNode, order: dict[str, Any]) -> None:
        self.flow(edge.submit(order)[1])


def test_no_client_id_or_order_id_in_the_public_feed_and_a_restarted_edge_reports(tmp_path: Path) -> None:
    net = Net(tmp_path)
    alice, _ = net.edge(CLIENTS[0])
    bob, _ = net.edge(CLIENTS[1])
    net.send(alice, {"op": "new", "id": COIDS[0], "side": "sell", "price": "100", "qty": "2"})
    net.send(alice, {"op": "new", "id": COIDS[3], "side": "sell", "price": "105", "qty": "1"})
    net.seq.on_messages([])
    net.retained[T.snapshot] = net.seq._take_snapshot(0.0)[0].payload  # a snapshot holding her orders
    net.public.append((T.snapshot, net.retained[T.snapshot]))
    # Alice's edge restarts (a late joiner from the snapshot) and her reports topic loses everything.
    net.edges.remove(alice)
    alice2, reports = net.edge(CLIENTS[0])
    assert alice2.own_orders() == [
        {"id": COIDS[0], "side": "sell", "price": "100.00", "qty": "2.000"},
        {"id": COIDS[3], "side": "sell", "price": "105.00", "qty": "1.000"},
    ]
    net.drop_reports = True
    net.send(bob, {"op": "new", "id": COIDS[1], "side": "buy", "price": "100", "qty": "0.5"})
    trades = [(r["id"], r["liquidity"], r["qty"]) for r in reports if r["type"] == "trade"]
    assert trades == [(COIDS[0], "maker", "0.500")]  # derived from the anonymous log, named privately
    # Self-trade prevention by owner number: her buy meets her own sell and is cancelled.
    net.send(
        alice2,
        {"op": "new", "id": COIDS[2], "side": "buy", "price": "100", "qty": "1", "stp": "cancel_taker"},
    )
    assert [(r["type"], r.get("reason")) for r in reports if r["id"] == COIDS[2]] == [
        ("accepted", None), ("cancelled", "self_trade")
    ]  # fmt: skip
    for edge in net.edges:
        assert (edge.version, edge.state_hash) == (net.seq.version, net.seq.state_hash)
    assert any(t == T.trades for t, _ in net.public) and any(t == T.log for t, _ in net.public)
    assert any(t == T.snapshot for t, _ in net.public)
    feed = b"".join(payload for _, payload in net.public)
    for name in CLIENTS + COIDS:
        assert name.encode() not in feed, name
    # The sequencer's own files keep the names (its recovery needs them).
    files = b"".join(p.read_bytes() for p in (tmp_path / "d" / "snapshots").glob("*.snap"))
    assert COIDS[0].encode() in files and CLIENTS[0].encode() in files
    # The last batch changed no level shown (its taker was cancelled): the retained book is one
    # batch behind until the sequencer's idle heartbeat brings it up to date.
    assert json.loads(net.retained[T.book])["version"] == net.seq.version - 1
    for o in net.seq.on_tick(net.seq.commit.next_heartbeat(0.0)):
        if o.retain:
            net.retained[o.topic] = o.payload
    assert json.loads(net.retained[T.book])["version"] == net.seq.version
