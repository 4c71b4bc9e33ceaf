"""The TUI's session model: short refs, human report lines, position and PnL, the status mapping."""

from __future__ import annotations

from fractions import Fraction

import pytest

from fastbook.apps.tui.describe import describe_report, describe_trade
from fastbook.apps.tui.liveness import ReplicaState, ReplicaView, replica_state
from fastbook.apps.tui.position import Position, format_fraction
from fastbook.apps.tui.refs import OrderRefs, UnknownRef
from fastbook.apps.tui.session import TradingSession


def test_refs_number_ids_in_order_and_never_reuse_a_number() -> None:
    refs = OrderRefs()
    assert refs.label("1a232f061c1846a-3") == "#1"
    assert refs.label("1a232f061c1846a-4") == "#2"
    assert refs.label("1a232f061c1846a-3") == "#1"
    assert refs.resolve("#2") == "1a232f061c1846a-4"
    assert refs.resolve("o-7") == "o-7"  # a full id passes through
    refs.forget("1a232f061c1846a-4")
    with pytest.raises(UnknownRef, match="no order #2"):
        refs.resolve("#2")
    assert refs.label("new-id") == "#3"


def test_reports_read_as_human_lines() -> None:
    refs = OrderRefs()
    accepted = {"type": "accepted", "id": "x-1", "seq": 4, "side": "buy", "order_type": "limit",
                "price": "100.25", "qty": "1.500"}
    assert describe_report(accepted, refs) == "#1 ACCEPTED buy 1.500 @ 100.25"
    fill = {"type": "trade", "id": "x-1", "seq": 5, "trade_id": "5-1", "price": "100.25", "qty": "1.000",
            "side": "buy", "liquidity": "maker", "remaining": "0.500"}
    assert describe_report(fill, refs) == "#1 FILLED 1.000 @ 100.25 maker (buy, 0.500 left)"
    last = dict(fill, qty="0.500", remaining="0.000")
    assert describe_report(last, refs) == "#1 FILLED 0.500 @ 100.25 maker (buy)"
    stp = {"type": "cancelled", "id": "x-2", "seq": 6, "qty": "1.000", "reason": "self_trade"}
    assert describe_report(stp, refs) == "#2 CANCELLED 1.000 (self-trade prevented)"
    rejected = {"type": "rejected", "id": "x-9", "op": "new", "code": "INVALID_PRICE",
                "message": "price 100.255 is not a multiple of 0.01"}
    assert describe_report(rejected, refs) == (
        "REJECTED new: INVALID_PRICE price 100.255 is not a multiple of 0.01")
    assert refs.known("x-9") is None  # a rejected new order gets no ref
    resent = {"type": "rejected", "id": "x-1", "op": "new", "code": "DUPLICATE_CLIENT_ORDER_ID",
              "message": "client order id 'x-1' was already accepted at seq 4; this copy was not executed"}
    assert describe_report(resent, refs) == "#1 ALREADY ACCEPTED at seq 4 (this copy not executed)"
    assert describe_report({"type": "cancelled_all", "id": None, "seq": 7, "count": 2}, refs) == (
        "CANCELLED ALL (2 orders)")
    assert describe_trade({"price": "100.25", "qty": "1.000", "taker_side": "sell"}) == (
        "TRADE 1.000 @ 100.25 sell")


def test_position_average_and_realised_pnl_are_exact() -> None:
    p = Position()
    p.fill("buy", "100.00", "1.000")
    p.fill("buy", "101.00", "2.000")
    assert p.qty == 3 and p.average_price == Fraction(302, 3)  # 100.666...: not a decimal
    p.fill("sell", "102.00", "1.500")
    assert p.realised == Fraction(3, 2) * (102 - Fraction(302, 3))  # exactly 2.0
    assert p.realised == 2
    p.fill("sell", "99.00", "2.500")  # closes 1.5, opens a 1.0 short at 99
    assert p.qty == -1 and p.average_price == 99
    assert p.realised == 2 + Fraction(3, 2) * (99 - Fraction(302, 3))
    assert p.summary() == "pos -1.000 @ 99.0000  realised -0.50"
    p.fill("buy", "98.50", "1")
    assert p.qty == 0 and p.summary() == "pos flat  realised 0.00"  # -0.50 + 0.50
    assert format_fraction(Fraction(-1, 3), 2) == "-0.33"


def test_session_tracks_fills_and_forgets_refs_of_finished_orders() -> None:
    session = TradingSession()
    session.on_event("report", {"type": "accepted", "id": "a", "seq": 1, "side": "sell",
                                "order_type": "limit", "price": "10.00", "qty": "2.000"})
    line = session.on_event("report", {"type": "trade", "id": "a", "seq": 2, "trade_id": "2-1",
                                       "price": "10.00", "qty": "2.000", "side": "sell",
                                       "liquidity": "maker", "remaining": "0.000"})
    assert line == "#1 FILLED 2.000 @ 10.00 maker (sell)"
    session.on_event("report", {"type": "done", "id": "a", "seq": 2})
    assert session.on_event("trade", {"price": "10.00", "qty": "2.000", "taker_side": "buy"}) is None
    view = session.view()
    assert view.fills == 1 and view.position.qty == -2
    assert view.last_trade is not None and view.tape[0]["price"] == "10.00"
    with pytest.raises(UnknownRef):
        session.resolve("#1")
    assert session.label_orders([{"id": "b", "side": "buy"}]) == [{"id": "b", "side": "buy", "ref": "#2"}]


@pytest.mark.parametrize(
    ("connected", "in_sync", "synced_once", "stalled", "state"),
    [
        (False, True, True, False, ReplicaState.DISCONNECTED),
        (True, False, False, False, ReplicaState.SYNCING),
        (True, False, True, False, ReplicaState.RESYNCING),
        (True, True, True, True, ReplicaState.STALLED),
        (True, True, True, False, ReplicaState.SYNCED),
    ],
)
def test_replica_state_is_one_mapping(connected: bool, in_sync: bool, synced_once: bool, stalled: bool,
                                      state: ReplicaState) -> None:
    view = ReplicaView(connected, 7, 0xAB, 0, in_sync, synced_once, stalled)
    assert replica_state(view) is state
