"""Each job of the sequencer alone: `Batch`, `Intake` (with a recording executor), `Executor` (on a
bare replica and dedupe window) and `BatchCommit` (on a journal, and on one that refuses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastbook.engine.types import Op
from fastbook.log.batch import Batch
from fastbook.log.commit import BatchCommit
from fastbook.log.dedupe import DedupeWindow
from fastbook.log.executor import Executor
from fastbook.log.intake import Intake
from fastbook.log.journal import Journal, JournalError
from fastbook.log.replica import Replica
from fastbook.wire.log import LogEntry, LogRun, decode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.orders import OrderCommand
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")

pytestmark = pytest.mark.usefixtures("backend")


def new(coid: str, side: str = "buy", price: str = "99.00", qty: str = "1") -> dict[str, Any]:
    return {"op": "new", "id": coid, "side": side, "price": price, "qty": qty}


def payload(*orders: dict[str, Any]) -> bytes:
    return json.dumps(list(orders)).encode()


def texts(batch: Batch, client: str) -> list[dict[str, Any]]:
    return [json.loads(text) for text in batch.texts.get(client, [])]


def entry(seq: int, coid: str, owner: int = 1, client: str | None = None) -> LogEntry:
    return LogEntry(seq, seq * 7919, client, coid, 1, seq, owner, 1, 1, 1, 0, 0, 9900, 1000)


# -- Batch ----------------------------------------------------------------------------------


def test_batch_keeps_entries_and_runs_in_seq_order() -> None:
    batch = Batch()
    batch.add_entry(entry(1, "a", client="alice"))
    batch.add_run(LogRun.from_entries([entry(2, "b"), entry(3, "c")]))
    batch.add_entry(entry(4, "d"))
    assert batch.count == 4
    assert batch.run().seqs.tolist() == [1, 2, 3, 4]
    assert [e.client_order_id for e in batch.run().entries({1: "alice"})] == ["a", "b", "c", "d"]
    batch.reject("bob", {"type": "rejected", "id": "x"})
    batch.add("bob", ['{"type":"done"}'])
    assert batch.texts["bob"] == ['{"type":"rejected","id":"x"}', '{"type":"done"}']
    assert batch.rejections == [("bob", '{"type":"rejected","id":"x"}')]


# -- Intake ---------------------------------------------------------------------------------


class RecordingExecutor:
    """What intake hands on: (kind, client, client order ids)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str | None]]] = []

    def execute(self, client: str, cmd: OrderCommand, batch: Batch) -> None:
        self.calls.append(("one", client, [cmd.client_order_id]))

    def execute_news(self, client: str, rows: np.ndarray, coids: list[str | None], batch: Batch) -> None:
        assert len(rows) == len(coids)
        self.calls.append(("run", client, list(coids)))


def intake_of(executor: RecordingExecutor, dedupe: DedupeWindow | None = None) -> Intake:
    return Intake(SPEC, 1 << 20, Replica(SPEC), dedupe or DedupeWindow(100), executor)  # type: ignore[arg-type]


def test_intake_hands_runs_of_news_in_one_call_and_the_rest_one_by_one() -> None:
    executor = RecordingExecutor()
    intake = intake_of(executor)
    batch = Batch()
    cancel = {"op": "cancel", "id": "a1"}
    intake.on_orders("alice", payload(new("a1"), new("a2"), cancel, new("a3"), new("a3")), batch)
    # the repeated id ends a run: it is checked after the run against what the run left
    assert executor.calls == [
        ("run", "alice", ["a1", "a2"]),
        ("one", "alice", ["a1"]),
        ("one", "alice", ["a3"]),  # (a run of one takes the per-command path)
        ("one", "alice", ["a3"]),
    ]
    assert batch.texts == {}


def test_intake_refuses_a_duplicate_and_a_bad_client_before_the_executor() -> None:
    executor = RecordingExecutor()
    dedupe = DedupeWindow(100)
    dedupe.accept(5, "alice", "a1")
    dedupe.advance(5)
    intake = intake_of(executor, dedupe)
    batch = Batch()
    intake.on_orders("alice", payload(new("a1")), batch)
    intake.on_orders("bad client", payload(new("b1")), batch)
    intake.on_orders("alice", b"{not json", batch)
    assert executor.calls == []
    assert [r["code"] for r in texts(batch, "alice")] == ["DUPLICATE_CLIENT_ORDER_ID", "MALFORMED_JSON"]
    assert "at seq 5" in texts(batch, "alice")[0]["message"]
    assert [r["code"] for r in texts(batch, "bad client")] == ["INVALID_CLIENT_ID"]


def test_intake_rejects_every_order_once_the_sequencer_failed() -> None:
    executor = RecordingExecutor()
    intake = intake_of(executor)
    batch = Batch()
    intake.on_orders("alice", payload(new("a1"), new("a2")), batch, failed="disk full")
    assert executor.calls == []
    reports = texts(batch, "alice")
    assert [(r["id"], r["code"]) for r in reports] == [
        ("a1", "JOURNAL_UNAVAILABLE"),
        ("a2", "JOURNAL_UNAVAILABLE"),
    ]
    assert "disk full" in reports[0]["message"]


# -- Executor -------------------------------------------------------------------------------


def command(coid: str, side: int, price: int, qty: int, op: int = int(Op.NEW)) -> OrderCommand:
    return OrderCommand(op, coid, side, 1, 1, 0, False, price, qty)


def test_executor_sequences_what_the_engine_accepts_and_reports_it() -> None:
    replica, dedupe = Replica(SPEC), DedupeWindow(100)
    executor = Executor(SPEC, replica, dedupe)
    batch = Batch()
    executor.execute("alice", command("a1", 2, 10000, 1000), batch)  # sell 1 @ 100.00
    executor.execute("bob", command("b1", 1, 10000, 400), batch)  # buy 0.4 @ 100.00: trades
    executor.execute("bob", command("zz", 1, 0, 0, int(Op.CANCEL)), batch)  # not open
    assert batch.count == 2 and replica.version == 2
    assert [e.client_id for e in batch.run().entries()] == ["alice", "bob"]  # each names a new owner
    assert dedupe.accepted_at("alice", "a1") == 1 and dedupe.accepted_at("bob", "b1") == 2
    assert [r["type"] for r in texts(batch, "alice")] == ["accepted", "trade"]
    assert [r["type"] for r in texts(batch, "bob")] == ["accepted", "trade", "done", "rejected"]
    assert json.loads(batch.trades[0])["trade_id"] == "2-1"
    assert executor.last_trade == json.loads(batch.trades[0])
    assert batch.sequenced == [("alice", ["a1"], 1), ("bob", ["b1"], 1)]


def test_executor_runs_news_in_one_call_as_one_by_one() -> None:
    orders = [new(f"n{i}", "buy" if i % 2 else "sell", "100.00", "0.5") for i in range(40)]
    one_by_one, run = Replica(SPEC), Replica(SPEC)
    slow_batch, fast_batch = Batch(), Batch()
    slow = Executor(SPEC, one_by_one, DedupeWindow(100))
    fast = Executor(SPEC, run, DedupeWindow(100))
    for i, order in enumerate(orders):
        side = 1 if order["side"] == "buy" else 2
        slow.execute("alice" if i % 3 else "bob", command(order["id"], side, 10000, 500), slow_batch)
    reader = intake_of(RecordingExecutor()).read_orders
    assert reader is not None
    for i, order in enumerate(orders):  # one client per row, as messages of one order
        parsed = reader(payload(order))
        assert parsed is not None
        fast.execute_news("alice" if i % 3 else "bob", parsed[0], parsed[1], fast_batch)
    assert (run.version, run.state_hash, run.orders) == (
        one_by_one.version,
        one_by_one.state_hash,
        one_by_one.orders,
    )
    assert fast_batch.run() == slow_batch.run()
    assert fast_batch.texts == slow_batch.texts and fast_batch.trades == slow_batch.trades


# -- BatchCommit ----------------------------------------------------------------------------


def committer(journal: Any, replica: Replica | None = None) -> BatchCommit:
    return BatchCommit(SPEC, T, journal, replica or Replica(SPEC), 5, 1.0, 0)


def test_commit_journals_the_batch_then_publishes_log_reports_trades_and_book(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    try:
        commit = committer(journal)
        batch = Batch()
        batch.add_entry(entry(1, "a", client="alice"))
        batch.add("alice", ['{"type":"accepted"}'])
        batch.trades.append('{"trade_id":"1-1"}')
        assert commit.commit(batch)
        assert journal.last_seq == 1
        out = commit.publish(batch, True, 10.0, None, moved=True)
        assert [o.topic for o in out] == [T.log, T.reports("alice"), T.trades, T.book]
        # the journal keeps the names, the public log carries none (the anonymous feed)
        (published,) = decode_log_message(out[0].payload).entries
        assert (published.client_id, published.client_order_id) == (None, None)
        (journaled,) = journal.entries()
        assert (journaled.client_id, journaled.client_order_id) == ("alice", "a")
        assert published == journaled._replace(client_id=None, client_order_id=None)
        assert commit.heartbeat(10.5) == []  # the log just spoke
        assert commit.next_heartbeat(10.5) == 11.0
        (beat,) = commit.heartbeat(11.0)
        assert beat.topic == T.log and decode_log_message(beat.payload).entries == []
    finally:
        journal.close()


class RefusingJournal:
    last_seq = 0

    def append(self, run: LogRun) -> None:
        raise JournalError("disk full")


def test_a_refused_commit_publishes_only_rejections_and_fails_the_sequencer() -> None:
    commit = committer(RefusingJournal())
    batch = Batch()
    batch.add_entry(entry(1, "a", client="alice"))
    batch.sequenced.append(("alice", ["a"], 1))
    batch.add("alice", ['{"type":"accepted"}'])
    batch.reject("bob", {"type": "rejected", "id": "b"})
    assert not commit.commit(batch)
    assert commit.failed == "disk full"
    out = commit.publish(batch, False, 1.0, None, moved=True)
    assert [o.topic for o in out] == [T.reports("bob"), T.reports("alice")]
    (answer,) = json.loads(out[1].payload)
    assert (answer["id"], answer["code"]) == ("a", "JOURNAL_UNAVAILABLE")
