"""Execution reports of one sequenced command, built from the engine events it produced.

One function, used by both sides of the log: the sequencer publishes these reports on
reports/<client> after the journal commit, and every edge derives the reports of its own client
from the log entries its replica applies (so a report lost in transit is still delivered). Both
must build byte-identical reports, hence one implementation.
"""

from __future__ import annotations

from typing import Any

from fastbook.market import MarketSpec
from fastbook.replica import Replica
from fastbook.types import EventType, Op
from fastbook.wire import CANCEL_REASON_TEXT, SIDE_TEXT, TYPE_TEXT

_ACCEPTED, _TRADE, _CANCELLED, _DONE, _AMENDED = (
    int(EventType.ACCEPTED),
    int(EventType.TRADE),
    int(EventType.CANCELLED),
    int(EventType.DONE),
    int(EventType.AMENDED),
)
_CANCEL_ALL = int(Op.CANCEL_ALL)


def public_trade(market: MarketSpec, seq: int, number: int, event: Any) -> dict[str, Any]:
    """The public trade of the `number`-th (1-based) TRADE event of the command at `seq`."""
    return {
        "trade_id": f"{seq}-{number}",
        "seq": seq,
        "price": market.ticks_to_price(event[4]),
        "qty": market.lots_to_qty(event[5]),
        "taker_side": SIDE_TEXT[event[3]],
    }


def command_reports(
    market: MarketSpec,
    replica: Replica,
    seq: int,
    client: str,
    op: int,
    order_type: int,
    client_order_id: str | None,
    events: list,
) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """((client id, report) for every report, public trades) of a command sequenced at `seq`.

    `replica` must be the one that just executed the command (its `describe` still knows the
    orders that left the book during it); `client`, `op`, `order_type` and `client_order_id` are
    the command's (a log entry's fields)."""
    tp, lq = market.ticks_to_price, market.lots_to_qty
    reports: list[tuple[str, dict[str, Any]]] = []
    trades: list[dict[str, Any]] = []
    cancelled = 0
    for event in events:
        kind = event[0]
        if kind == _TRADE:
            public = public_trade(market, seq, len(trades) + 1, event)
            trades.append(public)
            taker_owner, taker_coid = replica.describe(event[1])  # type: ignore[misc]
            maker_owner, maker_coid = replica.describe(event[7])  # type: ignore[misc]
            common = {"seq": seq, "trade_id": public["trade_id"], "price": public["price"],
                      "qty": public["qty"]}  # fmt: skip
            taker = {"type": "trade", "id": taker_coid, **common, "side": SIDE_TEXT[event[3]],
                     "liquidity": "taker", "remaining": lq(event[6])}  # fmt: skip
            maker = {"type": "trade", "id": maker_coid, **common, "side": SIDE_TEXT[3 - event[3]],
                     "liquidity": "maker", "remaining": lq(event[9])}  # fmt: skip
            reports.append((replica.clients[taker_owner], taker))
            reports.append((replica.clients[maker_owner], maker))
            continue
        who = replica.describe(event[1])
        if who is None:
            continue
        owner_client, order_coid = replica.clients[who[0]], who[1]
        if kind == _ACCEPTED:
            report = {
                "type": "accepted",
                "id": order_coid,
                "seq": seq,
                "side": SIDE_TEXT[event[3]],
                "order_type": TYPE_TEXT[order_type],
                "price": tp(event[4]) if event[4] else None,
                "qty": lq(event[5]),
            }
        elif kind == _CANCELLED:
            cancelled += 1
            report = {
                "type": "cancelled",
                "id": order_coid,
                "seq": seq,
                "qty": lq(event[5]),
                "reason": CANCEL_REASON_TEXT.get(event[10], str(event[10])),
            }
        elif kind == _DONE:
            report = {"type": "done", "id": order_coid, "seq": seq}
        elif kind == _AMENDED:
            report = {
                "type": "amended",
                "id": order_coid,
                "seq": seq,
                "price": tp(event[4]),
                "qty": lq(event[5]),
                "priority": "kept" if event[10] == 1 else "lost",
            }
        else:
            continue
        reports.append((owner_client, report))
    if op == _CANCEL_ALL:
        summary = {"type": "cancelled_all", "id": client_order_id, "seq": seq, "count": cancelled}
        reports.append((client, summary))
    return reports, trades
