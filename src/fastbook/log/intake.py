"""The sequencer's intake: an order message becomes commands for the executor, or rejects.

It checks the client id (the last topic level), reads the message (natively into command rows when
every order in it is valid and in the common form, `wire._orderparse.parse_orders`; else
`wire.orders.decode_orders`, which names what is wrong with each order), refuses a `new` whose
client order id is in the dedupe window or names an open order, and, of a message read natively,
hands each run of two or more news only the book decides to `Executor.execute_news` in one call
and every other command to `Executor.execute`. The outcome is the same either way.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

import numpy as np

from fastbook.engine.types import Op
from fastbook.log.batch import Batch
from fastbook.log.dedupe import DedupeWindow
from fastbook.log.executor import Executor
from fastbook.log.replica import Replica
from fastbook.wire._orderparse import parse_orders
from fastbook.wire.fields import DUPLICATE_CLIENT_ORDER_ID, INVALID_CLIENT_ID, JOURNAL_UNAVAILABLE, OP_TEXT
from fastbook.wire.market import MarketSpec
from fastbook.wire.messages import reject_report
from fastbook.wire.orders import OrderCommand, WireReject, decode_orders, valid_client_id

_NEW = int(Op.NEW)
# Messages of at most this many orders find their runs of news with plain Python (a numpy call
# costs about as much as a few dozen list items).
_FEW = 16

# Reads an order message into (COMMAND_DTYPE rows, client order ids) when every order in it is
# valid, else None (then decode_orders names what is wrong).
OrderReader = Callable[[bytes], tuple[np.ndarray, list[str | None]] | None]


def native_reader(market: MarketSpec, max_payload: int) -> OrderReader:
    """The native order reader for `market` (None past max_payload: decode_orders rejects it)."""
    steps = (market._tick_places, market._tick_units, market._lot_places, market._lot_units)  # noqa: SLF001
    return lambda payload: parse_orders(payload, *steps, max_payload=max_payload)


class Intake:
    def __init__(
        self, market: MarketSpec, max_payload: int, replica: Replica, dedupe: DedupeWindow, executor: Executor
    ) -> None:
        self.market = market
        self.max_payload = max_payload
        self.replica = replica
        self.dedupe = dedupe
        self.executor = executor
        # None: every message takes decode_orders and the per-command path. Tests replace it.
        self.read_orders: OrderReader | None = native_reader(market, max_payload)

    def on_orders(self, client: str, payload: bytes, batch: Batch, failed: str | None = None) -> None:
        """Everything `client`'s message says, into `batch`. `failed`: why the sequencer stopped
        accepting orders (then every valid order is rejected with it)."""
        if not valid_client_id(client):
            message = "client id (the last topic level) must be 1-64 characters of A-Z a-z 0-9 . _ -"
            batch.reject(client, reject_report(None, None, INVALID_CLIENT_ID, message))
            return
        if failed is None and self.read_orders is not None:
            parsed = self.read_orders(payload)  # None past max_payload too (decode_orders rejects it)
            if parsed is not None:
                self._rows(client, parsed[0], parsed[1], batch)
                return
        for item in decode_orders(payload, self.market, self.max_payload):
            if isinstance(item, WireReject):
                batch.reject(client, item.report())
            elif failed is not None:
                message = f"the sequencer stopped accepting orders: {failed}"
                op = OP_TEXT[item.op]
                batch.reject(client, reject_report(item.client_order_id, op, JOURNAL_UNAVAILABLE, message))
            else:
                self.command(client, item, batch)

    def command(self, client: str, cmd: OrderCommand, batch: Batch) -> None:
        """One command: a new whose client order id cannot be used again is rejected here, the
        rest is the executor's."""
        coid = cmd.client_order_id
        if cmd.op == _NEW:
            assert coid is not None
            original = self.dedupe.accepted_at(client, coid)
            if original is not None:  # 0: accepted before seqs were kept with the ids
                where = f" at seq {original}" if original else ""
                message = f"client order id {coid!r} was already accepted{where}; this copy was not executed"
                batch.reject(client, reject_report(coid, "new", DUPLICATE_CLIENT_ORDER_ID, message))
                return
            owner = self.replica.owners.get(client)
            if owner is not None and self.replica.resting_id(owner, coid) is not None:
                # Accepted before the dedupe window but still open: the id cannot name two orders.
                message = f"client order id {coid!r} names an open order; this copy was not executed"
                batch.reject(client, reject_report(coid, "new", DUPLICATE_CLIENT_ORDER_ID, message))
                return
        self.executor.execute(client, cmd, batch)

    def _rows(self, client: str, rows: np.ndarray, coids: list[str | None], batch: Batch) -> None:
        """A message read natively: COMMAND_DTYPE rows, all valid."""
        ops = rows["op"].tolist()
        n = len(ops)
        if n <= _FEW:  # where the runs of news stop (of a lone order: without numpy)
            others = [i for i, op in enumerate(ops) if op != _NEW]
        else:
            others = np.flatnonzero(rows["op"] != _NEW).tolist()
        others.append(n)
        i = 0
        while i < n:
            if ops[i] == _NEW:
                end = self.news_run_end(client, coids, i, others[bisect_right(others, i)])
                if end > i + 1:
                    whole = i == 0 and end == n  # (the usual case: no slices to make)
                    run_rows, run_coids = (rows, coids) if whole else (rows[i:end], coids[i:end])
                    self.executor.execute_news(client, run_rows, run_coids, batch)
                    i = end
                    continue
                if end > i:
                    # A run of one (a lone order's): the per-command path, with no numpy arrays to
                    # build (in process, 52 -> 46 us of a lone order's batch); its id passed.
                    self.executor.execute(client, self._row_command(rows, coids, i), batch)
                    i = end
                    continue
            self.command(client, self._row_command(rows, coids, i), batch)
            i += 1

    @staticmethod
    def _row_command(rows: np.ndarray, coids: list[str | None], i: int) -> OrderCommand:
        op, side, otype, tif, stp, post_only, _p, _o, _p2, _id, price, qty = rows[i].tolist()
        return OrderCommand(op, coids[i], side, otype, tif, stp, bool(post_only), price, qty)

    def news_run_end(self, client: str, coids: list[str | None], start: int, stop: int) -> int:
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
