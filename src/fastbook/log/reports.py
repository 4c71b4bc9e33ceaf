"""Execution reports of one sequenced command, built from the engine events it produced: the one
writer of the reports and public trades of docs/wire.md.

Used by both sides of the log: the sequencer publishes these reports on reports/<client> after
the journal commit, and every edge derives the reports of its own client from the log entries its
replica applies (so a report lost in transit is still delivered). Both call `command_reports_json`,
which writes each report straight as its compact JSON text (building and encoding dicts was ~40%
of the sequencer's time); an edge decodes the texts addressed to its client, so a report from the
log is the very object the same report on reports/<client> decodes to. The sequencer's native
fast path for runs of news (log/_runwriter.pyx) is held byte-equal to this by tests/log/test_runwriter.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from fastbook.engine import EventTuple
from fastbook.engine.types import EventType, Op
from fastbook.wire.fields import CANCEL_REASON_TEXT, SIDE_TEXT, TYPE_TEXT, json_string
from fastbook.wire.market import MarketSpec

_ACCEPTED, _TRADE, _CANCELLED, _DONE, _AMENDED = (
    int(EventType.ACCEPTED),
    int(EventType.TRADE),
    int(EventType.CANCELLED),
    int(EventType.DONE),
    int(EventType.AMENDED),
)
_CANCEL_ALL = int(Op.CANCEL_ALL)


class OrderNames(Protocol):
    """What the writer reads of a replica: who owns an order, and each owner's client id."""

    @property
    def clients(self) -> dict[int, str]: ...

    def describe(self, order_id: int) -> tuple[int, str] | None: ...


def public_trade_json(market: MarketSpec, seq: int, number: int, event: Any) -> str:
    """The public trade (JSON text) of the `number`-th (1-based) TRADE event of the command at `seq`."""
    return (
        f'{{"trade_id":"{seq}-{number}","seq":{seq},"price":"{market.ticks_to_price(event[4])}",'
        f'"qty":"{market.lots_to_qty(event[5])}","taker_side":"{SIDE_TEXT[event[3]]}"}}'
    )


def public_trade(market: MarketSpec, seq: int, number: int, event: Any) -> dict[str, Any]:
    """`public_trade_json` decoded (the book message's last trade)."""
    result: dict[str, Any] = json.loads(public_trade_json(market, seq, number, event))
    return result


def command_reports_json(
    market: MarketSpec, replica: OrderNames, seq: int, client: str, op: int, order_type: int,
    client_order_id: str | None, events: Sequence[EventTuple],
) -> tuple[list[tuple[str, str]], list[str]]:  # fmt: skip
    """((client id, report text) for every report, public trade texts) of a command sequenced at
    `seq`, each text what `wire.dumps` writes of the report docs/wire.md specifies.

    `replica` must be the one that just executed the command (its `describe` still knows the
    orders that left the book during it); `client`, `op`, `order_type` and `client_order_id` are
    the command's (a log entry's fields). Orders the replica does not map (one that maps only its
    own client's orders, `Replica.own_client`) get no report; public trades are all there.
    Only client order ids are client text (escaped as json.dumps does, ASCII-only); prices and
    quantities are decimal strings of digits and a point, the rest fixed vocabulary."""
    tp, lq = market.ticks_to_price, market.lots_to_qty
    reports: list[tuple[str, str]] = []
    trades: list[str] = []
    cancelled = 0
    clients = replica.clients
    describe = replica.describe
    for event in events:
        kind = event[0]
        if kind == _TRADE:
            trade_id, price, qty = f"{seq}-{len(trades) + 1}", tp(event[4]), lq(event[5])
            side = event[3]
            trades.append(public_trade_json(market, seq, len(trades) + 1, event))
            taker, maker = describe(event[1]), describe(event[7])
            common = f'"seq":{seq},"trade_id":"{trade_id}","price":"{price}","qty":"{qty}"'
            if taker is not None:
                text = (
                    f'{{"type":"trade","id":{json_string(taker[1])},{common},"side":"{SIDE_TEXT[side]}",'
                    f'"liquidity":"taker","remaining":"{lq(event[6])}"}}'
                )
                reports.append((clients[taker[0]], text))
            if maker is not None:
                text = (
                    f'{{"type":"trade","id":{json_string(maker[1])},{common},"side":"{SIDE_TEXT[3 - side]}",'
                    f'"liquidity":"maker","remaining":"{lq(event[9])}"}}'
                )
                reports.append((clients[maker[0]], text))
            continue
        who = describe(event[1])
        if who is None:
            continue
        head = f'{{"type":"{_KIND_TEXT.get(kind, "")}","id":{json_string(who[1])},"seq":{seq}'
        if kind == _ACCEPTED:
            price = f'"{tp(event[4])}"' if event[4] else "null"
            text = (
                f'{head},"side":"{SIDE_TEXT[event[3]]}","order_type":"{TYPE_TEXT[order_type]}",'
                f'"price":{price},"qty":"{lq(event[5])}"}}'
            )
        elif kind == _CANCELLED:
            cancelled += 1
            reason = CANCEL_REASON_TEXT.get(event[10], str(event[10]))
            text = f'{head},"qty":"{lq(event[5])}","reason":"{reason}"}}'
        elif kind == _DONE:
            text = head + "}"
        elif kind == _AMENDED:
            priority = "kept" if event[10] == 1 else "lost"
            text = f'{head},"price":"{tp(event[4])}","qty":"{lq(event[5])}","priority":"{priority}"}}'
        else:
            continue
        reports.append((clients[who[0]], text))
    if op == _CANCEL_ALL:
        coid = "null" if client_order_id is None else json_string(client_order_id)
        reports.append((client, f'{{"type":"cancelled_all","id":{coid},"seq":{seq},"count":{cancelled}}}'))
    return reports, trades


_KIND_TEXT = {_ACCEPTED: "accepted", _CANCELLED: "cancelled", _DONE: "done", _AMENDED: "amended"}
