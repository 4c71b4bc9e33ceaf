"""An edge names its next timer (next_deadline): the status when in sync, the follower's old tick
while it is catching up or waiting for an answer."""

from __future__ import annotations

import pytest

from fastbook.edge.node import FOLLOWER_POLL, EdgeConfig, EdgeNode
from fastbook.wire.log import encode_log_message

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
    assert edge.next_deadline(2.1) == sent + 1.0  # in sync and idle: only the next status


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
