"""Execution reports of one sequenced command, built from the engine events it produced.

Used by both sides of the log: the sequencer publishes these reports on reports/<client> after
the journal commit, and every edge derives the reports of its own client from the log entries its
replica applies (so a report lost in transit is still delivered). Both must build identical
reports: edges call `command_reports` (report dicts, for the Python API); the sequencer calls
`command_reports_json`, which writes the same reports straight as compact JSON text (building and
encoding the dicts was ~40% of the sequencer's time), and its public trades as JSON text too. The
two are byte-for-byte equal (`dumps(report)` of the first is the text of the second, and so for
the trades): tests/test_reports_json.py checks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastbook.engine import EventTuple
from fastbook.engine.types import EventType, Op
from fastbook.log.replica import Replica
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
    events: Sequence[EventTuple],
) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """((client id, report) for every report, public trades) of a command sequenced at `seq`.

    `replica` must be the one that just executed the command (its `describe` still knows the
    orders that left the book during it); `client`, `op`, `order_type` and `client_order_id` are
    the command's (a log entry's fields). Orders the replica does not map (one that maps only its
    own client's orders, `Replica.own_client`) get no report; public trades are all there."""
    tp, lq = market.ticks_to_price, market.lots_to_qty
    reports: list[tuple[str, dict[str, Any]]] = []
    trades: list[dict[str, Any]] = []
    cancelled = 0
    for event in events:
        kind = event[0]
        if kind == _TRADE:
            public = public_trade(market, seq, len(trades) + 1, event)
            trades.append(public)
            taker_of, maker_of = replica.describe(event[1]), replica.describe(event[7])
            common = {"seq": seq, "trade_id": public["trade_id"], "price": public["price"],
                      "qty": public["qty"]}  # fmt: skip
            if taker_of is not None:
                taker = {"type": "trade", "id": taker_of[1], **common, "side": SIDE_TEXT[event[3]],
                         "liquidity": "taker", "remaining": lq(event[6])}  # fmt: skip
                reports.append((replica.clients[taker_of[0]], taker))
            if maker_of is not None:
                maker = {"type": "trade", "id": maker_of[1], **common, "side": SIDE_TEXT[3 - event[3]],
                         "liquidity": "maker", "remaining": lq(event[9])}  # fmt: skip
                reports.append((replica.clients[maker_of[0]], maker))
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


def command_reports_json(
    market: MarketSpec, replica: Replica, seq: int, client: str, op: int, order_type: int,
    client_order_id: str | None, events: Sequence[EventTuple],
) -> tuple[list[tuple[str, str]], list[str]]:  # fmt: skip
    """`command_reports` with every report and public trade as its compact JSON text
    (`wire.dumps(report)` / `wire.dumps(trade)`, decoded).

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
            trades.append(
                f'{{"trade_id":"{trade_id}","seq":{seq},"price":"{price}","qty":"{qty}",'
                f'"taker_side":"{SIDE_TEXT[side]}"}}'
            )
            taker_owner, taker_coid = describe(event[1])  # type: ignore[misc]
            maker_owner, maker_coid = describe(event[7])  # type: ignore[misc]
            common = f'"seq":{seq},"trade_id":"{trade_id}","price":"{price}","qty":"{qty}"'
            taker = (
                f'{{"type":"trade","id":{json_string(taker_coid)},{common},"side":"{SIDE_TEXT[side]}",'
                f'"liquidity":"taker","remaining":"{lq(event[6])}"}}'
            )
            maker = (
                f'{{"type":"trade","id":{json_string(maker_coid)},{common},"side":"{SIDE_TEXT[3 - side]}",'
                f'"liquidity":"maker","remaining":"{lq(event[9])}"}}'
            )
            reports.append((clients[taker_owner], taker))
            reports.append((clients[maker_owner], maker))
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
