"""An edge names its next timer (next_deadline): the status when in sync, the follower's old tick
while it is catching up or waiting for an answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastbook.edge.liveness import SILENCE_STATUS_AFTER
from fastbook.edge.node import FOLLOWER_POLL, EdgeConfig, EdgeNode
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import Outgoing
from fastbook.wire.log import encode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

T = Topics("BTC-USD")

pytestmark = pytest.mark.usefixtures("backend")


def test_a_waiting_edge_polls_and_an_idle_one_waits_for_its_status() -> None:
    edge = EdgeNode(EdgeConfig(client_id="alice", replay_timeout=1.0, status_interval=1.0))
    edge.clock = lambda: 0.0
    edge.on_connected()
    assert edge.next_deadline(0.0) == FOLLOWER_POLL  # waiting for the snapshot: the retry timers run
    edge.on_tick(1.5)  # no snapshot: an empty replica, replaying from seq 1 (pending)
    assert edge.next_deadline(1.5) == 1.5 + FOLLOWER_POLL
    answer = encode_log_message("BTC-USD", 0, replay=True)  # the (empty) replay answer: at version 0
    edge.clock = lambda: 1.6
    edge.on_messages([(edge.topics.replay_response("alice"), answer)])
    assert edge.in_sync
    edge.on_tick(2.0)
    sent = edge._status_sent_at
    assert sent is not None
    # In sync and idle: a status if the log stays silent for SILENCE_STATUS_AFTER (the sequencer
    # heartbeats every second, each one moving it on); the stall (5 s) and the heartbeat are later.
    assert edge.next_deadline(2.1) == 1.6 + SILENCE_STATUS_AFTER < sent + 60.0


def test_frequent_calls_do_not_put_off_the_follower_s_poll() -> None:
    """The deadline is asked after every call into the node: Edge.wait_synced reads the state every
    few ms, and a poll counted from each call never came (no snapshot timeout, no sync)."""
    edge = EdgeNode(EdgeConfig(client_id="alice"))
    edge.clock = lambda: 0.5
    edge.on_connected()
    for now in (0.53, 0.56, 0.59):  # before the first tick too
        assert edge.next_deadline(now) == 0.5 + FOLLOWER_POLL
    edge.on_tick(1.0)
    for now in (1.03, 1.06, 1.09):  # calls (reads) between ticks
        assert edge.next_deadline(now) == 1.0 + FOLLOWER_POLL
    assert edge.next_deadline(1.2) == 1.0 + FOLLOWER_POLL  # overdue: the driver ticks at once


def test_status_follows_the_version_at_most_every_interval_and_beats_slowly_when_idle(
    tmp_path: Path,
) -> None:
    """An idle edge publishes one status per status_heartbeat; a busy one one per status_interval
    (never one per order); a sync-state change at once."""
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    edge = EdgeNode(EdgeConfig(client_id="alice", status_interval=1.0, status_heartbeat=60.0))
    now = [0.0]
    edge.clock = lambda: now[0]
    statuses: list[dict[str, object]] = []

    def run(out: list[Outgoing]) -> None:
        statuses.extend(json.loads(o.payload) for o in out if o.topic == T.replica("alice"))

    run(edge.on_connected())
    subs = dict(edge.subscriptions())
    first = seq.on_connected() + seq.on_tick(0.0)  # the retained snapshot, a heartbeat
    run(edge.on_messages([(o.topic, o.payload) for o in first if o.topic in subs]))
    assert edge.in_sync and len(statuses) == 2  # connected; then in sync (a change: at once)
    for second in range(1, 601):  # ten idle minutes: the sequencer's heartbeat every second
        now[0] = float(second)
        run(edge.on_messages([(o.topic, o.payload) for o in seq.on_tick(now[0]) if o.topic == T.log]))
        deadline = edge.next_deadline(now[0])
        assert deadline is not None and deadline > now[0]  # (nothing left due)
        assert deadline == min(now[0] + SILENCE_STATUS_AFTER, 60.0 * (second // 60 + 1))  # (never reached)
    assert len(statuses) == 2 + 10 and edge.in_sync
    for i in range(50):  # 50 orders in 0.5 s: one status, 1 s after the last one, with the version
        now[0] += 0.01
        order = {"op": "new", "id": f"o{i}", "side": "buy", "price": "100.00", "qty": "1"}
        for o in seq.on_messages([(T.orders("bob"), json.dumps(order).encode())]):
            if o.topic in dict(edge.subscriptions()):
                run(edge.on_messages([(o.topic, o.payload)]))
    assert len(statuses) == 12 and edge.version == 50
    deadline = edge.next_deadline(now[0])
    assert deadline == 601.0  # the last status (at 600) + status_interval
    now[0] = deadline
    run(edge.on_tick(now[0]))
    assert len(statuses) == 13 and statuses[-1]["version"] == 50
    heard = edge.watch.heard_at
    assert heard is not None and edge.next_deadline(now[0]) == heard + SILENCE_STATUS_AFTER
    now[0] += 1.0  # the sequencer's heartbeat (at the head: 50)
    run(edge.on_messages([(T.log, encode_log_message("BTC-USD", 50))]))
    assert len(statuses) == 13 and edge._status_due(601.0) == now[0] + SILENCE_STATUS_AFTER < 661.0
    seq.close()
