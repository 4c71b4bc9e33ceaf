"""NodeDriver: the one place that calls a node. It takes what is in the inbox, cuts it into batches,
calls the node, publishes what the node returns through its Link and lets the link follow the node's
subscriptions; it runs the node's ticks and `call()` requests; it closes the node on a stop.

It owns no thread and never blocks: a runtime calls `run_ready()` whenever the inbox may hold work or
a tick is due (`until_tick()`), holding back first for `hold()` seconds (the group-commit window).
The runtimes are event loops that share one thread with their transport: NodeRunner's selector
over the MQTT socket (fastbook.transport.runner) and InProcessRunner's broker loop.

When the node's on_tick runs: at the node's `next_deadline(now)` if it has one (see Node), asked
after every call into the node, so an idle node is not woken at all until something is due; a node
without one is ticked every `BatchPolicy.tick_interval`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TypeVar

from fastbook.transport.config import BatchPolicy
from fastbook.transport.node import Incoming, LinkRequest, Node, NodeRefused, Outgoing
from fastbook.transport.seam import Call, Connected, Inbox, Link, Stop

log = logging.getLogger(__name__)

MIN_TICK_GAP = 0.001  # seconds between two ticks at least, whatever the node's deadline says
# Under load, batches start this many times the last one's duration apart (up to the window): the
# node then takes at most about a quarter of its loop, and the broker or link the rest (see hold).
HOLD_SPACING = 4.0
HOLD_AFTER = 4  # ... once a batch held this many messages
IDLE_DEADLINE = 3600.0  # a node with no deadline (next_deadline returned None) is still ticked hourly


class NodeDriver:
    """Drives one node. Only one thread at a time may call `run_ready` (so nodes need no locks);
    `stopped`, `error` and the counters may be read from any thread."""

    def __init__(self, node: Node, inbox: Inbox, link: Link, batching: BatchPolicy, name: str) -> None:
        self.node = node
        self.inbox = inbox
        self.link = link
        self.batching = batching
        self.name = name
        self.error: BaseException | None = None  # what stopped the node, if anything did
        self.stopped = threading.Event()
        self.received = 0  # messages handed to the node
        self.batches = 0  # on_messages calls so far (with `received`: the mean batch size)
        self.published = 0
        self._next_deadline = getattr(node, "next_deadline", None)
        self._take_link_request: Callable[[], LinkRequest | None] | None = getattr(
            node, "take_link_request", None
        )
        self.next_tick = time.monotonic() + batching.tick_interval
        self._last_start = 0.0  # when the last batch started
        self._last_size = 0  # messages in the last batch
        self._last_busy = 0.0  # seconds the node took over it, its output handed on included

    def until_tick(self, now: float) -> float:
        """Seconds until the next tick is due (0 if it is)."""
        return max(0.0, self.next_tick - now)

    def hold(self, now: float) -> float:
        """Seconds to wait before the next batch so the group-commit window fills (0: go now). Only
        under load: when the last batch held HOLD_AFTER messages or more and more are queued.
        Batches then start HOLD_SPACING times the last one's duration apart, at most `window`: the spacing
        follows the node's own cost, so a node that keeps up (a lone order's batch takes a fraction
        of the time to the next order) soon holds for less than the time to the next message and
        runs lone batches again, where a fixed window, once started, would fill itself again with
        every message arriving within it."""
        window = self.batching.window
        if not window or self._last_size < HOLD_AFTER or not self.inbox.items:
            return 0.0
        spacing = min(window, HOLD_SPACING * self._last_busy)
        return max(0.0, spacing - (now - self._last_start))

    def run_ready(self) -> bool:
        """Work off the markers at the head of the inbox and one batch of messages, then the tick if
        it is due. False once the driver has stopped (the node is closed, or failed: see `error`)."""
        if self.stopped.is_set():
            return False
        try:
            if not self._drain():
                return False
            now = time.monotonic()
            if now >= self.next_tick:
                self._publish(self.node.on_tick(now))
                self._follow()
                self.next_tick = now + self.batching.tick_interval
                self._ask_deadline(now, MIN_TICK_GAP)
            elif self._next_deadline is not None:
                self._ask_deadline(now, 0.0)
            self._serve_link_request()
            return True
        except Exception as exc:
            self.fail(exc)
            return False

    def _serve_link_request(self) -> None:
        """Do what the node asked of the transport (see Node), if anything."""
        if self._take_link_request is None:
            return
        request = self._take_link_request()
        if request is LinkRequest.RECONNECT:
            self.link.reconnect()
        elif request is LinkRequest.STOP:
            self.inbox.stop()  # the node's close() runs in order, after what is queued before it

    def _ask_deadline(self, now: float, at_least: float) -> None:
        """The node's own next deadline (if it has that method), never sooner than `at_least` from
        now, so a node that names a time already past is not ticked in a busy loop."""
        if self._next_deadline is None:
            return
        deadline = self._next_deadline(now)
        self.next_tick = max(now + at_least, deadline if deadline is not None else now + IDLE_DEADLINE)

    def _drain(self) -> bool:
        items = self.inbox.items
        max_messages = self.batching.max_messages
        max_bytes = self.batching.max_bytes
        node = self.node
        batch: list[Incoming] = []
        batch_bytes = 0
        while items and len(batch) < max_messages and batch_bytes < max_bytes:
            item = items[0]
            if isinstance(item, tuple):
                items.popleft()
                batch.append(item)
                batch_bytes += len(item[1])
                continue
            if batch:
                break  # hand over the messages that arrived before this marker first
            items.popleft()
            if isinstance(item, Stop):
                if item.error is not None and self.error is None:
                    self.error = item.error
                self._close()
                return False
            if isinstance(item, Connected):
                self._publish(node.on_connected())
            elif isinstance(item, Call):
                self._run_call(item)
            self._follow()
        if batch:
            start = time.monotonic()
            self._last_start, self._last_size = start, len(batch)
            self.received += len(batch)
            self.batches += 1
            self._publish(node.on_messages(batch))
            self._follow()
            self._last_busy = time.monotonic() - start
        return True

    def _publish(self, messages: Sequence[Outgoing]) -> None:
        if messages:
            self.link.publish(messages)
            self.published += len(messages)

    def _follow(self) -> None:
        self.link.follow(self.node.subscriptions())

    def _run_call(self, call: Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            result = call.fn()
            if call.returns_value:
                value, messages = result
            else:
                value, messages = result, result
            self._publish(list(messages))
        except Exception as exc:  # the caller's bug, not the node's state: report it to the caller
            call.future.set_exception(exc)
            return
        call.future.set_result(value)

    def _close(self) -> None:
        """A clean stop: the node's last messages go out, then the link disconnects."""
        last: list[Outgoing] = []
        try:
            last = list(self.node.close())
        except Exception as exc:
            log.exception("%s: node close failed", self.name)
            self.error = exc
        try:
            self.link.close(last)
            self.published += len(last)
        except Exception as exc:
            log.exception("%s: closing the connection failed", self.name)
            self.error = self.error or exc
        finally:
            self._finish()

    def fail(self, exc: BaseException) -> None:
        """The node (or the runtime around it) raised: it stops (a restart recovers from the
        journal/snapshot; limping on could not), and the connection is dropped so the broker
        publishes the last will."""
        if isinstance(exc, NodeRefused):
            log.error("%s: stopping: %s", self.name, exc)
        else:
            log.exception("%s: node failed; stopping", self.name)
        self.error = exc
        try:
            self.link.abort()
        finally:
            self._finish()

    def _finish(self) -> None:
        self.inbox.fail_pending()
        self.stopped.set()


T = TypeVar("T")


class DriverView:
    """What a runtime (NodeRunner, InProcessRunner) shows of its driver: calls into the node from
    other threads, and what the node did."""

    driver: NodeDriver
    _started: bool

    def call(self, fn: Callable[[], list[Outgoing]]) -> Future[list[Outgoing]]:
        """Run fn on the runtime's thread and publish the messages it returns; resolves to that list."""
        return self.driver.inbox.call(fn, returns_value=False)

    def call_with_result(self, fn: Callable[[], tuple[T, list[Outgoing]]]) -> Future[T]:
        """Run fn on the runtime's thread; fn returns (value, messages): publish them, resolve to value."""
        return self.driver.inbox.call(fn, returns_value=True)

    @property
    def running(self) -> bool:
        return self._started and not self.driver.stopped.is_set()

    @property
    def node(self) -> Node:
        return self.driver.node

    @property
    def error(self) -> BaseException | None:
        return self.driver.error

    @property
    def received(self) -> int:
        return self.driver.received

    @property
    def batches(self) -> int:
        return self.driver.batches

    @property
    def published(self) -> int:
        return self.driver.published
