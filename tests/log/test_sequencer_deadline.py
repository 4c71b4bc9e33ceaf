"""The sequencer names its next timer (next_deadline) instead of being ticked every 100 ms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

SPEC = MarketSpec.parse("BTC-USD")
T = Topics("BTC-USD")

pytestmark = pytest.mark.usefixtures("backend")


def test_next_deadline_is_the_heartbeat_or_the_timed_snapshot(tmp_path: Path) -> None:
    cfg = SequencerConfig(SPEC, tmp_path / "d", snapshot_interval=5.0, heartbeat_interval=1.0)
    node = SequencerNode(cfg)
    try:
        start = node.snapshot_policy._time  # the start-up snapshot (0.snap) started the interval
        assert start is not None
        assert node.next_deadline(start) <= start  # never ticked: the heartbeat is due now
        out = node.on_tick(start)
        assert [o.topic for o in out] == [T.log]  # the idle heartbeat
        assert node.next_deadline(start + 0.2) == start + 1.0  # nothing moved: the next heartbeat only
        node.clock = lambda: start + 0.5
        order = {"op": "new", "id": "a1", "side": "buy", "price": "99.00", "qty": "1"}
        node.on_messages([(T.orders("alice"), json.dumps(order).encode())])
        assert node.next_deadline(start + 0.6) == start + 1.5  # the log message put the heartbeat back
        node.on_tick(start + 1.5)
        node.on_tick(start + 2.5)
        node.on_tick(start + 3.5)
        node.on_tick(start + 4.5)
        # the version moved: the snapshot, due 5 s after the last one, comes before the heartbeat
        assert node.next_deadline(start + 4.6) == start + 5.0
        out = node.on_tick(start + 5.0)
        assert T.snapshot in [o.topic for o in out]
        assert node.next_deadline(start + 5.1) == start + 5.5  # snapshot taken: the heartbeat alone
    finally:
        node.close()
