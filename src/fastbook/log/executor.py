"""The sequencer's execution: commands that passed intake run on its replica and are sequenced.

A command the engine rejects changed nothing and is only reported; every other one gets the next
gap-free seq, and its log record, its reports (the one writer, `reports.command_reports_json`) and
public trades go into the batch, and a new's client order id into the dedupe window. Two paths
with the same outcome: `execute` (one command), and `execute_news` (a run of news only the book
decides, in one `Book.apply_batch` call, its reports written by `runwriter.write_news_run`, native
or reference as fastbook.backend selects).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from fastbook import backend
from fastbook.engine import EventTuple
from fastbook.engine.types import EventType, Op, Reject
from fastbook.log.batch import Batch
from fastbook.log.dedupe import DedupeWindow
from fastbook.log.replica import Replica
from fastbook.log.reports import command_reports_json
from fastbook.log.runwriter import NewsRun, NewsRunInput
from fastbook.wire.fields import OP_TEXT, UNKNOWN_ORDER
from fastbook.wire.log import LogEntry, LogRun
from fastbook.wire.market import MarketSpec
from fastbook.wire.messages import reject_report
from fastbook.wire.orders import OrderCommand

_REJECTED = int(EventType.REJECTED)
_NEW = int(Op.NEW)
# A run of at least this many accepted news gets its log records from numpy at once; a shorter one
# as entries (numpy costs microseconds a call; the batch makes all its entries records in one call).
NUMPY_RUN = 32

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


def engine_reject(client_order_id: str | None, op: int, reason: int) -> dict[str, Any]:
    """The rejected report of a command the engine refused (it changed nothing)."""
    code = Reject(reason)
    return reject_report(client_order_id, OP_TEXT[op], code.name, ENGINE_REJECT_MESSAGES[code])


class Executor:
    """Runs commands on the sequencer's replica and records what each produced in the batch."""

    def __init__(
        self,
        market: MarketSpec,
        replica: Replica,
        dedupe: DedupeWindow,
        last_trade: dict[str, Any] | None = None,
        write_news_run: Callable[[NewsRunInput], NewsRun] | None = None,
    ) -> None:
        self.market = market
        self.replica = replica
        self.dedupe = dedupe
        self.last_trade = last_trade  # the newest public trade (the book message carries it)
        # Writes a run of news' reports: the selected backend's (fastbook.backend) unless given.
        self.write_news_run: Callable[[NewsRunInput], NewsRun] = (
            backend.select("write_news_run") if write_news_run is None else write_news_run
        )

    def execute(self, client: str, cmd: OrderCommand, batch: Batch) -> None:
        """One command. A new's client order id has passed intake's checks (not a duplicate)."""
        replica = self.replica
        op, coid = cmd.op, cmd.client_order_id
        owner = replica.owners.get(client)
        named = None if owner is not None else client  # a record names the client of a new owner
        order_id = 0
        if op == _NEW:
            if owner is None:
                owner = replica.next_owner()
            order_id = replica.next_order_id
            events = replica.execute(
                client, coid, op, order_id, owner, cmd.side, cmd.order_type, cmd.tif, cmd.stp,
                int(cmd.post_only), cmd.price, cmd.qty,
            )  # fmt: skip
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
            batch.reject(client, engine_reject(coid, op, events[0][10]))
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
        if op == _NEW:
            self.dedupe.accept(seq, client, coid)  # type: ignore[arg-type]
        self.dedupe.advance(seq)
        self._reports(seq, client, cmd, events, batch)

    def _reports(
        self, seq: int, client: str, cmd: OrderCommand, events: Sequence[EventTuple], batch: Batch
    ) -> None:
        reports, trades = command_reports_json(
            self.market, self.replica, seq, client, cmd.op, cmd.order_type, cmd.client_order_id, events
        )
        for owner_client, text in reports:
            batch.add(owner_client, [text])
        if trades:
            batch.trades.extend(trades)
            self.last_trade = json.loads(trades[-1])

    def execute_news(self, client: str, rows: np.ndarray, coids: list[str | None], batch: Batch) -> None:
        """`execute` of each row (news that passed intake's id checks) with one `Book.apply_batch`:
        the book numbers the orders as `execute` would (an id is used only by an accepted new)."""
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
        job = NewsRunInput(
            self.market, client, replica.version, rows, coids, hashes, events, replica.orders,
            replica.clients, engine_reject,
        )  # fmt: skip
        run = self.write_news_run(job)
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
        self, batch: Batch, named: str | None, rows: np.ndarray, hashes: np.ndarray, events: np.ndarray,
        coids: list[str],
    ) -> None:  # fmt: skip
        """The log records of a run's accepted news (the replica's version is still the run's start)."""
        first_seq = self.replica.version + 1
        if len(coids) == len(rows) < NUMPY_RUN:  # every row accepted (a lone order's): no numpy
            for coid, row, post in zip(coids, rows.tolist(), hashes.tolist(), strict=True):
                op, side, otype, tif, stp, post_only, _p, owner, _p2, order_id, price, qty = row
                batch.add_entry(
                    LogEntry(
                        first_seq, post, named, coid, op, order_id, owner, side, otype, tif, stp, post_only,
                        price, qty,
                    )
                )  # fmt: skip
                named = None  # (only the first record names a new client)
                first_seq += 1
            return
        rejected = events["cmd"][events["type"] == _REJECTED]
        if len(coids) >= NUMPY_RUN:
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
