"""NodeDriver and Inbox without a broker or threads: a fake node, a fake link, run_ready() by hand;
and the node's own deadlines."""

from __future__ import annotations

import select
import time
from collections.abc import Callable

import pytest

from fastbook.transport.config import BatchPolicy
from fastbook.transport.driver import HOLD_AFTER, HOLD_SPACING, MIN_TICK_GAP, NodeDriver
from fastbook.transport.node import LinkRequest, Outgoing
from fastbook.transport.runner import _Wakeup
from fastbook.transport.seam import Inbox, RunnerError
from tests.support.transport_fakes import FakeLink, FakeNode


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def make(batching: BatchPolicy | None = None) -> tuple[FakeNode, Inbox, FakeLink, NodeDriver]:
    node, link = FakeNode(), FakeLink()
    wakeups: list[None] = []
    inbox = Inbox("test", lambda: wakeups.append(None))
    return node, inbox, link, NodeDriver(node, inbox, link, batching or BatchPolicy(tick_interval=60), "test")


def test_batches_are_cut_by_count_and_bytes() -> None:
    node, inbox, link, driver = make(BatchPolicy(max_messages=3, tick_interval=60))
    for i in range(7):
        inbox.deliver(("in/a", b"%d" % i))
    while inbox:
        assert driver.run_ready()
    assert [len(b) for b in node.batches] == [3, 3, 1]
    assert [p for b in node.batches for _t, p in b] == [b"%d" % i for i in range(7)]
    assert [m.payload for m in link.published] == [b"%d" % i for i in range(7)]
    assert driver.received == 7 and driver.batches == 3 and driver.published == 7
    assert len(link.followed) == 3  # after every node call

    node, inbox, _link, driver = make(BatchPolicy(max_bytes=25, tick_interval=60))
    for i in range(5):
        inbox.deliver(("in/big", b"%d" % i * 10))
    while inbox:
        assert driver.run_ready()
    assert [len(b) for b in node.batches] == [3, 2]  # 2 x 10 < 25 <= 3 x 10: the third ends a slice


def test_markers_split_batches_and_keep_arrival_order() -> None:
    node, inbox, link, driver = make()
    inbox.deliver(("in/a", b"1"))
    inbox.connected()
    inbox.deliver(("in/a", b"2"))
    seen: list[int] = []
    inbox.call(lambda: seen.append(len(node.batches)) or [], returns_value=False)
    inbox.deliver(("in/a", b"3"))
    while inbox:
        assert driver.run_ready()
    assert node.batches == [[("in/a", b"1")], [("in/a", b"2")], [("in/a", b"3")]]
    assert node.connects == 1
    assert seen == [2]  # the call ran after the two messages queued before it, before the third
    assert [m.payload for m in link.published] == [b"1", b"online", b"2", b"3"]


def test_call_results_and_errors() -> None:
    _node, inbox, link, driver = make()
    value = inbox.call(lambda: (42, [Outgoing("x", b"v")]), returns_value=True)
    messages = inbox.call(lambda: [Outgoing("y", b"m")], returns_value=False)

    def broken() -> list[Outgoing]:
        raise KeyError("nope")

    failed = inbox.call(broken, returns_value=False)
    while inbox:
        assert driver.run_ready()
    assert value.result(0) == 42
    assert messages.result(0) == [Outgoing("y", b"m")]
    with pytest.raises(KeyError):
        failed.result(0)
    assert [m.topic for m in link.published] == ["x", "y"]
    assert driver.error is None and not driver.stopped.is_set()  # the caller's bug, not the node's


def test_stop_closes_the_node_and_fails_later_calls() -> None:
    node, inbox, link, driver = make()
    inbox.deliver(("in/a", b"1"))
    inbox.stop()
    late = inbox.call(lambda: [], returns_value=False)  # refused at once: the stop is queued
    with pytest.raises(RunnerError):
        late.result(0)
    assert driver.run_ready()  # the message queued before the stop goes first
    assert not driver.run_ready()
    assert node.batches == [[("in/a", b"1")]] and node.closed
    assert link.closed_with == [Outgoing("status", b"closed")] and not link.aborted
    assert driver.stopped.is_set() and driver.error is None
    assert not driver.run_ready()  # stays stopped


def test_a_transport_failure_stops_with_its_error() -> None:
    node, inbox, link, driver = make()
    error = RunnerError("network thread failed")
    inbox.stop(error)
    assert not driver.run_ready()
    assert driver.error is error and node.closed and link.closed_with is not None


def test_a_failing_close_still_disconnects() -> None:
    node, inbox, link, driver = make()
    node.close_fails = True
    inbox.stop()
    assert not driver.run_ready()
    assert isinstance(driver.error, OSError)
    assert link.closed_with == [] and driver.stopped.is_set()


def test_a_node_exception_aborts_the_link_and_fails_pending_calls() -> None:
    node, inbox, link, driver = make()
    node.fail_on = b"boom"
    inbox.deliver(("in/a", b"boom"))
    pending = inbox.call(lambda: [], returns_value=False)
    assert not driver.run_ready()
    assert isinstance(driver.error, RuntimeError) and driver.stopped.is_set()
    assert link.aborted and link.closed_with is None  # no clean disconnect: the will fires
    with pytest.raises(RunnerError):
        pending.result(0)
    with pytest.raises(RunnerError):
        inbox.call(lambda: [], returns_value=False).result(0)


def test_hold_only_under_load() -> None:
    node, inbox, _link, driver = make(BatchPolicy(window=0.5, tick_interval=60))
    node.cost = 0.02
    inbox.deliver(("in/a", b"1"))
    assert driver.hold(time.monotonic()) == 0.0  # nothing ran yet
    assert driver.run_ready()
    inbox.deliver(("in/a", b"2"))
    assert driver.hold(time.monotonic()) == 0.0  # the last batch was a lone message
    for i in range(3, 3 + HOLD_AFTER - 1):
        inbox.deliver(("in/a", b"%d" % i))
    assert driver.run_ready() and len(node.batches[-1]) == HOLD_AFTER  # several queued: under load
    assert driver.hold(time.monotonic()) == 0.0  # ... but nothing is queued now
    inbox.deliver(("in/a", b"9"))
    now = time.monotonic()
    # the next batch starts HOLD_SPACING x the last one's duration (>= its 0.02 s) after it started
    assert 0.02 * (HOLD_SPACING - 1) - 0.005 < driver.hold(now) <= 0.5
    assert driver.hold(now + 0.6) == 0.0  # the window has passed


def test_no_hold_after_a_batch_of_a_few() -> None:
    """A batch of fewer than HOLD_AFTER messages says the node keeps up: a held batch collects what
    arrives within its spacing, and a fixed window would keep itself going at any rate that fills it."""
    node, inbox, _link, driver = make(BatchPolicy(window=0.5, tick_interval=60))
    node.cost = 0.02
    for i in range(HOLD_AFTER - 1):
        inbox.deliver(("in/a", b"%d" % i))
    assert driver.run_ready() and len(node.batches[-1]) == HOLD_AFTER - 1
    inbox.deliver(("in/a", b"x"))
    assert driver.hold(time.monotonic()) == 0.0


def test_hold_is_at_most_the_window() -> None:
    node, inbox, _link, driver = make(BatchPolicy(window=0.1, tick_interval=60))
    node.cost = 0.05  # HOLD_SPACING x 0.05 s is more than the window
    for i in range(HOLD_AFTER):
        inbox.deliver(("in/a", b"%d" % i))
    assert driver.run_ready()
    inbox.deliver(("in/a", b"x"))
    assert 0.0 < driver.hold(time.monotonic()) <= 0.1 - 0.05


def test_tick_runs_when_due() -> None:
    node, _inbox, _link, driver = make(BatchPolicy(tick_interval=0.05))
    assert driver.run_ready() and node.ticks == 0
    assert 0 < driver.until_tick(time.monotonic()) <= 0.05
    wait_until(lambda: driver.until_tick(time.monotonic()) == 0.0, 1)
    assert driver.run_ready() and node.ticks == 1
    assert driver.until_tick(time.monotonic()) > 0


class DeadlineNode(FakeNode):
    """A FakeNode with a timer of its own: `deadline` is what next_deadline returns."""

    def __init__(self, deadline: float | None) -> None:
        super().__init__()
        self.deadline = deadline
        self.asked = 0

    def next_deadline(self, now: float) -> float | None:
        self.asked += 1
        return self.deadline


def test_the_node_deadline_sets_the_next_tick() -> None:
    now = time.monotonic()
    node = DeadlineNode(now + 30)
    batching = BatchPolicy(tick_interval=0.05)
    driver = NodeDriver(node, Inbox("test", lambda: None), FakeLink(), batching, "test")
    assert driver.run_ready() and node.asked == 1
    assert driver.next_tick == now + 30  # not the 50 ms tick_interval
    node.deadline = None  # no timer: only far off (an hour), so an idle node sleeps
    driver.inbox.deliver(("in/a", b"1"))
    assert driver.run_ready() and node.asked == 2 and driver.until_tick(time.monotonic()) > 3000
    node.deadline = now - 1  # in the past: ticked at once, then not again at once
    assert driver.run_ready() and node.ticks == 0
    assert driver.until_tick(time.monotonic()) == 0.0
    before = time.monotonic()
    assert driver.run_ready() and node.ticks == 1
    assert driver.next_tick >= before + MIN_TICK_GAP


def test_the_runner_wakeup_never_goes_silent() -> None:
    """A set() from another thread that lands while the loop drains the wakeup must not leave the
    flag up with no byte behind it: every later set() would be silent and the loop woken only by
    its next deadline (calls answered a second late, or never within a test's wait)."""
    wakeup = _Wakeup()
    real = wakeup.reader

    class RacingReader:
        """The reader, with another thread's set() arriving during the first recv of the drain."""

        raced = False

        def recv(self, size: int) -> bytes:
            if not self.raced:
                self.raced = True
                wakeup.set()
            return real.recv(size)

    try:
        wakeup.set()  # a call queued: flag up, one byte in flight
        wakeup.reader = RacingReader()  # type: ignore[assignment]
        wakeup.clear()  # the loop drains (and then works off the inbox, the racing call's included)
        wakeup.reader = real
        wakeup.set()  # the next call
        readable, _w, _x = select.select([real], [], [], 1.0)
        assert readable, "the wakeup went silent"
    finally:
        wakeup.reader = real
        wakeup.close()


class AskingNode(FakeNode):
    """A FakeNode that asks its transport for what `requests` holds, once each, after a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[LinkRequest] = []

    def take_link_request(self) -> LinkRequest | None:
        return self.requests.pop(0) if self.requests else None


def test_a_node_can_ask_for_a_reconnect_and_for_a_clean_stop() -> None:
    node, link = AskingNode(), FakeLink()
    inbox = Inbox("test", lambda: None)
    driver = NodeDriver(node, inbox, link, BatchPolicy(tick_interval=60), "test")
    inbox.deliver(("in/a", b"1"))
    assert driver.run_ready()
    assert link.reconnects == 0  # asked nothing: nothing done
    node.requests.append(LinkRequest.RECONNECT)
    inbox.deliver(("in/a", b"2"))
    assert driver.run_ready()
    assert link.reconnects == 1 and not node.closed
    assert driver.run_ready() and link.reconnects == 1  # asked once, done once
    node.requests.append(LinkRequest.STOP)
    inbox.deliver(("in/a", b"3"))
    assert driver.run_ready()  # the stop is queued behind what came first ...
    inbox.deliver(("in/a", b"late"))
    while driver.run_ready():
        pass
    # ... and is a clean close: the node's last messages go out, no abort (so no last will)
    assert node.closed and link.closed_with == [Outgoing("status", b"closed")] and not link.aborted
    assert [p for b in node.batches for _t, p in b] == [b"1", b"2", b"3"]
    assert driver.stopped.is_set() and driver.error is None
