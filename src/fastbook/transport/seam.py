"""The seam between a node's driver and its transport, both ways.

- `Inbox` is how the transport (and any other thread) reaches the driver: messages on the node's
  subscriptions, "connected" markers, `call()` requests and the stop, in one FIFO so they keep their
  arrival order. Appending is thread-safe; a `wakeup` callable given by the runtime tells the driver
  there is work (NodeRunner: a byte on a socketpair its selector watches; InProcessRunner: a callback
  scheduled on the broker's loop). What the runtime's own thread delivers needs no wakeup.
- `Link` is what the driver needs from the transport: publish, follow the node's subscriptions,
  reconnect, close cleanly, drop. The driver calls it from the runtime's thread only; none of it blocks.

A runtime wires one of each to a `NodeDriver` (fastbook.transport.driver): NodeRunner (a paho client
and the node on one thread, a selector loop) and InProcessRunner (the node on the embedded broker's
event loop).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from fastbook.transport.node import Incoming, Outgoing


class RunnerError(RuntimeError):
    pass


class Link(Protocol):
    def publish(self, messages: Sequence[Outgoing]) -> None:
        """Send messages in order (queued if not connected: the driver never drops its own output)."""
        ...

    def follow(self, subscriptions: list[tuple[str, int]]) -> None:
        """The node's current subscriptions, after every call into it: subscribe and unsubscribe the
        difference (or, not connected, subscribe to this list on the next connect). Must be cheap when
        nothing changed."""
        ...

    def close(self, last: Sequence[Outgoing]) -> None:
        """Publish `last` (the node's close() output); the runtime lets it leave (a little while at
        most), then disconnects cleanly (no last will). Never blocks; never raises because the
        connection is already gone."""
        ...

    def reconnect(self) -> None:
        """Drop the connection cleanly (no last will) and connect again, subscribing to everything
        afresh; the node's on_connected runs again once that is done. Not connected: nothing to do
        (the runtime is reconnecting already)."""
        ...

    def abort(self) -> None:
        """End the connection without a clean disconnect, so the broker publishes the last will (a
        failed node must not stay "online")."""
        ...


class Connected:
    """Inbox marker: connect + subscribe completed; the driver calls node.on_connected()."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Inbox marker: the driver closes the node and stops. `error`: why, if the transport failed."""

    error: BaseException | None = None


@dataclass(slots=True)
class Call:
    """Inbox item: run `fn` on the driver's thread and publish the messages it returns."""

    fn: Callable[[], Any]
    future: Future[Any]
    returns_value: bool  # fn returns (value, messages) rather than messages


CONNECTED = Connected()
InboxItem = Incoming | Connected | Stop | Call


class Inbox:
    """One FIFO from every thread to the driver. Messages go in without a lock (deque.append is
    atomic); calls and the close take one, so no call can slip in after the driver failed what was
    pending and be left unanswered."""

    def __init__(self, name: str, wakeup: Callable[[], None]) -> None:
        self.name = name
        self.items: deque[InboxItem] = deque()  # read and popped by the driver only
        self._wakeup = wakeup
        self._lock = threading.Lock()
        self._closed = False  # no more calls: the driver is stopping or stopped

    def __len__(self) -> int:
        return len(self.items)

    def deliver(self, message: Incoming) -> None:
        """A message on one of the node's subscriptions (the transport filtered it)."""
        self.items.append(message)
        self._wakeup()

    def connected(self) -> None:
        self.items.append(CONNECTED)
        self._wakeup()

    def call(self, fn: Callable[[], Any], returns_value: bool) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                future.set_exception(RunnerError(f"runner {self.name} is stopped"))
                return future
            self.items.append(Call(fn, future, returns_value))
        self._wakeup()
        return future

    def stop(self, error: BaseException | None = None) -> None:
        """Ask the driver to close the node once what is queued before it is done; refuse new calls."""
        with self._lock:
            self._closed = True
            self.items.append(Stop(error))
        self._wakeup()

    def fail_pending(self) -> None:
        """The driver stopped: refuse new calls, fail every queued one, drop the rest."""
        with self._lock:
            self._closed = True
            items, self.items = self.items, deque()
        for item in items:
            if isinstance(item, Call) and not item.future.done():
                item.future.set_exception(RunnerError(f"runner {self.name} stopped"))
