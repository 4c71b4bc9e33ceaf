"""InProcessRunner: a node inside the embedded broker's process, on the broker's own event loop.

Messages on the node's subscriptions come straight from the broker (after its publish ACL, in the
order it takes them: `FastbookAmqttBroker.add_ingress`) into the Inbox, on the loop; the first one
schedules one run of the driver (`loop.call_soon`), and the node is called on the loop itself: no
thread hop in or out (before, a worker thread ran the node and every batch's output crossed back
with run_coroutine_threadsafe). A batch is what the broker has read by the time it has nothing else
ready to run: amqtt takes a client's message through several loop iterations (a task per packet),
so a run scheduled by the first message of a burst would otherwise always hold one message, every
order of a burst would cost a lone order's batch (its fsync, log, reports) and the group-commit
window would never start. The run waits behind the loop's other ready callbacks, one iteration at a
time (each polls the sockets), for at most IDLE_WAIT and while the batch is not full; a lone order
on a quiet broker waits for the few callbacks that finish its own publish.
The node's output goes into the broker at once (`publish_now`: delivered before the driver's run
returns) unless a delivery needs an await, which one task does (`publish_from_node`), in order.
Ticks are a loop timer at the node's next deadline. The sequencer's fsync blocks the loop for its
duration, as the floor's single-threaded relay does; what arrives meanwhile is the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence, Sized
from typing import Any

from fastbook.transport.config import DEFAULT_BATCHING, BatchPolicy
from fastbook.transport.driver import DriverView, NodeDriver
from fastbook.transport.node import Node, Outgoing
from fastbook.transport.seam import Inbox, RunnerError

log = logging.getLogger(__name__)

# How long a scheduled run may wait for the loop's other ready callbacks (see the module docstring):
# a bound on the latency it adds to the first message of a batch when the broker is never idle.
IDLE_WAIT = 0.001


class InProcessLink:
    """The Link of an in-process node: the broker's ingress in, `publish_from_node` out (on the
    broker's loop, in call order). The node's filters are fixed when it starts (the sequencer's
    never change)."""

    def __init__(self, broker: Any, loop: asyncio.AbstractEventLoop, inbox: Inbox,
                 filters: list[str], name: str) -> None:
        self._broker = broker  # fastbook.transport.broker.FastbookAmqttBroker
        self._loop = loop  # the broker's event loop
        self._inbox = inbox
        self._filters = filters
        self._name = name
        self._out: deque[list[Outgoing]] = deque()  # batches of output not yet in the broker
        self._pump: asyncio.Task[None] | None = None

    def attach(self) -> None:
        self._broker.add_ingress(self._filters, self._deliver)

    def _deliver(self, topic: str, payload: bytes) -> None:
        self._inbox.deliver((topic, payload))

    def publish(self, messages: Sequence[Outgoing]) -> None:
        if messages and self._pump is None:
            # nothing of the node's is still in the broker: what needs no await goes out at once
            try:
                done = self._broker.publish_now(messages)
            except Exception as exc:
                log.error("%s: the broker could not take the node's output: %s", self._name, exc)
                return
            messages = list(messages)[done:]
        if messages:
            self._out.append(list(messages))
            if self._pump is None:
                self._pump = self._loop.create_task(self._publish_all())

    async def _publish_all(self) -> None:
        try:
            while self._out:
                batch = self._out.popleft()
                try:
                    await self._broker.publish_from_node(batch)
                except Exception as exc:
                    log.error("%s: the broker could not take the node's output: %s", self._name, exc)
        finally:
            self._pump = None

    def follow(self, subscriptions: list[tuple[str, int]]) -> None:
        pass

    def reconnect(self) -> None:
        """No broker session to lose in process: take the ingress afresh and say connected again."""
        self._broker.remove_ingress(self._deliver)
        self.attach()
        self._inbox.connected()

    def close(self, last: Sequence[Outgoing]) -> None:
        try:
            self.publish(last)
        finally:
            self.abort()

    def abort(self) -> None:
        self._broker.remove_ingress(self._deliver)


class InProcessRunner(DriverView):
    """Runs a node inside the embedded broker (see the module docstring); always "connected".
    `start()` and `stop()` may be called on the broker's loop or from another thread."""

    def __init__(self, node: Node, broker: Any, loop: asyncio.AbstractEventLoop, *, name: str,
                 batching: BatchPolicy = DEFAULT_BATCHING) -> None:
        self.name = name
        self._loop = loop
        inbox = Inbox(name, self._wake)
        filters = [topic_filter for topic_filter, _qos in node.subscriptions()]
        self.link = InProcessLink(broker, loop, inbox, filters, name)
        self.connected = threading.Event()
        self.driver = NodeDriver(node, inbox, self.link, batching, name)
        self._started = False
        self._stopping = False
        self._scheduled = False  # a run of the driver is on the loop's ready queue
        self._scheduled_at = 0.0  # when that run was first scheduled (it may wait: IDLE_WAIT)
        # the loop's ready callbacks (CPython's BaseEventLoop keeps them in `_ready`; a loop
        # without it gets no wait, so each run takes what arrived before it)
        self._ready: Sized | None = getattr(loop, "_ready", None)
        self._hold: asyncio.TimerHandle | None = None  # the group-commit window is filling
        self._timer: asyncio.TimerHandle | None = None  # the next tick
        self._timer_at = 0.0

    def start(self) -> InProcessRunner:
        if self._started:
            raise RunnerError("runner already started")
        self._started = True
        self.link.attach()
        self.connected.set()
        self.driver.inbox.connected()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the node: its close() messages go to the broker, then the ingress is removed. On the
        loop this runs the node to its close at once; from another thread it waits for the loop."""
        if not self._started:
            return
        self._stopping = True
        self.driver.inbox.stop()
        if self._on_loop():
            while self.driver.run_ready():
                pass
            self._cancel_timers()
        else:
            self.driver.stopped.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the runner stopped (not on the loop); True if it stopped without a node error."""
        stopped = self.driver.stopped.wait(timeout)
        return stopped and self.driver.error is None

    # ---- on the loop --------------------------------------------------------------------------------

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _wake(self) -> None:
        """The Inbox has work: on the loop (the broker's ingress) schedule a run directly; from
        another thread (call(), stop()) through the loop's thread-safe wakeup."""
        if self._on_loop():
            self._schedule()
        else:
            self._loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        if not self._scheduled and (self._hold is None or self._stopping):
            self._scheduled = True
            self._scheduled_at = time.monotonic()
            self._loop.call_soon(self._run_scheduled)

    def _run_scheduled(self) -> None:
        if self._scheduled and self._busy(time.monotonic()):
            self._loop.call_soon(self._run_scheduled)  # after what is ready now, and one poll
            return
        self._run()

    def _run(self) -> None:
        self._scheduled = False
        self._hold = None
        driver = self.driver
        if driver.stopped.is_set():
            return
        now = time.monotonic()
        hold = 0.0 if self._stopping else driver.hold(now)
        if hold > 0:
            self._hold = self._loop.call_later(hold, self._run)
            return
        if not driver.run_ready():
            self._cancel_timers()
            return
        if driver.inbox.items:
            self._schedule()  # one batch per run: the broker's own tasks go on in between
        self._arm_tick(now)

    def _busy(self, now: float) -> bool:
        """The broker has other callbacks ready (more input on its way to the inbox, likely), the
        batch is not full and the run has not waited IDLE_WAIT yet."""
        ready = self._ready
        return (ready is not None and len(ready) > 0 and not self._stopping
                and now - self._scheduled_at < IDLE_WAIT
                and len(self.driver.inbox.items) < self.driver.batching.max_messages)

    def _tick(self) -> None:
        self._timer = None
        self._run()

    def _arm_tick(self, now: float) -> None:
        at = self.driver.next_tick
        if self._timer is not None and self._timer_at <= at:
            return  # due no later than asked: when it fires, _run re-arms for the new deadline
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_later(max(0.0, at - now), self._tick)

    def _cancel_timers(self) -> None:
        for handle in (self._timer, self._hold):
            if handle is not None:
                handle.cancel()
        self._timer = self._hold = None
