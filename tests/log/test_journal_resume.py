"""Disk full (issue 15, D5): the sequencer rejects with JOURNAL_UNAVAILABLE while the journal cannot
be written, tries it again with backoff and accepts again by itself once writes succeed, from
exactly the durable state; snapshot write failures show in its health."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from fastbook.log.commit import BOOK_QOS
from fastbook.log.journal import Journal
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import Outgoing
from fastbook.wire.log import decode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")


class Disk:
    """os.fdatasync (and, for snapshot files, os.fsync) failing with ENOSPC while `full`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.attempts = 0
        real_fdatasync, real_fsync = os.fdatasync, os.fsync

        def fdatasync(fd: int) -> None:
            if self.full:
                self.attempts += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fdatasync(fd)

        def fsync(fd: int) -> None:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def send(node: SequencerNode, client: str, *orders: dict[str, Any]) -> list[Outgoing]:
    return node.on_messages([(T.orders(client), json.dumps(list(orders)).encode())])


def reports(out: list[Outgoing], client: str) -> list[dict[str, Any]]:
    return [r for o in out if o.topic == T.reports(client) for r in json.loads(o.payload)]


def new(coid: str, side: str = "buy", price: str = "99.00") -> dict[str, Any]:
    return {"op": "new", "id": coid, "side": side, "price": price, "qty": "1"}


def tick_until(node: SequencerNode, clock: Clock, done: Any, seconds: float) -> list[Outgoing]:
    """Tick the node at its own deadlines until `done()` or `seconds` of its clock have passed."""
    out: list[Outgoing] = []
    end = clock.now + seconds
    while not done() and clock.now < end:
        clock.now = max(clock.now + 0.001, min(node.next_deadline(clock.now) or end, end))
        out += node.on_tick(clock.now)
    return out


def test_the_sequencer_resumes_by_itself_once_the_disk_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d"))
    clock = Clock()
    node.clock = clock
    disk = Disk(monkeypatch)
    try:
        assert reports(send(node, "alice", new("a1", "sell", "100.00")), "alice")[0]["seq"] == 1
        disk.full = True
        out = send(node, "bob", new("b1", "buy", "100.00"))  # would trade with a1
        (report,) = reports(out, "bob")
        assert report["code"] == "JOURNAL_UNAVAILABLE" and "No space left" in report["message"]
        assert not [o for o in out if o.topic == T.log]
        assert node.health()["journal"] != "ok"
        # Still full: retried with backoff (not every tick), still rejecting, logged once.
        logged = len(caplog.records)
        with caplog.at_level(logging.DEBUG, logger="fastbook"):
            tick_until(node, clock, lambda: False, 10.0)
        assert 2 <= disk.attempts <= 6, disk.attempts
        retries = caplog.records[logged:]
        assert retries and not [r.getMessage() for r in retries if r.levelno >= logging.INFO]
        assert reports(send(node, "bob", new("b2")), "bob")[0]["code"] == "JOURNAL_UNAVAILABLE"
        # Room again: resumed by itself, from the durable state (a1 open, b1 never happened).
        disk.full = False
        out = tick_until(node, clock, lambda: node.health()["journal"] == "ok", 40.0)
        assert node.health()["journal"] == "ok"
        book = json.loads(next(o.payload for o in out if o.topic == T.book))
        assert book["version"] == 1 and book["asks"] == [["100.00", "1.000", 1]] and book["bids"] == []
        assert book["last_trade"] is None
        assert "journal writable again" in caplog.text
        # b1 was never executed: the same id is accepted now, and trades with a1 at seq 2.
        out = send(node, "bob", new("b1", "buy", "100.00"))
        assert [r["type"] for r in reports(out, "bob")][:1] == ["accepted"]
        assert [int(s) for o in out if o.topic == T.log for s in decode_log_message(o.payload).seqs] == [2]
        assert node.version == 2
    finally:
        node.close()
    j = Journal(tmp_path / "d")  # on disk: seqs 1 and 2, nothing of the failed batches
    assert [(e.seq, e.client_order_id) for e in j.entries()] == [(1, "a1"), (2, "b1")]
    assert j.dropped_bytes == 0
    j.close()
    again = SequencerNode(SequencerConfig(SPEC, tmp_path / "d"))
    assert again.version == 2
    again.close()


def test_snapshot_write_failures_show_in_health(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d", snapshot_every=1))
    try:
        assert node.health()["snapshots"] == "ok"

        def no_room(*_args: Any, **_kwargs: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(node.snapshots, "write", no_room)
        send(node, "alice", new("a1"))
        assert "cannot write snapshot 1" in node.health()["snapshots"]
        assert node.health()["journal"] == "ok"  # orders go on: the journal holds every entry
        monkeypatch.undo()
        send(node, "alice", new("a2"))
        assert node.health()["snapshots"] == "ok"
    finally:
        node.close()


def book_health(out: list[Outgoing]) -> list[dict[str, Any] | None]:
    """The `health` of every retained book in `out` (None: a book that says nothing is wrong)."""
    return [json.loads(o.payload).get("health") for o in out if o.topic == T.book]


def test_a_failing_journal_is_published_in_the_retained_book(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fastbook status` reads the retained book: a journal that fails shows there at once (with the
    error, since when, and that it is retried), at the durable version, on every reconnect while it
    lasts, and no more once the journal takes writes again."""
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d"))
    clock = Clock()
    node.clock = clock
    node.wall_clock = lambda: 1_764_000_000.5
    disk = Disk(monkeypatch)
    try:
        out = send(node, "alice", new("a1", "sell", "100.00"))
        assert book_health(out) == [None]
        assert book_health(node.on_connected()) == [None]
        disk.full = True
        out = send(node, "bob", new("b1", "buy", "100.00"))
        (health,) = book_health(out)  # nothing moved, and still a book: the health changed
        assert [o.qos for o in out if o.topic == T.book] == [BOOK_QOS]  # as every book is sent
        assert health is not None and set(health) == {"journal"}
        journal = health["journal"]
        assert journal["state"] == "unavailable" and journal["retrying"] is True
        assert journal["since"] == 1_764_000_000_500 and "No space left" in journal["error"]
        (book,) = [json.loads(o.payload) for o in out if o.topic == T.book]
        assert book["version"] == 1 and book["bids"] == []  # the durable book, not b1's trade
        node.wall_clock = lambda: 1_764_000_099.0
        assert book_health(send(node, "bob", new("b2"))) == []  # unchanged: not republished
        assert book_health(node.on_connected()) == [health]  # a new session: said again, same since
        disk.full = False
        out = tick_until(node, clock, lambda: node.health()["journal"] == "ok", 40.0)
        assert book_health(out) == [None]
    finally:
        node.close()


def test_a_snapshot_dir_that_cannot_be_written_is_published_in_the_retained_book(tmp_path: Path) -> None:
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d", snapshot_every=1))
    node.wall_clock = lambda: 1_764_000_000.0
    snapshots = tmp_path / "d" / "snapshots"
    try:
        assert book_health(send(node, "alice", new("a1"))) == [None]
        # The snapshot directory can no longer be written (a file where it was: the tests run as root,
        # whom a mode does not stop).
        snapshots.rename(tmp_path / "snapshots.away")
        snapshots.write_text("not a directory")
        node.wall_clock = lambda: 1_764_000_001.0
        out = send(node, "alice", new("a2"))
        (health,) = book_health(out)
        assert health is not None and set(health) == {"snapshots"}  # the journal is fine
        assert health["snapshots"]["state"] == "failing" and health["snapshots"]["since"] == 1_764_000_001_000
        assert "cannot write snapshot 2" in health["snapshots"]["error"]
        assert [r["type"] for r in reports(out, "alice")] == ["accepted"]  # orders go on
        node.wall_clock = lambda: 1_764_000_002.0
        # Every book says so while it lasts (v3: no snapshot due, two orders rest; v4: fails again).
        assert book_health(send(node, "alice", new("a3"))) == [health]
        (health4,) = book_health(send(node, "alice", new("a4")))
        assert health4 is not None and health4["snapshots"]["since"] == 1_764_000_001_000  # the first
        assert "cannot write snapshot 4" in health4["snapshots"]["error"]
        snapshots.unlink()
        (tmp_path / "snapshots.away").rename(snapshots)
        # Writable again: the books say so until the next snapshot due is written, then no more.
        seen = [book_health(send(node, "alice", new(f"r{i}"))) for i in range(8)]
        assert node.health()["snapshots"] == "ok"
        written = seen.index([None])
        assert written > 0 and seen[:written] == [[health4]] * written
        assert seen[written:] == [[None]] * (8 - written)
    finally:
        node.close()
