"""A fake node and a fake Link for driving transport pieces without a broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from fastbook.transport.node import Incoming, Outgoing


class FakeNode:
    def __init__(self) -> None:
        self.subs: list[tuple[str, int]] = [("in/#", 1)]
        self.batches: list[list[Incoming]] = []
        self.connects = 0
        self.ticks = 0
        self.closed = False
        self.fail_on: bytes | None = None
        self.close_fails = False
        self.threads: set[str] = set()
        self.cost = 0.0  # seconds each batch takes (a node whose batches cost something: the hold)

    def subscriptions(self) -> list[tuple[str, int]]:
        return list(self.subs)

    def will(self) -> Outgoing | None:
        return None

    def on_connected(self) -> list[Outgoing]:
        self.connects += 1
        return [Outgoing("status", b"online")]

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and any(p == self.fail_on for _t, p in messages):
            raise RuntimeError("node bug")
        self.batches.append(list(messages))
        if self.cost:
            time.sleep(self.cost)  # the work itself, not a wait for anything
        return [Outgoing("out", p) for _t, p in messages]

    def on_tick(self, now: float) -> list[Outgoing]:
        self.ticks += 1
        return []

    def close(self) -> list[Outgoing]:
        if self.close_fails:
            raise OSError("journal gone")
        self.closed = True
        return [Outgoing("status", b"closed")]


class FakeLink:
    def __init__(self) -> None:
        self.published: list[Outgoing] = []
        self.followed: list[list[tuple[str, int]]] = []
        self.closed_with: list[Outgoing] | None = None
        self.aborted = False
        self.reconnects = 0

    def publish(self, messages: Sequence[Outgoing]) -> None:
        self.published.extend(messages)

    def follow(self, subscriptions: list[tuple[str, int]]) -> None:
        self.followed.append(list(subscriptions))

    def close(self, last: Sequence[Outgoing]) -> None:
        self.closed_with = list(last)

    def reconnect(self) -> None:
        self.reconnects += 1

    def abort(self) -> None:
        self.aborted = True
