"""Hand-written matching scenarios (in the spirit of liquibook's unit tests), run on both books.

Each test builds a small book, sends one command and states the exact event list the contract in
docs/engine.md demands, then checks the resulting book through the queries.
"""

from __future__ import annotations

from typing import Any

from fastbook.engine.types import CancelReason, Event, EventType, OrderType, Reject, Side, Stp, Tif
from tests.support.engine_spec import book_state, parse_snapshot

BUY, SELL = Side.BUY, Side.SELL
MARKET = OrderType.MARKET
IOC, FOK = Tif.IOC, Tif.FOK


def accepted(oid: int, owner: int, side: int, price: int, qty: int) -> Event:
    return Event(EventType.ACCEPTED, oid, owner, side, price, qty, qty)


def trade(
    taker: int,
    owner: int,
    side: int,
    price: int,
    qty: int,
    remaining: int,
    maker: int,
    maker_owner: int,
    maker_remaining: int,
) -> Event:
    return Event(
        EventType.TRADE, taker, owner, side, price, qty, remaining, maker, maker_owner, maker_remaining
    )


def cancelled(oid: int, owner: int, side: int, price: int, qty: int, reason: CancelReason) -> Event:
    return Event(EventType.CANCELLED, oid, owner, side, price, qty, 0, reason=reason)


def done(oid: int, owner: int, side: int, price: int) -> Event:
    return Event(EventType.DONE, oid, owner, side, price, 0, 0)


def rejected(reason: Reject, oid: int, owner: int, side: int, price: int, qty: int) -> Event:
    return Event(EventType.REJECTED, oid, owner, side, price, qty, 0, reason=reason)


def amended(oid: int, owner: int, side: int, price: int, qty: int, priority_kept: bool) -> Event:
    return Event(EventType.AMENDED, oid, owner, side, price, qty, qty, reason=int(priority_kept))


def queue(book: Any, side: Side) -> list[tuple[int, int]]:
    """(order id, remaining) of every resting order on one side, in matching order, via snapshot()."""
    _, records, _ = parse_snapshot(book.snapshot())
    return [(r[0], r[4]) for r in records if r[2] & 0xFF == side]


# ------------------------------------------------------------------------------------ limit GTC


def test_limit_rests_on_empty_book(book: Any) -> None:
    assert book.new(1, 7, BUY, 100, 10) == [accepted(1, 7, BUY, 100, 10)]
    assert book.best_bid() == (100, 10, 1)
    assert book.best_ask() is None
    assert book.order(1) == (1, 7, BUY, 100, 10, 1, Stp.NONE, False)
    assert book.next_stamp == 2
    assert len(book) == 1


def test_limit_full_fill_at_maker_price(book: Any) -> None:
    book.new(1, 7, SELL, 100, 10)
    assert book.new(2, 8, BUY, 103, 10) == [
        accepted(2, 8, BUY, 103, 10),
        trade(2, 8, BUY, 100, 10, 0, 1, 7, 0),
        done(1, 7, SELL, 100),
        done(2, 8, BUY, 103),
    ]
    assert len(book) == 0
    assert book.counts() == (0, 0, 0, 0)
    assert book.next_stamp == 2, "a fully filled taker never queues, so draws no stamp"


def test_limit_partial_fill_remainder_rests(book: Any) -> None:
    book.new(1, 7, SELL, 100, 5)
    assert book.new(2, 8, BUY, 100, 8) == [
        accepted(2, 8, BUY, 100, 8),
        trade(2, 8, BUY, 100, 5, 3, 1, 7, 0),
        done(1, 7, SELL, 100),
    ]
    assert book.best_bid() == (100, 3, 1)
    assert book.best_ask() is None
    assert book.order(2) == (2, 8, BUY, 100, 3, 2, Stp.NONE, False)


def test_limit_partially_fills_maker(book: Any) -> None:
    book.new(1, 7, SELL, 100, 10)
    assert book.new(2, 8, BUY, 100, 4) == [
        accepted(2, 8, BUY, 100, 4),
        trade(2, 8, BUY, 100, 4, 0, 1, 7, 6),
        done(2, 8, BUY, 100),
    ]
    assert book.order(1) == (1, 7, SELL, 100, 6, 1, Stp.NONE, False)
    assert book.best_ask() == (100, 6, 1)


def test_sell_sweeps_bid_levels_best_first_and_rests(book: Any) -> None:
    book.new(1, 1, BUY, 102, 5)
    book.new(2, 1, BUY, 101, 5)
    book.new(3, 1, BUY, 100, 5)
    assert book.new(4, 2, SELL, 101, 12) == [
        accepted(4, 2, SELL, 101, 12),
        trade(4, 2, SELL, 102, 5, 7, 1, 1, 0),
        done(1, 1, BUY, 102),
        trade(4, 2, SELL, 101, 5, 2, 2, 1, 0),
        done(2, 1, BUY, 101),
    ]
    assert book.best_ask() == (101, 2, 1)
    assert book.best_bid() == (100, 5, 1)


def test_limit_that_does_not_cross_rests_beside_the_spread(book: Any) -> None:
    book.new(1, 1, SELL, 101, 5)
    assert book.new(2, 2, BUY, 100, 5) == [accepted(2, 2, BUY, 100, 5)]
    assert book.counts() == (1, 1, 1, 1)


# ---------------------------------------------------------------------------- price-time priority


def test_price_then_time_priority(book: Any) -> None:
    book.new(1, 1, SELL, 100, 10)
    book.new(2, 2, SELL, 100, 10)
    book.new(3, 3, SELL, 100, 10)
    book.new(4, 4, SELL, 99, 10)  # later but better priced: first in line
    events = book.new(9, 9, BUY, 100, 35)
    assert [e[7] for e in events if e[0] == EventType.TRADE] == [4, 1, 2, 3]
    assert [e[4] for e in events if e[0] == EventType.TRADE] == [99, 100, 100, 100]
    assert book.best_ask() == (100, 5, 1)
    assert book.order(3) == (3, 3, SELL, 100, 5, 3, Stp.NONE, False)


def test_partial_fill_keeps_queue_position(book: Any) -> None:
    book.new(1, 1, SELL, 100, 10)
    book.new(2, 2, SELL, 100, 10)
    book.new(3, 3, BUY, 100, 4)
    assert book.order(1) == (1, 1, SELL, 100, 6, 1, Stp.NONE, False), "stamp kept"
    assert queue(book, SELL) == [(1, 6), (2, 10)]
    assert book.new(4, 3, BUY, 100, 8) == [
        accepted(4, 3, BUY, 100, 8),
        trade(4, 3, BUY, 100, 6, 2, 1, 1, 0),
        done(1, 1, SELL, 100),
        trade(4, 3, BUY, 100, 2, 0, 2, 2, 8),
        done(4, 3, BUY, 100),
    ]


def test_execution_at_resting_bid_price(book: Any) -> None:
    book.new(1, 1, BUY, 105, 10)
    events = book.new(2, 2, SELL, 100, 10)
    assert events[1] == trade(2, 2, SELL, 105, 10, 0, 1, 1, 0)


# --------------------------------------------------------------------------------------- market


def test_market_on_empty_book_is_cancelled(book: Any) -> None:
    before = book_state(book)
    assert book.new(1, 1, BUY, 0, 10, type=MARKET) == [
        accepted(1, 1, BUY, 0, 10),
        cancelled(1, 1, BUY, 0, 10, CancelReason.UNFILLED),
    ]
    assert book_state(book) == before


def test_market_sweeps_at_any_price_and_cancels_remainder(book: Any) -> None:
    book.new(1, 1, SELL, 100, 5)
    book.new(2, 1, SELL, 5000, 5)
    assert book.new(3, 2, BUY, 0, 12, type=MARKET) == [
        accepted(3, 2, BUY, 0, 12),
        trade(3, 2, BUY, 100, 5, 7, 1, 1, 0),
        done(1, 1, SELL, 100),
        trade(3, 2, BUY, 5000, 5, 2, 2, 1, 0),
        done(2, 1, SELL, 5000),
        cancelled(3, 2, BUY, 0, 2, CancelReason.UNFILLED),
    ]
    assert len(book) == 0
    assert book.next_stamp == 3


def test_market_full_fill_is_done_with_price_zero(book: Any) -> None:
    book.new(1, 1, BUY, 100, 5)
    assert book.new(2, 2, SELL, 0, 5, type=MARKET, tif=IOC) == [
        accepted(2, 2, SELL, 0, 5),
        trade(2, 2, SELL, 100, 5, 0, 1, 1, 0),
        done(1, 1, BUY, 100),
        done(2, 2, SELL, 0),
    ]


def test_market_fok_fails_atomically_then_succeeds(book: Any) -> None:
    book.new(1, 1, SELL, 100, 5)
    book.new(2, 1, SELL, 900, 5)
    before = book_state(book)
    assert book.new(3, 2, BUY, 0, 11, type=MARKET, tif=FOK) == [
        accepted(3, 2, BUY, 0, 11),
        cancelled(3, 2, BUY, 0, 11, CancelReason.FOK),
    ]
    assert book_state(book) == before
    events = book.new(4, 2, BUY, 0, 10, type=MARKET, tif=FOK)
    assert events[-1] == done(4, 2, BUY, 0)
    assert len(book) == 0


# ------------------------------------------------------------------------------------------ IOC


def test_ioc_partial_fill_cancels_remainder(book: Any) -> None:
    book.new(1, 1, SELL, 100, 4)
    book.new(2, 1, SELL, 102, 4)
    assert book.new(3, 2, BUY, 101, 10, tif=IOC) == [
        accepted(3, 2, BUY, 101, 10),
        trade(3, 2, BUY, 100, 4, 6, 1, 1, 0),
        done(1, 1, SELL, 100),
        cancelled(3, 2, BUY, 101, 6, CancelReason.UNFILLED),
    ]
    assert book.best_bid() is None
    assert book.best_ask() == (102, 4, 1)
    assert book.next_stamp == 3


def test_ioc_without_cross_never_rests(book: Any) -> None:
    book.new(1, 1, SELL, 100, 4)
    before = book_state(book)
    assert book.new(2, 2, BUY, 99, 3, tif=IOC) == [
        accepted(2, 2, BUY, 99, 3),
        cancelled(2, 2, BUY, 99, 3, CancelReason.UNFILLED),
    ]
    assert book_state(book) == before


# ------------------------------------------------------------------------------------------ FOK


def test_fok_fills_across_levels(book: Any) -> None:
    book.new(1, 1, SELL, 100, 4)
    book.new(2, 1, SELL, 101, 4)
    assert book.new(3, 2, BUY, 101, 8, tif=FOK) == [
        accepted(3, 2, BUY, 101, 8),
        trade(3, 2, BUY, 100, 4, 4, 1, 1, 0),
        done(1, 1, SELL, 100),
        trade(3, 2, BUY, 101, 4, 0, 2, 1, 0),
        done(2, 1, SELL, 101),
        done(3, 2, BUY, 101),
    ]


def test_fok_failure_is_atomic(book: Any) -> None:
    book.new(1, 1, SELL, 100, 4)
    book.new(2, 1, SELL, 101, 4)
    book.new(3, 1, SELL, 102, 100)  # beyond the limit: must not count
    before = book_state(book)
    assert book.new(4, 2, BUY, 101, 9, tif=FOK) == [
        accepted(4, 2, BUY, 101, 9),
        cancelled(4, 2, BUY, 101, 9, CancelReason.FOK),
    ]
    assert book_state(book) == before
    assert book.next_stamp == 4


def test_fok_sell_exact_quantity(book: Any) -> None:
    book.new(1, 1, BUY, 100, 4)
    book.new(2, 1, BUY, 99, 4)
    events = book.new(3, 2, SELL, 99, 8, tif=FOK)
    assert [e[0] for e in events] == [1, 3, 5, 3, 5, 5]
    assert len(book) == 0


# ------------------------------------------------------------------------------------ post-only


def test_post_only_rejected_when_it_would_take(book: Any) -> None:
    book.new(1, 1, SELL, 100, 4)
    before = book_state(book)
    assert book.new(2, 2, BUY, 100, 3, post_only=True) == [
        rejected(Reject.POST_ONLY_WOULD_TAKE, 2, 2, BUY, 100, 3)
    ]
    assert book_state(book) == before
    book.new(3, 2, BUY, 99, 3)
    assert book.new(4, 3, SELL, 99, 3, post_only=True) == [
        rejected(Reject.POST_ONLY_WOULD_TAKE, 4, 3, SELL, 99, 3)
    ]


def test_post_only_rests_when_passive(book: Any) -> None:
    book.new(1, 1, SELL, 100, 4)
    assert book.new(2, 2, BUY, 99, 3, post_only=True) == [accepted(2, 2, BUY, 99, 3)]
    assert book.order(2) == (2, 2, BUY, 99, 3, 2, Stp.NONE, True)
    assert book.new(3, 2, SELL, 101, 3, post_only=True) == [accepted(3, 2, SELL, 101, 3)]


def test_post_only_on_empty_book_rests(book: Any) -> None:
    assert book.new(1, 1, SELL, 100, 4, post_only=True) == [accepted(1, 1, SELL, 100, 4)]
    assert book.best_ask() == (100, 4, 1)


# ---------------------------------------------------------------------------------------- amend


def test_amend_qty_down_keeps_priority(book: Any) -> None:
    book.new(1, 1, SELL, 100, 10)
    book.new(2, 2, SELL, 100, 10)
    assert book.amend(1, 1, qty=4) == [amended(1, 1, SELL, 100, 4, priority_kept=True)]
    assert book.order(1) == (1, 1, SELL, 100, 4, 1, Stp.NONE, False)
    assert book.next_stamp == 3
    assert queue(book, SELL) == [(1, 4), (2, 10)]
    assert book.best_ask() == (100, 14, 2)


def test_amend_same_values_keeps_priority_and_state(book: Any) -> None:
    book.new(1, 1, SELL, 100, 10)
    book.new(2, 2, SELL, 100, 10)
    before = book_state(book)
    assert book.amend(1, 1, price=100, qty=10) == [amended(1, 1, SELL, 100, 10, priority_kept=True)]
    assert book.amend(1, 1, price=100) == [amended(1, 1, SELL, 100, 10, priority_kept=True)]
    assert book_state(book) == before


def test_amend_qty_up_loses_priority(book: Any) -> None:
    book.new(1, 1, SELL, 100, 10)
    book.new(2, 2, SELL, 100, 10)
    assert book.amend(1, 1, qty=11) == [amended(1, 1, SELL, 100, 11, priority_kept=False)]
    assert book.order(1) == (1, 1, SELL, 100, 11, 3, Stp.NONE, False)
    assert book.next_stamp == 4
    assert queue(book, SELL) == [(2, 10), (1, 11)]


def test_amend_price_change_loses_priority(book: Any) -> None:
    book.new(1, 1, BUY, 100, 10)
    book.new(2, 2, BUY, 100, 10)
    assert book.amend(1, 1, price=99) == [amended(1, 1, BUY, 99, 10, priority_kept=False)]
    assert book.amend(1, 1, price=100) == [amended(1, 1, BUY, 100, 10, priority_kept=False)]
    assert queue(book, BUY) == [(2, 10), (1, 10)]
    assert book.order(1) == (1, 1, BUY, 100, 10, 4, Stp.NONE, False)
    assert book.counts() == (2, 0, 1, 0)


def test_amend_qty_is_new_open_quantity_after_partial_fill(book: Any) -> None:
    book.new(1, 1, SELL, 100, 10)
    book.new(2, 2, BUY, 100, 4)
    assert book.amend(1, 1, qty=6) == [amended(1, 1, SELL, 100, 6, priority_kept=True)]
    assert book.amend(1, 1, qty=7) == [amended(1, 1, SELL, 100, 7, priority_kept=False)]
    assert book.order(1) == (1, 1, SELL, 100, 7, 2, Stp.NONE, False)


def test_amend_that_crosses_trades_then_rests(book: Any) -> None:
    book.new(1, 1, BUY, 99, 10)
    book.new(2, 2, SELL, 101, 4)
    assert book.amend(1, 1, price=101) == [
        amended(1, 1, BUY, 101, 10, priority_kept=False),
        trade(1, 1, BUY, 101, 4, 6, 2, 2, 0),
        done(2, 2, SELL, 101),
    ]
    assert book.order(1) == (1, 1, BUY, 101, 6, 3, Stp.NONE, False)
    assert book.next_stamp == 4


def test_amend_that_crosses_and_fills_completely_draws_no_stamp(book: Any) -> None:
    book.new(1, 1, BUY, 99, 4)
    book.new(2, 2, SELL, 101, 10)
    assert book.amend(1, 1, price=102) == [
        amended(1, 1, BUY, 102, 4, priority_kept=False),
        trade(1, 1, BUY, 101, 4, 0, 2, 2, 6),
        done(1, 1, BUY, 102),
    ]
    assert book.order(1) is None
    assert book.next_stamp == 3
    assert book.best_ask() == (101, 6, 1)


def test_amend_that_crosses_uses_its_own_stp(book: Any) -> None:
    book.new(1, 1, BUY, 99, 10, stp=Stp.CANCEL_TAKER)
    book.new(2, 1, SELL, 101, 4)
    assert book.amend(1, 1, price=101) == [
        amended(1, 1, BUY, 101, 10, priority_kept=False),
        cancelled(1, 1, BUY, 101, 10, CancelReason.SELF_TRADE),
    ]
    assert book.order(1) is None
    assert book.order(2) == (2, 1, SELL, 101, 4, 2, Stp.NONE, False)
    assert book.next_stamp == 3


def test_post_only_amend_that_would_cross_is_rejected(book: Any) -> None:
    book.new(1, 1, BUY, 99, 10, post_only=True)
    book.new(2, 2, SELL, 101, 4)
    before = book_state(book)
    assert book.amend(1, 1, price=101) == [rejected(Reject.POST_ONLY_WOULD_TAKE, 1, 1, 0, 101, 0)]
    assert book_state(book) == before
    assert book.amend(1, 1, price=100, qty=3) == [amended(1, 1, BUY, 100, 3, priority_kept=False)]
    assert book.order(1) == (1, 1, BUY, 100, 3, 3, Stp.NONE, True), "post-only flag survives an amend"


def test_amend_rejects(book: Any) -> None:
    book.new(1, 1, SELL, 100, 10)
    before = book_state(book)
    cases = [
        ((1, -1, 0, 5), Reject.INVALID_OWNER),
        ((1, 2**32, 0, 5), Reject.INVALID_OWNER),
        ((1, 2, 0, 5), Reject.UNKNOWN_ORDER),
        ((7, 1, 0, 5), Reject.UNKNOWN_ORDER),
        ((0, 1, 0, 5), Reject.UNKNOWN_ORDER),
        ((-3, 1, 0, 5), Reject.UNKNOWN_ORDER),
        ((1, 1, 0, 0), Reject.INVALID_AMEND),
        ((1, 1, 0, -1), Reject.INVALID_QTY),
        ((1, 1, 0, 2**32), Reject.INVALID_QTY),
        ((1, 1, -1, 5), Reject.INVALID_PRICE),
        ((1, 1, 2**53, 5), Reject.INVALID_PRICE),
        ((1, 1, -1, -1), Reject.INVALID_QTY),  # qty is checked before price
        ((7, 1, 0, 0), Reject.UNKNOWN_ORDER),  # lookup before the both-zero check
    ]
    for (oid, owner, price, qty), reason in cases:
        assert book.amend(oid, owner, price=price, qty=qty) == [rejected(reason, oid, owner, 0, price, qty)]
        assert book_state(book) == before


# --------------------------------------------------------------------------------------- cancel


def test_cancel_removes_order_and_level(book: Any) -> None:
    book.new(1, 1, SELL, 100, 10)
    book.new(2, 2, BUY, 100, 4)
    assert book.cancel(1, 1) == [cancelled(1, 1, SELL, 100, 6, CancelReason.USER)]
    assert book.order(1) is None
    assert book.best_ask() is None
    assert book.counts() == (0, 0, 0, 0)
    assert book.cancel(1, 1) == [rejected(Reject.UNKNOWN_ORDER, 1, 1, 0, 0, 0)]


def test_cancel_rejects(book: Any) -> None:
    book.new(1, 1, SELL, 100, 10)
    before = book_state(book)
    assert book.cancel(1, 2) == [rejected(Reject.UNKNOWN_ORDER, 1, 2, 0, 0, 0)]
    assert book.cancel(5, 1) == [rejected(Reject.UNKNOWN_ORDER, 5, 1, 0, 0, 0)]
    assert book.cancel(0, 1) == [rejected(Reject.UNKNOWN_ORDER, 0, 1, 0, 0, 0)]
    assert book.cancel(-1, 1) == [rejected(Reject.UNKNOWN_ORDER, -1, 1, 0, 0, 0)]
    assert book.cancel(1, -1) == [rejected(Reject.INVALID_OWNER, 1, -1, 0, 0, 0)]
    assert book.cancel(-1, 2**32) == [rejected(Reject.INVALID_OWNER, -1, 2**32, 0, 0, 0)]
    assert book_state(book) == before


def test_cancel_middle_of_queue_keeps_others_in_order(book: Any) -> None:
    for oid in (1, 2, 3):
        book.new(oid, oid, BUY, 100, oid)
    book.cancel(2, 2)
    assert queue(book, BUY) == [(1, 1), (3, 3)]
    assert book.best_bid() == (100, 4, 2)


def test_cancel_all_in_ascending_id_order(book: Any) -> None:
    book.new(9, 5, BUY, 98, 1)
    book.new(2, 5, SELL, 105, 2)
    book.new(4, 6, BUY, 99, 3)
    book.new(5, 5, BUY, 99, 4)
    assert book.cancel_all(5) == [
        cancelled(2, 5, SELL, 105, 2, CancelReason.USER),
        cancelled(5, 5, BUY, 99, 4, CancelReason.USER),
        cancelled(9, 5, BUY, 98, 1, CancelReason.USER),
    ]
    assert len(book) == 1
    assert book.order(4) is not None
    assert book.cancel_all(5) == []
    assert book.cancel_all(2**32) == [rejected(Reject.INVALID_OWNER, 0, 2**32, 0, 0, 0)]
    assert book.cancel_all(-1) == [rejected(Reject.INVALID_OWNER, 0, -1, 0, 0, 0)]


# ------------------------------------------------------------------------------------------ STP


def _stp_book(book: Any) -> None:
    """Asks at 100: #1 owner 2 (3 lots) then #2 owner 1 (5 lots); at 101: #3 owner 2 (5 lots)."""
    book.new(1, 2, SELL, 100, 3)
    book.new(2, 1, SELL, 100, 5)
    book.new(3, 2, SELL, 101, 5)


def test_stp_none_allows_self_trade(book: Any) -> None:
    _stp_book(book)
    events = book.new(10, 1, BUY, 101, 10)
    assert [e[7] for e in events if e[0] == EventType.TRADE] == [1, 2, 3]
    assert events[-1] == done(10, 1, BUY, 101)


def test_stp_cancel_taker(book: Any) -> None:
    _stp_book(book)
    assert book.new(10, 1, BUY, 101, 10, stp=Stp.CANCEL_TAKER) == [
        accepted(10, 1, BUY, 101, 10),
        trade(10, 1, BUY, 100, 3, 7, 1, 2, 0),
        done(1, 2, SELL, 100),
        cancelled(10, 1, BUY, 101, 7, CancelReason.SELF_TRADE),
    ]
    assert queue(book, SELL) == [(2, 5), (3, 5)]
    assert book.best_bid() is None


def test_stp_cancel_maker(book: Any) -> None:
    _stp_book(book)
    assert book.new(10, 1, BUY, 101, 10, stp=Stp.CANCEL_MAKER) == [
        accepted(10, 1, BUY, 101, 10),
        trade(10, 1, BUY, 100, 3, 7, 1, 2, 0),
        done(1, 2, SELL, 100),
        cancelled(2, 1, SELL, 100, 5, CancelReason.SELF_TRADE),
        trade(10, 1, BUY, 101, 5, 2, 3, 2, 0),
        done(3, 2, SELL, 101),
    ]
    assert book.best_bid() == (101, 2, 1)
    assert book.best_ask() is None


def test_stp_cancel_both(book: Any) -> None:
    _stp_book(book)
    assert book.new(10, 1, BUY, 101, 10, stp=Stp.CANCEL_BOTH) == [
        accepted(10, 1, BUY, 101, 10),
        trade(10, 1, BUY, 100, 3, 7, 1, 2, 0),
        done(1, 2, SELL, 100),
        cancelled(2, 1, SELL, 100, 5, CancelReason.SELF_TRADE),
        cancelled(10, 1, BUY, 101, 7, CancelReason.SELF_TRADE),
    ]
    assert queue(book, SELL) == [(3, 5)]
    assert book.best_bid() is None


def test_stp_owner_zero_is_an_owner(book: Any) -> None:
    book.new(1, 0, BUY, 100, 5)
    assert book.new(2, 0, SELL, 0, 5, type=MARKET, stp=Stp.CANCEL_TAKER) == [
        accepted(2, 0, SELL, 0, 5),
        cancelled(2, 0, SELL, 0, 5, CancelReason.SELF_TRADE),
    ]
    assert book.order(1) is not None


def test_stp_only_applies_to_the_takers_mode(book: Any) -> None:
    book.new(1, 1, SELL, 100, 5, stp=Stp.CANCEL_BOTH)  # the maker's mode does not matter
    events = book.new(2, 1, BUY, 100, 5)
    assert events[1] == trade(2, 1, BUY, 100, 5, 0, 1, 1, 0)


def test_ioc_with_cancel_maker_cancels_unfilled_rest(book: Any) -> None:
    book.new(1, 1, SELL, 100, 5)
    assert book.new(2, 1, BUY, 100, 5, tif=IOC, stp=Stp.CANCEL_MAKER) == [
        accepted(2, 1, BUY, 100, 5),
        cancelled(1, 1, SELL, 100, 5, CancelReason.SELF_TRADE),
        cancelled(2, 1, BUY, 100, 5, CancelReason.UNFILLED),
    ]
    assert len(book) == 0


def test_fok_with_cancel_maker_skips_own_liquidity(book: Any) -> None:
    _stp_book(book)
    before = book_state(book)
    # Fillable without owner 1's order: 3 at 100 + 5 at 101 = 8.
    assert book.new(10, 1, BUY, 101, 9, tif=FOK, stp=Stp.CANCEL_MAKER) == [
        accepted(10, 1, BUY, 101, 9),
        cancelled(10, 1, BUY, 101, 9, CancelReason.FOK),
    ]
    assert book_state(book) == before, "a failed FOK does not cancel the own maker either"
    assert book.new(11, 1, BUY, 101, 8, tif=FOK, stp=Stp.CANCEL_MAKER) == [
        accepted(11, 1, BUY, 101, 8),
        trade(11, 1, BUY, 100, 3, 5, 1, 2, 0),
        done(1, 2, SELL, 100),
        cancelled(2, 1, SELL, 100, 5, CancelReason.SELF_TRADE),
        trade(11, 1, BUY, 101, 5, 0, 3, 2, 0),
        done(3, 2, SELL, 101),
        done(11, 1, BUY, 101),
    ]


def test_fok_with_cancel_taker_stops_at_own_order(book: Any) -> None:
    _stp_book(book)
    before = book_state(book)
    for stp in (Stp.CANCEL_TAKER, Stp.CANCEL_BOTH):
        # Only the 3 lots ahead of owner 1's order count.
        assert book.new(10, 1, BUY, 101, 4, tif=FOK, stp=stp) == [
            accepted(10, 1, BUY, 101, 4),
            cancelled(10, 1, BUY, 101, 4, CancelReason.FOK),
        ]
        assert book_state(book) == before
    assert book.new(11, 1, BUY, 101, 3, tif=FOK, stp=Stp.CANCEL_TAKER) == [
        accepted(11, 1, BUY, 101, 3),
        trade(11, 1, BUY, 100, 3, 0, 1, 2, 0),
        done(1, 2, SELL, 100),
        done(11, 1, BUY, 101),
    ]


def test_fok_without_stp_counts_own_liquidity(book: Any) -> None:
    _stp_book(book)
    events = book.new(10, 1, BUY, 101, 13, tif=FOK)
    assert events[-1] == done(10, 1, BUY, 101)
    assert len(book) == 0


# -------------------------------------------------------------------------------------- queries


def test_queries_on_empty_book(book: Any) -> None:
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.depth(5) == ([], [])
    assert book.counts() == (0, 0, 0, 0)
    assert len(book) == 0
    assert book.next_stamp == 1
    assert book.order(1) is None
    assert book.state_hash() == 0x910A2DEC89025CC1  # mix64(1)


def test_depth_aggregates_levels_best_first(book: Any) -> None:
    book.new(1, 1, BUY, 100, 3)
    book.new(2, 2, BUY, 100, 4)
    book.new(3, 1, BUY, 98, 5)
    book.new(4, 1, BUY, 99, 1)
    book.new(5, 3, SELL, 103, 2)
    book.new(6, 3, SELL, 101, 7)
    assert book.depth(10) == ([(100, 7, 2), (99, 1, 1), (98, 5, 1)], [(101, 7, 1), (103, 2, 1)])
    assert book.depth(1) == ([(100, 7, 2)], [(101, 7, 1)])
    assert book.depth(0) == ([], [])
    assert book.best_bid() == (100, 7, 2)
    assert book.best_ask() == (101, 7, 1)
    assert book.counts() == (4, 2, 3, 2)
    assert len(book) == 6
    assert book.order(2) == (2, 2, BUY, 100, 4, 2, Stp.NONE, False)
    assert book.order(99) is None
    assert book.order(0) is None
    assert book.order(-5) is None


def test_order_view_carries_stp_and_post_only(book: Any) -> None:
    book.new(1, 4, SELL, 100, 3, stp=Stp.CANCEL_BOTH, post_only=True)
    assert book.order(1) == (1, 4, SELL, 100, 3, 1, Stp.CANCEL_BOTH, True)


def test_extreme_values_rest_and_aggregate(book: Any) -> None:
    max_id, max_owner, max_price, max_qty = 2**63 - 1, 2**32 - 1, 2**53 - 1, 2**32 - 1
    assert book.new(max_id, max_owner, SELL, max_price, max_qty) == [
        accepted(max_id, max_owner, SELL, max_price, max_qty)
    ]
    book.new(1, 0, SELL, max_price, max_qty)
    assert book.best_ask() == (max_price, 2 * max_qty, 2), "level totals exceed 32 bits"
    events = book.new(2, 9, BUY, max_price, max_qty)
    assert events[1] == trade(2, 9, BUY, max_price, max_qty, 0, max_id, max_owner, 0)
    assert book.order(1) == (1, 0, SELL, max_price, max_qty, 2, Stp.NONE, False)


def test_stamps_count_every_queued_order(book: Any) -> None:
    book.new(1, 1, BUY, 100, 3)  # stamp 1
    book.new(2, 1, SELL, 100, 1)  # trades, no stamp
    book.new(3, 1, SELL, 101, 1)  # stamp 2
    book.new(4, 1, BUY, 99, 1, tif=IOC)  # cancelled, no stamp
    book.amend(1, 1, qty=5)  # loses priority: stamp 3
    assert book.next_stamp == 4
    assert book.order(1)[5] == 3
    assert book.order(3)[5] == 2
