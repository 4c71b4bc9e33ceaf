"""A retained order message is a stored copy the broker resends at every (re)subscribe: the
sequencer rejects it (RETAINED_COMMAND) instead of executing the same commands again each time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import RetainedIncoming
from fastbook.wire.fields import RETAINED_COMMAND
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

T = Topics("BTC-USD")
pytestmark = pytest.mark.usefixtures("backend")


def test_a_retained_cancel_all_is_rejected_and_changes_nothing(tmp_path: Path) -> None:
    node = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    try:
        order = {"op": "new", "id": "r1", "side": "buy", "price": "1.00", "qty": "0.001"}
        node.on_messages([(T.orders("bob"), json.dumps(order).encode())])
        assert node.version == 1
        cancel_all = json.dumps({"op": "cancel_all", "id": "ca"}).encode()
        replay = json.dumps({"from": 1, "to": None}).encode()
        out = node.on_messages([RetainedIncoming((T.orders("bob"), cancel_all)),
                                RetainedIncoming((T.replay_request("bob"), replay))])
        assert node.version == 1  # nothing sequenced: bob's order still rests
        reports = [r for o in out if o.topic == T.reports("bob") for r in json.loads(o.payload)]
        assert [(r["type"], r["code"]) for r in reports] == [("rejected", RETAINED_COMMAND)]
        assert "retained" in reports[0]["message"]
        assert not [o for o in out if "/replay/response/" in o.topic]  # a retained request: ignored
    finally:
        node.close()
