"""Replica.apply_batch (a whole log message in one engine call) against Replica.apply (entry by
entry), on both engines and with both id-map change classes (the native MapChanges and the
reference _MapChanges): same state, same maps, same `on_applied` calls and reports, the same
divergence at the same entry. Follower.on_batch against Follower.on_entries."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

from fastbook.engine.types import EventType
from fastbook.log.follower import Follower
from fastbook.log.replica import HashMismatch, Replica
from fastbook.log.reports import command_reports_json
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.log import LogBatch, LogEntry, LogRun, decode_log_message, encode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")
CLIENTS = ["a", "b", "c", "d"]


pytestmark = pytest.mark.usefixtures("backend")


def random_order(rng: random.Random, i: int, open_ids: list[str]) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.15 and open_ids:
        return {"op": "cancel", "id": rng.choice(open_ids)}
    if roll < 0.25 and open_ids:
        return {"op": "amend", "id": rng.choice(open_ids), "qty": str(rng.randint(1, 6))}
    if roll < 0.28:
        return {"op": "cancel_all"}
    order: dict[str, Any] = {
        "op": "new",
        # few distinct ids: with a dedupe window of 1 an id comes back once its order is gone
        "id": f"o{rng.randint(0, 40)}" if rng.random() < 0.5 else f"n{i}",
        "side": rng.choice(["buy", "sell"]),
        "price": f"{rng.randint(990, 1010) / 10:.2f}",
        "qty": str(rng.randint(1, 5)),
    }
    kind = rng.random()
    if kind < 0.1:
        order.update(type="market", tif="ioc")
        del order["price"]
    elif kind < 0.2:
        order["tif"] = rng.choice(["ioc", "fok"])
    elif kind < 0.3:
        order["post_only"] = True
    elif kind < 0.4:
        order["stp"] = rng.choice(["cancel_taker", "cancel_maker", "cancel_both"])
    return order


def sequenced_log(tmp_path: Path, seed: int, count: int = 400) -> list[LogEntry]:
    """The journal's (named) entries of a random multi-client flow through a real sequencer: what
    the sequencer's recovery applies; the public log is the same entries without names."""
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / f"seq{seed}", dedupe_window=1))
    rng = random.Random(seed)
    open_ids: dict[str, list[str]] = {c: [] for c in CLIENTS}
    entries: list[LogEntry] = []
    i = 0
    while i < count:
        client = rng.choice(CLIENTS)
        orders = [random_order(rng, i + k, open_ids[client]) for k in range(rng.randint(1, 8))]
        i += len(orders)
        for out in node.on_messages([(T.orders(client), json.dumps(orders).encode())]):
            if out.topic == T.log:
                entries += decode_log_message(out.payload).entries
        open_ids[client] = [o["id"] for o in orders if o["op"] == "new"][-10:]
    named = node.journal.read(1).entries()  # (as journaled: a client id on its owner's first entry)
    assert entries == [e._replace(client_id=None, client_order_id=None) for e in named]
    node.close()
    return named


def as_seen_by(entries: list[LogEntry], owner: int | None) -> list[LogEntry]:
    """The entries with only `owner`'s names, as the replay service answers its client (None: the
    public log)."""
    return LogRun.from_entries(entries).named_for(owner).entries()


def chunks(entries: list[LogEntry], rng: random.Random) -> list[LogBatch]:
    out = []
    i = 0
    while i < len(entries):
        n = rng.choice([1, 2, 3, 7, 20, 64, 200])
        payload = encode_log_message("BTC-USD", entries[-1].seq, LogRun.from_entries(entries[i : i + n]))
        out.append(decode_log_message(payload))
        i += n
    return out


def state(replica: Replica) -> tuple[Any, ...]:
    return (
        replica.version,
        replica.state_hash,
        replica.book.snapshot(),  # type: ignore[attr-defined]
        replica.owners,
        replica.clients,
        replica.orders,
        {owner: ids for owner, ids in replica.by_owner.items()},
        replica.next_order_id,
    )


class Recorder:
    """on_applied: every call with the reports `command_reports_json` writes from the replica then."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.calls: list[tuple[LogEntry, list, Any]] = []

    def __call__(self, entry: LogEntry, events: list) -> None:
        if entry.client_id is None:  # (a record names its client only on its first entry)
            entry = entry._replace(client_id=self.replica.clients.get(entry.owner, ""))
        reports = command_reports_json(
            SPEC, self.replica, entry.seq, entry.client_id, entry.op, entry.order_type,
            entry.client_order_id, list(events),
        )  # fmt: skip
        self.calls.append((entry, [tuple(e) for e in events], reports))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_batches_give_the_state_maps_and_reports_of_entry_by_entry(tmp_path: Path, seed: int) -> None:
    entries = sequenced_log(tmp_path, seed)
    one_by_one = Replica(SPEC)
    expected = Recorder(one_by_one)
    for entry in entries:
        expected(entry, one_by_one.apply(entry))
    assert any(e.op == 4 for e in entries) and any(len(events) > 2 for _, events, _ in expected.calls)

    batched = Replica(SPEC)
    got = Recorder(batched)
    for batch in chunks(entries, random.Random(seed)):
        batched.apply_batch(batch, got)
    assert state(batched) == state(one_by_one)
    assert got.calls == expected.calls

    # With an owner of interest: only (and at least) the calls whose reports reach that client
    for client in CLIENTS:
        owner = one_by_one.owners[client]
        filtered = Replica(SPEC)
        seen = Recorder(filtered)
        for batch in chunks(entries, random.Random(seed + 10)):
            filtered.apply_batch(batch, seen, lambda owner=owner: owner)
        assert state(filtered) == state(one_by_one)
        wanted = [call for call in expected.calls if any(c == client for c, _ in call[2][0])]
        assert [call for call in seen.calls if call in wanted] == wanted
        assert all(call in expected.calls for call in seen.calls)
        nobody = Replica(SPEC)
        never = Recorder(nobody)
        for batch in chunks(entries, random.Random(seed)):
            nobody.apply_batch(batch, never, lambda: None)
        assert never.calls == [] and state(nobody) == state(one_by_one)


@pytest.mark.parametrize("damage", ["hash", "reject"])
def test_divergence_is_found_at_the_same_entry_with_the_same_message(tmp_path: Path, damage: str) -> None:
    entries = sequenced_log(tmp_path, 5, 120)
    k = 70
    if damage == "hash":
        bad = entries[k]._replace(hash=entries[k].hash ^ 1)
    else:  # a cancel of an order that is not open: the engine rejects it
        bad = entries[k]._replace(op=2, order_id=10**12, client_order_id="x")
    damaged = entries[:k] + [bad] + entries[k + 1 :]
    one_by_one = Replica(SPEC)
    expected = Recorder(one_by_one)
    with pytest.raises(HashMismatch) as slow:
        for entry in damaged:
            expected(entry, one_by_one.apply(entry))
    batched = Replica(SPEC)
    got = Recorder(batched)
    batches = chunks(damaged[:40], random.Random(1)) + chunks(damaged[40:], random.Random(1))
    with pytest.raises(HashMismatch) as fast:
        for batch in batches:
            batched.apply_batch(batch, got)
    assert str(fast.value) == str(slow.value)
    assert f"seq {entries[k].seq}:" in str(fast.value)
    # Version, hash and maps left as `apply` leaves them (an entry that hashed differently was
    # applied, a refused one not); the book also ran the rest of its batch: it is discarded anyway.
    assert batched.version == one_by_one.version == entries[k - (damage == "reject")].seq
    assert state(batched)[:2] + state(batched)[3:] == state(one_by_one)[:2] + state(one_by_one)[3:]
    assert got.calls == expected.calls  # every entry before it reported, none after


def test_a_batch_must_start_at_the_next_seq(tmp_path: Path) -> None:
    entries = sequenced_log(tmp_path, 6, 30)
    replica = Replica(SPEC)
    batch = chunks(entries[1:], random.Random(0))[0]
    with pytest.raises(ValueError, match="applied at version 0"):
        replica.apply_batch(batch)
    assert replica.version == 0 and replica.orders == {}


def test_follower_on_batch_equals_on_entries_with_duplicates_gaps_and_overlaps(tmp_path: Path) -> None:
    entries = sequenced_log(tmp_path, 7, 300)
    rng = random.Random(7)
    batches = chunks(entries, rng)
    # Delivery as a broker and replays may give it: repeats, overlaps, one batch late
    delivered: list[LogBatch] = []
    for i, batch in enumerate(batches):
        delivered.append(batch)
        if i % 5 == 2:
            delivered.append(batch)  # a duplicate
        if i % 7 == 3 and i + 1 < len(batches):
            delivered[-1], batch = batches[i + 1], batch  # the next one first
            delivered.append(batch)
        if i % 9 == 4:
            delivered.append(batch.tail(len(batch) // 2))  # an overlapping replay
    # (the swap above delivers batches[i + 1] twice and batches[i] after it: a gap, then its fill)

    def run(use_batches: bool) -> tuple[Any, ...]:
        follower = Follower("BTC-USD", replay_timeout=1.0, on_applied=lambda e, ev: applied.append(e.seq))
        applied: list[int] = []
        follower.start(0.0)
        follower.replica = Replica(SPEC)
        follower.synced_once = True
        requests = []
        for t, batch in enumerate(delivered):
            if use_batches:
                requests += follower.on_batch(batch, float(t))
            else:
                requests += follower.on_entries(batch.entries, batch.head, float(t))
        assert follower.replica is not None
        return state(follower.replica), applied, follower.head, follower.buffer, requests

    fast, slow = run(True), run(False)
    assert fast == slow
    assert fast[1] == list(range(1, entries[-1].seq + 1))  # each entry applied once, in order


def own_part(replica: Replica, client: str, others_known: bool = True) -> tuple[Any, ...]:
    """A whole replica's state with its maps cut down to one client's orders (and, unless
    `others_known` (a named snapshot names them), its owner numbers to that client's own)."""
    owner = replica.owners.get(client)
    orders = {i: o for i, o in replica.orders.items() if o[0] == owner}
    by_owner = {owner: replica.by_owner[owner]} if owner in replica.by_owner else {}
    owners, clients = replica.owners, replica.clients
    if not others_known:
        owners = {c: o for c, o in owners.items() if c == client}
        clients = {o: c for o, c in clients.items() if c == client}
    return state(replica)[:3] + (owners, clients, orders, by_owner, replica.next_order_id)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_replica_of_one_client_maps_its_orders_only_and_reports_the_same(tmp_path: Path, seed: int) -> None:
    """Replica(own_client=c): the same book, hash and version as a whole replica, the maps of c's
    orders only (entry by entry and in batches), and the same reports for c. A client that never
    traded maps nothing."""
    entries = sequenced_log(tmp_path, seed)
    whole = Replica(SPEC)
    expected = Recorder(whole)
    for entry in entries:
        expected(entry, whole.apply(entry))
    for client in [*CLIENTS, "watcher"]:
        one_by_one, batched = Replica(SPEC, own_client=client), Replica(SPEC, own_client=client)
        slow, fast = Recorder(one_by_one), Recorder(batched)
        seen = as_seen_by(entries, whole.owners.get(client))  # (its own names only)
        for entry in seen:  # (as a follower does with a replay answer: learn from it, then apply)
            one_by_one.learn_replayed(LogRun.from_entries([entry]))
            slow(entry, one_by_one.apply(entry))
        mapped = 0  # the most orders the batched replica mapped at once
        for batch in chunks(seen, random.Random(seed)):
            batched.learn_replayed(batch.run)
            batched.apply_batch(batch, fast)
            mapped = max(mapped, len(batched.orders))
        assert state(one_by_one) == state(batched) == own_part(whole, client, others_known=False)
        if client == "watcher":
            assert mapped == 0 and batched.by_owner == {}
        else:
            assert mapped > 0
        for (entry, _events, (reports, trades)), (_e, _ev, (ours, our_trades)) in zip(
            expected.calls, fast.calls, strict=True
        ):
            assert [r for r in ours if r[0] == client] == [r for r in reports if r[0] == client], entry
            assert all(r[0] == client for r in ours if not r[1].startswith('{"type":"cancelled_all"'))
            assert our_trades == trades
        assert [c[2] for c in slow.calls] == [c[2] for c in fast.calls]


def test_a_replica_of_one_client_from_a_snapshot_and_its_refusals(tmp_path: Path) -> None:
    entries = sequenced_log(tmp_path, 8)
    half = len(entries) // 2
    whole = Replica(SPEC)
    for entry in entries[:half]:
        whole.apply(entry)
    snap = whole.snapshot_data()
    mine = {client: Replica.from_snapshot(snap, own_client=client) for client in CLIENTS}

    def same(state_a: tuple[Any, ...], state_b: tuple[Any, ...]) -> bool:
        # (a snapshot carries no owner whose orders all left: an empty by_owner entry is no order)
        def drop_empty(s: tuple[Any, ...]) -> tuple[Any, ...]:
            return s[:6] + ({owner: ids for owner, ids in s[6].items() if ids},) + s[7:]

        return drop_empty(state_a) == drop_empty(state_b)

    for client, replica in mine.items():
        assert same(state(replica), own_part(whole, client))
    # and each follows on from there as a whole replica does
    for entry in entries[half:]:
        whole.apply(entry)
        for client, replica in mine.items():  # (what a replay answers each: its own names only)
            seen = LogRun.from_entries([entry]).named_for(whole.owners[client])
            replica.learn_replayed(seen)
            replica.apply(seen.entries()[0])
    for client, replica in mine.items():
        assert same(state(replica), own_part(whole, client))
    with pytest.raises(ValueError, match="maps only that client's orders"):
        Replica.from_snapshot(snap, own_client="a").snapshot_data()
    # Every row is still checked, the other clients' too.
    order_id, owner, coid = next(row for row in snap.orders if whole.clients[row[1]] != "a")
    twice = dataclasses.replace(snap, orders=[*snap.orders, (order_id, owner, coid)])
    with pytest.raises(ValueError, match="listed twice"):
        Replica.from_snapshot(twice, own_client="a")
    missing = dataclasses.replace(snap, orders=[row for row in snap.orders if row[0] != order_id])
    with pytest.raises(ValueError, match="maps hold"):
        Replica.from_snapshot(missing, own_client="a")


@pytest.mark.parametrize("use_batches", [True, False])
def test_maps_that_lost_an_order_the_log_finishes_make_the_follower_resync(
    tmp_path: Path, use_batches: bool
) -> None:
    """An order missing from the maps (they no longer match the book) is a divergence: the
    follower asks for a snapshot instead of raising out of on_batch / on_entries."""
    entries = sequenced_log(tmp_path, 9)
    follower = Follower("BTC-USD", replay_timeout=1.0)
    follower.start(0.0)
    follower.replica = replica = Replica(SPEC)
    follower.synced_once = True
    # Up to the first entry that finishes (DONE or CANCELLED) an order resting before it.
    probe = Replica(SPEC)
    finishing = []  # (entry index, order id)
    for i, entry in enumerate(entries):
        resting = set(probe.orders)
        ends = {e[1] for e in probe.apply(entry) if e[0] in (EventType.DONE, EventType.CANCELLED)}
        finishing += [(i, order_id) for order_id in resting & ends]
    k, lost = min(finishing)
    for entry in entries[:k]:
        replica.apply(entry)
    owner, coid = replica.orders[lost]
    del replica.by_owner[owner][coid]  # the maps no longer match the book
    batch = chunks(entries[k : k + 1], random.Random(0))[0]
    if use_batches:
        requests = follower.on_batch(batch, 1.0)
    else:
        requests = follower.on_entries(batch.entries, batch.head, 1.0)
    assert follower.replica is None and follower.resyncs == 1
    assert follower.mismatch is not None and "id maps lack" in follower.mismatch
    assert [r.snapshot for r in requests] == [True]
