"""`fastbook log tail|dump`: read a market's binary log and print one JSON object per entry.

The log is binary (docs/wire.md, "The log"); this is how a person reads it. `dump --from S [--to T]`
asks the sequencer for a replay (the replay protocol, served from its journal) and prints S..T (T
default: the head when the first answer came); `tail` follows the live `log` topic, from `--from S`
(replayed first) or from the first entry that arrives. Entries are printed strictly in seq order
with no gap: a hole is replayed before anything after it is printed.

The log is anonymous: entries name orders by engine order id and owner number, never by client id
or client order id (docs/wire.md); a replay answer carries the requester's own client order ids,
so an entry of the reader's own client is printed with its `id`. Prices and quantities are
decimals on the market's tick and lot once the snapshot gave them, else ticks and lots
(`price_ticks`, `qty_lots`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from fastbook.transport.node import TICK_INTERVAL, Incoming, Outgoing
from fastbook.wire.fields import REPLAY_MAX_ENTRIES
from fastbook.wire.log import (
    LogBatch,
    LogEntry,
    ReplayRequest,
    decode_log_message,
    encode_replay_request,
    entry_json,
)
from fastbook.wire.market import MarketSpec
from fastbook.wire.snapshot import decode_snapshot, is_snapshot_payload
from fastbook.wire.topics import Topics

SNAPSHOT_WAIT = 0.5  # seconds to wait for the retained snapshot (tick/lot) before replaying
REPLAY_RETRY = 2.0  # seconds without progress before a replay request is repeated


class LogPrinter:
    """A sans-IO node (fastbook.transport.node.Node) that prints entries from `first` in order.

    `last` None and `follow` False: up to the head seen in the first replay answer. `follow`: the
    live log too, forever. `first` None (tail only): from the first live entry."""

    def __init__(
        self,
        topics: Topics,
        requester: str,
        first: int | None,
        last: int | None,
        follow: bool,
        out: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = topics
        self.requester = requester
        self.next_seq = first
        self.last = last
        self.follow = follow
        self.out = out
        self.clock = clock
        self.market: MarketSpec | None = None
        self.buffer: dict[int, LogEntry] = {}
        self.head = 0
        self.done = threading.Event()
        self.printed = 0
        self.errors: list[str] = []
        self._connected_at: float | None = None
        self._requested_at = 0.0  # when the last replay request went out
        self._pending: int | None = None  # the seq that answers the outstanding request
        self._asked = False
        self._progress_at = 0.0

    # -- Node ------------------------------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, int]]:
        subs = [(self.topics.snapshot, 1), (self.topics.replay_response(self.requester), 1)]
        if self.follow:
            subs.append((self.topics.log, 1))
        return subs

    def will(self) -> Outgoing | None:
        return None

    def on_connected(self) -> list[Outgoing]:
        self._connected_at = self.clock()
        return []

    def close(self) -> list[Outgoing]:
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        if self.done.is_set() or self._connected_at is None:
            return []
        return self._maybe_request(now)

    def next_deadline(self, now: float) -> float | None:
        return now + TICK_INTERVAL  # a replay request unanswered is asked again (_maybe_request)

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        now = self.clock()
        for topic, payload in messages:
            try:
                if is_snapshot_payload(payload):
                    if not payload:
                        continue
                    snap = decode_snapshot(bytes(payload))
                    if snap.market.name == self.topics.market:
                        self.market = snap.market
                    continue
                if topic == self.topics.snapshot:  # a cleared retained snapshot
                    continue
                self._on_batch(decode_log_message(payload), now)
            except ValueError as exc:
                self.errors.append(f"{topic}: {exc}")
        return [] if self.done.is_set() else self._maybe_request(now)

    # -- internals -------------------------------------------------------------------------

    def _on_batch(self, batch: LogBatch, now: float) -> None:
        self.head = max(self.head, batch.head)
        if batch.replay and self.last is None and not self.follow:
            self.last = batch.head  # dump: up to the head of the first answer
        for entry in batch.entries:
            if self.next_seq is None:
                self.next_seq = entry.seq  # tail without --from: from the first live entry
            if entry.seq >= self.next_seq:
                self.buffer[entry.seq] = entry
        while self.next_seq is not None and self.next_seq in self.buffer:
            entry = self.buffer.pop(self.next_seq)
            if self.last is not None and entry.seq > self.last:
                break
            self.out.write(json.dumps(entry_json(entry, self.market)) + "\n")
            self.printed += 1
            self.next_seq += 1
            self._progress_at = now
        self.out.flush()
        if not self.follow and self.last is not None and self.next_seq is not None:
            if self.next_seq > self.last:
                self.done.set()

    def _maybe_request(self, now: float) -> list[Outgoing]:
        if self.next_seq is None or self._connected_at is None:
            return []
        if self.market is None and now - self._connected_at < SNAPSHOT_WAIT:
            return []  # let the retained snapshot (tick and lot) arrive first
        if self._pending is not None:
            if (
                self.next_seq <= self._pending
                and now - max(self._requested_at, self._progress_at) < REPLAY_RETRY
            ):
                return []  # its answer is due or arriving
            self._pending = None
        behind = not self.follow or not self._asked or self.buffer or self.head >= self.next_seq
        if not behind:
            return []
        last = self.last
        if self.buffer:
            hole_end = min(self.buffer) - 1
            last = hole_end if last is None else min(last, hole_end)
        if last is not None:
            last = min(last, self.next_seq + REPLAY_MAX_ENTRIES - 1)
        target = (
            last
            if last is not None
            else max(self.next_seq, min(self.head, self.next_seq + REPLAY_MAX_ENTRIES - 1))
        )
        self._pending = target
        self._requested_at = now
        self._asked = True
        request = ReplayRequest(self.next_seq, last)
        return [Outgoing(self.topics.replay_request(self.requester), encode_replay_request(request))]


def read_log(
    broker: str | Sequence[str],
    market: str,
    prefix: str,
    first: int | None,
    last: int | None,
    follow: bool,
    out: TextIO,
    timeout: float = 5.0,
    *,
    username: str | None = None,
    password: str | None = None,
    tls_ca: str | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Print the entries; returns how many. A dump ends at its last entry (TimeoutError if the
    sequencer stops answering for `timeout` seconds); a tail runs until `stop` is set (or ^C)."""
    from fastbook.transport.config import RunnerConfig
    from fastbook.transport.runner import NodeRunner

    requester = username or f"fastbook-log-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    printer = LogPrinter(Topics(market, prefix), requester, first, last, follow, out)
    config = RunnerConfig(broker, requester, username=username, password=password, tls_ca=tls_ca)
    runner = NodeRunner(printer, config)
    runner.start()
    try:
        if not runner.wait_connected(timeout):
            refusal = runner.refusal
            why = f"refused the connection: {refusal}" if refusal else f"gave no answer within {timeout:.0f}s"
            raise TimeoutError(f"the MQTT broker at {broker} {why}")
        stop = stop if stop is not None else threading.Event()
        seen, seen_at = -1, time.monotonic()
        while not printer.done.is_set() and not stop.is_set():
            printer.done.wait(0.1)
            if printer.printed != seen:
                seen, seen_at = printer.printed, time.monotonic()
            elif not follow and time.monotonic() - seen_at > timeout + SNAPSHOT_WAIT:
                raise TimeoutError(f"no log entries from the sequencer of {market} within {timeout:.0f}s")
        return printer.printed
    finally:
        runner.stop()
