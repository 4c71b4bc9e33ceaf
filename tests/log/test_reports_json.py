"""The one writer of execution reports and public trades (`command_reports_json`) against the
reports docs/wire.md specifies, built here field by field as dicts (the oracle): random command
streams of every kind run through a replica, and after every command each report's text must be
`wire.dumps` of the oracle's dict, in the same order, for the same clients, with the same public
trades. A replica that maps only its own client's orders (an edge's) writes exactly that
client's reports of the full one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbook.engine import EventTuple
from fastbook.engine.types import EventType, Op
from fastbook.log.replica import Replica
from fastbook.log.reports import command_reports_json, public_trade
from fastbook.wire.fields import CANCEL_REASON_TEXT, SIDE_TEXT, TYPE_TEXT, dumps
from fastbook.wire.market import MarketSpec

ACCEPTED, TRADE, CANCELLED, DONE, AMENDED = (
    int(EventType.ACCEPTED),
    int(EventType.TRADE),
    int(EventType.CANCELLED),
    int(EventType.DONE),
    int(EventType.AMENDED),
)
CANCEL_ALL = int(Op.CANCEL_ALL)


def expected_reports(
    market: MarketSpec,
    replica: Replica,
    seq: int,
    client: str,
    op: int,
    order_type: int,
    client_order_id: str | None,
    events: Sequence[EventTuple],
) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """The reports and public trades of docs/wire.md as dicts, field by field (the oracle)."""
    tp, lq = market.ticks_to_price, market.lots_to_qty
    reports: list[tuple[str, dict[str, Any]]] = []
    trades: list[dict[str, Any]] = []
    cancelled = 0
    for event in events:
        kind = event[0]
        if kind == TRADE:
            public = {
                "trade_id": f"{seq}-{len(trades) + 1}",
                "seq": seq,
                "price": market.ticks_to_price(event[4]),
                "qty": market.lots_to_qty(event[5]),
                "taker_side": SIDE_TEXT[event[3]],
            }
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
        if kind == ACCEPTED:
            report = {
                "type": "accepted",
                "id": order_coid,
                "seq": seq,
                "side": SIDE_TEXT[event[3]],
                "order_type": TYPE_TEXT[order_type],
                "price": tp(event[4]) if event[4] else None,
                "qty": lq(event[5]),
            }
        elif kind == CANCELLED:
            cancelled += 1
            report = {
                "type": "cancelled",
                "id": order_coid,
                "seq": seq,
                "qty": lq(event[5]),
                "reason": CANCEL_REASON_TEXT.get(event[10], str(event[10])),
            }
        elif kind == DONE:
            report = {"type": "done", "id": order_coid, "seq": seq}
        elif kind == AMENDED:
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
    if op == CANCEL_ALL:
        summary = {"type": "cancelled_all", "id": client_order_id, "seq": seq, "count": cancelled}
        reports.append((client, summary))
    return reports, trades


MARKETS = ["BTC-USD", "ETH-USD:tick=0.5:lot=0.0001", "IDX:tick=5:lot=1"]
# Client order ids are printable ASCII without spaces: quotes and backslashes need escaping.
COIDS = ["o-1", 'q"uote', "back\\slash", "a/b", "~!@#$%^&*()", "x" * 64, "</script>", "{}[]"]


def run_stream(market_spec: str, seed: int, length: int) -> set[str]:
    """Runs the stream; returns the kinds of report it compared."""
    rng = random.Random(seed)
    market = MarketSpec.parse(market_spec)
    replica = Replica(market)
    edge = Replica(market, own_client="alice")  # maps only alice's orders, as an edge does
    clients = ["alice", "bob", "carol"]
    open_orders: list[tuple[str, str]] = []  # (client, coid)
    kinds: set[str] = set()
    for step in range(length):
        client = rng.choice(clients)
        owner = replica.owners.get(client) or replica.next_owner()
        roll = rng.randrange(100)
        mine = [coid for c, coid in open_orders if c == client]
        if roll < 10 and mine:
            coid = rng.choice(mine)
            op, args = Op.CANCEL, dict(order_id=replica.resting_id(owner, coid), owner=owner)
        elif roll < 20 and mine:
            coid = rng.choice(mine)
            price = rng.choice([0, rng.randint(95, 105)])
            order_id = replica.resting_id(owner, coid)
            args = dict(order_id=order_id, owner=owner, price=price, qty=rng.randint(1, 9))
            op = Op.AMEND
        elif roll < 23:
            coid = rng.choice([None, f"all-{step}"])
            op, args = Op.CANCEL_ALL, dict(order_id=0, owner=owner)
        else:
            coid = f"{rng.choice(COIDS)}{step}"[-64:]
            order_type = rng.choice([1, 1, 1, 2])
            tif = rng.choice([1, 1, 2, 3]) if order_type == 1 else 2
            op = Op.NEW
            args = dict(
                order_id=replica.next_order_id,
                owner=owner,
                side=rng.choice([1, 2]),
                order_type=order_type,
                tif=tif,
                stp=rng.choice([0, 0, 1, 2, 3]),
                post_only=int(order_type == 1 and tif == 1 and rng.randrange(8) == 0),
                price=rng.randint(95, 105) if order_type == 1 else 0,
                qty=rng.randint(1, 12),
            )
        events = replica.execute(client, coid, int(op), **args)
        edge_events = edge.execute(client, coid, int(op), **args)
        assert edge_events == events
        if len(events) == 1 and events[0][0] == 2:  # rejected: nothing sequenced, no reports
            continue
        if op == Op.NEW and replica.resting_id(owner, coid) is not None:
            open_orders.append((client, coid))
        open_orders = [(c, o) for c, o in open_orders if replica.resting_id(replica.owners[c], o) is not None]
        call = (market, replica, step + 1, client, int(op), args.get("order_type", 0), coid, events)
        reports, trades = expected_reports(*call)
        texts, json_trades = command_reports_json(*call)
        assert texts == [(c, dumps(report).decode()) for c, report in reports], f"step {step}"
        assert json_trades == [dumps(trade).decode() for trade in trades]
        if trades:
            assert public_trade(market, step + 1, len(trades), events_of(events, TRADE)[-1]) == trades[-1]
        edge_texts, edge_trades = command_reports_json(market, edge, *call[2:])
        assert [t for t in edge_texts if t[0] == "alice"] == [t for t in texts if t[0] == "alice"]
        assert edge_trades == json_trades
        kinds.update(report["type"] for _client, report in reports)
    return kinds


@pytest.mark.parametrize("market_spec", MARKETS)
def test_a_long_stream_of_every_report_kind(market_spec: str) -> None:
    kinds = run_stream(market_spec, seed=7, length=3000)
    assert kinds == {"accepted", "trade", "cancelled", "done", "amended", "cancelled_all"}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MARKETS), st.integers(0, 2**32 - 1), st.integers(1, 300))
def test_random_streams(market_spec: str, seed: int, length: int) -> None:
    run_stream(market_spec, seed, length)


def events_of(events: Sequence[EventTuple], kind: int) -> list[EventTuple]:
    return [event for event in events if event[0] == kind]
