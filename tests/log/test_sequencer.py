from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fastbook.log import replay as replay_mod
from fastbook.log.journal import JournalError
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import Outgoing
from fastbook.wire.log import decode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.snapshot import decode_snapshot, is_snapshot_payload
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")


pytestmark = pytest.mark.usefixtures("backend")


@pytest.fixture
def seq(tmp_path: Path) -> SequencerNode:
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d"))
    yield node
    node.close()


def send(node: SequencerNode, client: str, *orders: Any) -> list[Outgoing]:
    payload = json.dumps(orders[0] if len(orders) == 1 else list(orders)).encode()
    return node.on_messages([(T.orders(client), payload)])


def reports(out: list[Outgoing], client: str) -> list[dict[str, Any]]:
    return [r for o in out if o.topic == T.reports(client) for r in json.loads(o.payload)]


def entries(out: list[Outgoing]) -> list[Any]:
    return [e for o in out if o.topic == T.log for e in decode_log_message(o.payload).entries]


def new(coid: str, side: str, price: str | None, qty: str, **extra: Any) -> dict[str, Any]:
    order = {"op": "new", "id": coid, "side": side, "qty": qty, **extra}
    if price is not None:
        order["price"] = price
    return order


def test_accept_sequence_journal_and_publish(seq: SequencerNode) -> None:
    out = send(seq, "alice", new("a1", "sell", "100.25", "1.5"))
    assert [o.topic for o in out] == [T.log, T.reports("alice"), T.book]
    (entry,) = entries(out)
    # The public log names nobody (engine id and owner number only); the journal keeps the names.
    assert (entry.seq, entry.client_id, entry.client_order_id, entry.order_id, entry.owner) == (
        1,
        None,
        None,
        1,
        1,
    )
    assert (entry.price, entry.qty, entry.hash) == (10025, 1500, seq.state_hash)
    assert seq.journal.last_seq == 1
    assert seq.journal.entries() == [entry._replace(client_id="alice", client_order_id="a1")]
    assert reports(out, "alice") == [
        {
            "type": "accepted",
            "id": "a1",
            "seq": 1,
            "side": "sell",
            "order_type": "limit",
            "price": "100.25",
            "qty": "1.500",
        }
    ]
    book = json.loads(out[-1].payload)
    assert out[-1].retain
    assert book["version"] == 1 and book["asks"] == [["100.25", "1.500", 1]] and book["bids"] == []


def test_trade_reports_for_maker_and_taker(seq: SequencerNode) -> None:
    send(seq, "alice", new("a1", "sell", "100.25", "1.5"))
    out = send(seq, "bob", new("b1", "buy", "100.30", "1"))
    bob, alice = reports(out, "bob"), reports(out, "alice")
    assert [r["type"] for r in bob] == ["accepted", "trade", "done"]
    assert bob[1] == {
        "type": "trade",
        "id": "b1",
        "seq": 2,
        "trade_id": "2-1",
        "price": "100.25",
        "qty": "1.000",
        "side": "buy",
        "liquidity": "taker",
        "remaining": "0.000",
    }
    assert alice == [
        {
            "type": "trade",
            "id": "a1",
            "seq": 2,
            "trade_id": "2-1",
            "price": "100.25",
            "qty": "1.000",
            "side": "sell",
            "liquidity": "maker",
            "remaining": "0.500",
        }
    ]
    trades = [json.loads(o.payload) for o in out if o.topic == T.trades]
    assert trades == [
        {
            "v": 1,
            "market": "BTC-USD",
            "trades": [{"trade_id": "2-1", "seq": 2, "price": "100.25", "qty": "1.000", "taker_side": "buy"}],
        }
    ]
    book = json.loads([o for o in out if o.topic == T.book][0].payload)
    assert book["last_trade"]["trade_id"] == "2-1"


def test_engine_reject_is_not_sequenced(seq: SequencerNode) -> None:
    send(seq, "alice", new("a1", "sell", "100.00", "1"))
    out = send(seq, "bob", new("b1", "buy", "100.00", "1", post_only=True))
    assert entries(out) == [] and seq.version == 1 and seq.journal.last_seq == 1
    (report,) = reports(out, "bob")
    assert report["type"] == "rejected" and report["code"] == "POST_ONLY_WOULD_TAKE" and report["id"] == "b1"
    assert "bob" not in seq.replica.owners  # a rejected first command assigns no owner number
    out = send(seq, "carol", new("c1", "buy", "99.00", "1"))
    assert entries(out)[0].owner == 2 and entries(out)[0].order_id == 2


def test_ids_and_owners_assigned_sequentially(seq: SequencerNode) -> None:
    out = send(seq, "zed", new("z1", "buy", "1.00", "1"), new("z2", "buy", "1.00", "1"))
    out += send(seq, "amy", new("a1", "buy", "1.00", "1"))
    assert [(e.order_id, e.owner) for e in entries(out)] == [(1, 1), (2, 1), (3, 2)]


def test_cancel_amend_and_unknown_orders(seq: SequencerNode) -> None:
    send(seq, "alice", new("a1", "buy", "99.00", "2"))
    out = send(seq, "alice", {"op": "amend", "id": "a1", "qty": "1"})
    assert reports(out, "alice") == [
        {"type": "amended", "id": "a1", "seq": 2, "price": "99.00", "qty": "1.000", "priority": "kept"}
    ]
    out = send(seq, "alice", {"op": "cancel", "id": "a1"})
    assert reports(out, "alice") == [
        {"type": "cancelled", "id": "a1", "seq": 3, "qty": "1.000", "reason": "user"}
    ]
    for order in ({"op": "cancel", "id": "a1"}, {"op": "amend", "id": "nope", "price": "1"}):
        out = send(seq, "alice", order)
        assert entries(out) == []
        assert reports(out, "alice")[0]["code"] == "UNKNOWN_ORDER"
    out = send(seq, "stranger", {"op": "cancel", "id": "a1"})  # another client's id is not yours
    assert reports(out, "stranger")[0]["code"] == "UNKNOWN_ORDER"
    assert seq.version == 3


def test_new_and_cancel_in_one_bulk_message(seq: SequencerNode) -> None:
    out = send(seq, "alice", new("a1", "buy", "99.00", "2"), {"op": "cancel", "id": "a1"})
    assert [e.op for e in entries(out)] == [1, 2]
    assert [r["type"] for r in reports(out, "alice")] == ["accepted", "cancelled"]


def test_cancel_all(seq: SequencerNode) -> None:
    out = send(seq, "alice", {"op": "cancel_all", "id": "ca"})
    assert reports(out, "alice") == [{"type": "cancelled_all", "id": "ca", "seq": None, "count": 0}]
    assert seq.version == 0
    send(seq, "alice", new("a1", "buy", "99.00", "2"), new("a2", "sell", "101.00", "1"))
    out = send(seq, "alice", {"op": "cancel_all"})
    assert [r["type"] for r in reports(out, "alice")] == ["cancelled", "cancelled", "cancelled_all"]
    assert reports(out, "alice")[-1] == {"type": "cancelled_all", "id": None, "seq": 3, "count": 2}
    assert entries(out)[0].client_order_id is None


def test_market_order_and_self_trade_prevention(seq: SequencerNode) -> None:
    send(seq, "alice", new("a1", "sell", "100.00", "1"))
    out = send(seq, "alice", new("a2", "buy", None, "1", type="market", stp="cancel_taker"))
    alice = reports(out, "alice")
    assert alice[0]["price"] is None and alice[0]["order_type"] == "market"
    assert alice[1] == {"type": "cancelled", "id": "a2", "seq": 2, "qty": "1.000", "reason": "self_trade"}


def test_duplicates_rejected_even_after_restart(tmp_path: Path) -> None:
    cfg = SequencerConfig(SPEC, tmp_path / "d", snapshot_every=2)
    node = SequencerNode(cfg)
    send(
        node,
        "alice",
        new("a1", "buy", "99.00", "1"),
        new("a2", "buy", "99.00", "1"),
        new("a3", "buy", "9", "1"),
    )
    node.close()
    node = SequencerNode(cfg)  # snapshot at 2 (dedupe set inside) + journal entry 3
    for coid, original_seq in (("a1", 1), ("a3", 3)):
        out = send(node, "alice", new(coid, "buy", "99.00", "1"))
        (report,) = reports(out, "alice")
        assert report["code"] == "DUPLICATE_CLIENT_ORDER_ID"
        assert f"already accepted at seq {original_seq};" in report["message"]
        assert entries(out) == []
    out = send(node, "bob", new("a1", "buy", "99.00", "1"))  # ids are per client
    assert reports(out, "bob")[0]["type"] == "accepted" and entries(out)[0].seq == 4
    node.close()


def test_replay_serving(seq: SequencerNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_mod, "LOG_CHUNK", 3)
    send(seq, "alice", *[new(f"a{i}", "buy", "99.00", "1") for i in range(8)])

    def replay(body: bytes) -> list[Outgoing]:
        out = seq.on_messages([(T.replay_request("ed"), body)])
        assert all(o.topic == T.replay_response("ed") and not o.retain for o in out)
        return out

    out = replay(b'{"from":2,"to":4}')
    assert [[e.seq for e in decode_log_message(o.payload).entries] for o in out] == [[2, 3, 4]]
    assert all(decode_log_message(o.payload).replay for o in out)
    out = replay(b'{"from":3,"to":null}')
    assert [[e.seq for e in decode_log_message(o.payload).entries] for o in out] == [[3, 4, 5], [6, 7, 8]]
    out = replay(b'{"from":50,"to":null}')
    (msg,) = [decode_log_message(o.payload) for o in out]
    assert msg.entries == [] and msg.head == 8
    assert replay(b"garbage") == [] and replay(b'{"from":0}') == []
    out = replay(b'{"from":1,"to":null,"snapshot":true}')
    assert is_snapshot_payload(out[0].payload)
    snap = decode_snapshot(out[0].payload)
    assert snap.seen is None  # the dedupe set stays private to the sequencer
    rest = [e.seq for o in out[1:] for e in decode_log_message(o.payload).entries]
    assert rest == list(range(snap.version + 1, 9))
    assert seq.on_messages([(T.replay_request("bad+id"), b'{"from":1}')]) == []


def test_snapshots_by_count_and_interval(tmp_path: Path) -> None:
    cfg = SequencerConfig(SPEC, tmp_path / "d", snapshot_every=3, snapshot_interval=5.0, snapshot_keep=2)
    node = SequencerNode(cfg)
    node.clock = lambda: 99.0
    snaps = tmp_path / "d" / "snapshots"
    assert sorted(p.name for p in snaps.iterdir()) == ["0.meta.json", "0.snap"]
    out = send(node, "a", *[new(f"x{i}", "buy", "99.00", "1") for i in range(4)])
    published = [o for o in out if o.topic == T.snapshot]
    assert len(published) == 1 and published[0].retain and decode_snapshot(published[0].payload).version == 4
    send(node, "a", new("y", "buy", "99.00", "1"))
    def snapshots_on_tick(now: float) -> list[Outgoing]:
        return [o for o in node.on_tick(now) if o.topic == T.snapshot]

    assert snapshots_on_tick(100.0) == []  # the count-triggered snapshot at 99.0 restarted the interval
    assert snapshots_on_tick(103.5) == []
    out = snapshots_on_tick(104.5)
    assert decode_snapshot(out[0].payload).version == 5
    assert snapshots_on_tick(200.0) == []  # the version did not move: no new snapshot
    assert sorted(int(p.stem) for p in snaps.glob("*.snap")) == [4, 5]  # snapshot_keep=2
    on_connect = node.on_connected()
    assert [o.topic for o in on_connect] == [T.book, T.snapshot] and all(o.retain for o in on_connect)
    node.close()


def test_snapshots_are_spaced_by_the_book_depth(tmp_path: Path) -> None:
    """A snapshot costs O(resting orders): once the last snapshot held more than snapshot_every
    orders, the next comes as many versions later as it held."""
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d", snapshot_every=5))
    versions = []
    for i in range(60):  # one resting buy per command: after command n, n orders rest
        out = send(node, "a", new(f"x{i}", "buy", "99.00", "1"))
        versions += [decode_snapshot(o.payload).version for o in out if o.topic == T.snapshot]
    assert len(node.replica.orders) == 60
    # 5 (snapshot_every after the start's empty snapshot), 10 (5 after the one holding 5 orders),
    # then 20 and 40: the gap keeps up with the size of the book at the last snapshot
    assert versions == [5, 10, 20, 40]
    node.close()


def test_data_dir_guards(tmp_path: Path) -> None:
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d"))
    with pytest.raises(JournalError, match="locked"):
        SequencerNode(SequencerConfig(SPEC, tmp_path / "d"))
    node.close()
    with pytest.raises(ValueError, match="belongs to market"):
        SequencerNode(SequencerConfig(MarketSpec.parse("ETH-USD"), tmp_path / "d"))
    with pytest.raises(ValueError, match="belongs to market"):
        SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD:tick=0.5"), tmp_path / "d"))


def test_invalid_client_id_topic(seq: SequencerNode) -> None:
    out = seq.on_messages([(T.base + "/orders/bad id", b'{"op":"cancel_all"}')])
    assert reports(out, "bad id")[0]["code"] == "INVALID_CLIENT_ID"


def test_idle_heartbeat_carries_the_head(seq: SequencerNode) -> None:
    send(seq, "alice", new("a1", "buy", "99.00", "1"))
    seq.clock = lambda: 10.0
    send(seq, "alice", new("a2", "buy", "99.00", "1"))  # log traffic at t=10
    assert [o for o in seq.on_tick(10.5) if o.topic == T.log] == []
    (beat,) = [o for o in seq.on_tick(11.0) if o.topic == T.log]
    msg = decode_log_message(beat.payload)
    assert (msg.head, msg.entries, beat.retain) == (2, [], False)
    assert [o for o in seq.on_tick(11.5) if o.topic == T.log] == []
    assert len([o for o in seq.on_tick(12.0) if o.topic == T.log]) == 1


def test_last_trade_survives_any_number_of_restarts(tmp_path: Path) -> None:
    """The retained book's last_trade was null after a second restart (recovery replayed only the
    journal after the newest snapshot, and every restart writes one): it is kept beside each
    snapshot now."""
    cfg = SequencerConfig(SPEC, tmp_path / "d")
    node = SequencerNode(cfg)
    send(node, "alice", new("a1", "sell", "100.25", "1"))
    send(node, "bob", new("b1", "buy", "100.25", "1"))
    send(node, "alice", new("a2", "sell", "101.00", "1"))  # no trade after the one at seq 2
    trade = node.last_trade
    assert trade is not None and trade["trade_id"] == "2-1"
    node.close()
    for _restart in range(3):
        node = SequencerNode(cfg)
        assert node.last_trade == trade
        (book,) = [json.loads(o.payload) for o in node.on_connected() if o.topic == T.book]
        assert book["last_trade"] == trade and book["version"] == 3
        node.close()
    # A corrupt meta file costs the last trade, never the start.
    meta = tmp_path / "d" / "snapshots" / "3.meta.json"
    meta.write_text("{not json")
    node = SequencerNode(cfg)
    assert node.version == 3 and node.last_trade is None
    node.close()


def test_the_book_is_published_when_its_levels_change_and_catches_up_when_quiet(tmp_path: Path) -> None:
    """A batch that changes no level shown (an order deeper than book_depth) publishes no book:
    the version and hash alone wait for the idle heartbeat, which brings the retained book up to
    date; a batch that changes a level shown publishes it at once."""
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d", book_depth=1))
    node.clock = lambda: 0.0
    node.on_tick(0.0)
    assert T.book in [o.topic for o in send(node, "alice", new("a1", "buy", "100.00", "1"))]
    deep = send(node, "alice", new("a2", "buy", "99.00", "1"))  # below the one level shown
    assert [o.topic for o in deep] == [T.log, T.reports("alice")]
    assert [o.topic for o in node.on_tick(0.5)] == []  # not quiet yet (heartbeat_interval 1 s)
    quiet = [o for o in node.on_tick(1.0) if o.topic == T.book]
    assert len(quiet) == 1 and quiet[0].retain
    book = json.loads(quiet[0].payload)
    assert book["version"] == 2 and book["bids"] == [["100.00", "1.000", 1]]
    assert [o.topic for o in node.on_tick(2.0)] == [T.log]  # up to date: the heartbeat alone
    top = send(node, "alice", new("a3", "buy", "100.00", "2"))  # the level shown grows
    assert json.loads([o for o in top if o.topic == T.book][0].payload)["bids"] == [["100.00", "3.000", 2]]
    node.close()
