"""The sequencer's replay service: a gap or a late joiner's range, answered from the journal.

A request `{"from": a, "to": b, "snapshot": bool}` on `replay/request/<requester>` is answered on
`replay/response/<requester>`: the latest snapshot first if asked, then the journal's runs from
max(a, snapshot version + 1) to b, at most REPLAY_MAX_ENTRIES per request and LOG_CHUNK per
message; a request past the head gets one empty message carrying the head. Only durable entries
exist in the journal, so only durable entries are ever served. Bad requests are logged and dropped.

Replay is served fairly and bounded, so that one requester cannot stall the market (a trader's
300 whole-journal requests once stalled every client for 25 s and grew the sequencer by GBs):

- `serve` only queues a request (a few integers); `pump` does the work, at most
  `ReplayLimits.turn_entries` entries per call, one chunk per requester in turn (round robin). The
  sequencer pumps once per node turn (after the turn's orders) and on its ticks, so order intake
  is interleaved with replay and never waits behind more than one turn's worth of it.
- Answers are streamed from the journal file, a frame at a time (`Journal.read_frame`): a queued
  request holds a seq and a file offset, never its range; a few recently read frames are cached
  because concurrent requests usually read the same region.
- Each requester has a token bucket of `entries_per_second` (a snapshot costs its size in
  records) and at most `max_in_flight` queued requests; the service at most `max_total_in_flight`.
  A request over a limit is refused with a message on the requester's answer topic,
  `{"type": "replay_refused", "code": "REPLAY_LIMIT", "message": ...}` (at most a few a second per
  requester; the rest are dropped), logged once per requester per refusing spell. An identical
  request to one still queued (a replica repeating itself) is dropped: its answer is coming.

The answer is private to the requester (only it may read its response topic): its records carry
the requester's own names (its client order ids, its client id on the entry introducing its owner
number) and no one else's, and `"names": true` first sends its names message (its owner number
and open orders, `fastbook.wire.names`, from the sequencer's replica when the request's turn comes).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from fastbook.log.journal import Journal, JournalError
from fastbook.log.replica import Replica
from fastbook.transport.node import Outgoing
from fastbook.wire.fields import REPLAY_LIMIT, REPLAY_MAX_ENTRIES, dumps
from fastbook.wire.log import LOG_RECORD_DTYPE, LogRun, decode_replay_request, encode_log_message
from fastbook.wire.names import OwnNames, encode_names
from fastbook.wire.orders import valid_client_id
from fastbook.wire.topics import Topics

log = logging.getLogger(__name__)

# Entries per log / replay message. A runner's batch is cut at 256 KiB of orders (~2,500 bulk orders),
# so a batch's log is one message: split in two, an edge reads the first part, is behind the head
# for a moment and published two status changes per batch (2,000 did that to every bulk batch).
LOG_CHUNK = 4096

_RECORD_BYTES = LOG_RECORD_DTYPE.itemsize
_FRAME_CACHE = 4  # journal frames kept for the requests reading the same region
_MAX_IDLE_REQUESTERS = 1024  # requester buckets kept once idle (then the full ones are forgotten)


@dataclass(frozen=True, slots=True)
class ReplayLimits:
    # entries served per pump (one node turn) over all requesters: bounds the time a turn spends on
    # replay (~1 ms at the default), so the orders queued behind it wait at most that long
    turn_entries: int = 2 * 4096
    # per requester: a whole 200k-entry journal in ~2 s, a gap of a few thousand at once (burst)
    entries_per_second: float = 100_000.0
    burst: int = 2 * 4096
    max_in_flight: int = 4  # queued requests per requester
    max_total_in_flight: int = 256  # queued requests over all requesters
    refusals_per_second: float = 5.0  # refusal messages per requester (the others are dropped)


@dataclass(slots=True)
class _Request:
    key: tuple[int, int | None, bool, bool]  # (from, to, snapshot, names) as asked: spots a repeat
    topic: str
    requester: str
    next: int  # next seq to send
    last: int  # last seq to send (next > last: nothing, or nothing left, to send)
    snapshot: bytes | None  # still to send first
    names: bool  # the requester's names message still to send (after the snapshot)
    sent: bool = False  # a log message (entries, or the empty answer) went out for it
    offset: int | None = None  # journal offset to read `next` from (None: look it up in the index)


@dataclass(slots=True)
class _Requester:
    tokens: float
    updated: float
    requests: deque[_Request] = field(default_factory=deque)
    refused: int = 0  # refused in the current refusing spell (0: not refusing)
    refusal_tokens: float = 0.0
    refusal_updated: float = 0.0

    def refill(self, now: float, rate: float, burst: int) -> None:
        self.tokens = min(float(burst), self.tokens + (now - self.updated) * rate)
        self.updated = now

    def ready_at(self, rate: float) -> float:
        """When the bucket holds a token again."""
        return self.updated if self.tokens >= 1.0 else self.updated + (1.0 - self.tokens) / rate


class ReplayService:
    def __init__(
        self,
        market_name: str,
        topics: Topics,
        journal: Journal,
        limits: ReplayLimits | None = None,
        replica: Replica | None = None,
    ) -> None:
        self.market_name = market_name
        self.topics = topics
        self.journal = journal
        # The sequencer's (durable at each pump: it pumps after its turn's commit): who is which
        # owner, open orders' names. The sequencer replaces it when it recovers its journal.
        self.replica = replica
        self.limits = limits or ReplayLimits()
        self._requesters: dict[str, _Requester] = {}
        self._active: deque[str] = deque()  # requesters with queued requests, in serving order
        self._in_flight = 0
        self._frames: OrderedDict[int, tuple[LogRun, int]] = OrderedDict()  # offset -> (run, next offset)
        self.refused = 0  # requests refused since start (status, tests)

    def names_message(self, requester: str) -> bytes:
        """The requester's names at the journal's head (the replica's durable state)."""
        replica = self.replica
        owner = self._owner(requester)
        orders: list[tuple[int, str]] = []
        if replica is not None and owner is not None:
            orders = sorted(((oid, coid) for coid, oid in replica.by_owner.get(owner, {}).items()))
        return encode_names(OwnNames(self.market_name, self.journal.last_seq, owner, orders))

    def _owner(self, requester: str) -> int | None:
        return None if self.replica is None else self.replica.owners.get(requester)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def serve(
        self, requester: str, payload: bytes, snapshot: bytes, snapshot_version: int, now: float
    ) -> list[Outgoing]:
        """Queue one request (answered by `pump`); what goes out at once is only a refusal.
        `snapshot` is the latest published snapshot at `snapshot_version`."""
        if not valid_client_id(requester):
            log.warning("replay request from invalid requester id %r ignored", requester[:70])
            return []
        try:
            request = decode_replay_request(payload)
        except ValueError as exc:
            log.warning("bad replay request from %s ignored: %s", requester, exc)
            return []
        state = self._requester(requester, now)
        key = (request.first, request.last, request.snapshot, request.names)
        if any(queued.key == key for queued in state.requests):
            return []
        limits = self.limits
        if len(state.requests) >= limits.max_in_flight or self._in_flight >= limits.max_total_in_flight:
            return self._refuse(requester, state, now)
        if state.refused:
            log.info(
                "replay requester %s back within its limits (%d requests refused)", requester, state.refused
            )
            state.refused = 0
        first = request.first
        if request.snapshot:
            first = max(first, snapshot_version + 1)
        head = self.journal.last_seq
        first = max(first, self.journal.first_seq)
        last = head if request.last is None else min(request.last, head)
        last = min(last, first + REPLAY_MAX_ENTRIES - 1)
        topic = self.topics.replay_response(requester)
        snap = snapshot if request.snapshot else None
        state.requests.append(_Request(key, topic, requester, first, last, snap, request.names))
        self._in_flight += 1
        if len(state.requests) == 1:
            self._active.append(requester)
        return []

    def pump(self, now: float) -> list[Outgoing]:
        """One turn of replay work: at most `turn_entries` entries, a chunk per requester in turn,
        each within its bucket."""
        limits = self.limits
        out: list[Outgoing] = []
        budget = limits.turn_entries
        active = self._active
        waiting = 0  # requesters in a row whose bucket is empty
        while budget > 0 and active and waiting < len(active):
            requester = active[0]
            active.rotate(-1)
            state = self._requesters[requester]
            state.refill(now, limits.entries_per_second, limits.burst)
            if state.tokens < 1.0:
                waiting += 1
                continue
            waiting = 0
            request = state.requests[0]
            cost = self._answer(request, min(LOG_CHUNK, budget), out)
            failed = cost < 0
            if not failed:
                budget -= cost
                state.tokens -= cost
            done = request.sent and request.snapshot is None and not request.names
            if failed or (done and request.next > request.last):
                state.requests.popleft()
                self._in_flight -= 1
                if not state.requests:
                    active.remove(requester)
        return out

    def next_deadline(self, now: float) -> float | None:
        """When `pump` has work to do (None: nothing queued)."""
        if not self._active:
            return None
        rate = self.limits.entries_per_second
        return min(self._requesters[name].ready_at(rate) for name in self._active)

    # -- internals ---------------------------------------------------------------------------

    def _answer(self, request: _Request, most: int, out: list[Outgoing]) -> int:
        """Send the request's next part (its snapshot, an empty answer or up to `most` entries);
        the cost in entries, or -1 if the journal failed (the request is dropped)."""
        head = self.journal.last_seq
        if request.snapshot is not None:
            out.append(Outgoing(request.topic, request.snapshot))
            cost = max(1, len(request.snapshot) // _RECORD_BYTES)
            request.snapshot = None
            return cost
        if request.names:  # (after the snapshot, which it names, and before the entries)
            out.append(Outgoing(request.topic, self.names_message(request.requester)))
            request.names = False
            return 1
        if request.next > request.last:
            out.append(Outgoing(request.topic, encode_log_message(self.market_name, head, replay=True)))
            request.sent = True
            return 1
        try:
            run = self._read(request, min(most, request.last - request.next + 1))
        except JournalError as exc:
            log.error("replay on %s failed: %s", request.topic, exc)
            return -1
        run = run.named_for(self._owner(request.requester))  # (only the requester's own names)
        out.append(Outgoing(request.topic, encode_log_message(self.market_name, head, run, replay=True)))
        request.sent = True
        return len(run)

    def _read(self, request: _Request, count: int) -> LogRun:
        """The next `count` entries of the request, read frame by frame from its journal offset."""
        pieces = []
        wanted = count
        while wanted:
            if request.offset is None:
                request.offset = self.journal.frame_offset(request.next)
            run, after = self._frame(request.offset)
            start = int(run.seqs[0])
            end = start + len(run)  # one past the frame's last seq
            if start > request.next:
                raise JournalError(
                    f"journal frame at offset {request.offset} starts at {start}, not {request.next}"
                )
            if request.next >= end:
                request.offset = after
                continue
            piece = run.cut(request.next - start, min(end, request.next + wanted) - start)
            pieces.append(piece)
            request.next += len(piece)
            wanted -= len(piece)
            if request.next >= end:
                request.offset = after
        return LogRun.concat(pieces)

    def _frame(self, offset: int) -> tuple[LogRun, int]:
        frames = self._frames
        cached = frames.get(offset)
        if cached is not None:
            frames.move_to_end(offset)
            return cached
        frame = self.journal.read_frame(offset)
        frames[offset] = frame
        if len(frames) > _FRAME_CACHE:
            frames.popitem(last=False)
        return frame

    def _requester(self, requester: str, now: float) -> _Requester:
        state = self._requesters.get(requester)
        if state is None:
            if len(self._requesters) >= _MAX_IDLE_REQUESTERS:
                self._forget_idle(now)
            limits = self.limits
            state = _Requester(float(limits.burst), now, refusal_tokens=limits.refusals_per_second)
            state.refusal_updated = now
            self._requesters[requester] = state
        return state

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets of idle requesters that have refilled (they would start full anyway)."""
        limits = self.limits
        for name, state in list(self._requesters.items()):
            if not state.requests:
                state.refill(now, limits.entries_per_second, limits.burst)
                if state.tokens >= limits.burst:
                    del self._requesters[name]

    def _refuse(self, requester: str, state: _Requester, now: float) -> list[Outgoing]:
        limits = self.limits
        self.refused += 1
        if not state.refused:
            log.warning(
                "replay requester %s over its limits (%d requests in flight, %d in all); refusing",
                requester, len(state.requests), self._in_flight,
            )  # fmt: skip
        state.refused += 1
        rate = limits.refusals_per_second
        state.refusal_tokens = min(rate, state.refusal_tokens + (now - state.refusal_updated) * rate)
        state.refusal_updated = now
        if state.refusal_tokens < 1.0:
            return []
        state.refusal_tokens -= 1.0
        if len(state.requests) >= limits.max_in_flight:
            queued, limit = len(state.requests), limits.max_in_flight
            why = f"{queued} of your replay requests are still being answered (limit {limit})"
        else:
            queued, limit = self._in_flight, limits.max_total_in_flight
            why = f"the sequencer is answering {queued} replay requests (limit {limit})"
        message = f"replay request refused: {why}; ask again once the answers have arrived"
        body = {"type": "replay_refused", "code": REPLAY_LIMIT, "message": message}
        return [Outgoing(self.topics.replay_response(requester), dumps(body))]
