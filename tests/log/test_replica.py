from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from pathlib import Path

import pytest

from fastbook.log.follower import Follower
from fastbook.log.replica import HashMismatch, Replica
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.log import LogEntry, ReplayRequest, decode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.snapshot import SnapshotData, decode_snapshot
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")


pytestmark = pytest.mark.usefixtures("backend")


def history(tmp_path: Path, count: int = 60) -> tuple[list[LogEntry], SequencerNode]:
    """`count` orders through a real sequencer: its log entries (some orders trade or get rejected)."""
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d", snapshot_every=25))
    rng = random.Random(4)
    out = []
    for i in range(count):
        order = {
            "op": "new",
            "id": f"o{i}",
            "side": rng.choice(["buy", "sell"]),
            "price": f"{rng.randint(990, 1010) / 10:.2f}",
            "qty": f"{rng.randint(1, 5)}",
        }
        if i % 7 == 3:
            order = {"op": "cancel", "id": f"o{i - 2}"}
        out += node.on_messages([(T.orders(rng.choice(["a", "b", "c"])), json.dumps(order).encode())])
    entries = [e for o in out if o.topic == T.log for e in decode_log_message(o.payload).entries]
    assert [e.seq for e in entries] == list(range(1, node.version + 1))
    return entries, node


def started(at: float = 0.0) -> Follower:
    follower = Follower("BTC-USD", replay_timeout=1.0)
    follower.start(at)
    follower.replica = Replica(SPEC)  # as after an empty snapshot at version 0
    follower.synced_once = True
    return follower


def test_replica_applies_the_log_to_the_same_state(tmp_path: Path) -> None:
    entries, node = history(tmp_path)
    # The public log names nobody: applied, it gives the same book (hash, resting orders by engine
    # id and owner) and maps no names.
    assert all(e.client_id is None and e.client_order_id is None for e in entries)
    replica = Replica(SPEC)
    for entry in entries:
        replica.apply(entry)
    assert (replica.version, replica.state_hash) == (node.version, node.state_hash)
    resting = sorted(node.replica.orders)
    assert resting
    assert [replica.book.order(i) for i in resting] == [node.replica.book.order(i) for i in resting]
    assert replica.next_order_id == node.replica.next_order_id
    with pytest.raises(ValueError, match="applied at version"):
        replica.apply(entries[0])
    # The journal keeps the names: its entries rebuild the sequencer's maps.
    named = Replica(SPEC)
    for entry in node.journal.entries():
        named.apply(entry)
    assert (named.version, named.state_hash) == (node.version, node.state_hash)
    assert named.owners == node.replica.owners and named.orders == node.replica.orders
    node.close()


def test_replica_detects_a_wrong_hash_and_a_rejected_entry(tmp_path: Path) -> None:
    entries, node = history(tmp_path, 5)
    replica = Replica(SPEC)
    with pytest.raises(HashMismatch, match="post-state hash"):
        replica.apply(entries[0]._replace(hash=entries[0].hash ^ 1))
    replica = Replica(SPEC)
    cancel_unknown = LogEntry(1, 0, "a", "zz", 2, 77, 1, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(HashMismatch, match="rejected"):
        replica.apply(cancel_unknown)
    node.close()


def test_snapshot_roundtrip_and_inconsistent_maps(tmp_path: Path) -> None:
    entries, node = history(tmp_path)
    snap = node.replica.snapshot_data()
    restored = Replica.from_snapshot(snap)
    assert (restored.version, restored.state_hash, restored.orders) == (
        node.version,
        node.state_hash,
        node.replica.orders,
    )
    assert snap.orders, "the history should leave resting orders"
    bad: list[SnapshotData] = [
        replace(snap, state_hash=snap.state_hash ^ 1),
        replace(snap, orders=snap.orders[1:]),
        replace(snap, orders=[(snap.orders[0][0], snap.orders[0][1] + 1, "x"), *snap.orders[1:]]),
        replace(snap, engine=snap.engine[:-1]),
    ]
    for broken in bad:
        with pytest.raises(ValueError):
            Replica.from_snapshot(broken)
    node.close()


def test_in_order_duplicates_and_out_of_order(tmp_path: Path) -> None:
    entries, node = history(tmp_path)
    follower = started()
    assert follower.on_entries(entries[:10], 10, 0.1) == []
    assert follower.on_entries(entries[5:10], 10, 0.2) == []  # duplicates ignored
    assert follower.version == 10
    shuffled = entries[10:20]
    random.Random(1).shuffle(shuffled)
    requests = []
    for entry in shuffled:
        requests += follower.on_entries([entry], 20, 0.3)
    assert follower.version == 20 and follower.in_sync and not follower.buffer
    # A transient hole while shuffled entries arrive may ask for it once; never for what it has.
    assert all(r.first >= 11 for r in requests)
    node.close()


def test_gap_asks_for_exactly_the_hole_and_retries(tmp_path: Path) -> None:
    entries, node = history(tmp_path)
    follower = started()
    follower.on_entries(entries[:10], 10, 0.0)
    requests = follower.on_entries(entries[14:16], 16, 0.1)
    assert requests == [ReplayRequest(11, 14)]
    assert follower.on_tick(0.5) == []  # the answer is not yet due
    assert follower.on_tick(1.2) == [ReplayRequest(11, 14)]  # timeout: ask again
    assert follower.on_entries(entries[10:14], 16, 1.3) == []
    assert follower.version == 16 and follower.in_sync
    node.close()


def test_silence_while_the_head_is_ahead(tmp_path: Path) -> None:
    entries, node = history(tmp_path)
    follower = started()
    follower.on_entries(entries[:10], 10, 0.0)
    assert follower.on_head(30, 0.05) == []  # entries may still be in flight
    assert follower.on_tick(0.1) == []
    assert follower.on_tick(0.35) == [ReplayRequest(11, None)]
    assert follower.lag == 20 and not follower.in_sync
    follower.on_entries(entries[10:30], 30, 0.4)
    assert follower.in_sync and follower.lag == 0 and follower.on_tick(5.0) == []
    node.close()


def test_snapshot_restore_drains_the_buffer(tmp_path: Path) -> None:
    entries, node = history(tmp_path)
    snap = decode_snapshot((tmp_path / "d" / "snapshots" / "25.snap").read_bytes())
    follower = Follower("BTC-USD", replay_timeout=1.0)
    follower.start(0.0)
    assert follower.on_entries(entries[20:40], 40, 0.1) == []  # buffered: no snapshot yet
    assert follower.version == 0 and not follower.synced_once
    assert follower.on_snapshot(snap, 0.2) == []
    expected = Replica(SPEC)
    for entry in entries[:40]:
        expected.apply(entry)
    assert (follower.version, follower.state_hash) == (40, expected.state_hash)
    assert follower.synced_once and follower.in_sync
    older = decode_snapshot((tmp_path / "d" / "snapshots" / "0.snap").read_bytes())
    assert follower.on_snapshot(older, 0.3) == []  # older snapshots are ignored
    assert follower.version == 40
    node.close()


def test_no_snapshot_falls_back_to_replay_from_one() -> None:
    follower = Follower("BTC-USD", replay_timeout=1.0)
    follower.start(0.0)
    assert follower.on_tick(0.5) == []
    assert follower.on_tick(1.0) == [ReplayRequest(1, None)]
    assert follower.version == 0 and follower.replica is not None


def test_mismatch_stops_and_requests_a_snapshot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    entries, node = history(tmp_path)
    reasons: list[str] = []
    follower = started()
    follower.on_resync = reasons.append
    follower.on_entries(entries[:5], 5, 0.0)
    bad = entries[5]._replace(hash=entries[5].hash ^ 0xFF)
    with caplog.at_level(logging.ERROR, logger="fastbook.log.replica"):
        requests = follower.on_entries([bad, *entries[6:8]], 8, 0.1)
    assert requests == [ReplayRequest(1, None, snapshot=True)]
    assert "DIVERGED" in caplog.text and reasons and "seq 6" in reasons[0]
    assert follower.replica is None and follower.version == 0
    assert follower.on_entries(entries[8:10], 10, 0.2) == []  # not applying while diverged
    assert follower.on_tick(1.5) == [ReplayRequest(1, None, snapshot=True)]  # retried
    snap = decode_snapshot((tmp_path / "d" / "snapshots" / "25.snap").read_bytes())
    follower.on_snapshot(snap, 1.6)
    follower.on_entries(entries[25:], len(entries), 1.7)
    assert (follower.version, follower.state_hash) == (node.version, node.state_hash)
    node.close()


def test_snapshot_at_our_version_with_another_hash_is_divergence(tmp_path: Path) -> None:
    entries, node = history(tmp_path)
    snap = decode_snapshot((tmp_path / "d" / "snapshots" / "25.snap").read_bytes())
    follower = started()
    follower.on_entries(entries[:25], 25, 0.0)
    assert follower.on_snapshot(snap, 0.1) == []  # same version, same hash: fine
    requests = follower.on_snapshot(replace(snap, state_hash=snap.state_hash ^ 1), 0.2)
    assert requests == [ReplayRequest(1, None, snapshot=True)] and follower.resyncs == 1
    node.close()


def test_long_replay_is_requested_in_parts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import fastbook.log.follower as follower_mod

    monkeypatch.setattr(follower_mod, "REPLAY_MAX_ENTRIES", 10)
    entries, node = history(tmp_path)
    follower = started()
    assert follower.on_head(len(entries), 0.0) == []
    assert follower.on_tick(0.3) == [ReplayRequest(1, None)]
    # The sequencer serves the first 10 only; the next part is asked for at once, not after a timeout.
    assert follower.on_entries(entries[:10], len(entries), 0.35) == []
    assert follower.on_tick(0.4) == []  # grace: more may be in flight
    assert follower.on_tick(0.65) == [ReplayRequest(11, None)]
    node.close()


def test_an_inapplicable_entry_is_divergence_not_a_crash(tmp_path: Path) -> None:
    entries, node = history(tmp_path, 3)
    follower = started()
    follower.on_entries(entries[:1], 1, 0.0)
    reused_id = entries[0]._replace(seq=2, client_order_id="other")  # same engine order id again
    assert follower.on_entries([reused_id], 2, 0.1) == [ReplayRequest(1, None, snapshot=True)]
    assert follower.replica is None and follower.resyncs == 1
    replica = Replica(SPEC)
    with pytest.raises(ValueError, match="unknown op"):
        replica.execute("a", "x", 9, 1, 1)
    assert replica.owners == {}  # nothing registered by the refused command
    node.close()
