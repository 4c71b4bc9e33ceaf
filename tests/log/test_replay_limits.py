"""Replay is served fairly and bounded (issue 15, D1): a flood of whole-journal requests from one
requester is refused past its limits, answered a bounded chunk per turn from the journal file,
paced by its bucket, and never delays another client's orders or small replays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastbook.log.journal import Journal
from fastbook.log.replay import LOG_CHUNK, ReplayLimits, ReplayService
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import Outgoing
from fastbook.wire.fields import REPLAY_LIMIT
from fastbook.wire.log import LogEntry, LogRun, ReplayRefused, decode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")
WHOLE = b'{"from":1,"to":null}'


def entry(seq: int) -> LogEntry:
    return LogEntry(
        seq, seq * 7919, "c" if seq == 1 else None, f"o-{seq}", 1, seq, 1, 1, 1, 1, 0, 0, 100, seq
    )


def journal_of(path: Path, last: int, batch: int) -> Journal:
    j = Journal(path)
    for first in range(1, last + 1, batch):
        j.append(LogRun.from_entries(entry(s) for s in range(first, min(last, first + batch - 1) + 1)))
    return j


def seqs(out: list[Outgoing], topic: str) -> list[int]:
    return [int(s) for o in out if o.topic == topic for s in decode_log_message(o.payload).seqs]


def refusals(out: list[Outgoing], topic: str) -> list[dict[str, str]]:
    return [json.loads(o.payload) for o in out if o.topic == topic and o.payload[:1] == b"{"]


def test_a_flood_is_refused_past_its_limits_and_answered_a_bounded_chunk_per_turn(tmp_path: Path) -> None:
    j = journal_of(tmp_path, 30_000, batch=100)
    limits = ReplayLimits()
    service = ReplayService("BTC-USD", T, j, limits)
    bob = T.replay_response("bob")
    out: list[Outgoing] = []
    for i in range(300):
        # (distinct requests: an identical one to a request still queued is dropped, see below)
        out += service.serve("bob", b'{"from":%d,"to":null}' % (i + 1), b"", -1, now=0.0)
    assert service.in_flight == limits.max_in_flight
    refused = refusals(out, bob)
    assert service.refused == 300 - limits.max_in_flight
    assert 1 <= len(refused) <= limits.refusals_per_second  # rate-limited, not one per request
    assert {r["type"] for r in refused} == {"replay_refused"} and {r["code"] for r in refused} == {
        REPLAY_LIMIT
    }
    assert "limit 4" in refused[0]["message"]
    with pytest.raises(ReplayRefused, match="REPLAY_LIMIT"):
        decode_log_message(out[0].payload)
    # One turn serves at most turn_entries, however much is queued.
    first = service.pump(0.0)
    assert 0 < len(seqs(first, bob)) <= limits.turn_entries
    assert all(len(decode_log_message(o.payload)) <= LOG_CHUNK for o in first)
    j.close()


def test_answers_are_paced_by_the_bucket_and_complete_in_order(tmp_path: Path) -> None:
    j = journal_of(tmp_path, 60_000, batch=700)  # frames that do not line up with chunks
    limits = ReplayLimits(entries_per_second=10_000.0, burst=4096, turn_entries=8192)
    service = ReplayService("BTC-USD", T, j, limits)
    j.read = None  # type: ignore[method-assign]  # streamed frame by frame, never read as a range
    bob = T.replay_response("bob")
    assert service.serve("bob", b'{"from":5,"to":25004}', b"", -1, now=0.0) == []
    assert service.serve("bob", b'{"from":5,"to":25004}', b"", -1, now=0.0) == []  # a repeat: dropped
    assert service.in_flight == 1
    now, got = 0.0, []
    while service.in_flight:
        deadline = service.next_deadline(now)
        assert deadline is not None
        now = max(now, deadline)
        got += seqs(service.pump(now), bob)
    assert got == list(range(5, 25_005))
    # 25,000 entries at 10,000 a second after a burst of 4,096: not before ~2.1 s.
    assert now >= (25_000 - 4096 - LOG_CHUNK) / 10_000
    assert service.next_deadline(now) is None
    j.close()


def test_a_small_replay_is_served_beside_a_flood(tmp_path: Path) -> None:
    j = journal_of(tmp_path, 50_000, batch=5_000)
    service = ReplayService("BTC-USD", T, j)
    for _ in range(4):
        for i in range(4):
            service.serve("bob", b'{"from":%d,"to":null}' % (i + 1), b"", -1, now=0.0)
        service.pump(0.0)
    service.serve("alice", b'{"from":49990,"to":50000}', b"", -1, now=0.0)
    out = service.pump(0.001)
    assert seqs(out, T.replay_response("alice")) == list(range(49_990, 50_001))
    j.close()


def test_the_sequencer_takes_orders_in_the_turn_a_flood_arrives(tmp_path: Path) -> None:
    node = SequencerNode(SequencerConfig(SPEC, tmp_path / "d"))
    try:
        orders = [
            {"op": "new", "id": f"a{i}", "side": "buy", "price": "99.00", "qty": "1"} for i in range(40_000)
        ]
        for i in range(0, len(orders), 2000):
            node.on_messages([(T.orders("alice"), json.dumps(orders[i : i + 2000]).encode())])
        flood = [(T.replay_request("bob"), WHOLE)] * 300
        order = {"op": "new", "id": "c1", "side": "sell", "price": "101.00", "qty": "1"}
        out = node.on_messages([*flood, (T.orders("carol"), json.dumps(order).encode())])
        assert [r["type"] for o in out if o.topic == T.reports("carol") for r in json.loads(o.payload)] == [
            "accepted"
        ]
        assert seqs(out, T.log) == [40_001]
        served = seqs(out, T.replay_response("bob"))
        assert 0 < len(served) <= node.replay.limits.turn_entries  # not 300 x 40,001 entries
        assert node.replay.in_flight == 1  # identical repeats are dropped
        assert node.next_deadline(node.clock()) <= node.clock() + 0.1  # the rest is pumped by ticks
    finally:
        node.close()
