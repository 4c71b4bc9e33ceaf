"""The edge side of the log protocol: apply a market's log to a Replica strictly in seq order,
ignore duplicates, buffer out-of-order entries, detect gaps and silence, ask for replays, restore
snapshots, and stop and resync on a hash mismatch or any other divergence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fastbook.engine import EventTuple
from fastbook.engine.types import EventType
from fastbook.log.replica import HashMismatch, Replica
from fastbook.wire.fields import REPLAY_MAX_ENTRIES, hash_hex
from fastbook.wire.log import LogBatch, LogEntry, ReplayRequest
from fastbook.wire.market import MarketSpec
from fastbook.wire.names import OwnNames
from fastbook.wire.snapshot import SnapshotData

log = logging.getLogger(__name__)

_TRADE = int(EventType.TRADE)


def _divergence(exc: Exception) -> str:
    """Why applying failed: HashMismatch (another state than the sequencer's), ValueError (an
    entry this replica cannot apply) or KeyError (its id maps lack an order the log finishes, so
    they no longer match the book). The replica must resync in each case."""
    if isinstance(exc, KeyError):
        return f"the id maps lack {exc} (they no longer match the book)"
    return str(exc)


@dataclass
class _Pending:
    request: ReplayRequest
    sent_at: float
    target: int  # the request is answered once our version reaches this


class Follower:
    """Applies a market's log to a Replica in strict seq order (the edge side of the protocol).

    Every input method returns the replay requests to send (usually none). Time is passed in, so
    the behaviour is deterministic under test.
    """

    MAX_BUFFER = 1_000_000  # out-of-order entries kept while a gap is filled
    # Messages of at most this many entries are applied entry by entry: apply_batch's numpy calls
    # cost more than the per-command path for a lone order (bench/README, "lone orders").
    ENTRY_BY_ENTRY = 2

    def __init__(
        self,
        market_name: str,
        replay_timeout: float = 2.0,
        snapshot_timeout: float | None = None,
        on_resync: Callable[[str], None] | None = None,
        on_applied: Callable[[LogEntry, Sequence[EventTuple]], None] | None = None,
        interest: Callable[[], int | None] | None = None,
        own_client: str | None = None,
    ) -> None:
        self.market_name = market_name
        # The replicas it makes map only that client's orders (Replica): the log is anonymous, so
        # without a client (None) they map none (an observer of the book).
        self.own_client = own_client
        self.replay_timeout = replay_timeout
        self.snapshot_timeout = replay_timeout if snapshot_timeout is None else snapshot_timeout
        self.gap_grace = min(0.25, replay_timeout / 4)  # silence tolerated while the head is ahead
        self.replica: Replica | None = None
        self.head = 0  # highest seq known to exist at the sequencer
        self.head_seen_at = 0.0  # when the head last moved
        self.buffer: dict[int, LogEntry] = {}
        self.pending: _Pending | None = None
        self.waiting_since: float | None = None  # when we started waiting for a snapshot
        self.last_progress = 0.0
        self.synced_once = False
        self.resyncs = 0
        self.mismatch: str | None = None  # reason of the last divergence, until resynced
        # False while the replica's tick/lot are the default guess (started without a snapshot)
        self.market_known = False
        self.on_resync = on_resync
        self.on_applied = on_applied
        # For whole-message applies: the owner whose entries on_applied wants (Replica.apply_batch)
        self.interest = interest
        # The public log and snapshots carry no names: after restoring a snapshot, an edge asks
        # for its own (owner number, open orders: a replay request with "names") ...
        self.names_wanted = False
        # ... and an own new / cancel_all whose client order id it has not learnt (from its
        # reports, a names answer or a replay answer) waits, buffered, since this time; after
        # gap_grace a replay (which carries this client's names) is asked for.
        self.unnamed_since: float | None = None
        self.expect_owner = False  # this client sent orders (see Replica.expect_owner)

    # -- state -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return 0 if self.replica is None else self.replica.version

    @property
    def state_hash(self) -> int:
        return 0 if self.replica is None else self.replica.state_hash

    @property
    def lag(self) -> int:
        return max(0, self.head - self.version)

    @property
    def in_sync(self) -> bool:
        return self.replica is not None and not self.buffer and self.version >= self.head

    @property
    def names_known(self) -> bool:
        """Whether the replica's maps hold every open order of its own client (see names_wanted)."""
        return self.replica is not None and not self.names_wanted

    # -- inputs ----------------------------------------------------------------------------

    def start(self, now: float) -> list[ReplayRequest]:
        """Begin (or restart) waiting for the retained snapshot."""
        if self.replica is None and self.waiting_since is None:
            self.waiting_since = now
        return []

    def _see_head(self, head: int, now: float) -> None:
        if head > self.head:
            self.head = head
            self.head_seen_at = now

    def on_entries(self, entries: Iterable[LogEntry], head: int, now: float) -> list[ReplayRequest]:
        self._see_head(head, now)
        replica = self.replica
        for entry in entries:
            if entry.seq > self.head:
                self._see_head(entry.seq, now)
            if replica is None or entry.seq > replica.version + 1:
                if replica is None or entry.seq > replica.version:
                    if len(self.buffer) < self.MAX_BUFFER:
                        self.buffer[entry.seq] = entry
                continue
            if entry.seq <= replica.version:
                continue  # duplicate
            applied = self._apply(entry, now)
            if applied is None:  # waits for its name: it and what follows are buffered
                self.buffer[entry.seq] = entry
                continue
            if not applied:
                return self._resync_request(now)
            replica = self.replica
        if self.replica is not None:
            if not self._drain(now):
                return self._resync_request(now)
        return self._maybe_request(now)

    def on_batch(self, batch: LogBatch, now: float) -> list[ReplayRequest]:
        """`on_entries` for a log message read as columns: the usual case (the next entries, in
        order, nothing buffered) is applied in one `Replica.apply_batch` call; anything else
        (gaps, no replica yet, a buffer to merge) goes entry by entry through `on_entries`."""
        replica = self.replica
        n = len(batch)
        if batch.replay and replica is not None:
            replica.learn_replayed(batch.run)
        # (a first seq past version + 1 is a gap: buffered and filled by a replay)
        if (
            n <= self.ENTRY_BY_ENTRY  # (first: a lone entry never needs a numpy column)
            or replica is None
            or self.buffer
            or int(batch.seqs[0]) > replica.version + 1
            or not batch.consecutive()
            or replica.first_unnamed(batch.run) is not None  # (waits for a name: entry by entry)
        ):
            return self.on_entries(batch.entries, batch.head, now)
        first = int(batch.seqs[0])
        self._see_head(max(batch.head, int(batch.seqs[-1])), now)
        skip = replica.version + 1 - first  # duplicates at the start (a replay overlapping the log)
        if skip < n:
            try:
                replica.apply_batch(batch.tail(skip) if skip else batch, self.on_applied, self.interest)
            except (HashMismatch, ValueError, KeyError) as exc:
                self._diverged(_divergence(exc))
                return self._resync_request(now)
            self.last_progress = now
        return self._maybe_request(now)

    def on_snapshot(self, snap: SnapshotData, now: float) -> list[ReplayRequest]:
        if snap.market.name != self.market_name:
            log.warning("ignoring snapshot of market %s (following %s)", snap.market.name, self.market_name)
            return []
        self._see_head(snap.version, now)
        replica = self.replica
        if replica is not None and snap.version <= replica.version:
            # A replica started without a snapshot guessed the default tick/lot for display.
            replica.market = snap.market
            self.market_known = True
            if snap.version == replica.version and snap.state_hash != replica.state_hash:
                theirs, ours = hash_hex(snap.state_hash), hash_hex(replica.state_hash)
                self._diverged(f"snapshot {snap.version} hash {theirs} != ours {ours}")
                return self._resync_request(now)
            return []
        try:
            restored = Replica.from_snapshot(snap, self.own_client)
        except ValueError as exc:
            log.error("snapshot %d unusable: %s", snap.version, exc)
            return []
        self.replica = restored
        restored.expect_owner = self.expect_owner
        # (a snapshot without owners holds no order of this client's: nothing to learn)
        self.names_wanted = self.own_client is not None and snap.owners_assigned > 0
        self.market_known = True
        self.mismatch = None
        self.waiting_since = None
        self.synced_once = True
        self.last_progress = now
        if self.pending is not None and self.pending.request.snapshot:
            self.pending = None
        for seq in [s for s in self.buffer if s <= restored.version]:
            del self.buffer[seq]
        if not self._drain(now):
            return self._resync_request(now)
        return self._maybe_request(now)

    def on_names(self, names: OwnNames, now: float) -> list[ReplayRequest]:
        """This client's names (an answer to a request with "names"): its owner number and
        open orders, merged into the replica's maps; buffered entries that waited for a name
        are applied."""
        replica = self.replica
        if replica is None or names.market != self.market_name:
            return []
        try:
            replica.learn_names(names)
        except ValueError as exc:
            self._diverged(str(exc))
            return self._resync_request(now)
        self.names_wanted = False
        return self.names_learnt(now)

    def names_learnt(self, now: float) -> list[ReplayRequest]:
        """The replica learnt names (its client's reports said which seqs were its own): apply
        the entries that waited for them."""
        if self.replica is None:
            return []
        if not self._drain(now):
            return self._resync_request(now)
        return self._maybe_request(now)

    def sent_orders(self) -> None:
        """This client sent orders: until its owner number is known, entries introducing one wait
        for a replay answer (a client whose every report is lost still learns its own)."""
        self.expect_owner = True
        if self.replica is not None:
            self.replica.expect_owner = True

    def on_head(self, head: int, now: float) -> list[ReplayRequest]:
        """The sequencer's version as seen elsewhere (the retained book)."""
        self._see_head(head, now)
        return self._maybe_request(now)

    def replay_after_version(self, now: float) -> ReplayRequest:
        """Ask for everything after this replica's version (after a silence of the log: what was
        missed, and an answer from the sequencer even if nothing was)."""
        return self._send(ReplayRequest(self.version + 1, None), now)[0]

    def on_tick(self, now: float) -> list[ReplayRequest]:
        if self.replica is None:
            if self.pending is not None:
                if now - self.pending.sent_at >= self.replay_timeout:
                    return self._send(self.pending.request, now)
                return []
            if self.waiting_since is not None and now - self.waiting_since >= self.snapshot_timeout:
                # No retained snapshot: start from the empty book and replay the whole journal.
                log.warning("no snapshot within %.1fs; replaying the log from seq 1", self.snapshot_timeout)
                self.replica = Replica(MarketSpec(self.market_name), own_client=self.own_client)
                self.replica.expect_owner = self.expect_owner
                self.market_known = False
                self.waiting_since = None
                self.synced_once = True
                self.last_progress = now
                if not self._drain(now):
                    return self._resync_request(now)
                return self._send(ReplayRequest(1, None), now)
            return []
        return self._maybe_request(now)

    # -- internals -------------------------------------------------------------------------

    def _apply(self, entry: LogEntry, now: float) -> bool | None:
        """True: applied; False: diverged; None: not applied, its client order id is not known
        yet (this client's own entry, see Replica.resolve)."""
        replica = self.replica
        assert replica is not None
        if entry.client_order_id is None and entry.client_id is None and replica.own_client is not None:
            named = replica.resolve(entry)
            if named is None:
                if self.unnamed_since is None:
                    self.unnamed_since = now
                return None
            entry = named
        try:
            events = replica.apply(entry, resolved=True)  # (resolved above when it needed it)
        except (HashMismatch, ValueError, KeyError) as exc:
            self._diverged(_divergence(exc))
            return False
        self.last_progress = now
        self.unnamed_since = None
        if self.on_applied is not None and self._concerns(entry, events):
            if entry.client_id is None:  # (the log names no client: this edge knows only its own)
                entry = entry._replace(client_id=replica.clients.get(entry.owner))
            self.on_applied(entry, events)
        return True

    def _concerns(self, entry: LogEntry, events: Sequence[EventTuple]) -> bool:
        """Whether on_applied wants an entry applied alone: with `interest`, only the owner's own
        entries and trades against its orders, as `Replica.apply_batch` selects them (asked
        before the entry is copied with its client id: an observer's or a foreign entry costs
        no copy and no call)."""
        interest = self.interest
        if interest is None:
            return True
        mine = interest()
        if mine is None:
            return False
        if entry.owner == mine:
            return True
        for event in events:
            if event[0] == _TRADE and event[8] == mine:  # (8: other_owner, the resting order's)
                return True
        return False

    def _drain(self, now: float) -> bool:
        replica = self.replica
        assert replica is not None
        buffer = self.buffer
        while buffer:
            entry = buffer.pop(replica.version + 1, None)
            if entry is None:
                break
            applied = self._apply(entry, now)
            if applied is None:  # still waits for its name
                buffer[entry.seq] = entry
                break
            if not applied:
                return False
            replica = self.replica
            assert replica is not None
        if buffer and min(buffer) <= replica.version:
            for seq in [s for s in buffer if s <= replica.version]:
                del buffer[seq]
        return True

    def _diverged(self, reason: str) -> None:
        log.error(
            "REPLICA DIVERGED from the sequencer (%s); stopped applying, resyncing from a snapshot", reason
        )
        self.mismatch = reason
        self.resyncs += 1
        self.replica = None
        self.buffer.clear()
        self.pending = None
        self.names_wanted = False
        self.unnamed_since = None
        if self.on_resync is not None:
            self.on_resync(reason)

    def _resync_request(self, now: float) -> list[ReplayRequest]:
        return self._send(ReplayRequest(1, None, snapshot=True), now)

    def _maybe_request(self, now: float) -> list[ReplayRequest]:
        replica = self.replica
        if replica is None:
            return []
        version = replica.version
        pending = self.pending
        if (
            pending is not None
            and version >= pending.target
            and not (pending.request.names and self.names_wanted)
        ):
            self.pending = pending = None
        if self.names_wanted:  # (its answer also replays everything after our version)
            if pending is None or now - max(pending.sent_at, self.last_progress) >= self.replay_timeout:
                return self._send(ReplayRequest(version + 1, None, names=True), now)
            return []
        if version >= self.head and not self.buffer:
            return []
        if pending is not None and now - max(pending.sent_at, self.last_progress) < self.replay_timeout:
            return []  # an answer is due or arriving
        if self.buffer and min(self.buffer) == version + 1:  # the next entry waits for its name
            if self.unnamed_since is not None and now - self.unnamed_since < self.gap_grace:
                return []  # its report (which names it) may still be on its way
            last = min(max(self.buffer), version + REPLAY_MAX_ENTRIES)
            return self._send(ReplayRequest(version + 1, last), now)  # a replay answer names it
        if self.buffer:
            return self._send(ReplayRequest(version + 1, min(self.buffer) - 1), now)  # exactly the hole
        if now - max(self.last_progress, self.head_seen_at) < self.gap_grace:
            return []  # the head is ahead but its entries may still be in flight
        return self._send(ReplayRequest(version + 1, None), now)

    def _send(self, request: ReplayRequest, now: float) -> list[ReplayRequest]:
        target = request.last if request.last is not None else self.head
        if not request.snapshot:  # a long range is served in parts: ask for the next part at once
            target = min(target, request.first + REPLAY_MAX_ENTRIES - 1)
        self.pending = _Pending(request, now, target)
        return [request]
