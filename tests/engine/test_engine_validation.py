"""Bad input on both books: in-range but invalid values are REJECTED events in the contract's
validation order; wrong Python types and out-of-int64 values raise ValueError. The state is unchanged
either way."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from fastbook.engine.types import Event, EventType, OrderType, Reject, Side, Stp, Tif
from tests.support.engine_spec import book_state

BUY, SELL = Side.BUY, Side.SELL
VALID_NEW: dict[str, int] = dict(
    order_id=50, owner=3, side=BUY, price=100, qty=5, type=OrderType.LIMIT, tif=Tif.GTC, post_only=0, stp=0
)

# (overrides of VALID_NEW, expected reject). Several fields wrong at once test "first failure wins".
NEW_REJECTS: list[tuple[dict[str, int], Reject]] = [
    (dict(order_id=0), Reject.INVALID_ORDER_ID),
    (dict(order_id=-1), Reject.INVALID_ORDER_ID),
    (dict(order_id=-(2**63)), Reject.INVALID_ORDER_ID),
    (dict(order_id=0, owner=-1, side=9, qty=0), Reject.INVALID_ORDER_ID),
    (dict(owner=-1), Reject.INVALID_OWNER),
    (dict(owner=2**32), Reject.INVALID_OWNER),
    (dict(owner=2**32, side=0, type=0), Reject.INVALID_OWNER),
    (dict(side=0), Reject.INVALID_SIDE),
    (dict(side=3), Reject.INVALID_SIDE),
    (dict(side=-1, type=7), Reject.INVALID_SIDE),
    (dict(type=0), Reject.INVALID_TYPE),
    (dict(type=3), Reject.INVALID_TYPE),
    (dict(type=3, tif=0), Reject.INVALID_TYPE),
    (dict(tif=0), Reject.INVALID_TIF),
    (dict(tif=4), Reject.INVALID_TIF),
    (dict(tif=4, stp=9), Reject.INVALID_TIF),
    (dict(stp=-1), Reject.INVALID_STP),
    (dict(stp=4), Reject.INVALID_STP),
    (dict(stp=4, qty=0), Reject.INVALID_STP),
    (dict(qty=0), Reject.INVALID_QTY),
    (dict(qty=-5), Reject.INVALID_QTY),
    (dict(qty=2**32), Reject.INVALID_QTY),
    (dict(qty=0, price=0), Reject.INVALID_QTY),
    (dict(price=0), Reject.INVALID_PRICE),
    (dict(price=-1), Reject.INVALID_PRICE),
    (dict(price=2**53), Reject.INVALID_PRICE),
    (dict(price=2**63 - 1), Reject.INVALID_PRICE),
    (dict(type=OrderType.MARKET, price=100), Reject.INVALID_PRICE),
    (dict(type=OrderType.MARKET, price=-1), Reject.INVALID_PRICE),
    (dict(price=0, post_only=1, tif=Tif.IOC), Reject.INVALID_PRICE),
    (dict(post_only=1, tif=Tif.IOC), Reject.INVALID_POST_ONLY),
    (dict(post_only=1, tif=Tif.FOK), Reject.INVALID_POST_ONLY),
    (dict(post_only=1, type=OrderType.MARKET, price=0), Reject.INVALID_POST_ONLY),
    (dict(post_only=1, tif=Tif.IOC, order_id=1), Reject.INVALID_POST_ONLY),
    (dict(order_id=1), Reject.DUPLICATE_ORDER_ID),
    (dict(order_id=1, side=SELL, price=90, tif=Tif.IOC), Reject.DUPLICATE_ORDER_ID),
    (dict(order_id=1, post_only=1, side=SELL, price=100), Reject.DUPLICATE_ORDER_ID),
    (dict(post_only=1, side=SELL, price=100), Reject.POST_ONLY_WOULD_TAKE),
]


def _seeded(book: Any) -> None:
    book.new(1, 1, BUY, 100, 10)
    book.new(2, 2, SELL, 105, 10)


@pytest.mark.parametrize(("overrides", "reason"), NEW_REJECTS)
def test_new_rejects_in_contract_order(book: Any, overrides: dict[str, int], reason: Reject) -> None:
    _seeded(book)
    before = book_state(book)
    args = {**VALID_NEW, **overrides}
    expected = Event(
        EventType.REJECTED, args["order_id"], args["owner"], args["side"], args["price"], args["qty"], 0,
        reason=reason,
    )  # fmt: skip
    assert book.new(**args) == [expected]
    assert book_state(book) == before


def test_valid_new_baseline_is_accepted(book: Any) -> None:
    """The reject cases above differ from this accepted order only by their overrides."""
    _seeded(book)
    assert book.new(**VALID_NEW) == [Event(EventType.ACCEPTED, 50, 3, BUY, 100, 5, 5)]


def test_boundary_values_are_accepted(book: Any) -> None:
    assert book.new(2**63 - 1, 2**32 - 1, SELL, 2**53 - 1, 2**32 - 1)[0][0] == EventType.ACCEPTED
    assert book.new(1, 0, BUY, 1, 1)[0][0] == EventType.ACCEPTED
    assert len(book) == 2


def test_bool_is_an_int(book: Any) -> None:
    assert book.new(1, 1, True, 100, 5, post_only=True) == [Event(EventType.ACCEPTED, 1, 1, 1, 100, 5, 5)]
    assert book.order(1) == (1, 1, BUY, 100, 5, 1, Stp.NONE, True)


def test_post_only_any_nonzero_int_means_true(book_cls: type[Any]) -> None:
    a, b = book_cls(), book_cls()
    a.new(1, 1, BUY, 100, 5, post_only=True)
    b.new(1, 1, BUY, 100, 5, post_only=2)
    assert a.snapshot() == b.snapshot()


BAD_VALUES: list[object] = [1.0, 1.5, "1", None, Decimal(1), 2**63, -(2**63) - 1, b"\x01", [1]]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=repr)
@pytest.mark.parametrize("field", list(VALID_NEW))
def test_new_bad_python_value_raises(book: Any, field: str, bad: object) -> None:
    _seeded(book)
    before = book_state(book)
    with pytest.raises(ValueError):
        book.new(**{**VALID_NEW, field: bad})
    assert book_state(book) == before


@pytest.mark.parametrize("bad", BAD_VALUES, ids=repr)
def test_cancel_amend_cancel_all_bad_python_value_raises(book: Any, bad: object) -> None:
    _seeded(book)
    before = book_state(book)
    calls = [
        lambda: book.cancel(bad, 1),
        lambda: book.cancel(1, bad),
        lambda: book.amend(bad, 1, qty=5),
        lambda: book.amend(1, bad, qty=5),
        lambda: book.amend(1, 1, price=bad),
        lambda: book.amend(1, 1, qty=bad),
        lambda: book.cancel_all(bad),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
        assert book_state(book) == before


def test_int64_edges_are_rejected_not_raised(book: Any) -> None:
    """The int64 extremes pass the type gate and are then rejected as out of domain."""
    low, high = -(2**63), 2**63 - 1
    assert book.new(1, high, BUY, 100, 5)[0][-1] == Reject.INVALID_OWNER
    assert book.new(1, 1, BUY, 100, high)[0][-1] == Reject.INVALID_QTY
    assert book.new(1, 1, BUY, low, 5)[0][-1] == Reject.INVALID_PRICE
    assert book.cancel(low, 1)[0][-1] == Reject.UNKNOWN_ORDER
    assert book.cancel_all(low)[0][-1] == Reject.INVALID_OWNER
    assert len(book) == 0


def test_query_bad_python_value_raises(book: Any) -> None:
    _seeded(book)
    for bad in (1.0, "1", None, 2**63):
        with pytest.raises(ValueError):
            book.order(bad)
        with pytest.raises(ValueError):
            book.depth(bad)
    with pytest.raises(ValueError):
        book.depth(-1)
