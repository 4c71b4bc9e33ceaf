"""The whole distributed core on an in-memory bus: one sequencer, several edges, a lossy network.

Runs on both engines (FASTBOOK_BACKEND=reference and native).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from fastbook.edge.node import EdgeConfig, EdgeNode
from fastbook.log import journal as journal_mod
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import Outgoing
from fastbook.wire.log import decode_log_message, decode_replay_request
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics
from tests.support.inmemory_bus import Bus, Chaos

SPEC = MarketSpec.parse("BTC-USD")
TOPICS = Topics("BTC-USD")


pytestmark = pytest.mark.usefixtures("backend")


def lossy_log(topic: str) -> bool:
    return topic == TOPICS.log or "/replay/response/" in topic


class Client:
    """A trader behind one edge: random orders, and every report it receives."""

    def __init__(self, name: str, edge: EdgeNode, rng: random.Random) -> None:
        self.name = name
        self.edge = edge
        self.rng = rng
        self.reports: list[dict[str, Any]] = []
        self.submitted: dict[str, dict[str, Any]] = {}
        edge.add_listener(self._on_event)

    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "report":
            self.reports.append(data)

    def random_order(self) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        open_ids = [r["id"] for r in self.reports if r["type"] == "accepted"]
        if roll < 0.15 and open_ids:
            return {"op": "cancel", "id": rng.choice(open_ids)}
        if roll < 0.22 and open_ids:
            return {"op": "amend", "id": rng.choice(open_ids), "qty": f"{rng.randint(1, 3000) / 1000:.3f}"}
        if roll < 0.24:
            return {"op": "cancel_all"}
        order: dict[str, Any] = {
            "op": "new",
            "side": rng.choice(["buy", "sell"]),
            "qty": f"{rng.randint(1, 3000) / 1000:.3f}",
        }
        if roll < 0.30:
            order["type"] = "market"
        else:
            order["price"] = f"{rng.randint(9950, 10050) / 100:.2f}"
            order["tif"] = rng.choice(["gtc", "gtc", "gtc", "ioc", "fok"])
            if order["tif"] == "gtc" and rng.random() < 0.1:
                order["post_only"] = True
        if rng.random() < 0.2:
            order["stp"] = rng.choice(["cancel_taker", "cancel_maker", "cancel_both"])
        return order

    def submit(self, bus: Bus, order: dict[str, Any]) -> None:
        coid, messages = self.edge.submit(order)
        if order["op"] == "new":
            self.submitted[coid] = order
        bus.publish(self.name, messages)


def make_sequencer(tmp_path: Path, **kwargs: Any) -> SequencerNode:
    return SequencerNode(SequencerConfig(SPEC, tmp_path / "seq", **kwargs))


def make_edge(name: str) -> EdgeNode:
    return EdgeNode(EdgeConfig(client_id=name, replay_timeout=0.5, status_interval=0.5))


def converged(bus: Bus, seq: SequencerNode, edges: list[EdgeNode]) -> bool:
    return all(e.version == seq.version and e.state_hash == seq.state_hash and e.in_sync for e in edges)


def logged_seqs(bus: Bus) -> list[int]:
    """Seqs of every live log message the sequencer(s) published, in publish order."""
    seqs = []
    for _sender, message in bus.published:
        if message.topic == TOPICS.log:
            seqs.extend(e.seq for e in decode_log_message(message.payload).entries)
    return seqs


def run_flow(bus: Bus, clients: list[Client], steps: int, rng: random.Random, rate: float = 0.6) -> None:
    for _ in range(steps):
        for client in clients:
            if rng.random() < rate:
                client.submit(bus, client.random_order())
        bus.step()


def check_accounting(seq: SequencerNode, clients: list[Client]) -> int:
    """Every submitted "new" got exactly one accepted-or-rejected answer; every accepted order is
    either resting in the sequencer's book or finished (done/cancelled), and for orders never
    amended, fills + cancelled + resting == original qty."""
    accepted_total = 0
    for client in clients:
        by_id: dict[str, list[dict[str, Any]]] = {}
        for report in client.reports:
            by_id.setdefault(report.get("id"), []).append(report)
        owner = seq.replica.owners.get(client.name)
        for coid, order in client.submitted.items():
            reports = by_id.get(coid, [])
            answers = [
                r for r in reports if r["type"] in ("accepted", "rejected") and r.get("op", "new") == "new"
            ]
            assert len([r for r in answers if r["type"] == "accepted"]) <= 1, (coid, reports)
            assert answers, f"{client.name} {coid} got no accepted/rejected report"
            if answers[0]["type"] != "accepted":
                continue
            accepted_total += 1
            resting_id = None if owner is None else seq.replica.resting_id(owner, coid)
            finished = [r for r in reports if r["type"] in ("done", "cancelled")]
            assert (resting_id is not None) != bool(finished), (coid, reports)
            if any(r["type"] == "amended" for r in reports):
                continue
            lots = SPEC.qty_to_lots
            filled = sum(lots(r["qty"]) for r in reports if r["type"] == "trade")
            cancelled = sum(lots(r["qty"]) for r in reports if r["type"] == "cancelled")
            resting = 0 if resting_id is None else seq.replica.book.order(resting_id)[4]
            assert filled + cancelled + resting == lots(order["qty"]), (coid, reports)
    return accepted_total


def test_random_flows_converge_over_a_lossy_network(tmp_path: Path) -> None:
    rng = random.Random(7)
    bus = Bus(seed=3, chaos=Chaos(drop=0.15, duplicate=0.15, max_delay_steps=3, applies_to=lossy_log))
    seq = make_sequencer(tmp_path, snapshot_every=200)
    bus.connect("sequencer", seq)
    edges = [make_edge(f"edge{i}") for i in range(3)]
    for edge in edges:
        bus.connect(edge.client_id, edge)
    clients = [Client(e.client_id, e, rng) for e in edges]
    run_flow(bus, clients, 300, rng)
    bus.run_until(lambda: converged(bus, seq, edges) and bus.idle())
    assert seq.version > 200
    assert check_accounting(seq, clients) > 50
    seqs = logged_seqs(bus)
    assert seqs == list(range(1, seq.version + 1))  # the sequencer's log is gap-free, each seq once
    for edge in edges:
        assert edge.depth(5) == _depth(seq, 5)
        owner_orders = {o["id"] for o in edge.own_orders()}
        owner = seq.replica.owners.get(edge.client_id)
        expected = set(seq.replica.by_owner.get(owner, {})) if owner is not None else set()
        assert owner_orders == expected


def _depth(seq: SequencerNode, n: int) -> dict[str, Any]:
    bids, asks = seq.replica.book.depth(n)
    tp, lq = SPEC.ticks_to_price, SPEC.lots_to_qty
    return {"bids": [[tp(p), lq(q), c] for p, q, c in bids], "asks": [[tp(p), lq(q), c] for p, q, c in asks]}


def test_duplicated_order_messages_never_execute_twice(tmp_path: Path) -> None:
    bus = Bus(seed=5, chaos=Chaos(duplicate=1.0, applies_to=lambda t: "/orders/" in t))
    seq = make_sequencer(tmp_path)
    bus.connect("sequencer", seq)
    edge = make_edge("alice")
    bus.connect("alice", edge)
    client = Client("alice", edge, random.Random(1))
    client.submit(bus, {"op": "new", "id": "o-1", "side": "buy", "price": "100.00", "qty": "1"})
    bus.run_until(lambda: len(client.reports) >= 2 and bus.idle())
    assert [r["type"] for r in client.reports] == ["accepted", "rejected"]
    assert client.reports[1]["code"] == "DUPLICATE_CLIENT_ORDER_ID"
    assert seq.version == 1


def test_late_joiner_starts_from_snapshot_and_replays_the_gap(tmp_path: Path) -> None:
    rng = random.Random(11)
    bus = Bus(seed=4)
    seq = make_sequencer(tmp_path, snapshot_every=300)
    bus.connect("sequencer", seq)
    early = [make_edge("a"), make_edge("b")]
    for edge in early:
        bus.connect(edge.client_id, edge)
    clients = [Client(e.client_id, e, rng) for e in early]
    run_flow(bus, clients, 500, rng, rate=0.9)
    assert seq.version > 600
    late = make_edge("late")
    bus.connect("late", late)
    run_flow(bus, clients, 20, rng)
    bus.run_until(lambda: converged(bus, seq, [*early, late]) and bus.idle())
    requests = [
        decode_replay_request(m.payload)
        for s, m in bus.published
        if s == "late" and "/replay/request/" in m.topic
    ]
    assert all(r.first > 300 for r in requests), requests  # it never replayed from the beginning


def test_no_snapshot_within_timeout_replays_from_one(tmp_path: Path) -> None:
    rng = random.Random(2)
    bus = Bus(seed=9)
    seq = make_sequencer(tmp_path)
    bus.connect("sequencer", seq)
    first = make_edge("a")
    bus.connect("a", first)
    clients = [Client("a", first, rng)]
    run_flow(bus, clients, 50, rng)
    del bus.retained[TOPICS.snapshot]
    late = make_edge("late")
    bus.connect("late", late)
    bus.run_until(lambda: converged(bus, seq, [first, late]) and bus.idle())
    requests = [
        decode_replay_request(m.payload)
        for s, m in bus.published
        if s == "late" and "/replay/request/" in m.topic
    ]
    assert requests[0].first == 1


@pytest.mark.parametrize("damage", ["none", "torn_tail", "corrupt_snapshot"])
def test_sequencer_restart_continues_without_gap_or_duplicate(tmp_path: Path, damage: str) -> None:
    rng = random.Random(5)
    bus = Bus(seed=6, chaos=Chaos(drop=0.1, max_delay_steps=2, applies_to=lossy_log))
    seq = make_sequencer(tmp_path, snapshot_every=150)
    bus.connect("sequencer", seq)
    edges = [make_edge("a"), make_edge("b")]
    for edge in edges:
        bus.connect(edge.client_id, edge)
    clients = [Client(e.client_id, e, rng) for e in edges]
    run_flow(bus, clients, 200, rng)
    bus.run_until(lambda: converged(bus, seq, edges) and bus.idle())
    version, state_hash = seq.version, seq.state_hash
    bus.disconnect("sequencer")
    seq.close()
    data_dir = tmp_path / "seq"
    if damage == "torn_tail":
        with open(data_dir / "journal.log", "ab") as f:
            # (a frame the file ends inside of: a whole frame that fails its CRC is refused instead)
            f.write(b"\x40\x00\x00\x00garbage-from-a-crash")
    snaps = sorted(int(p.stem) for p in (data_dir / "snapshots").glob("*.snap"))
    if damage == "corrupt_snapshot":
        newest = data_dir / "snapshots" / f"{snaps[-1]}.snap"
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0x01
        newest.write_bytes(bytes(data))
    restarted = make_sequencer(tmp_path, snapshot_every=150)
    assert (restarted.version, restarted.state_hash) == (version, state_hash)
    if damage == "torn_tail":
        assert restarted.journal.dropped_bytes > 0
    if damage == "corrupt_snapshot":
        assert restarted.snapshots.corrupt and restarted.snapshots.corrupt[0].name == f"{snaps[-1]}.snap"
    bus.connect("sequencer", restarted)
    run_flow(bus, clients, 200, rng)
    bus.run_until(lambda: converged(bus, restarted, edges) and bus.idle())
    assert restarted.version > version
    assert logged_seqs(bus) == list(range(1, restarted.version + 1))
    check_accounting(restarted, clients)


def test_hash_mismatch_stops_logs_and_resyncs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(8)
    bus = Bus(seed=2)
    seq = make_sequencer(tmp_path)
    bus.connect("sequencer", seq)
    victim, other = make_edge("victim"), make_edge("other")
    bus.connect("victim", victim)
    bus.connect("other", other)
    events: list[tuple[str, dict[str, Any]]] = []
    victim.add_listener(lambda kind, data: events.append((kind, data)))
    clients = [Client("victim", victim, rng), Client("other", other, rng)]
    run_flow(bus, clients, 40, rng)
    bus.run_until(lambda: converged(bus, seq, [victim, other]) and bus.idle())
    # Corrupt the victim's replica behind the log's back: the next entry's hash cannot match.
    replica = victim.follower.replica
    assert replica is not None
    replica.book.new(10**12, 999_999, 1, 1, 1)
    with caplog.at_level(logging.ERROR, logger="fastbook.log.replica"):
        run_flow(bus, clients, 20, rng)
        bus.run_until(lambda: converged(bus, seq, [victim, other]) and bus.idle())
    assert "DIVERGED" in caplog.text
    assert any(kind == "resync" for kind, _ in events)
    assert victim.follower.resyncs == 1
    assert victim.follower.replica is not None and victim.follower.replica.book.order(10**12) is None


def test_bad_input_is_rejected_and_everything_keeps_running(tmp_path: Path) -> None:
    bus = Bus(seed=1)
    seq = make_sequencer(tmp_path, max_payload=4096)
    bus.connect("sequencer", seq)
    edge = make_edge("mallory")
    bus.connect("mallory", edge)
    client = Client("mallory", edge, random.Random(0))
    topic = TOPICS.orders("mallory")
    payloads = [
        b"{not json",
        b"\xff\xfe",
        b'{"op":"new","id":"x","side":"buy","price":"100.001","qty":"1"}',
        b'{"op":"new","id":"y","side":"buy","price":"100","qty":"1","colour":"red"}',
        b'{"op":"new","id":"z","side":"buy","price":"100","qty":"1","market":"DOGE-USD"}',
        b'{"op":"new","id":"n","side":"buy","price":NaN,"qty":"1"}',
        b"[" + b" " * 5000 + b"]",
    ]
    bus.publish("mallory", [Outgoing(topic, p) for p in payloads])
    bus.run_until(lambda: len(client.reports) >= len(payloads))
    codes = [r["code"] for r in client.reports]
    assert codes == [
        "MALFORMED_JSON",
        "INVALID_UTF8",
        "INVALID_PRICE",
        "UNKNOWN_FIELD",
        "UNKNOWN_MARKET",
        "MALFORMED_JSON",
        "PAYLOAD_TOO_LARGE",
    ]
    assert all(r["type"] == "rejected" and r["message"] for r in client.reports)
    assert seq.version == 0
    client.submit(bus, {"op": "new", "side": "sell", "price": "100.00", "qty": "1"})
    bus.run_until(lambda: seq.version == 1 and edge.version == 1)


def test_journal_failure_publishes_nothing_undurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = Bus(seed=1)
    seq = make_sequencer(tmp_path)
    bus.connect("sequencer", seq)
    edge = make_edge("alice")
    bus.connect("alice", edge)
    client = Client("alice", edge, random.Random(0))
    client.submit(bus, {"op": "new", "side": "sell", "price": "100.00", "qty": "1"})
    bus.run_until(lambda: edge.version == 1)

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_mod.os, "fdatasync", broken)
    logs_before = len([m for _s, m in bus.published if m.topic == TOPICS.log])
    client.submit(bus, {"op": "new", "id": "b", "side": "buy", "price": "100.00", "qty": "1"})
    bus.run_until(lambda: any(r["id"] == "b" for r in client.reports))
    answers = {r["id"]: r for r in client.reports if r["id"] == "b"}
    assert answers["b"]["code"] == "JOURNAL_UNAVAILABLE"
    assert "No space left" in answers["b"]["message"]
    assert len([m for _s, m in bus.published if m.topic == TOPICS.log]) == logs_before
    assert json.loads(bus.retained[TOPICS.book])["version"] == 1
    # Room again: the sequencer resumes by itself from the durable state (version 1) ...
    monkeypatch.undo()
    bus.run_until(lambda: seq.failed is None)
    assert seq.version == 1 and json.loads(bus.retained[TOPICS.book])["version"] == 1
    client.submit(bus, {"op": "new", "id": "c", "side": "buy", "price": "90.00", "qty": "1"})
    bus.run_until(lambda: any(r["id"] == "c" for r in client.reports) and edge.version == 2)
    assert [r["type"] for r in client.reports if r["id"] == "c"] == ["accepted"]
    assert edge.state_hash == seq.state_hash
    # ... and after a restart the durable state (version 2) is what the sequencer has.
    bus.disconnect("sequencer")
    seq.close()
    assert make_sequencer(tmp_path).version == 2


def test_harsh_network_with_late_joiner_and_sequencer_restart(tmp_path: Path) -> None:
    """30% loss and duplication plus reordering on the log, replays, the book and snapshots; a late
    joiner; a sequencer restart. (Seed 25 once left an edge behind on an idle market: a lost burst
    tail plus a lost book; the heartbeat fixed it.)"""

    def harsh(topic: str) -> bool:
        return lossy_log(topic) or topic in (TOPICS.book, TOPICS.snapshot)

    rng = random.Random(25)
    bus = Bus(seed=25, chaos=Chaos(drop=0.3, duplicate=0.3, max_delay_steps=6, applies_to=harsh))
    seq = make_sequencer(tmp_path, snapshot_every=50)
    bus.connect("sequencer", seq)
    edges = [make_edge(f"e{i}") for i in range(3)]
    for edge in edges[:2]:
        bus.connect(edge.client_id, edge)
    clients = [Client(e.client_id, e, rng) for e in edges[:2]]
    run_flow(bus, clients, 100, rng)
    bus.connect("e2", edges[2])
    clients.append(Client("e2", edges[2], rng))
    run_flow(bus, clients, 100, rng)
    bus.disconnect("sequencer")
    seq.close()
    seq = make_sequencer(tmp_path, snapshot_every=50)
    bus.connect("sequencer", seq)
    run_flow(bus, clients, 100, rng)
    bus.run_until(lambda: converged(bus, seq, edges) and bus.idle(), 3000)
    assert check_accounting(seq, clients) > 50
