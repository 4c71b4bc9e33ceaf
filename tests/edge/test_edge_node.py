from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fastbook.edge.node import EdgeConfig, EdgeNode
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.log import decode_replay_request
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

T = Topics("BTC-USD")
SPEC_HALF = MarketSpec.parse("BTC-USD:tick=0.5")


pytestmark = pytest.mark.usefixtures("backend")


def make_edge(name: str = "alice") -> tuple[EdgeNode, list[tuple[str, dict[str, Any]]]]:
    edge = EdgeNode(EdgeConfig(client_id=name, replay_timeout=1.0, status_interval=1.0))
    now = [0.0]
    edge.clock = lambda: now[0]
    events: list[tuple[str, dict[str, Any]]] = []
    edge.add_listener(lambda kind, data: events.append((kind, data)))
    return edge, events


def test_config_validation() -> None:
    for bad in (
        EdgeConfig(client_id="a/b"),
        EdgeConfig(client_id=""),
        EdgeConfig(client_id="ok", market="X+"),
        EdgeConfig(client_id="ok", replay_timeout=0),
        EdgeConfig(client_id="ok", status_heartbeat=0),
    ):
        with pytest.raises(ValueError):
            EdgeNode(bad)


def test_topics_will_and_status() -> None:
    edge, events = make_edge()
    subs = dict(edge.subscriptions())
    assert set(subs) == {
        T.log, T.snapshot, T.book, T.trades, T.reports("alice"), T.replay_response("alice"),
        T.replica("alice"), T.recover_request,
    }  # (its own status topic: another process under the same client id, ClientPresence; the
    # request of a sequencer whose journal tail is damaged)
    will = edge.will()
    assert will is not None and will.retain and will.topic == T.replica("alice")
    assert json.loads(will.payload)["state"] == "offline"
    (status,) = edge.on_connected()
    assert status.retain and status.topic == T.replica("alice")
    assert json.loads(status.payload) == {
        "client_id": "alice",
        "state": "online",
        "version": 0,
        "hash": "0000000000000000",
        "lag": 0,
        "sync": "syncing",
        "instance": edge.presence.instance,
        "started": edge.presence.started,
        "n": 2,  # every message of this process counts, the will (n 1) too
    }
    assert events[-1][0] == "status"
    assert edge.on_tick(0.5) == []
    statuses = [o for o in edge.on_tick(1.0) if o.topic == T.replica("alice")]
    assert len(statuses) == 1  # no snapshot within 1 s: an empty replica started (a state change)
    assert json.loads(edge.close()[0].payload)["state"] == "offline"


def test_public_trades_are_subscribed_only_for_listeners() -> None:
    edge = EdgeNode(EdgeConfig(client_id="bob"))
    assert T.trades not in dict(edge.subscriptions())  # a bare replica needs none
    edge.add_listener(lambda kind, data: None)
    assert T.trades in dict(edge.subscriptions())


def test_a_following_replica_without_listeners_drops_the_book(tmp_path: Path) -> None:
    """The book is read until the replica follows the log (it gives the head early) or while a
    listener wants it; a following bare replica learns the head from the log and heartbeats."""
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    edge = EdgeNode(EdgeConfig(client_id="bob"))
    edge.on_connected()
    assert T.book in dict(edge.subscriptions())
    edge.on_messages([(o.topic, o.payload) for o in seq.on_connected() + seq.on_tick(0.0)])
    assert edge.in_sync and T.book not in dict(edge.subscriptions())
    edge.add_listener(lambda kind, data: None)
    assert T.book in dict(edge.subscriptions())
    seq.close()


def test_a_bulk_batch_is_one_log_message_and_no_status_flap(tmp_path: Path) -> None:
    """A runner batch of bulk orders (cut at 256 KiB: ~2,500 orders) gives one log message, so a
    following edge never sees itself behind the head mid-batch (a status change each time)."""
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    edge, _ = make_edge()
    edge.on_connected()
    edge.on_messages([(o.topic, o.payload) for o in seq.on_connected() + seq.on_tick(0.0)])
    assert edge.in_sync  # the snapshot, and the sequencer heard (its heartbeat)
    sides = ["buy", "sell"]
    orders = [
        {"op": "new", "id": f"b{i}", "side": sides[i % 2], "price": f"{100 + i % 7}.00", "qty": "1"}
        for i in range(2600)
    ]
    messages = [(T.orders("bulk"), json.dumps(orders[i : i + 520]).encode()) for i in range(0, 2600, 520)]
    out = seq.on_messages(messages)
    assert [o.topic for o in out].count(T.log) == 1
    published = []
    for o in out:
        if o.topic in dict(edge.subscriptions()):
            published += edge.on_messages([(o.topic, o.payload)])
    assert edge.version == seq.version == 2600 and edge.in_sync
    assert [o for o in published if o.topic == T.replica("alice")] == []
    seq.close()


def test_submit_assigns_unique_ids_and_keeps_given_ones() -> None:
    edge, _ = make_edge()
    ids = set()
    for _ in range(100):
        coid, (message,) = edge.submit({"op": "new", "side": "buy", "price": "1", "qty": "1"})
        ids.add(coid)
        assert message.topic == T.orders("alice") and json.loads(message.payload)["id"] == coid
    assert len(ids) == 100
    other, _ = make_edge()
    assert not ids & {other.submit({"op": "new"})[0] for _ in range(100)}  # a restarted edge too
    coid, (message,) = edge.submit({"op": "cancel", "id": "mine"})
    assert coid == "mine" and json.loads(message.payload) == {"op": "cancel", "id": "mine"}
    coid, (message,) = edge.submit({"op": "cancel_all"})
    assert coid == "" and json.loads(message.payload) == {"op": "cancel_all"}
    with pytest.raises(ValueError):
        edge.submit(["not", "a", "dict"])  # type: ignore[arg-type]


def test_follows_sequencer_and_reports_to_listeners(tmp_path: Path) -> None:
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD:tick=0.5"), tmp_path / "d"))
    edge, events = make_edge()
    edge.on_connected()
    retained = seq.on_connected()
    edge.on_messages([(o.topic, o.payload) for o in retained])
    assert edge.synced_once and not edge.in_sync  # a retained snapshot: the sequencer may be gone
    edge.on_messages([(o.topic, o.payload) for o in seq.on_tick(0.0)])  # its heartbeat: it is not
    assert edge.in_sync and edge.version == 0
    _, messages = edge.submit({"op": "new", "id": "s1", "side": "sell", "price": "100.5", "qty": "2"})
    out = seq.on_messages([(m.topic, m.payload) for m in messages])
    _, messages = edge.submit({"op": "new", "id": "b1", "side": "buy", "price": "101", "qty": "0.5"})
    out += seq.on_messages([(m.topic, m.payload) for m in messages])
    edge.on_messages([(o.topic, o.payload) for o in out if o.topic in dict(edge.subscriptions())])
    assert (edge.version, edge.state_hash, edge.lag) == (seq.version, seq.state_hash, 0)
    kinds = [kind for kind, _ in events]
    assert "book" in kinds and "trade" in kinds
    reports = [data for kind, data in events if kind == "report"]
    assert [(r["type"], r["id"]) for r in reports[:2]] == [("accepted", "s1"), ("accepted", "b1")]
    assert edge.depth(5) == {"bids": [], "asks": [["100.5", "1.500", 1]]}  # market tick from the snapshot
    assert edge.own_orders() == [{"id": "s1", "side": "sell", "price": "100.5", "qty": "1.500"}]
    seq.close()


def test_an_edge_maps_its_own_orders_and_an_observer_sees_owner_numbers_only(tmp_path: Path) -> None:
    """Another client's trade with our resting order reports to us; their orders are in the book
    (depth, hash, owner numbers) but not in our maps; an observer maps no one's (the log is
    anonymous)."""
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    retained = seq.on_connected()
    edge, events = make_edge()
    observer = EdgeNode(EdgeConfig(client_id="observer"))
    for node in (edge, observer):
        node.on_connected()
        node.on_messages([(o.topic, o.payload) for o in retained])
    _, messages = edge.submit({"op": "new", "id": "a1", "side": "sell", "price": "100", "qty": "2"})
    orders = [{"op": "new", "id": f"b{i}", "side": "buy", "price": "99", "qty": "1"} for i in range(3)]
    orders.append({"op": "new", "id": "take", "side": "buy", "price": "100", "qty": "0.5"})
    incoming = [(m.topic, m.payload) for m in messages] + [(T.orders("bob"), json.dumps(orders).encode())]
    out = seq.on_messages(incoming)
    for node in (edge, observer):
        node.on_messages([(o.topic, o.payload) for o in out if o.topic in dict(node.subscriptions())])
        assert (node.version, node.state_hash) == (seq.version, seq.state_hash)
    depth = {"bids": [["99.00", "3.000", 3]], "asks": [["100.00", "1.500", 1]]}
    assert edge.depth(5) == observer.depth(5) == depth
    assert edge.own_orders() == [{"id": "a1", "side": "sell", "price": "100.00", "qty": "1.500"}]
    mine, everyone = edge.follower.replica, observer.follower.replica
    assert mine is not None and everyone is not None
    assert sorted(coid for _owner, coid in mine.orders.values()) == ["a1"]
    assert everyone.orders == {} and everyone.owners == {}
    infos = [everyone.book.order(i) for i in range(1, seq.replica.next_order_id)]
    assert {info[1] for info in infos if info is not None} == {1, 2}
    # (alice's and bob's owner numbers: the observer sees no names)
    trades = [data for kind, data in events if kind == "report" and data["type"] == "trade"]
    assert [(t["id"], t["liquidity"], t["qty"]) for t in trades] == [("a1", "maker", "0.500")]
    seq.close()


def test_following_edge_skips_retained_snapshots_but_a_resync_uses_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Following the log, a retained snapshot brings nothing new (it is never ahead of the head) and
    is not decoded, even if it is garbage, and the edge drops the snapshot topic from its
    subscriptions; after a divergence it subscribes again and restores the next one."""
    seq = SequencerNode(SequencerConfig(SPEC_HALF, tmp_path / "d"))
    edge, _ = make_edge()
    edge.on_connected()
    assert T.snapshot in dict(edge.subscriptions())
    edge.on_messages([(o.topic, o.payload) for o in seq.on_connected()])
    assert edge.synced_once and edge.version == 0
    assert set(dict(edge.subscriptions())) == {
        T.log, T.book, T.trades, T.reports("alice"), T.replay_response("alice"), T.replica("alice"),
        T.recover_request,
    }  # fmt: skip
    out = []
    for i in range(4):
        _, messages = edge.submit({"op": "new", "id": f"s{i}", "side": "sell", "price": "100.5", "qty": "1"})
        out += seq.on_messages([(m.topic, m.payload) for m in messages])
    snapshots = seq._take_snapshot(0.0)  # the retained snapshot of version 4
    out += snapshots
    edge.on_messages([(o.topic, o.payload) for o in out if o.topic in dict(edge.subscriptions())])
    assert edge.version == seq.version == 4
    restored = edge.follower.resyncs
    edge.on_messages([(T.snapshot, b"FBSS-garbage-never-decoded")])
    assert edge.version == 4 and edge.follower.mismatch is None
    assert "ignoring bad message" not in caplog.text  # not decoded at all
    # A divergence drops the replica: the next snapshot is restored, not skipped.
    edge.follower._diverged("forced by the test")
    assert edge.follower.replica is None and edge.follower.resyncs == restored + 1
    assert T.snapshot in dict(edge.subscriptions())
    edge.on_messages([(T.snapshot, snapshots[-1].payload)])
    assert (edge.version, edge.state_hash) == (seq.version, seq.state_hash)
    assert T.snapshot not in dict(edge.subscriptions())
    seq.close()


def test_bad_messages_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    edge, events = make_edge()
    edge.on_connected()
    out = edge.on_messages(
        [
            (T.log, b"garbage"),
            (T.snapshot, b"FBSS-not-really"),
            (T.book, b"[1"),
            (T.trades, b"{}"),
            (T.reports("alice"), b'{"no": 1}'),
            (T.replay_response("alice"), b"\x00"),
        ]
    )
    assert all(o.topic == T.replica("alice") for o in out)
    assert edge.version == 0 and "ignoring bad message" in caplog.text


def test_log_of_another_market_is_refused_aloud(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("ETH-USD"), tmp_path / "d"))
    edge, _ = make_edge()
    edge.on_connected()
    edge.on_tick(1.5)  # no snapshot: an empty replica at version 0
    _, messages = edge.submit({"op": "new", "id": "s1", "side": "sell", "price": "100", "qty": "2"})
    out = seq.on_messages([(m.topic.replace("BTC-USD", "ETH-USD"), m.payload) for m in messages])
    foreign_log = [o.payload for o in out if o.topic == Topics("ETH-USD").log]
    assert foreign_log
    edge.on_messages([(T.log, payload) for payload in foreign_log])
    assert edge.version == 0
    assert "log of market 'ETH-USD'" in caplog.text  # not silently dropped: the log says why
    seq.close()


def test_replay_request_when_no_snapshot_arrives() -> None:
    edge, _ = make_edge()
    edge.on_connected()
    out = edge.on_tick(1.5)
    requests = [decode_replay_request(o.payload) for o in out if o.topic == T.replay_request("alice")]
    assert [(r.first, r.last) for r in requests] == [(1, None)]


def test_edge_started_without_snapshot_learns_the_tick_later(tmp_path: Path) -> None:
    edge, _ = make_edge()
    edge.on_connected()
    edge.on_tick(1.5)  # no snapshot: replay from 1 with the default tick
    # Following, but the tick is a guess until a snapshot says: the edge stays subscribed to them.
    assert not edge.follower.market_known and T.snapshot in dict(edge.subscriptions())
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD:tick=0.5"), tmp_path / "d"))
    _, messages = edge.submit({"op": "new", "id": "s1", "side": "sell", "price": "100.5", "qty": "2"})
    out = seq.on_connected() + seq.on_messages([(m.topic, m.payload) for m in messages])
    edge.on_messages([(o.topic, o.payload) for o in out if o.topic in dict(edge.subscriptions())])
    assert edge.version == 1
    assert edge.depth(1)["asks"] == [["100.5", "2.000", 1]]
    assert edge.follower.market_known and T.snapshot not in dict(edge.subscriptions())
    seq.close()


def test_a_bare_replica_finds_a_lost_last_log_message_by_the_heartbeat(tmp_path: Path) -> None:
    """Without the book, the head of a lost last message (the log is QoS0) comes with the
    sequencer's idle heartbeat: the replica asks for exactly what it missed and catches up."""
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    seq.clock = lambda: 0.0
    edge = EdgeNode(EdgeConfig(client_id="bob"))
    now = [0.0]
    edge.clock = lambda: now[0]
    edge.on_connected()
    edge.on_messages([(o.topic, o.payload) for o in seq.on_connected()])
    seq.on_tick(0.0)
    order = {"op": "new", "id": "a1", "side": "buy", "price": "100.00", "qty": "1"}
    lost = seq.on_messages([(T.orders("alice"), json.dumps(order).encode())])
    assert T.log in [o.topic for o in lost] and T.book not in dict(edge.subscriptions())
    now[0] = 1.0
    beat = [o for o in seq.on_tick(1.0) if o.topic == T.log]
    assert len(beat) == 1
    edge.on_messages([(T.log, beat[0].payload)])  # (a replay is asked for at once or after the grace)
    assert edge.lag == 1
    now[0] = 1.5
    asks = [o for o in edge.on_tick(1.5) if o.topic == T.replay_request("bob")]
    assert [json.loads(o.payload) for o in asks] == [{"from": 1, "to": None}]  # from the first missing seq
    for answer in seq.on_messages([(asks[0].topic, asks[0].payload)]):
        if answer.topic == T.replay_response("bob"):
            edge.on_messages([(answer.topic, answer.payload)])
    assert (edge.version, edge.state_hash) == (seq.version, seq.state_hash) and edge.in_sync
    seq.close()


def test_entries_applied_alone_reach_the_report_hook_as_a_batch_selects_them(tmp_path: Path) -> None:
    """An entry applied alone (a lone order's message) calls the edge's report hook only if it
    concerns the edge's client (its own entry, or a trade against its resting order), the
    entries `Replica.apply_batch` selects with `interest`: the same calls and the same reports
    either way, and none for the entries that concern others only."""
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    retained = seq.on_connected() + seq.on_tick(0.0)
    edges = {"alone": make_edge(), "batch": make_edge()}
    edges["batch"][0].follower.ENTRY_BY_ENTRY = 0  # every message through apply_batch
    hooked: dict[str, list[int]] = {}
    for name, (edge, _events) in edges.items():
        edge.on_connected()
        edge.on_messages([(o.topic, o.payload) for o in retained])
        assert edge.in_sync
        calls = hooked[name] = []
        hook = edge.follower.on_applied
        assert hook is not None

        def recording(entry: Any, events: Any, hook: Any = hook, calls: list[int] = calls) -> None:
            calls.append(entry.seq)
            hook(entry, events)

        edge.follower.on_applied = recording
    flow = [("alice", {"op": "new", "id": "a1", "side": "sell", "price": "100", "qty": "2"}),
            ("bob", {"op": "new", "id": "b1", "side": "buy", "price": "99", "qty": "1"}),  # not ours
            ("bob", {"op": "new", "id": "b2", "side": "buy", "price": "100", "qty": "0.5"}),  # takes ours
            ("carol", {"op": "new", "id": "c1", "side": "sell", "price": "101", "qty": "1"}),  # not ours
            ("carol", {"op": "new", "id": "c2", "side": "buy", "price": "99", "qty": "1"}),  # not ours
            ("alice", {"op": "cancel", "id": "a1"})]  # fmt: skip
    for client, order in flow:
        out = seq.on_messages([(T.orders(client), json.dumps(order).encode())])
        # (alice's reports first: its entries are named when the log arrives, so the batch path
        # takes them too)
        ordered = sorted(out, key=lambda o: o.topic != T.reports("alice"))
        for edge, _events in edges.values():
            edge.on_messages([(o.topic, o.payload) for o in ordered if o.topic in dict(edge.subscriptions())])
            assert (edge.version, edge.state_hash) == (seq.version, seq.state_hash)
    assert hooked["alone"] == hooked["batch"] == [1, 3, 6]
    reports = [[d for kind, d in events if kind == "report"] for _edge, events in edges.values()]
    assert reports[0] == reports[1]
    assert [r["type"] for r in reports[0]] == ["accepted", "trade", "cancelled"]
    seq.close()


def test_subscriptions_are_made_once_per_state() -> None:
    """The runner asks for the subscriptions after every call into the node: the same list is
    returned while nothing changes, equal to the one the state gives."""
    edge = EdgeNode(EdgeConfig(client_id="bob"))
    first = edge.subscriptions()
    assert edge.subscriptions() is first and first == edge._subscription_list(False, False)
    edge.add_listener(lambda kind, data: None)
    assert edge.subscriptions() == edge._subscription_list(False, True) != first
    assert T.trades in dict(edge.subscriptions())
