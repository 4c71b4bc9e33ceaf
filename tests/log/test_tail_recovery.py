"""A journal whose last frame is damaged is recovered from the replicas at start (issue 15, D2), or
the sequencer refuses to start with nothing on disk changed: one sequencer and two edges on the
in-memory bus, the sequencer stopped as if killed, one byte of its last frame flipped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fastbook.edge.node import EdgeConfig, EdgeNode
from fastbook.log.journal import FRAME_HEAD, Journal
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.log.snapshots import SnapshotStore
from fastbook.log.tail_recovery import TailNotRecovered
from fastbook.transport.node import Outgoing
from fastbook.wire.log import LOG_RECORD_DTYPE, RUN_HEAD
from fastbook.wire.market import MarketSpec
from fastbook.wire.recover import RecoverAnswer, encode_recover_answer
from fastbook.wire.topics import Topics
from tests.support.inmemory_bus import Bus
from tests.support.journal_files import last_frame

SPEC = MarketSpec.parse("BTC-USD")
TOPICS = Topics("BTC-USD")
RECORD = LOG_RECORD_DTYPE.itemsize

pytestmark = pytest.mark.usefixtures("backend")


@dataclass
class Market:
    bus: Bus
    data_dir: Path
    sequencer: SequencerNode
    edges: dict[str, EdgeNode]
    reports: dict[str, list[dict[str, Any]]]

    @property
    def journal(self) -> Path:
        return self.data_dir / Journal.FILE_NAME

    def submit(self, client: str, order: dict[str, Any]) -> None:
        _coid, messages = self.edges[client].submit(order)
        self.bus.publish(client, messages)

    def settle(self, version: int | None = None) -> None:
        seq = self.sequencer
        self.bus.run_until(
            lambda: (version is None or seq.version == version)
            and all(e.version == seq.version and e.state_hash == seq.state_hash for e in self.edges.values())
            and self.bus.idle()
        )

    def crash(self) -> None:
        """The sequencer gone as if killed: its journal as the last fdatasync left it."""
        self.bus.disconnect("sequencer", use_will=False)
        self.sequencer.journal.close()

    def restart(self, timeout: float = 2.0) -> SequencerNode:
        self.sequencer = SequencerNode(SequencerConfig(SPEC, self.data_dir, recover_timeout=timeout))
        self.bus.connect("sequencer", self.sequencer)
        return self.sequencer

    def recovers(self, original: bytes, version: int) -> None:
        """A restart rewrites the journal as it was written, and every replica agrees again."""
        seq = self.restart()
        self.bus.run_until(lambda: seq.tail is None)
        assert self.journal.read_bytes() == original
        self.settle(version)


def market(tmp_path: Path) -> Market:
    """alice's buy at seq N trades with bob's resting sell: the last frame is alice's order alone."""
    bus = Bus()
    data_dir = tmp_path / "d"
    seq = SequencerNode(SequencerConfig(SPEC, data_dir))
    bus.connect("sequencer", seq)
    edges, reports = {}, {}
    for name in ("alice", "bob"):
        edge = EdgeNode(EdgeConfig(name))
        reports[name] = []
        edge.add_listener(
            lambda kind, data, got=reports[name]: got.append(data) if kind == "report" else None
        )
        bus.connect(name, edge)
        edges[name] = edge
    m = Market(bus, data_dir, seq, edges, reports)
    m.settle()
    m.submit("bob", {"op": "new", "id": "b-1", "side": "sell", "price": "100.00", "qty": "2"})
    m.submit("bob", {"op": "new", "id": "b-2", "side": "sell", "price": "101.00", "qty": "1"})
    m.settle(2)
    m.submit("alice", {"op": "new", "id": "alice-order-0001", "side": "buy", "price": "100.00", "qty": "0.5"})
    m.settle(3)
    return m


def flip(path: Path, at: int) -> bytes:
    """Flip one bit at file offset `at`; the original bytes."""
    original = path.read_bytes()
    data = bytearray(original)
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    return original


@pytest.mark.parametrize("snapshot_at_n", [False, True])
def test_a_flipped_record_is_recovered_from_the_replicas(tmp_path: Path, snapshot_at_n: bool) -> None:
    m = market(tmp_path)
    version, state_hash = m.sequencer.version, m.sequencer.state_hash
    if snapshot_at_n:  # (taken after the damaged frame: left alone while it is recovered)
        m.bus.publish("sequencer", m.sequencer._take_snapshot(m.bus.now))
        assert version in SnapshotStore(m.data_dir / "snapshots").versions()
    m.crash()
    frame = last_frame(m.journal)
    original = flip(m.journal, frame + FRAME_HEAD.size + RUN_HEAD.size + 9)  # the record's hash
    damaged = m.journal.read_bytes()
    seq = m.restart()
    assert seq.tail is not None and seq.version == version - 1  # held aside, not cut
    m.bus.run_until(lambda: seq.tail is None)
    assert m.journal.read_bytes() == original  # record N as it was written, byte for byte
    assert (m.data_dir / f"journal.log.tail-{frame}").read_bytes() == damaged[frame:]
    assert (seq.version, seq.state_hash) == (version, state_hash)
    m.settle(version)
    # alice's resubmit of the same client order id is refused as a duplicate, not a new order
    m.submit("alice", {"op": "new", "id": "alice-order-0001", "side": "buy", "price": "100.00", "qty": "0.5"})
    m.bus.run_until(lambda: any(r.get("code") == "DUPLICATE_CLIENT_ORDER_ID" for r in m.reports["alice"]))
    assert seq.version == version
    # and the seqs go on after the recovered one
    m.submit("alice", {"op": "new", "id": "alice-order-0002", "side": "buy", "price": "99.00", "qty": "1"})
    m.settle(version + 1)


def test_a_flipped_name_needs_its_owners_answer(tmp_path: Path) -> None:
    """The public log has no names: a byte flipped in alice's client order id comes back only from
    alice's own edge (bob's has the record, not the name)."""
    m = market(tmp_path)
    version = m.sequencer.version
    m.crash()
    frame = last_frame(m.journal)
    names_at = frame + FRAME_HEAD.size + RUN_HEAD.size + RECORD
    original = flip(m.journal, names_at + 3)
    # without alice: refused at the deadline, nothing changed
    m.bus.disconnect("alice")
    damaged = m.journal.read_bytes()
    m.restart()
    expected = rf"after seq {version - 1}.*bob \(owner 1, 1 records"
    with pytest.raises(TailNotRecovered, match=expected) as refused:
        m.bus.run_until(lambda: False, max_steps=200)
    assert "nothing on disk changed" in str(refused.value)
    assert m.journal.read_bytes() == damaged
    assert not list(m.data_dir.glob("journal.log.tail-*"))
    m.crash()
    # with alice: recovered
    m.bus.connect("alice", m.edges["alice"])
    m.recovers(original, version)


def test_damage_in_the_frame_head_is_recovered(tmp_path: Path) -> None:
    m = market(tmp_path)
    version = m.sequencer.version
    m.crash()
    original = flip(m.journal, last_frame(m.journal) + 5)  # the CRC field
    m.recovers(original, version)


def test_no_answer_refuses_and_changes_nothing(tmp_path: Path) -> None:
    m = market(tmp_path)
    version = m.sequencer.version
    m.crash()
    for name in list(m.edges):
        m.bus.disconnect(name)
    flip(m.journal, last_frame(m.journal) + FRAME_HEAD.size + RUN_HEAD.size + 40)
    before = {p.name: p.read_bytes() for p in sorted(m.data_dir.rglob("*")) if p.is_file()}
    published = len(m.bus.published)
    seq = m.restart()
    assert seq.subscriptions()[-1] == (TOPICS.recover_answer_filter, 1)
    expected = rf"after seq {version - 1}: asked .*recover/request .*no replica answered"
    with pytest.raises(TailNotRecovered, match=expected):
        m.bus.run_until(lambda: False, max_steps=200)
    sent = [msg for who, msg in m.bus.published[published:] if who == "sequencer"]
    assert len(sent) >= 2 and {msg.topic for msg in sent} == {TOPICS.recover_request}  # nothing else
    request = {"v": 1, "type": "recover_request", "market": "BTC-USD", "from": version}
    assert json.loads(sent[0].payload) == request
    m.sequencer.journal.close()
    assert {p.name: p.read_bytes() for p in sorted(m.data_dir.rglob("*")) if p.is_file()} == before


def test_a_disagreeing_answer_is_not_used(tmp_path: Path) -> None:
    """An answer whose record differs from another's (a replica gone wrong, or a lie) stops the
    recovery rather than be chosen: refused, nothing changed."""
    m = market(tmp_path)
    m.crash()
    frame = last_frame(m.journal)
    flip(m.journal, frame + FRAME_HEAD.size + RUN_HEAD.size + 9)
    damaged = m.journal.read_bytes()
    records, _names = m.edges["bob"].recent.since(m.sequencer.version, m.sequencer.version)
    for name in list(m.edges):
        m.bus.disconnect(name)
    seq = m.restart()
    lie = records.copy()
    lie["qty"] += 1
    m.bus.connect("bob", m.edges["bob"])
    lie_answer = RecoverAnswer("BTC-USD", seq.version + 1, None, lie, {})
    m.bus.publish("mallory", [Outgoing(TOPICS.recover_answer("mallory"), encode_recover_answer(lie_answer))])
    with pytest.raises(TailNotRecovered, match="disagree"):
        m.bus.run_until(lambda: False, max_steps=200)
    assert m.journal.read_bytes() == damaged
