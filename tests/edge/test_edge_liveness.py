"""An edge's liveness on a virtual clock: silence of the log (stalled, reconnect, replay), a market
without a sequencer, and a second process under the same client id."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fastbook.edge.liveness import (
    ANSWER_INTERVAL,
    LIVE_PROOF,
    SILENCE_STATUS_AFTER,
    SILENCE_STATUS_INTERVAL,
    ClientPresence,
    SyncState,
)
from fastbook.edge.node import EdgeConfig, EdgeNode
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.transport.node import LinkRequest, Outgoing
from fastbook.wire.log import decode_replay_request, encode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

T = Topics("BTC-USD")
pytestmark = pytest.mark.usefixtures("backend")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_edge(name: str = "bob", clock: Clock | None = None) -> EdgeNode:
    edge = EdgeNode(EdgeConfig(client_id=name, stall_timeout=5.0, status_interval=1.0))
    edge.clock = clock or Clock()
    return edge


def deliver(edge: EdgeNode, out: list[Outgoing]) -> list[Outgoing]:
    subs = dict(edge.subscriptions())
    return edge.on_messages([(o.topic, o.payload) for o in out if o.topic in subs])


def statuses(out: list[Outgoing], name: str = "bob") -> list[dict[str, object]]:
    return [json.loads(o.payload) for o in out if o.topic == T.replica(name)]


def test_a_silent_log_is_a_stall_that_reconnects_with_backoff_and_replays(tmp_path: Path) -> None:
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    clock = Clock()
    edge = make_edge(clock=clock)
    edge.on_connected()
    deliver(edge, seq.on_connected() + seq.on_tick(0.0))
    assert edge.sync_state is SyncState.IN_SYNC and edge.status().detail == "in sync at version 0"
    for t in (1.0, 2.0, 3.0, 4.0):  # heartbeats every second: nothing to say
        clock.now = t
        deliver(edge, seq.on_tick(t))
        edge.on_tick(t)
        assert edge.take_link_request() is None
    # A log silent for 2 s (SILENCE_STATUS_AFTER): a status (the stall is at 9.0, the heartbeat at 60).
    assert edge.next_deadline(4.0) == 6.0
    # The heartbeats stop reaching the edge (its broker session taken over, say).
    clock.now = 8.9
    out = edge.on_tick(8.9)
    assert edge.sync_state is SyncState.IN_SYNC and edge.take_link_request() is None
    clock.now = 9.0
    out = edge.on_tick(9.0)
    status = edge.status()
    assert status.sync is SyncState.STALLED and status.stalled and not status.in_sync
    assert "no log message or heartbeat from the sequencer of BTC-USD for 5s" in status.detail
    assert [s["sync"] for s in statuses(out)] == ["stalled"]  # said at once on the status topic
    assert edge.take_link_request() is LinkRequest.RECONNECT
    assert edge.take_link_request() is None  # asked once
    # Reconnected: everything after the version is asked for.
    (request,) = [o for o in edge.on_connected() if o.topic == T.replay_request("bob")]
    replay = decode_replay_request(request.payload)
    assert (replay.first, replay.last) == (1, None)
    # Still silent: reconnect again after 5 s, then 10 s (doubling).
    asked = []
    for t in range(10, 31):
        clock.now = float(t)
        edge.on_tick(float(t))
        if edge.take_link_request() is LinkRequest.RECONNECT:
            asked.append(t)
    assert asked == [14, 24]
    assert edge.watch.reconnects == 3
    # The sequencer is heard again (its answer to the replay request): in sync, backoff reset.
    clock.now = 31.0
    deliver(edge, seq.on_messages([(request.topic, request.payload)]))
    assert edge.sync_state is SyncState.IN_SYNC
    assert edge.next_deadline(31.0) <= 36.0
    seq.close()


def test_no_sequencer_is_said_and_never_called_in_sync() -> None:
    clock = Clock()
    edge = make_edge(clock=clock)
    edge.on_connected()
    clock.now = 2.5
    edge.on_tick(2.5)  # no retained snapshot: an empty replica, replaying from seq 1 (unanswered)
    edge.follower.pending = None
    assert edge.follower.in_sync  # what it said before: "in sync at version 0"
    assert edge.sync_state is SyncState.SYNCING and not edge.in_sync
    clock.now = 5.0
    out = edge.on_tick(5.0)
    status = edge.status()
    assert status.sync is SyncState.NO_SEQUENCER and not status.in_sync
    assert status.detail.startswith("no sequencer for market BTC-USD")
    assert [s["sync"] for s in statuses(out)] == ["no_sequencer"]
    assert edge.take_link_request() is None  # nothing to reconnect for
    assert edge.next_deadline(5.0) == 65.0  # only its status heartbeat
    # A sequencer comes up: its heartbeat ends it.
    edge.on_messages([(T.log, encode_log_message("BTC-USD", 0))])
    assert edge.sync_state is SyncState.IN_SYNC


def status_messages(edge: EdgeNode, count: int) -> list[Outgoing]:
    """`count` status messages of `edge` as its process publishes them (the will, then statuses)."""
    out = []
    will = edge.will()
    assert will is not None
    out.append(will)
    for i in range(count - 1):
        out.extend(edge._status(100.0 + i, force=True))
    return out


def test_the_newer_of_two_processes_with_one_client_id_stops_and_the_older_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    older, newer = make_edge(), make_edge()
    older.presence.started, newer.presence.started = 1_000, 2_000
    # Each sees the other's live status messages on its own status topic.
    for message in status_messages(older, 3):
        newer.on_messages([(message.topic, message.payload)])
    assert newer.take_link_request() is LinkRequest.STOP
    conflict = newer.status().conflict
    assert conflict is not None and "another process with client id bob" in conflict
    assert "this one started later and stops" in conflict
    for message in status_messages(newer, 3):
        older.on_messages([(message.topic, message.payload)])
    assert older.take_link_request() is None  # the older one keeps running ...
    conflict = older.status().conflict
    assert conflict is not None and "started after this one" in conflict  # ... and says so
    # The newer one's last word leaves the older one's retained status alone and names it.
    (last,) = newer.close()
    assert not last.retain and last.topic == T.replica("bob")
    said = json.loads(last.payload)
    assert (said["state"], said["yielded_to"]) == ("offline", older.presence.instance)
    with caplog.at_level("ERROR"):
        older.on_messages([(last.topic, last.payload)])
    assert "found this one running and stopped" in caplog.text
    older.on_tick(200.0)  # the newer one gone for stall_timeout: forgotten
    assert older.status().conflict is None
    assert json.loads(older.close()[0].payload)["state"] == "offline"


def test_a_gone_process_s_retained_status_and_will_are_no_conflict() -> None:
    gone, edge = make_edge(), make_edge()
    gone.presence.started, edge.presence.started = 1_000, 2_000
    last_status = gone._status(5.0, force=True)[0]
    will = gone.will()
    assert will is not None
    for _reconnect in range(5):  # delivered again at every (re)subscribe
        for message in (last_status, will):
            edge.on_messages([(message.topic, message.payload)])
    assert edge.take_link_request() is None and edge.status().conflict is None
    own = edge._status(1.0, force=True)[0]  # its own messages come back too
    for _ in range(5):
        edge.on_messages([(own.topic, own.payload)])
    assert edge.status().conflict is None


def test_presence_ignores_what_is_not_a_status() -> None:
    presence = ClientPresence("bob", wall_clock_ms=5)
    for payload in (b"", b"[]", b"{", b'{"instance": 3}', b'{"instance": "x", "started": "1", "n": 1}'):
        assert presence.on_status(payload, 0.0) is False
    assert presence.conflict is None and presence.started == 5


@pytest.mark.parametrize("deaf", [False, True])
def test_two_live_processes_prove_each_other_alive_in_seconds(tmp_path: Path, deaf: bool) -> None:
    """An idle edge's status beats once a minute, but it answers another instance's status on its
    own topic within ANSWER_INTERVAL: two live processes ping-pong to LIVE_PROOF in about a second,
    where waiting for heartbeats would take minutes. `deaf`: as on amqtt, the second connection
    took the first one's subscriptions, so the first hears nothing (no status to answer, no log);
    its log silent for SILENCE_STATUS_AFTER, it publishes a status every SILENCE_STATUS_INTERVAL
    until its stall, and the second has its proof from those."""
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    clock = Clock()
    older, newer = make_edge(clock=clock), make_edge(clock=clock)
    older.presence.started, newer.presence.started = 1_000, 2_000
    retained: list[Outgoing] = []  # the broker's retained status of bob
    sent = {id(older): 0, id(newer): 0}
    running = [older]  # the edges that hear what is published
    alive = [older]

    def publish(source: EdgeNode, out: list[Outgoing]) -> None:
        """Deliver what `source` sent: its statuses to every running edge (itself too: its echo)."""
        mine = [o for o in out if o.topic == T.replica("bob")]
        sent[id(source)] += len(mine)
        retained[:] = [o for o in mine if o.retain][-1:] or retained
        for edge in running:
            if mine:
                publish(edge, edge.on_messages([(o.topic, o.payload) for o in mine]))

    publish(older, older.on_connected())
    publish(older, deliver(older, seq.on_connected() + seq.on_tick(0.0)))
    assert older.in_sync and sent[id(older)] == 2  # connected; in sync

    def run_until(end: float, stop: Callable[[], bool] = lambda: False) -> None:
        while clock.now < end and not stop():
            clock.now = round(clock.now + 0.05, 2)
            if clock.now == int(clock.now):  # the sequencer's heartbeat, every second
                for edge in running:
                    publish(edge, deliver(edge, seq.on_tick(clock.now)))
            for edge in alive:  # (each process's own timers, deaf or not)
                deadline = edge.next_deadline(clock.now)
                if deadline is not None and deadline <= clock.now:
                    publish(edge, edge.on_tick(clock.now))

    run_until(120.0)  # alone and idle for two minutes: its heartbeats only (at 60 and 120)
    assert sent[id(older)] == 2 + 2 and older.status().conflict is None
    # A second process under the same client id: it gets the retained status when it subscribes.
    running[:] = [newer] if deaf else [older, newer]
    alive.append(newer)
    publish(newer, newer.on_connected() + newer.on_messages([(o.topic, o.payload) for o in retained]))
    publish(newer, deliver(newer, seq.on_connected() + seq.on_tick(clock.now)))
    started = clock.now
    run_until(started + 10.0, lambda: newer.presence.newer)
    took = clock.now - started
    assert newer.take_link_request() is LinkRequest.STOP and newer.status().conflict is not None
    # The newer saw the older's retained status, then LIVE_PROOF - 1 more: rate-limited, no storm.
    assert sent[id(older)] - 4 == LIVE_PROOF - 1
    if deaf:
        assert took == SILENCE_STATUS_AFTER + (LIVE_PROOF - 2) * SILENCE_STATUS_INTERVAL  # 3 s
        assert older.status().conflict is None and older.sync_state is SyncState.IN_SYNC  # (no stall yet)
    else:
        assert took <= 4 * ANSWER_INTERVAL  # (a few answers each way; heartbeats alone: minutes)
        assert older.status().conflict is not None and "started after this one" in older.status().conflict
    seq.close()


def test_an_edge_answers_a_gone_process_s_two_messages_and_then_is_quiet(tmp_path: Path) -> None:
    """The last status and will of a process that is gone are answered (at most one status per
    ANSWER_INTERVAL), and prove nothing; then the edge is back to its heartbeat."""
    clock = Clock()
    gone, edge = make_edge(), make_edge(clock=clock)
    gone.presence.started, edge.presence.started = 1_000, 2_000
    last_status = gone._status(5.0, force=True)[0]
    will = gone.will()
    assert will is not None
    edge.on_connected()
    clock.now = 10.0
    seq = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), tmp_path / "d"))
    deliver(edge, seq.on_connected() + seq.on_tick(10.0))
    seq.close()
    assert edge.in_sync
    clock.now = 11.0
    (answer,) = statuses(edge.on_messages([(last_status.topic, last_status.payload)]))  # at once
    assert answer["instance"] == edge.presence.instance and answer["state"] == "online"
    assert statuses(edge.on_messages([(will.topic, will.payload)])) == []  # (just answered) ...
    assert edge.next_deadline(11.0) == 11.0 + ANSWER_INTERVAL  # ... so it answers the will soon
    clock.now = 11.0 + ANSWER_INTERVAL
    assert len(statuses(edge.on_tick(clock.now))) == 1 and not edge.presence.answer_due
    for second in range(12, 40):  # then quiet: the sequencer's heartbeat every second, no status
        clock.now = float(second)
        heartbeat = encode_log_message("BTC-USD", 0)
        assert statuses(edge.on_messages([(T.log, heartbeat)]) + edge.on_tick(clock.now)) == []
    assert edge._status_due(clock.now) == min(11.5 + 60.0, clock.now + SILENCE_STATUS_AFTER)
    assert edge.take_link_request() is None and edge.status().conflict is None
