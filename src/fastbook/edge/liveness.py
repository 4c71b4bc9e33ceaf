"""An edge's two liveness checks: is the market's sequencer heard (`SequencerWatch`), and is this the
only process following under its client id (`ClientPresence`); and the state an edge shows for them
(`SyncState`, `EdgeStatus`).

Time is passed in, so both are deterministic under test (the wall clock of `ClientPresence` only
stamps the start time it publishes).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger("fastbook.edge.node")

# Distinct status messages (`n` values) of another instance that prove it is alive: a process that
# died leaves at most two behind (its last retained status, then its last will).
LIVE_PROOF = 3
# An edge answers another instance's status on its own status topic with its own this soon at most
# (seconds): two live processes then reach LIVE_PROOF in about a second each way, though an idle
# edge's status heartbeat is a minute; a gone one cannot answer and stays below it.
ANSWER_INTERVAL = 0.5
# Seconds of a silent log (the sequencer heartbeats every second when idle) after which an edge
# publishes its status every SILENCE_STATUS_INTERVAL until it calls itself stalled: on amqtt a
# second process under its client id took its subscriptions, and proves this one alive only by
# hearing its statuses (this one hears nothing to answer).
SILENCE_STATUS_AFTER = 2.0
SILENCE_STATUS_INTERVAL = 1.0
RECONNECT_BACKOFF_MAX = 60.0  # seconds between reconnects at most while the log stays silent


class SyncState(str, Enum):
    """Where an edge's replica stands (its status message's `sync`, `EdgeStatus.sync`)."""

    SYNCING = "syncing"  # not caught up yet: waiting for the snapshot or the replay
    IN_SYNC = "in_sync"  # at the sequencer's head, and the sequencer is heard
    BEHIND = "behind"  # was in sync; a gap or divergence is being repaired
    STALLED = "stalled"  # the sequencer was heard, then nothing for stall_timeout: reconnecting
    NO_SEQUENCER = "no_sequencer"  # connected for stall_timeout and never heard a sequencer


@dataclass(frozen=True, slots=True)
class EdgeStatus:
    """An edge's state in one read (EdgeNode.status(), Edge.status()); `detail` says it in words."""

    client_id: str
    market: str
    sync: SyncState
    version: int
    hash: int
    lag: int
    detail: str
    conflict: str | None = None  # another process under this client id, said in words

    @property
    def stalled(self) -> bool:
        return self.sync is SyncState.STALLED

    @property
    def in_sync(self) -> bool:
        return self.sync is SyncState.IN_SYNC


class SequencerWatch:
    """When the sequencer was last heard (any log message, heartbeat or replay answer), and what
    to do about silence. The sequencer publishes a heartbeat when its log was idle for
    `heartbeat_interval` (docs/wire.md), so silence for `stall_timeout` (several heartbeats) while
    connected means the edge no longer receives the log: its broker session may have been taken
    over (amqtt deletes a connection's subscriptions when another connects with its client id and
    leaves it open), or the sequencer is gone. Then `check` asks for a reconnect, again with a
    doubling backoff while the silence lasts."""

    def __init__(self, market: str, stall_timeout: float) -> None:
        self.market = market
        self.stall_timeout = stall_timeout
        self.heard_at: float | None = None
        self.connected_at: float | None = None
        self.stalled_since: float | None = None
        self.no_sequencer = False  # connected for stall_timeout and never heard one
        self.reconnects = 0  # reconnects asked for because of silence
        self._reconnect_at = 0.0
        self._backoff = stall_timeout

    @property
    def stalled(self) -> bool:
        return self.stalled_since is not None

    def connected(self, now: float) -> None:
        if self.connected_at is None:
            self.connected_at = now

    def heard(self, now: float, head: int) -> None:
        if self.stalled_since is not None:
            log.warning("the sequencer of %s is heard again (head %d) after %.0fs of silence; following",
                        self.market, head, now - self.stalled_since)
            self.stalled_since = None
        elif self.no_sequencer:
            log.warning("a sequencer for market %s is heard now (head %d)", self.market, head)
        self.no_sequencer = False
        self.heard_at = now
        self._backoff = self.stall_timeout

    def check(self, now: float, version: int) -> bool:
        """Update the state; True when a reconnect is due now."""
        if self.heard_at is None:
            since = self.connected_at
            if since is not None and not self.no_sequencer and now - since >= self.stall_timeout:
                self.no_sequencer = True
                log.error("no sequencer for market %s: no log message or heartbeat within %.0fs of "
                          "connecting", self.market, self.stall_timeout)
            return False
        if now - self.heard_at < self.stall_timeout:
            return False
        if self.stalled_since is None:
            self.stalled_since = now
            self._reconnect_at = now
            log.error("STALLED: no log message or heartbeat from the sequencer of %s for %.0fs (at "
                      "version %d); reconnecting and replaying (the sequencer is down, or another "
                      "process connected with this edge's client id and the broker gave it this "
                      "edge's session)", self.market, now - self.heard_at, version)
        if now < self._reconnect_at:
            return False
        self.reconnects += 1
        self._reconnect_at = now + self._backoff
        self._backoff = min(self._backoff * 2, RECONNECT_BACKOFF_MAX)
        return True

    def deadline(self) -> float | None:
        """When `check` may change something next (None: only after a message)."""
        if self.heard_at is None:
            if self.connected_at is None or self.no_sequencer:
                return None
            return self.connected_at + self.stall_timeout
        if self.stalled_since is None:
            return self.heard_at + self.stall_timeout
        return self._reconnect_at

    def describe(self, now: float) -> str:
        if self.no_sequencer:
            return (f"no sequencer for market {self.market} (no log message or heartbeat within "
                    f"{self.stall_timeout:.0f}s of connecting)")
        if self.stalled_since is not None and self.heard_at is not None:
            return (f"stalled: no log message or heartbeat from the sequencer of {self.market} for "
                    f"{now - self.heard_at:.0f}s; reconnecting and replaying")
        return ""


class ClientPresence:
    """This process's identity on its retained status topic (`replicas/<client_id>`), and the
    detection of another process following under the same client id.

    Every status message (and last will) carries this process's random `instance`, its `started`
    time (ms since the epoch) and `n`, a count that grows with every message it sends. The edge
    reads its own status topic: a message with another instance is either stale (a process that
    is gone leaves its last status and its will: at most two distinct `n`) or from a live process
    (it keeps publishing, and answers each status of another instance within ANSWER_INTERVAL:
    `answer_due`). At LIVE_PROOF distinct `n` of one instance the other process is alive.
    The rule both apply: the one started later (then by instance) is the newer one, and it stops."""

    def __init__(self, client_id: str, wall_clock_ms: int | None = None) -> None:
        self.client_id = client_id
        self.instance = os.urandom(6).hex()
        self.started = wall_clock_ms if wall_clock_ms is not None else time.time_ns() // 1_000_000
        self.sent = 0
        self.conflict: str | None = None  # said in words while another live instance is seen
        self.newer = False  # this process is the newer one: it must stop
        self._seen: dict[str, tuple[int, set[int], float]] = {}  # instance -> (started, n seen, last)
        self._conflict_with: str | None = None
        # Another instance's status arrived since this process last sent its own: the edge answers
        # within ANSWER_INTERVAL (and clears this when it sends a status).
        self.answer_due = False

    @property
    def other(self) -> str | None:
        """The instance of the other live process, once proven."""
        return self._conflict_with

    def stamp(self) -> int:
        """The `n` of the next status message (or will) this process sends."""
        self.sent += 1
        return self.sent

    def on_status(self, payload: bytes, now: float) -> bool:
        """A message on this client's status topic; True when it proves that this process is the
        newer of two and must stop."""
        try:
            doc = json.loads(payload) if payload else None
        except (ValueError, RecursionError):
            return False
        if not isinstance(doc, dict):
            return False
        instance, started, n = doc.get("instance"), doc.get("started"), doc.get("n")
        if not isinstance(instance, str) or instance == self.instance:
            return False
        if type(started) is not int or type(n) is not int:
            return False
        self.answer_due = True
        if doc.get("yielded_to") == self.instance:
            log.error("another process with client id %s (instance %.16s) found this one running and "
                      "stopped (the newer one stops)", self.client_id, instance)
        _started, counts, _last = self._seen.get(instance[:64], (started, set(), now))
        if len(counts) < LIVE_PROOF:
            counts.add(n)
        self._seen[instance[:64]] = (started, counts, now)
        if len(counts) < LIVE_PROOF or self._conflict_with == instance:
            return False
        self._conflict_with = instance
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started / 1000))
        other = f"another process with client id {self.client_id} (instance {instance:.16}, started {when})"
        if (started, instance) < (self.started, self.instance):
            self.newer = True
            self.conflict = (f"{other} is running; this one started later and stops: one process per "
                             "client id (the broker gives a client id's session to one connection)")
            log.error("%s", self.conflict)
            return True
        self.conflict = (f"{other} started after this one; it stops by the rule (the newer one "
                         "stops); until then the broker may hand this edge's session to it")
        log.error("%s", self.conflict)
        return False

    def check(self, now: float, quiet: float) -> None:
        """Forget another instance not heard for `quiet` seconds (and say that it is gone)."""
        for instance, (_started, _counts, last) in list(self._seen.items()):
            if now - last >= quiet:
                del self._seen[instance]
                if instance == self._conflict_with and not self.newer:
                    log.warning("the other process with client id %s (instance %.16s) is gone",
                                self.client_id, instance)
                    self._conflict_with = None
                    self.conflict = None
