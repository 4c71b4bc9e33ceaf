"""The sequencer's dedupe map is bounded: ids are kept for `dedupe_window` versions or while open."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from fastbook.log.dedupe import DedupeWindow
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import Outgoing
from fastbook.wire.log import decode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")
WINDOW = 50


pytestmark = pytest.mark.usefixtures("backend")


def config(data_dir: Path, **extra: Any) -> SequencerConfig:
    return SequencerConfig(SPEC, data_dir, dedupe_window=WINDOW, **extra)


def send(node: SequencerNode, client: str, *orders: dict[str, Any]) -> list[Outgoing]:
    return node.on_messages([(T.orders(client), json.dumps(list(orders)).encode())])


def reports(out: list[Outgoing], client: str) -> list[dict[str, Any]]:
    return [r for o in out if o.topic == T.reports(client) for r in json.loads(o.payload)]


def sequenced(out: list[Outgoing]) -> list[int]:
    return [e.seq for o in out if o.topic == T.log for e in decode_log_message(o.payload).entries]


def new(coid: str, side: str, price: str, qty: str = "1", **extra: Any) -> dict[str, Any]:
    return {"op": "new", "id": coid, "side": side, "price": price, "qty": qty, **extra}


def ioc(coid: str) -> dict[str, Any]:
    """Dies at once on an empty bid side: sequenced, never open."""
    return new(coid, "sell", "99.00", tif="ioc")


def fill_versions(node: SequencerNode, count: int, tag: str) -> None:
    send(node, "filler", *[ioc(f"{tag}{i}") for i in range(count)])


def test_retry_inside_the_window_is_a_duplicate_outside_it_executes(tmp_path: Path) -> None:
    node = SequencerNode(config(tmp_path / "d"))
    try:
        assert sequenced(send(node, "alice", ioc("r1"), new("live", "buy", "10.00"))) == [1, 2]
        fill_versions(node, WINDOW - 2, "f")  # version 50: seq 1 is still inside the window
        (report,) = reports(send(node, "alice", ioc("r1")), "alice")
        assert report["code"] == "DUPLICATE_CLIENT_ORDER_ID" and "at seq 1;" in report["message"]
        fill_versions(node, 1, "g")  # version 51: seq 1 has left the window, the order is dead
        out = send(node, "alice", ioc("r1"))
        assert sequenced(out) == [52] and reports(out, "alice")[0]["type"] == "accepted"
        fill_versions(node, WINDOW + 5, "h")  # "live" (seq 2) is outside the window but still open
        assert node.dedupe.accepted_at("alice", "live") is None
        (report,) = reports(send(node, "alice", new("live", "buy", "11.00")), "alice")
        assert report["code"] == "DUPLICATE_CLIENT_ORDER_ID" and "open order" in report["message"]
        assert sequenced(send(node, "alice", {"op": "cancel", "id": "live"})) == [node.version]
        out = send(node, "alice", new("live", "buy", "11.00"))  # gone and forgotten: a new order
        assert reports(out, "alice")[0]["type"] == "accepted" and sequenced(out) == [node.version]
    finally:
        node.close()


def random_commands(rng: random.Random, count: int) -> list[tuple[str, dict[str, Any]]]:
    """Retries of recent and old ids, resting orders, cancels: a mix that exercises every path."""
    commands: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        client = f"c{rng.randrange(4)}"
        roll = rng.random()
        coid = f"o{rng.randrange(max(1, i - 3 * WINDOW), i + 1)}" if roll < 0.3 else f"o{i}"
        if roll < 0.6:
            side = rng.choice(["buy", "sell"])
            price = f"{rng.randrange(95, 106)}.00"
            commands.append((client, new(coid, side, price, tif=rng.choice(["gtc", "ioc"]))))
        elif roll < 0.9:
            commands.append((client, {"op": "cancel", "id": coid}))
        else:
            commands.append((client, ioc(coid)))
    return commands


def run(node: SequencerNode, commands: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    outcomes = []
    for client, order in commands:
        out = send(node, client, order)
        outcomes.append([(r["type"], r.get("code")) for r in reports(out, client)] + sequenced(out))
    return outcomes


def test_map_stays_within_window_plus_open_orders(tmp_path: Path) -> None:
    node = SequencerNode(config(tmp_path / "d", snapshot_every=1_000_000))
    commands = random_commands(random.Random(7), 10_000)
    try:
        duplicates = 0
        for start in range(0, len(commands), 25):  # 25 messages per batch: one fsync each
            chunk = commands[start : start + 25]
            out = node.on_messages(
                [(T.orders(client), json.dumps(order).encode()) for client, order in chunk]
            )
            duplicates += sum(
                r.get("code") == "DUPLICATE_CLIENT_ORDER_ID"
                for c in {c for c, _ in chunk}
                for r in reports(out, c)
            )
            kept = sum(len(ids) for ids in node.seen.values())
            # The map holds the window only; open orders older than it are refused via the replica's maps.
            assert kept == len(node.dedupe) <= WINDOW
            assert all(seq > node.version - WINDOW for ids in node.seen.values() for seq in ids.values())
        assert duplicates > 0 and node.version > 5 * WINDOW
    finally:
        node.close()


@pytest.mark.parametrize("snapshot_between", [False, True])
def test_restart_reproduces_dedupe_decisions_and_snapshot_bytes(
    tmp_path: Path, snapshot_between: bool
) -> None:
    commands = random_commands(random.Random(11), 600)
    first, second = commands[:300], commands[300:]
    # Reference: one sequencer runs everything.
    reference = SequencerNode(config(tmp_path / "ref", snapshot_every=1_000_000))
    try:
        run(reference, first)
        reference._take_snapshot(0.0)
        split_bytes = (tmp_path / "ref" / "snapshots" / f"{reference.version}.snap").read_bytes()
        expected = run(reference, second)
        reference_seen = reference.dedupe.snapshot()
        reference._take_snapshot(0.0)
        reference_bytes = (tmp_path / "ref" / "snapshots" / f"{reference.version}.snap").read_bytes()
    finally:
        reference.close()
    # Restarted: the first half, a restart (from a snapshot taken there, or journal replay only), the rest.
    every = 1 if snapshot_between else 1_000_000
    node = SequencerNode(config(tmp_path / "d", snapshot_every=every))
    try:
        run(node, first)
    finally:
        node.close()
    node = SequencerNode(config(tmp_path / "d", snapshot_every=1_000_000))
    try:
        snaps = sorted(int(p.stem) for p in (tmp_path / "d" / "snapshots").glob("*.snap"))
        if snapshot_between:  # restored from the first run's last snapshot (+ the journal after it)
            assert len(snaps) == 5 and snaps[-1] == node.version
        else:  # only version 0 existed: the restart replayed the whole journal
            assert snaps == [0, node.version]
        # The restart snapshot (the book and id maps of that version) is the reference's.
        assert (tmp_path / "d" / "snapshots" / f"{node.version}.snap").read_bytes() == split_bytes
        assert run(node, second) == expected
        assert node.dedupe.snapshot() == reference_seen
        assert list(node.dedupe.snapshot().items()) == list(reference_seen.items())
        node._take_snapshot(0.0)
        assert (tmp_path / "d" / "snapshots" / f"{node.version}.snap").read_bytes() == reference_bytes
    finally:
        node.close()
    # A third start from that final snapshot rebuilds, from the journal, exactly the same pruned map.
    node = SequencerNode(config(tmp_path / "d"))
    try:
        assert node.seen == reference_seen and len(node.dedupe) == sum(map(len, reference_seen.values()))
    finally:
        node.close()


def test_window_unit() -> None:
    dedupe = DedupeWindow(3)
    for seq, coid in ((1, "a"), (2, "b"), (4, "c")):
        dedupe.accept(seq, "x", coid)
        dedupe.advance(seq)
    assert dedupe.seen == {"x": {"b": 2, "c": 4}}  # 1 <= 4 - 3
    dedupe.advance(5)
    assert dedupe.snapshot() == {"x": {"c": 4}} and len(dedupe) == 1
    dedupe.accept(6, "y", "q")
    dedupe.accept(7, "x", "d")
    assert list(dedupe.snapshot().items()) == [("x", {"c": 4, "d": 7}), ("y", {"q": 6})]
    with pytest.raises(ValueError):
        DedupeWindow(0)


class _WindowModel:
    """The window as specified, one (seq, client, id) record per accepted id."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.seen: dict[str, dict[str, int]] = {}
        self.records: list[tuple[int, str, str]] = []

    def accept(self, seq: int, client: str, coid: str) -> None:
        self.seen.setdefault(client, {})[coid] = seq
        self.records.append((seq, client, coid))

    def advance(self, version: int) -> None:
        while self.records and self.records[0][0] <= version - self.window:
            seq, client, coid = self.records.pop(0)
            ids = self.seen.get(client)
            if ids is not None and ids.get(coid) == seq:
                del ids[coid]
                if not ids:
                    del self.seen[client]

    def snapshot(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for seq, client, coid in self.records:
            if self.seen.get(client, {}).get(coid) == seq:
                out.setdefault(client, {})[coid] = seq
        return out


@pytest.mark.parametrize("seed", range(6))
def test_chunked_window_equals_one_record_per_id(seed: int) -> None:
    """accept_many keeps a run as one chunk and advance prunes chunks in part: the same ids are
    remembered, in the same order, as with one record per id."""
    rng = random.Random(seed)
    window = rng.choice([1, 3, 10, 40])
    dedupe, model = DedupeWindow(window), _WindowModel(window)
    seq = 0
    for _ in range(400):
        client = rng.choice("xyz")
        # Ids come back (as after a window of 1): an id accepted again replaces the old seq.
        coids = [f"o{rng.randrange(30)}" for _ in range(rng.choice([1, 1, 2, 5, 17]))]
        seqs = list(range(seq + 1, seq + 1 + len(coids)))
        seq += len(coids) + rng.choice([0, 0, 2])  # other commands take seqs too
        if len(coids) == 1 and rng.random() < 0.5:
            dedupe.accept(seqs[0], client, coids[0])
        else:
            dedupe.accept_many(client, seqs, coids)
        for s, coid in zip(seqs, coids, strict=True):
            model.accept(s, client, coid)
        version = seq - rng.choice([0, 0, 1, len(coids) // 2])  # sometimes inside the chunk just added
        dedupe.advance(version)
        model.advance(version)
        assert dedupe.seen == model.seen
        assert list(dedupe.snapshot().items()) == list(model.snapshot().items())
        assert len(dedupe) == len(model.records)
    with pytest.raises(ValueError):
        dedupe.accept_many("x", [1, 2], ["a"])
