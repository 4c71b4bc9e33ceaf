"""The batch API on both books: numpy commands in, numpy events out, same as the per-command API."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fastbook.engine.types import (
    COMMAND_DTYPE,
    EVENT_DTYPE,
    Op,
    OrderType,
    Reject,
    Side,
    Stp,
    Tif,
    event_rows_to_tuples,
)

BUY, SELL = Side.BUY, Side.SELL


def commands(*rows: dict[str, int]) -> np.ndarray:
    array = np.zeros(len(rows), dtype=COMMAND_DTYPE)
    for index, row in enumerate(rows):
        for name, value in row.items():
            array[index][name] = value
    return array


def new(order_id: int, owner: int, side: int, price: int, qty: int, **extra: int) -> dict[str, int]:
    row = dict(op=Op.NEW, order_id=order_id, owner=owner, side=side, price=price, qty=qty)
    row.update(type=OrderType.LIMIT, tif=Tif.GTC, post_only=0, stp=Stp.NONE)
    row.update(extra)
    return row


SCRIPT = [
    new(1, 1, BUY, 100, 10),
    new(2, 2, BUY, 101, 5, stp=Stp.CANCEL_MAKER),
    new(3, 3, SELL, 103, 7, post_only=1),
    new(4, 3, SELL, 100, 8),  # trades with #2 then #1
    dict(op=Op.AMEND, order_id=1, owner=1, price=0, qty=3),
    dict(op=Op.AMEND, order_id=3, owner=3, price=102, qty=0),
    new(5, 1, BUY, 0, 4, type=OrderType.MARKET, tif=Tif.FOK),  # fills 4 of the 7 at 102
    dict(op=Op.CANCEL, order_id=1, owner=2),  # wrong owner
    new(6, 0, SELL, 0, 0),  # invalid qty
    dict(op=Op.CANCEL_ALL, owner=3),
    dict(op=Op.CANCEL, order_id=1, owner=1),
]


def per_command(book: Any, row: dict[str, int]) -> list[tuple[int, ...]]:
    fields = {k: int(v) for k, v in row.items() if k != "op"}
    op = row["op"]
    if op == Op.NEW:
        return [tuple(e) for e in book.new(**fields)]
    if op == Op.CANCEL:
        return [tuple(e) for e in book.cancel(**fields)]
    if op == Op.AMEND:
        return [tuple(e) for e in book.amend(**fields)]
    return [tuple(e) for e in book.cancel_all(**fields)]


def test_batch_equals_per_command_api(book_cls: type[Any]) -> None:
    one_by_one = book_cls()
    expected: list[tuple[int, ...]] = []
    expected_cmd: list[int] = []
    for index, row in enumerate(SCRIPT):
        events = per_command(one_by_one, row)
        expected += events
        expected_cmd += [index] * len(events)
    batched = book_cls()
    out = batched.apply_batch(commands(*SCRIPT))
    assert out.dtype == EVENT_DTYPE
    assert event_rows_to_tuples(out) == expected
    assert out["cmd"].tolist() == expected_cmd
    assert batched.snapshot() == one_by_one.snapshot()
    assert len({e[0] for e in expected}) == 6, "the script produces every event type"


def test_unknown_op_is_rejected_in_place(book_cls: type[Any]) -> None:
    book = book_cls()
    rows = [new(1, 1, BUY, 100, 10), dict(op=0, order_id=7, owner=2, side=SELL, price=5, qty=3),
            dict(op=9, order_id=8, owner=3), new(2, 1, BUY, 100, 10)]  # fmt: skip
    out = event_rows_to_tuples(book.apply_batch(commands(*rows)))
    assert out == [
        (1, 1, 1, BUY, 100, 10, 10, 0, 0, 0, 0),
        (2, 7, 2, SELL, 5, 3, 0, 0, 0, 0, Reject.INVALID_OP),
        (2, 8, 3, 0, 0, 0, 0, 0, 0, 0, Reject.INVALID_OP),
        (1, 2, 1, BUY, 100, 10, 10, 0, 0, 0, 0),
    ]
    assert len(book) == 2


def test_empty_batch(book_cls: type[Any]) -> None:
    book = book_cls()
    out = book.apply_batch(np.zeros(0, dtype=COMMAND_DTYPE))
    assert out.dtype == EVENT_DTYPE
    assert len(out) == 0
    assert book.next_stamp == 1


def test_batch_out_of_range_values_are_rejected_not_raised(book_cls: type[Any]) -> None:
    book = book_cls()
    rows = [new(0, 1, BUY, 100, 1), new(1, 1, 7, 100, 1), new(2, 1, BUY, -5, 1), new(3, 1, BUY, 100, 2**40),
            new(4, 1, BUY, 100, 1, stp=200), new(5, 1, BUY, 100, 1, post_only=1, tif=Tif.IOC)]  # fmt: skip
    reasons = [row[-1] for row in event_rows_to_tuples(book.apply_batch(commands(*rows)))]
    assert reasons == [
        Reject.INVALID_ORDER_ID, Reject.INVALID_SIDE, Reject.INVALID_PRICE, Reject.INVALID_QTY,
        Reject.INVALID_STP, Reject.INVALID_POST_ONLY,
    ]  # fmt: skip
    assert len(book) == 0


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2, 3],
        np.zeros(3, dtype=np.int64),
        np.zeros((2, 2), dtype=COMMAND_DTYPE),
        np.zeros(3, dtype=EVENT_DTYPE),
    ],
    ids=["list", "int64 array", "2-D", "wrong dtype"],
)
def test_batch_rejects_wrong_input_with_value_error(book_cls: type[Any], bad: object) -> None:
    book = book_cls()
    book.new(1, 1, BUY, 100, 10)
    before = book.snapshot()
    with pytest.raises(ValueError):
        book.apply_batch(bad)
    assert book.snapshot() == before


@pytest.mark.parametrize(
    "bad",
    [
        [0, 0],
        np.zeros(2, dtype=np.int64),
        np.zeros(3, dtype=np.uint64),
        np.zeros((2, 1), dtype=np.uint64),
        np.zeros(4, dtype=np.uint64)[::2],
        np.frombuffer(bytes(16), dtype=np.uint64),
    ],
    ids=["list", "int64", "wrong length", "2-D", "strided", "read-only"],
)
def test_batch_rejects_a_bad_hashes_array_before_running(book_cls: type[Any], bad: object) -> None:
    book = book_cls()
    book.new(1, 1, BUY, 100, 10)
    before = book.snapshot()
    with pytest.raises(ValueError):
        book.apply_batch(commands(new(2, 2, SELL, 100, 5), new(3, 2, SELL, 101, 5)), bad)
    assert book.snapshot() == before


# News numbered by the book (next_order_id): the rows' order_id fields are overwritten. Rejected
# news: post-only that would take (row 3), zero qty (row 5); the cancel and amend name ids the
# numbering gives (an accepted new takes the next id, a rejected one gives it to the next new).
NUMBERED = [
    new(0, 1, BUY, 100, 10),  # id 50
    new(0, 2, SELL, 103, 7),  # id 51
    new(0, 2, SELL, 100, 4, post_only=1),  # rejected: would take (tries id 52)
    new(0, 2, SELL, 101, 2),  # id 52
    new(0, 3, BUY, 100, 0),  # rejected: qty 0 (tries id 53)
    dict(op=Op.AMEND, order_id=51, owner=2, price=102, qty=0),
    new(0, 3, BUY, 102, 9, tif=Tif.IOC),  # id 53: takes 52 and 51, rest cancelled
    dict(op=Op.CANCEL, order_id=50, owner=1),
    new(0, 1, SELL, 0, 1, type=OrderType.MARKET, tif=Tif.IOC),  # id 54, nothing to take
]


def test_batch_numbers_news_past_the_accepted_ones(book_cls: type[Any]) -> None:
    rows = commands(*NUMBERED)
    batched = book_cls()
    hashes = np.zeros(len(rows), dtype=np.uint64)
    out = batched.apply_batch(rows, hashes, next_order_id=50)
    assert rows["order_id"].tolist() == [50, 51, 52, 52, 53, 51, 53, 50, 54]
    one_by_one = book_cls()
    expected: list[tuple[int, ...]] = []
    expected_hashes = []
    for index, row in enumerate(NUMBERED):
        numbered = dict(row, order_id=int(rows["order_id"][index]))
        expected += per_command(one_by_one, numbered)
        expected_hashes.append(one_by_one.state_hash())
    assert event_rows_to_tuples(out) == expected
    assert hashes.tolist() == expected_hashes
    assert batched.snapshot() == one_by_one.snapshot()
    rejected = out["cmd"][out["type"] == 2].tolist()
    assert rejected == [2, 4]


def test_batch_numbering_is_the_same_in_any_split(book_cls: type[Any]) -> None:
    whole = commands(*NUMBERED)
    book_cls().apply_batch(whole, next_order_id=50)
    split_book = book_cls()
    first, second = commands(*NUMBERED[:4]), commands(*NUMBERED[4:])
    split_book.apply_batch(first, next_order_id=50)
    split_book.apply_batch(second, next_order_id=53)  # the first part accepted ids 50, 51, 52
    assert first["order_id"].tolist() + second["order_id"].tolist() == whole["order_id"].tolist()


@pytest.mark.parametrize("how", ["read-only", "strided", "float id"])
def test_batch_numbering_needs_a_writable_array_and_an_int(book_cls: type[Any], how: str) -> None:
    book = book_cls()
    book.new(1, 1, BUY, 100, 10)
    before = book.snapshot()
    rows = commands(new(0, 2, SELL, 101, 5), new(0, 2, SELL, 102, 5))
    next_id: object = 2
    if how == "read-only":
        rows.flags.writeable = False
    elif how == "strided":
        rows = commands(*[new(0, 2, SELL, 101 + i, 5) for i in range(4)])[::2]
    else:
        next_id = 2.0
    with pytest.raises(ValueError):
        book.apply_batch(rows, next_order_id=next_id)
    assert book.snapshot() == before
