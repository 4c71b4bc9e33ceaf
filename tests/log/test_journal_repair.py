"""A damaged last journal record (issue 15, D2): one byte flipped in the record of a command that
was answered "accepted". Without replicas to give it back, start-up refuses and changes nothing on
disk, so its seq is never given to another command unasked; `fastbook journal repair` shows the
damage and, with --drop-tail, sets it aside on the operator's word."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fastbook.apps.cli.main import main
from fastbook.log.journal import CorruptTail, Journal
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.log.tail_recovery import TailNotRecovered
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")


def accept(node: SequencerNode, client: str, coid: str, price: str) -> dict[str, Any]:
    order = {"op": "new", "id": coid, "side": "buy", "price": price, "qty": "1"}
    out = node.on_messages([(T.orders(client), json.dumps(order).encode())])
    (report,) = [r for o in out if o.topic == T.reports(client) for r in json.loads(o.payload)]
    return report


def files(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


@pytest.fixture(params=["snapshot before", "snapshot at the damaged seq"])
def damaged_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    data_dir = tmp_path / "d"
    cfg = SequencerConfig(SPEC, data_dir)
    node = SequencerNode(cfg)
    for i in range(1, 30):
        assert accept(node, "alice", f"a{i}", "90.00")["type"] == "accepted"
    node.close()
    if request.param == "snapshot at the damaged seq":
        node = SequencerNode(cfg)  # every start writes a snapshot at its version
        assert accept(node, "bob", "b1", "91.00")["seq"] == 30
        node._take_snapshot(0.0)  # noqa: SLF001 - the newest snapshot holds seq 30's effect
        node.close()
    else:
        node = SequencerNode(cfg)
        assert accept(node, "bob", "b1", "91.00")["seq"] == 30
        node.close()
    path = data_dir / Journal.FILE_NAME
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x20  # one byte of record 30 (its own frame: one command per batch here)
    path.write_bytes(bytes(data))
    return data_dir


def test_start_refuses_and_changes_nothing(damaged_dir: Path) -> None:
    """Without replicas to give the record back (fastbook.log.tail_recovery), start-up refuses once
    the recovery's deadline has passed; the newest snapshot may be ahead of the last good seq."""
    before = files(damaged_dir)
    with pytest.raises(CorruptTail, match="last good seq 29") as info:
        Journal(damaged_dir)
    assert "may hold commands that were accepted" in str(info.value)
    node = SequencerNode(SequencerConfig(SPEC, damaged_dir, recover_timeout=2.0))
    try:
        assert node.version == 29 and node.tail is not None
        node.clock = lambda: 100.0
        (request,) = node.on_connected()
        assert request.topic == T.recover_request
        assert [o.topic for o in node.on_tick(101.5)] == [T.recover_request]  # asked again, nothing else
        with pytest.raises(TailNotRecovered, match="after seq 29: .*no replica answered.*nothing on disk"):
            node.on_tick(102.0)
    finally:
        node.close()
    assert files(damaged_dir) == before


def test_repair_shows_the_damage_then_drops_the_tail_when_told(
    damaged_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = files(damaged_dir)
    assert main(["journal", "repair", str(damaged_dir)]) == 1
    err = capsys.readouterr().err
    assert "last good seq 29" in err and "--drop-tail" in err
    assert files(damaged_dir) == before
    assert main(["journal", "repair", str(damaged_dir), "--drop-tail"]) == 0
    out = capsys.readouterr().out
    assert "dropped" in out and "seq 30 and on" in out
    evidence = list(damaged_dir.glob("journal.log.tail-*"))
    assert len(evidence) == 1
    journal = before[Journal.FILE_NAME]
    assert journal.endswith(evidence[0].read_bytes()) and journal.startswith(
        files(damaged_dir)[Journal.FILE_NAME]
    )
    node = SequencerNode(SequencerConfig(SPEC, damaged_dir))
    try:
        assert node.version == 29
        assert not list((damaged_dir / "snapshots").glob("30.snap"))
    finally:
        node.close()
    assert main(["journal", "repair", str(damaged_dir)]) == 0  # sound now
    assert "sound" in capsys.readouterr().out


def test_repair_of_no_journal_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journal", "repair", str(tmp_path / "nothing")]) == 1
    assert "no journal at" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
