"""An edge derives its own client's execution reports from the log its replica applies.

Reports on reports/<client> are plain QoS1 messages that are never re-sent; the log is replayed
until every replica has it. So an edge delivers every accepted/trade/cancelled/done/amended/
cancelled_all report of its client even when reports/<client> delivers nothing, and a report that
arrives both ways (or twice on the reports topic) reaches the listeners once.

Runs on both engines (FASTBOOK_BACKEND=reference and native).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from fastbook.edge.node import EdgeNode
from fastbook.log.sequencer import SequencerNode
from tests.log.test_cluster_inmemory import (
    TOPICS,
    Client,
    check_accounting,
    converged,
    make_edge,
    make_sequencer,
    run_flow,
)
from tests.support.inmemory_bus import Bus, Chaos

SEQUENCED = ("accepted", "trade", "cancelled", "done", "amended", "cancelled_all")


pytestmark = pytest.mark.usefixtures("backend")


def published_reports(bus: Bus, client: str) -> list[dict[str, Any]]:
    """Every report the sequencer published for `client`, in order (whether delivered or not)."""
    out: list[dict[str, Any]] = []
    for sender, message in bus.published:
        if sender == "sequencer" and message.topic == TOPICS.reports(client):
            out.extend(json.loads(message.payload))
    return out


def sequenced(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in reports if r["type"] in SEQUENCED and r.get("seq") is not None]


def cluster(
    tmp_path: Path, chaos: Chaos, seed: int
) -> tuple[Bus, SequencerNode, list[EdgeNode], list[Client]]:
    bus = Bus(seed=seed, chaos=chaos)
    seq = make_sequencer(tmp_path, snapshot_every=150)
    bus.connect("sequencer", seq)
    edges = [make_edge(name) for name in ("alice", "bob", "carol")]
    for edge in edges:
        bus.connect(edge.client_id, edge)
    # Log-derived reports start once the replica has caught up (what client.Edge.wait_synced waits for).
    bus.run_until(lambda: converged(bus, seq, edges))
    rng = random.Random(seed)
    return bus, seq, edges, [Client(e.client_id, e, rng) for e in edges]


@pytest.mark.parametrize("lossy_log", [False, True])
def test_reports_topic_dropped_entirely_yet_every_sequenced_report_arrives_once(
    tmp_path: Path, lossy_log: bool
) -> None:
    alice_reports = TOPICS.reports("alice")

    def chaotic(topic: str) -> bool:
        if topic == alice_reports:
            return True
        return lossy_log and (topic == TOPICS.log or "/replay/response/" in topic)

    # Drop 100% on alice's reports topic; with lossy_log the log is also dropped/duplicated/reordered
    # (and so are alice's reports, all of them dropped).
    chaos = Chaos(drop=1.0, applies_to=lambda t: t == alice_reports)
    if lossy_log:
        chaos = Chaos(drop=0.2, duplicate=0.2, max_delay_steps=3, applies_to=chaotic)
    bus, seq, edges, clients = cluster(tmp_path, chaos, seed=11 if lossy_log else 12)
    if lossy_log:  # drop all of alice's reports, and a fifth of the log
        original = bus._enqueue

        def enqueue(client: Any, topic: str, payload: bytes, chaotic: bool) -> None:
            if chaotic and topic == alice_reports:
                return
            original(client, topic, payload, chaotic)

        bus._enqueue = enqueue  # type: ignore[method-assign]
    alice = clients[0]
    run_flow(bus, clients, 250, random.Random(5))
    bus.run_until(lambda: converged(bus, seq, edges) and bus.idle())

    expected = sequenced(published_reports(bus, "alice"))
    types = {r["type"] for r in expected}
    assert {"accepted", "trade", "cancelled", "done"} <= types, types
    # Not one report reached alice on her reports topic, yet she saw each sequenced one exactly once,
    # identical to what the sequencer built, in seq order.
    assert alice.reports == expected
    assert not [r for r in alice.reports if r["type"] == "rejected"]  # rejects only come that way
    # The clients whose reports topic works see each report once too (log and topic both deliver).
    for client in clients[1:]:
        assert sequenced(client.reports) == sequenced(published_reports(bus, client.name))
    # Fills agree with the journal: every accepted order of bob and carol is accounted for.
    assert check_accounting(seq, clients[1:]) > 20


def test_report_delivered_twice_on_the_reports_topic_and_by_the_log_reaches_listeners_once(
    tmp_path: Path,
) -> None:
    every_report_twice = Chaos(duplicate=1.0, applies_to=lambda t: "/reports/" in t)
    bus, seq, edges, clients = cluster(tmp_path, every_report_twice, seed=21)
    run_flow(bus, clients, 200, random.Random(9))
    bus.run_until(lambda: converged(bus, seq, edges) and bus.idle())
    for client in clients:
        published = published_reports(bus, client.name)
        got = sequenced(client.reports)
        assert got == sequenced(published), client.name
        keys = [(r["type"], r["id"], r["seq"], r.get("trade_id"), r.get("liquidity")) for r in got]
        assert len(keys) == len(set(keys))
        assert len(got) > 20
    assert check_accounting(seq, clients) > 50


def test_a_report_received_twice_by_the_node_is_emitted_once() -> None:
    edge = make_edge("dave")
    seen: list[dict[str, Any]] = []
    edge.add_listener(lambda kind, data: seen.append(data) if kind == "report" else None)
    fill = {"type": "trade", "id": "o1", "seq": 7, "trade_id": "7-1", "price": "100.00", "qty": "1.000",
            "side": "buy", "liquidity": "taker", "remaining": "0.000"}  # fmt: skip
    maker_side = dict(fill, id="o2", side="sell", liquidity="maker")  # a self-trade: both sides are dave's
    done = {"type": "done", "id": "o1", "seq": 7}
    reject = {"type": "rejected", "id": "o3", "op": "new", "code": "INVALID_PRICE", "message": "bad"}
    payload = json.dumps([fill, maker_side, done, reject]).encode()
    edge.on_messages([(TOPICS.reports("dave"), payload), (TOPICS.reports("dave"), payload)])
    # The sequenced reports once each; a reject is never sequenced and is not deduplicated.
    assert seen == [fill, maker_side, done, reject, reject]


def test_client_edge_future_resolves_from_a_log_derived_accepted(tmp_path: Path) -> None:
    """The sequencer's reports never reach the Python API client; its replica's log still answers."""
    from concurrent.futures import Future

    from fastbook.edge.client import Edge
    from fastbook.transport.node import Outgoing

    seq = make_sequencer(tmp_path)
    api = Edge("erin", "mqtt://127.0.0.1:1", "BTC-USD")  # never started: driven by hand below
    sent: list[Outgoing] = []

    def call_here(fn: Any) -> Future[Any]:  # the runner's worker thread, inline
        value, messages = fn()
        sent.extend(messages)
        done: Future[Any] = Future()
        done.set_result(value)
        return done

    api.runner.call_with_result = call_here  # type: ignore[method-assign]
    node = api.node
    node.on_messages([(TOPICS.snapshot, seq.on_connected()[1].payload)])
    node.on_messages([(o.topic, o.payload) for o in seq.on_tick(0.0)])  # the sequencer's heartbeat
    assert node.in_sync
    future = api.submit(side="buy", price="100.00", qty="1")
    assert not future.done()
    out = seq.on_messages([(m.topic, m.payload) for m in sent])
    assert any(m.topic == TOPICS.reports("erin") for m in out)
    node.on_messages([(m.topic, m.payload) for m in out if m.topic == TOPICS.log])  # reports dropped
    # The public log does not say the entry is erin's (it introduces an owner number): it waits,
    # and after the grace the edge asks for a replay, whose answer names erin's own entries.
    assert not future.done()
    requests = node.on_tick(node.clock() + 1.0)
    requests = [m for m in requests if m.topic == TOPICS.replay_request("erin")]
    assert len(requests) == 1
    out = seq.on_messages([(m.topic, m.payload) for m in requests])
    node.on_messages([(m.topic, m.payload) for m in out if m.topic == TOPICS.replay_response("erin")])
    answer = future.result(0)
    assert (answer["type"], answer["seq"], answer["qty"]) == ("accepted", 1, "1.000")
