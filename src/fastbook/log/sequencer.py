"""The per-market sequencer node: validate, execute, sequence, journal (group commit), publish.

For each `on_messages` batch: every order is decoded (`fastbook.wire`), mapped to engine ids and
executed on the sequencer's own replica. A command the engine rejects changed nothing and is only
reported; every other command gets the next gap-free seq and becomes a log entry. The batch's
entries are appended to the journal with one fsync, and only then are the log messages, reports,
trades and the retained book returned for publishing. Nothing that is not durable is published.

The hot path: a message whose orders are all valid and in the common form is read natively into
command rows (`read_orders`, src/fastbook/wire/_orderparse.pyx); runs of news in it whose client order ids
need no check against the book execute in one `Book.apply_batch` call (the book numbers the
orders), their log records are built with numpy (`LogRun.from_commands`) and
`runwriter.write_news_run` writes their reports in C. Everything else
takes the per-command path (`_execute`); both publish the same bytes.
"""

from __future__ import annotations

import json
import logging
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from fastbook import backend
from fastbook.engine import EventTuple
from fastbook.engine.types import EventType, Op, Reject
from fastbook.log.journal import Journal, JournalError
from fastbook.log.recovery import check_market_file, recover
from fastbook.log.replay import LOG_CHUNK, ReplayService
from fastbook.log.reports import command_reports_json, public_trade
from fastbook.log.runwriter import NewsRun
from fastbook.log.snapshot_policy import SnapshotPolicy
from fastbook.log.snapshots import SnapshotStore
from fastbook.transport.node import Incoming, Outgoing, RetainedIncoming
from fastbook.wire._orderparse import parse_orders
from fastbook.wire.fields import (
    DUPLICATE_CLIENT_ORDER_ID,
    INVALID_CLIENT_ID,
    JOURNAL_UNAVAILABLE,
    OP_TEXT,
    UNKNOWN_ORDER,
    dumps,
)
from fastbook.wire.log import LogEntry, LogRun, encode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.messages import (
    BookWriter,
    encode_report_texts,
    encode_trades,
    reject_report,
    retained_command_report,
)
from fastbook.wire.orders import OrderCommand, WireReject, decode_orders, valid_client_id
from fastbook.wire.topics import DEFAULT_PREFIX, Topics

log = logging.getLogger(__name__)


_TRADE = int(EventType.TRADE)
_REJECTED = int(EventType.REJECTED)
_NEW = int(Op.NEW)

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


# The MQTT QoS the log is published with. A replica detects a gap itself (seq, the head in the book
# and the heartbeat) and replays it from the journal, so QoS1's PUBACKs (a write by every replica
# and a read by the broker per message) buy no correctness here; bench/README.md has both measured.
LOG_QOS = 0


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
        # The sequenced records, in seq order: runs, and the per-command path's entries not yet
        # made into one (see `run`). The journal and the log get them as one LogRun.
        self._runs: list[LogRun] = []
        self._entries: list[LogEntry] = []
        self.count = 0  # records sequenced
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

    def add_entry(self, entry: LogEntry) -> None:
        self._entries.append(entry)
        self.count += 1

    def add_run(self, run: LogRun) -> None:
        if self._entries:
            self._runs.append(LogRun.from_entries(self._entries))
            self._entries = []
        self._runs.append(run)
        self.count += len(run)

    def run(self) -> LogRun:
        """Every record of the batch, in order."""
        if self._entries:
            self._runs.append(LogRun.from_entries(self._entries))
            self._entries = []
        self._runs = [LogRun.concat(self._runs)]
        return self._runs[0]

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
            check_market_file(self.data_dir, cfg.market)
            self.snapshots = SnapshotStore(self.data_dir / "snapshots")
            recovered = recover(cfg.market, self.journal, self.snapshots, cfg.dedupe_window, self.data_dir)
            self.replica, self.dedupe = recovered.replica, recovered.dedupe
            self.last_trade: dict[str, Any] | None = recovered.last_trade
            self.failed: str | None = None
            self._durable_book: Outgoing | None = None  # the last book built from durable state
            self._book_writer = BookWriter(cfg.market)
            self.snapshot_policy = SnapshotPolicy(
                self.snapshots, cfg.snapshot_every, cfg.snapshot_interval, cfg.snapshot_keep
            )
            self.replay = ReplayService(cfg.market.name, self.topics, self.journal)
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
        out: list[Outgoing] = []
        if self.snapshot_policy.due_on_tick(self.version, now) and self.failed is None:
            out += self._take_snapshot(now)
        if self._log_time is None or now - self._log_time >= self.cfg.heartbeat_interval:
            # An empty log message carrying the head: a replica that lost the last messages of a
            # burst learns it is behind even when nothing else is published.
            self._log_time = now
            head = self.journal.last_seq
            out.append(Outgoing(self.topics.log, encode_log_message(self.market.name, head), qos=LOG_QOS))
        return out

    def next_deadline(self, now: float) -> float | None:
        """When on_tick is due: the idle heartbeat, or the timed snapshot once the version moved."""
        heartbeat = now if self._log_time is None else self._log_time + self.cfg.heartbeat_interval
        snapshot = self.snapshot_policy.next_due(self.version, now) if self.failed is None else None
        return heartbeat if snapshot is None else min(heartbeat, snapshot)

    def close(self) -> list[Outgoing]:
        self.journal.close()
        return []

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        batch = _Batch()
        replays: list[tuple[str, bytes]] = []
        start_version = self.version
        for message in messages:
            topic, payload = message
            if type(message) is RetainedIncoming:  # a stored copy resent at each subscribe: not a command
                log.warning("ignored a retained message on %s", topic)
                if topic.startswith(self._orders_prefix):
                    batch.reject(topic[len(self._orders_prefix) :], retained_command_report())
            elif topic.startswith(self._orders_prefix):
                self._on_orders(topic[len(self._orders_prefix) :], bytes(payload), batch)
            elif topic.startswith(self._replay_prefix):
                replays.append((topic[len(self._replay_prefix) :], bytes(payload)))
        out: list[Outgoing] = []
        committed = self._commit(batch)
        if committed and batch.count:
            head = self.journal.last_seq
            run = batch.run()
            for i in range(0, len(run), LOG_CHUNK):
                payload = encode_log_message(self.market.name, head, run.cut(i, i + LOG_CHUNK))
                out.append(Outgoing(self.topics.log, payload, qos=LOG_QOS))
            self._log_time = self.clock()
        out.extend(self._report_messages(batch, committed))
        if committed and batch.trades:
            out.append(Outgoing(self.topics.trades, encode_trades(self.market, batch.trades)))
        if committed and self.version != start_version:
            out.append(self._book_message())
            if self.snapshot_policy.due_after_batch(self.version):
                out.extend(self._take_snapshot(self.clock()))
        policy = self.snapshot_policy
        for requester, payload in replays:
            out.extend(self.replay.serve(requester, payload, policy.published, policy.published_version))
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
        if not run.accepted_ids:
            if new_owner:
                del replica.owners[client]
                del replica.clients[owner]
            return
        self._add_run_records(batch, client if new_owner else None, rows, hashes, events, run.accepted_coids)
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

    def _add_run_records(
        self,
        batch: _Batch,
        named: str | None,
        rows: np.ndarray,
        hashes: np.ndarray,
        events: np.ndarray,
        coids: list[str],
    ) -> None:
        """The log records of a run's accepted news (the replica's version is still the run's start).
        A long run's with numpy; a short one's as entries (numpy costs microseconds a call, so
        the batch turns all its entries into records with one call at the end)."""
        first_seq = self.replica.version + 1
        rejected = events["cmd"][events["type"] == _REJECTED]
        if len(coids) >= 32:
            accepted = np.ones(len(rows), dtype=bool)
            accepted[rejected] = False
            batch.add_run(LogRun.from_commands(rows[accepted], first_seq, hashes[accepted], coids, named))
            return
        skip = set(rejected.tolist())
        seq = first_seq
        for i, (row, post) in enumerate(zip(rows.tolist(), hashes.tolist(), strict=True)):
            if i in skip:
                continue
            op, side, otype, tif, stp, post_only, _p, owner, _p2, order_id, price, qty = row
            coid = coids[seq - first_seq]
            client = named if seq == first_seq else None
            batch.add_entry(
                LogEntry(
                    seq, post, client, coid, op, order_id, owner, side, otype, tif, stp, post_only, price, qty
                )
            )
            seq += 1

    def _execute(self, client: str, cmd: OrderCommand, batch: _Batch) -> None:
        replica = self.replica
        op, coid = cmd.op, cmd.client_order_id
        owner = replica.owners.get(client)
        named = None if owner is not None else client  # a record names the client of a new owner
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
                seq, state_hash, named, coid, op, order_id, owner, cmd.side, cmd.order_type, cmd.tif,
                cmd.stp, 1 if cmd.post_only else 0, cmd.price, cmd.qty,
            )  # fmt: skip
        else:  # only a new carries order attributes; cancel/amend/cancel_all entries keep them 0
            price, qty = cmd.price, cmd.qty
            entry = LogEntry(seq, state_hash, named, coid, op, order_id, owner, 0, 0, 0, 0, 0, price, qty)
        batch.add_entry(entry)
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
        if not batch.count:
            return True
        try:
            self.journal.append(batch.run())
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
        payload = self._book_writer.encode(self.journal.last_seq, self.state_hash, depth, self.last_trade)
        self._durable_book = Outgoing(self.topics.book, payload, retain=True)
        return self._durable_book

    # -- snapshots ---------------------------------------------------------------------------

    @property
    def _published_snapshot(self) -> bytes:
        return self.snapshot_policy.published

    def _take_snapshot(self, now: float) -> list[Outgoing]:
        """Write <version>.snap and publish the same bytes retained."""
        data = self.snapshot_policy.take(self.replica, now)
        return [Outgoing(self.topics.snapshot, data, retain=True)]
