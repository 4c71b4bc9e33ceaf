"""The seam between domain logic and transport.

A node (the sequencer, an edge's replica) is a plain object that turns incoming MQTT messages into
outgoing ones. It never touches a socket; a runtime (`fastbook.transport.runner.NodeRunner`) owns the
paho client, and its `fastbook.transport.driver.NodeDriver` calls the node from a single thread (the
one that also does the socket I/O), so a node needs no locks. Tests drive nodes directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

TICK_INTERVAL = 0.1  # seconds: the default tick of a node that names no deadline of its own


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


Incoming = tuple[str, bytes]


class RetainedIncoming(tuple[str, bytes]):
    """An Incoming (topic, payload) the broker delivered as a *retained* message: a stored copy sent
    because a subscription was just made, not a message published now. A transport marks it so with
    this type (a plain tuple otherwise, so the hot path pays nothing); a node that takes commands
    must not act on one again at every reconnect (the sequencer rejects them)."""

    __slots__ = ()


class NodeRefused(Exception):
    """Raised by a node that cannot go on for a reason its message states (not a bug, e.g. a
    sequencer whose damaged journal tail nobody gave back): the runner stops it like any node
    error, logging the message without a traceback."""


class LinkRequest(Enum):
    """What a node may ask of its transport (see Node: `take_link_request`)."""

    RECONNECT = "reconnect"  # drop the connection cleanly and connect again: every subscription afresh
    STOP = "stop"  # close the node (its close() output goes out) and stop the runtime


class Node(Protocol):
    """What a runtime's driver calls. Optionally (not part of the protocol: most nodes never ask) a
    node has `take_link_request() -> LinkRequest | None`: what it wants of its transport now, asked
    after every call into it (and forgotten by the node once returned). An edge whose log went
    silent asks for a reconnect (its broker session may have been taken over); one that found
    another, older process running under its client id asks to stop."""

    def subscriptions(self) -> list[tuple[str, int]]:
        """(topic filter, qos) pairs to subscribe to on every (re)connect."""
        ...

    def will(self) -> Outgoing | None:
        """The MQTT last will, if any (an edge's 'offline' status)."""
        ...

    def on_connected(self) -> list[Outgoing]:
        """Called after every successful (re)connect and subscribe."""
        ...

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        """A batch drained from the inbox, in arrival order. The sequencer journals and fsyncs the
        whole batch once before returning (group commit), so what it returns is durable."""
        ...

    def on_tick(self, now: float) -> list[Outgoing]:
        """Called with time.monotonic() once `next_deadline` is reached: timers, retries, status."""
        ...

    def next_deadline(self, now: float) -> float | None:
        """When on_tick should run next (a time.monotonic() value; None: only after the next
        message). Asked after every call into the node, so a node sets a timer by returning it and
        an idle node is not woken at all. The default (also for a node without this method) is
        today's fixed tick: `now` + the runner's `BatchPolicy.tick_interval` (100 ms)."""
        return now + TICK_INTERVAL

    def close(self) -> list[Outgoing]:
        """Clean shutdown: last messages to publish (final status), then release files."""
        ...
