"""The per-market sequencer node: validate, execute, sequence, journal (group commit), publish.

For each `on_messages` batch: every order is decoded (`fastbook.wire`), mapped to engine ids and
executed on the sequencer's own replica. A command the engine rejects changed nothing and is only
reported; every other command gets the next gap-free seq and becomes a log entry. The batch's
entries are appended to the journal with one fsync, and only then are the log messages, reports,
trades and the retained book returned for publishing. Nothing that is not durable is published.

The hot path: a message whose orders are all valid and in the common form is read natively into
command rows (`read_orders`, src/fastbook/wire/_orderparse.pyx); runs of news in it whose client order ids
need no check against the book execute in one `Book.apply_batch` call (the book numbers the
orders) and `runwriter.write_news_run` writes their entries and reports in C. Everything else
takes the per-command path (`_execute`); both publish the same bytes.
"""

from __future__ import annotations

import json
import logging
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from fastbook import backend
from fastbook.engine import EventTuple
from fastbook.engine.types import EventType, Op, Reject
from fastbook.log.dedupe import DedupeWindow
from fastbook.log.journal import Journal, JournalError
from fastbook.log.replica import HashMismatch, Replica
from fastbook.log.reports import command_reports_json, public_trade
from fastbook.log.runwriter import NewsRun
from fastbook.log.snapshots import SnapshotStore
from fastbook.transport.node import Incoming, Outgoing
from fastbook.wire._orderparse import parse_orders
from fastbook.wire.fields import (
    DUPLICATE_CLIENT_ORDER_ID,
    INVALID_CLIENT_ID,
    JOURNAL_UNAVAILABLE,
    OP_TEXT,
    REPLAY_MAX_ENTRIES,
    UNKNOWN_ORDER,
    dumps,
)
from fastbook.wire.log import LogEntry, decode_entry, decode_replay_request, encode_entry, encode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.messages import encode_book, encode_report_texts, encode_trades, reject_report
from fastbook.wire.orders import OrderCommand, WireReject, decode_orders, valid_client_id
from fastbook.wire.snapshot import SnapshotData, encode_snapshot
from fastbook.wire.topics import DEFAULT_PREFIX, Topics

log = logging.getLogger(__name__)

# Entries per log / replay message. A runner's batch is cut at 256 KiB of orders (~2,500 bulk orders),
# so a batch's log is one message: split in two, an edge reads the first part, is behind the head
# for a moment and published two status changes per batch (2,000 did that to every bulk batch).
LOG_CHUNK = 4096
MARKET_FILE = "market.json"

_TRADE = int(EventType.TRADE)
_REJECTED = int(EventType.REJECTED)
_NEW = int(Op.NEW)
_ENTRY_FIELDS = len(LogEntry._fields)  # a log entry is a JSON array of its fields, in order

ENGINE_REJECT_MESSAGES = {
    Reject.INVALID_ORDER_ID: "order id out of range",
    Reject.INVALID_OWNER: "owner out of range",
    Reject.INVALID_SIDE: "invalid side",
    Reject.INVALID_TYPE: "invalid order type",
    Reject.INVALID_TIF: "invalid time in force",
    Reject.INVALID_STP: "invalid self-trade prevention mode",
    Reject.INVALID_QTY: "qty out of range",
    Reject.INVALID_PRICE: "price out of range",
    Reject.INVALID_POST_ONLY: "post_only needs a GTC limit order",
    Reject.DUPLICATE_ORDER_ID: "an order with this id is already open",
    Reject.UNKNOWN_ORDER: "the order is not open",
    Reject.POST_ONLY_WOULD_TAKE: "post-only order would take liquidity",
    Reject.INVALID_AMEND: "amend needs a new price and/or qty",
    Reject.INVALID_OP: "unknown operation",
}


def _engine_reject(client_order_id: str | None, op: int, reason: int) -> dict[str, Any]:
    """The rejected report of a command the engine refused (it changed nothing)."""
    code = Reject(reason)
    return reject_report(client_order_id, OP_TEXT[op], code.name, ENGINE_REJECT_MESSAGES[code])


# The MQTT QoS the log is published with. A replica detects a gap itself (seq) and replays it, so
# QoS1's PUBACKs buy no correctness here; bench/e2e_bench.py --log-qos measures both.
LOG_QOS = 1


@dataclass
class SequencerConfig:
    market: MarketSpec
    data_dir: Path
    prefix: str = DEFAULT_PREFIX
    snapshot_every: int = 10_000  # versions (at least as many as the last snapshot held orders)
    snapshot_interval: float = 30.0  # seconds (only if the version moved)
    book_depth: int = 20
    max_payload: int = 1 << 20  # bytes; larger order messages are rejected
    snapshot_keep: int = 5  # snapshot files kept in data_dir/snapshots (older ones are deleted)
    heartbeat_interval: float = 1.0  # seconds without log traffic before an empty log message (head only)
    # A `new`'s client order id is refused for reuse for at least this many versions after it was
    # accepted (and for as long as its order is open); older ids are forgotten (docs/wire.md).
    dedupe_window: int = 1_000_000


class _Batch:
    """What one on_messages call produces before the journal commit decides its fate."""

    def __init__(self) -> None:
        self.records: list[tuple[int, bytes]] = []  # (seq, encoded log entry): journal and log
        # (client, client order ids, op) of the sequenced commands, in order (a run's news are one
        # item): a failed commit answers each of them.
        self.sequenced: list[tuple[str, list[str | None], int]] = []
        # client -> the compact JSON text of every report to it, in order: what a committed batch
        # publishes (one reports message per client) ...
        self.texts: dict[str, list[str]] = {}
        # ... and (client, text) of the rejections, in order: what a batch whose commit failed
        # publishes (nothing was sequenced, so nothing else happened).
        self.rejections: list[tuple[str, str]] = []
        self.trades: list[str] = []  # public trades, JSON text

    def add(self, client: str, texts: list[str]) -> None:
        """Report texts to `client`, in order (the list is kept: the caller must not change it)."""
        got = self.texts.get(client)
        if got is None:
            self.texts[client] = texts
        else:
            got.extend(texts)

    def reject(self, client: str, report: dict[str, Any]) -> None:
        text = dumps(report).decode()
        self.add(client, [text])
        self.rejections.append((client, text))


class SequencerNode:
    def __init__(self, cfg: SequencerConfig) -> None:
        self.cfg = cfg
        self.market = cfg.market
        self.topics = Topics(cfg.market.name, cfg.prefix)
        self._orders_prefix = f"{self.topics.base}/orders/"
        self._replay_prefix = f"{self.topics.base}/replay/request/"
        self.data_dir = Path(cfg.data_dir)
        if cfg.snapshot_every < 1 or cfg.book_depth < 1 or cfg.max_payload < 1 or cfg.dedupe_window < 1:
            raise ValueError("snapshot_every, book_depth, max_payload and dedupe_window must be positive")
        self.journal = Journal(self.data_dir)
        try:
            self._check_market_file()
            self.snapshots = SnapshotStore(self.data_dir / "snapshots")
            self.last_trade: dict[str, Any] | None = None
            self.replica, self.dedupe = self._recover()
            self.failed: str | None = None
            self._durable_book: Outgoing | None = None  # the last book built from durable state
            self._published_snapshot = b""
            self._published_snapshot_version = -1
            self._snapshot_orders = 0  # resting orders in the last snapshot (sets the spacing)
            self._snapshot_time: float | None = None
            self._log_time: float | None = None  # last log publish (for the idle heartbeat)
            # Time source for on_messages (on_tick gets its time from the runner); tests replace it.
            self.clock: Callable[[], float] = time.monotonic
            # Writes a run of news' log entries and reports: the selected backend's (fastbook.backend).
            self.write_news_run: Callable[..., NewsRun] = backend.select("write_news_run")
            # Reads an order message into (COMMAND_DTYPE rows, client order ids) when every order
            # in it is valid, else None (then decode_orders names what is wrong); None: always
            # the per-command path. Tests replace it.
            self.read_orders: Callable[[bytes], tuple[np.ndarray, list[str | None]] | None] | None = (
                self._reader()
            )
            self._take_snapshot(self.clock())
        except BaseException:
            self.journal.close()
            raise

    # -- startup ---------------------------------------------------------------------------

    def _reader(self) -> Callable[[bytes], tuple[np.ndarray, list[str | None]] | None]:
        """The native order reader for this market (None: the message needs wire.decode_orders)."""
        m = self.market
        steps = (m._tick_places, m._tick_units, m._lot_places, m._lot_units)  # noqa: SLF001
        limit = self.cfg.max_payload
        return lambda payload: parse_orders(payload, *steps, max_payload=limit)

    def _check_market_file(self) -> None:
        path = self.data_dir / MARKET_FILE
        if path.exists():
            try:
                stored = MarketSpec.from_json(json.loads(path.read_bytes()))
            except (ValueError, OSError, RecursionError) as exc:
                raise ValueError(f"{path} is unreadable: {exc}") from exc
            if stored != self.market:
                raise ValueError(f"data dir {self.data_dir} belongs to market {stored}, not {self.market}")
        else:
            path.write_text(json.dumps(self.market.to_json()) + "\n")

    def _restore(self, snap: SnapshotData) -> Replica:
        if snap.market != self.market:
            raise ValueError(f"snapshot is for market {snap.market}, not {self.market}")
        return Replica.from_snapshot(snap)

    def _recover(self) -> tuple[Replica, DedupeWindow]:
        """Latest valid snapshot file + replay of the journal after it (hash-checked). The dedupe
        window is rebuilt from the journal: the `new`s of the last `dedupe_window` versions before
        the snapshot, then those replayed after it (snapshot files do not carry it: writing it with
        every snapshot cost O(window) each time, most of the sequencer's time at the default window)."""
        loaded = self.snapshots.load_latest(self._restore)
        if loaded is not None:
            restored = loaded[1]
            assert isinstance(restored, Replica)
            replica = restored
        else:
            replica = Replica(self.market)
        dedupe = DedupeWindow(self.cfg.dedupe_window)
        journal = self.journal
        if journal.last_seq < replica.version:
            raise JournalError(
                f"snapshot version {replica.version} is ahead of the journal (last seq {journal.last_seq}) "
                f"in {self.data_dir}: journal records are missing"
            )
        if journal.last_seq > replica.version and journal.first_seq > replica.version + 1:
            raise JournalError(
                f"journal starts at seq {journal.first_seq} but the newest usable snapshot is version "
                f"{replica.version}: seqs in between are missing"
            )
        start = replica.version
        # The ids of the news in the window before the snapshot (already applied to it) ...
        # (A journal that starts later than the window holds fewer: only the ids it has.)
        window_start = max(1, journal.first_seq, start - self.cfg.dedupe_window + 1)
        for seq, client, coid in self._journaled_news(window_start, start):
            dedupe.accept(seq, client, coid)
        dedupe.advance(start)
        # ... then the journal after the snapshot, applied and checked entry by entry.
        for entry in self._journal_entries(start + 1, journal.last_seq):
            try:
                events = replica.apply(entry)
            except HashMismatch as exc:
                raise JournalError(
                    f"journal replay diverged ({exc}); was it written by a different engine?"
                ) from exc
            if entry.op == Op.NEW:
                dedupe.accept(entry.seq, entry.client_id, entry.client_order_id)  # type: ignore[arg-type]
            dedupe.advance(entry.seq)
            trades = [event for event in events if event[0] == _TRADE]
            if trades:
                self.last_trade = self._public_trade(entry.seq, len(trades), trades[-1])
        log.info(
            "sequencer %s: recovered version %d (snapshot %d + %d journal entries; dedupe window %d ids)",
            self.market.name,
            replica.version,
            start,
            replica.version - start,
            len(dedupe),
        )
        return replica, dedupe

    def _journal_records(self, first: int, last: int) -> Iterator[tuple[int, bytes]]:
        """Journal records first..last, read in chunks; JournalError if one is missing."""
        seq = first
        while seq <= last:
            records = self.journal.read(seq, last, limit=50_000)
            if not records or records[0][0] != seq:
                held = f"{self.journal.first_seq}..{self.journal.last_seq}"
                raise JournalError(f"journal record {seq} is missing (the journal holds {held})")
            yield from records
            seq = records[-1][0] + 1

    def _journal_entries(self, first: int, last: int) -> Iterator[LogEntry]:
        """The decoded journal entries first..last; JournalError if one is not a log entry."""
        for seq, raw in self._journal_records(first, last):
            try:
                yield decode_entry(json.loads(raw))
            except (ValueError, RecursionError) as exc:
                problem = str(exc)[:200]
                raise JournalError(f"journal record {seq} is not a valid log entry ({problem})") from None

    def _journaled_news(self, first: int, last: int) -> Iterator[tuple[int, str, str]]:
        """(seq, client, client order id) of the `new`s among the journal records first..last. Only
        the fields the dedupe window needs are read (the records are CRC-checked and were applied
        to the snapshot already): up to `dedupe_window` records are read at every start."""
        for seq, raw in self._journal_records(first, last):
            try:
                row = json.loads(raw)
            except (ValueError, RecursionError):
                row = None
            if not (type(row) is list and len(row) == _ENTRY_FIELDS and row[0] == seq):
                raise JournalError(f"journal record {seq} is not a valid log entry")
            if row[4] == _NEW:
                client, coid = row[2], row[3]
                if type(client) is not str or type(coid) is not str:
                    raise JournalError(f"journal record {seq}: a new without client and order ids")
                yield seq, client, coid

    # -- Node ------------------------------------------------------------------------------

    @property
    def seen(self) -> dict[str, dict[str, int]]:
        """client -> {client order id: seq} of the ids in the dedupe window (read only)."""
        return self.dedupe.seen

    @property
    def version(self) -> int:
        return self.replica.version

    @property
    def state_hash(self) -> int:
        return self.replica.state_hash

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.topics.orders_filter, 1), (self.topics.replay_request_filter, 1)]

    def will(self) -> Outgoing | None:
        return None

    def on_connected(self) -> list[Outgoing]:
        return [self._book_message(), Outgoing(self.topics.snapshot, self._published_snapshot, retain=True)]

    def on_tick(self, now: float) -> list[Outgoing]:
        if self._snapshot_time is None:
            self._snapshot_time = now
        out: list[Outgoing] = []
        if (
            self.failed is None
            and self.version > self._published_snapshot_version
            and now - self._snapshot_time >= self.cfg.snapshot_interval
        ):
            out += self._take_snapshot(now)
        if self._log_time is None or now - self._log_time >= self.cfg.heartbeat_interval:
            # An empty log message carrying the head: a replica that lost the last messages of a
            # burst learns it is behind even when nothing else is published.
            self._log_time = now
            head = self.journal.last_seq
            out.append(Outgoing(self.topics.log, encode_log_message(self.market.name, head, []), qos=LOG_QOS))
        return out

    def next_deadline(self, now: float) -> float | None:
        """When on_tick is due: the idle heartbeat, or the timed snapshot once the version moved."""
        heartbeat = now if self._log_time is None else self._log_time + self.cfg.heartbeat_interval
        if self.failed is None and self.version > self._published_snapshot_version:
            taken = self._snapshot_time
            snapshot = now if taken is None else taken + self.cfg.snapshot_interval
            return min(heartbeat, snapshot)
        return heartbeat

    def close(self) -> list[Outgoing]:
        self.journal.close()
        return []

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        batch = _Batch()
        replays: list[tuple[str, bytes]] = []
        start_version = self.version
        for topic, payload in messages:
            if topic.startswith(self._orders_prefix):
                self._on_orders(topic[len(self._orders_prefix) :], bytes(payload), batch)
            elif topic.startswith(self._replay_prefix):
                replays.append((topic[len(self._replay_prefix) :], bytes(payload)))
        out: list[Outgoing] = []
        committed = self._commit(batch)
        if committed and batch.records:
            head = self.journal.last_seq
            raw = [entry for _seq, entry in batch.records]
            for i in range(0, len(raw), LOG_CHUNK):
                payload = encode_log_message(self.market.name, head, raw[i : i + LOG_CHUNK])
                out.append(Outgoing(self.topics.log, payload, qos=LOG_QOS))
            self._log_time = self.clock()
        out.extend(self._report_messages(batch, committed))
        if committed and batch.trades:
            out.append(Outgoing(self.topics.trades, encode_trades(self.market, batch.trades)))
        if committed and self.version != start_version:
            out.append(self._book_message())
            # A snapshot costs O(resting orders): spacing them at least as many versions apart as
            # the last one held orders keeps their cost O(1) per command however deep the book.
            # A command adds at most one order, so the next snapshot holds at most twice the
            # spacing: at most 2 order rows written per command (a book that grows by one order
            # per command gets a snapshot whenever the version doubles), about 1 on a book of
            # steady depth; and a late joiner replays at most about as many entries as the
            # snapshot holds.
            spacing = max(self.cfg.snapshot_every, self._snapshot_orders)
            if self.version - self._published_snapshot_version >= spacing:
                out.extend(self._take_snapshot(self.clock()))
        for requester, payload in replays:
            out.extend(self._serve_replay(requester, payload))
        return out

    # -- orders ----------------------------------------------------------------------------

    def _on_orders(self, client: str, payload: bytes, batch: _Batch) -> None:
        if not valid_client_id(client):
            message = "client id (the last topic level) must be 1-64 characters of A-Z a-z 0-9 . _ -"
            batch.reject(client, reject_report(None, None, INVALID_CLIENT_ID, message))
            return
        if self.failed is None and self.read_orders is not None:
            parsed = self.read_orders(payload)  # None past max_payload too (decode_orders rejects it)
            if parsed is not None:
                self._execute_rows(client, parsed[0], parsed[1], batch)
                return
        for item in decode_orders(payload, self.market, self.cfg.max_payload):
            if isinstance(item, WireReject):
                batch.reject(client, item.report())
            elif self.failed is not None:
                message = f"the sequencer stopped accepting orders: {self.failed}"
                op = OP_TEXT[item.op]
                batch.reject(client, reject_report(item.client_order_id, op, JOURNAL_UNAVAILABLE, message))
            else:
                self._execute(client, item, batch)

    def _execute_rows(self, client: str, rows: np.ndarray, coids: list[str | None], batch: _Batch) -> None:
        """A message read natively (`read_orders`): COMMAND_DTYPE rows, all valid. Runs of news the
        book alone decides (see `_news_run`) go through the engine in one call; every other
        command takes the per-command path. The outcome is the same either way."""
        ops = rows["op"].tolist()
        n = len(ops)
        others = np.flatnonzero(rows["op"] != _NEW).tolist()  # where the runs of news stop
        others.append(n)
        i = 0
        while i < n:
            if ops[i] == _NEW:
                end = self._news_run(client, coids, i, others[bisect_right(others, i)])
                if end > i:
                    self._execute_news(client, rows[i:end], coids[i:end], batch)
                    i = end
                    continue
            op, side, otype, tif, stp, post_only, _p, _o, _p2, _id, price, qty = rows[i].tolist()
            cmd = OrderCommand(op, coids[i], side, otype, tif, stp, bool(post_only), price, qty)
            self._execute(client, cmd, batch)
            i += 1

    def _news_run(self, client: str, coids: list[str | None], start: int, stop: int) -> int:
        """The end of the run of news from `start` (news up to `stop`) whose client order ids
        are not in the dedupe window, not open and not repeated in the run: for these, only the
        book decides (accept or reject), so the run can execute in one engine call. A repeated id
        ends the run: it is checked, after the run, against what the run left."""
        seen = self.dedupe.seen.get(client) or {}
        owner = self.replica.owners.get(client)
        resting = self.replica.by_owner.get(owner, {}) if owner is not None else {}
        # Usually every id up to `stop` passes: three checks at C speed.
        run = coids[start:stop]
        if seen.keys().isdisjoint(run) and resting.keys().isdisjoint(run) and len(set(run)) == len(run):
            return stop
        # Else the first id that does not pass ends the run.
        taken: set[str | None] = set()
        end = start
        while end < stop:
            coid = coids[end]
            if coid in seen or coid in resting or coid in taken:
                break
            taken.add(coid)
            end += 1
        return end

    def _execute_news(self, client: str, rows: np.ndarray, coids: list[str | None], batch: _Batch) -> None:
        """`_execute` of each row (news that pass the id checks) with one `Book.apply_batch`: the
        book numbers the orders as `_execute` would (an id is used only by an accepted new)."""
        replica = self.replica
        owner = replica.owners.get(client)
        new_owner = owner is None
        if owner is None:
            owner = replica.next_owner()
            replica.owners[client] = owner
            replica.clients[owner] = client
        rows["owner"] = owner
        hashes = np.empty(len(rows), dtype=np.uint64)
        events = replica.book.apply_batch(rows, hashes, next_order_id=replica.next_order_id)
        run = self.write_news_run(
            self.market, client, replica.version, rows, coids, hashes, events, replica.orders,
            replica.clients, _engine_reject,
        )  # fmt: skip
        for who, run_texts in run.texts.items():
            batch.add(who, run_texts)
        if run.rejections:
            batch.rejections.extend((client, text) for text in run.rejections)
        if not run.records:
            if new_owner:
                del replica.owners[client]
                del replica.clients[owner]
            return
        batch.records.extend(run.records)
        batch.sequenced.append((client, run.accepted_coids, _NEW))  # type: ignore[arg-type]
        if run.trades:
            batch.trades.extend(run.trades)
            self.last_trade = json.loads(run.trades[-1])
        replica.version = run.last_seq
        replica.state_hash = run.last_hash
        replica.next_order_id = run.accepted_ids[-1] + 1
        # The maps as after the commands one by one: the news join, then what left goes (ids are
        # unique, so the order does not matter).
        orders = replica.orders
        orders.update(zip(run.accepted_ids, zip(repeat(owner), run.accepted_coids), strict=True))
        replica.by_owner.setdefault(owner, {}).update(zip(run.accepted_coids, run.accepted_ids, strict=True))
        for order_id in run.gone:
            gone_owner, gone_coid = orders.pop(order_id)
            del replica.by_owner[gone_owner][gone_coid]
        replica.removed = {}
        self.dedupe.accept_many(client, run.accepted_seqs, run.accepted_coids)
        self.dedupe.advance(run.last_seq)

    def _execute(self, client: str, cmd: OrderCommand, batch: _Batch) -> None:
        replica = self.replica
        op, coid = cmd.op, cmd.client_order_id
        owner = replica.owners.get(client)
        order_id = 0
        if op == Op.NEW:
            assert coid is not None
            original = self.dedupe.accepted_at(client, coid)
            if original is not None:  # 0: accepted before seqs were kept with the ids
                where = f" at seq {original}" if original else ""
                message = f"client order id {coid!r} was already accepted{where}; this copy was not executed"
                batch.reject(client, reject_report(coid, "new", DUPLICATE_CLIENT_ORDER_ID, message))
                return
            if owner is not None and replica.resting_id(owner, coid) is not None:
                # Accepted before the dedupe window but still open: the id cannot name two orders.
                message = f"client order id {coid!r} names an open order; this copy was not executed"
                batch.reject(client, reject_report(coid, "new", DUPLICATE_CLIENT_ORDER_ID, message))
                return
            if owner is None:
                owner = replica.next_owner()
            order_id = replica.next_order_id
            events = replica.execute(
                client,
                coid,
                op,
                order_id,
                owner,
                cmd.side,
                cmd.order_type,
                cmd.tif,
                cmd.stp,
                int(cmd.post_only),
                cmd.price,
                cmd.qty,
            )
        elif op == Op.CANCEL or op == Op.AMEND:
            assert coid is not None
            found = None if owner is None else replica.resting_id(owner, coid)
            if found is None:
                message = f"no open order with id {coid!r}"
                batch.reject(client, reject_report(coid, OP_TEXT[op], UNKNOWN_ORDER, message))
                return
            order_id = found
            events = replica.execute(client, coid, op, order_id, owner, price=cmd.price, qty=cmd.qty)  # type: ignore[arg-type]
        else:
            events = [] if owner is None else replica.execute(client, coid, op, 0, owner)
            if not events:  # nothing to cancel: nothing changed, nothing to sequence
                batch.reject(client, {"type": "cancelled_all", "id": coid, "seq": None, "count": 0})
                return
        if len(events) == 1 and events[0][0] == _REJECTED:
            batch.reject(client, _engine_reject(coid, op, events[0][10]))
            return
        seq = replica.version + 1
        replica.version = seq
        replica.state_hash = state_hash = replica.book.state_hash()
        assert owner is not None
        if op == _NEW:
            entry = LogEntry(
                seq, state_hash, client, coid, op, order_id, owner, cmd.side, cmd.order_type, cmd.tif,
                cmd.stp, 1 if cmd.post_only else 0, cmd.price, cmd.qty,
            )  # fmt: skip
        else:  # only a new carries order attributes; cancel/amend/cancel_all entries keep them 0
            price, qty = cmd.price, cmd.qty
            entry = LogEntry(seq, state_hash, client, coid, op, order_id, owner, 0, 0, 0, 0, 0, price, qty)
        batch.records.append((seq, encode_entry(entry)))
        batch.sequenced.append((client, [coid], op))
        if op == Op.NEW:
            self.dedupe.accept(seq, client, coid)  # type: ignore[arg-type]
        self.dedupe.advance(seq)
        self._event_reports(seq, client, cmd, events, batch)

    def _event_reports(
        self, seq: int, client: str, cmd: OrderCommand, events: Sequence[EventTuple], batch: _Batch
    ) -> None:
        reports, trades = command_reports_json(
            self.market, self.replica, seq, client, cmd.op, cmd.order_type, cmd.client_order_id, events
        )
        for owner_client, text in reports:
            batch.add(owner_client, [text])
        if trades:
            batch.trades.extend(trades)
            self.last_trade = json.loads(trades[-1])

    def _public_trade(self, seq: int, number: int, event: Any) -> dict[str, Any]:
        return public_trade(self.market, seq, number, event)

    # -- commit and publish ----------------------------------------------------------------

    def _commit(self, batch: _Batch) -> bool:
        if not batch.records:
            return True
        try:
            self.journal.append(batch.records)
            return True
        except JournalError as exc:
            # The in-memory replica now holds changes that are not durable: never publish them and
            # stop accepting; a restart recovers the durable state from the journal.
            self.failed = str(exc)
            log.error("sequencer %s: %s; rejecting every order until restarted", self.market.name, exc)
            message = f"not executed: {exc}"
            for client, coids, op in batch.sequenced:
                for coid in coids:
                    report = reject_report(coid, OP_TEXT[op], JOURNAL_UNAVAILABLE, message)
                    batch.rejections.append((client, dumps(report).decode()))
            return False

    def _report_messages(self, batch: _Batch, committed: bool) -> list[Outgoing]:
        by_client = batch.texts
        if not committed:
            by_client = {}
            for client, text in batch.rejections:
                by_client.setdefault(client, []).append(text)
        reports = self.topics.reports
        return [Outgoing(reports(client), encode_report_texts(texts)) for client, texts in by_client.items()]

    def _book_message(self) -> Outgoing:
        if self.failed is not None and self._durable_book is not None:
            # After a failed commit the in-memory book holds commands that are not durable: a
            # reconnect republishes the last book that was, never that state.
            return self._durable_book
        depth = self.replica.book.depth(self.cfg.book_depth)
        payload = encode_book(self.market, self.journal.last_seq, self.state_hash, depth, self.last_trade)
        self._durable_book = Outgoing(self.topics.book, payload, retain=True)
        return self._durable_book

    def _take_snapshot(self, now: float) -> list[Outgoing]:
        """Write <version>.snap and publish the same bytes retained."""
        # The order rows are written straight from the replica's map: a snapshot costs O(resting
        # orders), and building the rows first was about a third of it.
        snap = self.replica.snapshot_data(rows=False)
        data = encode_snapshot(snap, orders=self.replica.orders)
        try:
            self.snapshots.write(snap, data)
            self.snapshots.prune(self.cfg.snapshot_keep)
        except OSError as exc:
            log.error("sequencer %s: cannot write snapshot %d: %s", self.market.name, snap.version, exc)
        self._published_snapshot = data
        self._published_snapshot_version = snap.version
        self._snapshot_orders = len(self.replica.orders)
        self._snapshot_time = now
        return [Outgoing(self.topics.snapshot, self._published_snapshot, retain=True)]

    def _serve_replay(self, requester: str, payload: bytes) -> list[Outgoing]:
        if not valid_client_id(requester):
            log.warning("replay request from invalid requester id %r ignored", requester[:70])
            return []
        try:
            request = decode_replay_request(payload)
        except ValueError as exc:
            log.warning("bad replay request from %s ignored: %s", requester, exc)
            return []
        topic = self.topics.replay_response(requester)
        out = []
        first = request.first
        if request.snapshot:
            out.append(Outgoing(topic, self._published_snapshot))
            first = max(first, self._published_snapshot_version + 1)
        head = self.journal.last_seq
        try:
            records = self.journal.read(first, request.last, limit=REPLAY_MAX_ENTRIES)
        except JournalError as exc:
            log.error("replay for %s failed: %s", requester, exc)
            return out
        raw = [payload for _seq, payload in records]
        if not raw:
            out.append(Outgoing(topic, encode_log_message(self.market.name, head, [], replay=True)))
        for i in range(0, len(raw), LOG_CHUNK):
            chunk = encode_log_message(self.market.name, head, raw[i : i + LOG_CHUNK], replay=True)
            out.append(Outgoing(topic, chunk))
        return out
