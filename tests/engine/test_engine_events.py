"""The native per-command API returns an `Events`: a read-only sequence built lazily from copied event
records. It must behave like the list of the same tuples everywhere a caller could tell the difference,
and stay valid whatever the book does afterwards."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import numpy as np
import pytest

from fastbook.engine._engine import Book, Events
from fastbook.engine.reference import ReferenceBook
from fastbook.engine.types import COMMAND_DTYPE, Event, EventType, Op, Reject, Side

BUY, SELL = int(Side.BUY), int(Side.SELL)


def sweep_book() -> tuple[Book, ReferenceBook]:
    """Both books with six resting asks at 100..105, so that one buy produces many events."""
    native, reference = Book(), ReferenceBook()
    for i in range(6):
        args = (i + 1, 1, SELL, 100 + i, 10)
        assert native.new(*args) == reference.new(*args)
    return native, reference


def test_events_behave_like_the_list_of_their_tuples() -> None:
    native, reference = sweep_book()
    events = native.new(100, 2, BUY, 105, 65)  # takes all six asks, the remainder rests
    expected = reference.new(100, 2, BUY, 105, 65)
    assert type(events) is Events and isinstance(events, Sequence)
    assert len(events) == len(expected) == 13  # accepted, 6 x (trade, maker done): more than the inline 4
    assert events == expected and expected == events and not (events != expected)
    assert list(events) == expected and events.tolist() == expected
    assert events[0] == expected[0] and events[-1] == expected[-1] and events[2:5] == expected[2:5]
    assert list(reversed(events)) == expected[::-1]
    assert expected[3] in events and (0,) * 11 not in events
    assert events.index(expected[2]) == 2 and events.count(expected[1]) == 1
    assert [Event(*e) for e in events] == expected  # each item a real 11-tuple
    assert all(type(e) is tuple and len(e) == 11 for e in events)
    assert events[1][0] == EventType.TRADE
    with pytest.raises(IndexError):
        events[13]
    with pytest.raises(TypeError):
        hash(events)
    assert repr(events) == f"Events({[tuple(e) for e in expected]!r})"
    assert pickle.loads(pickle.dumps(events)) == expected


def test_events_compare_unequal_to_other_events_and_other_types() -> None:
    native = Book()
    first = native.new(1, 1, BUY, 100, 5)
    second = native.new(2, 1, BUY, 100, 5)
    assert first != second and first == Book().new(1, 1, BUY, 100, 5)
    assert first != tuple(first) and first != "x" and first != []
    assert native.cancel(99, 1) != [] and Book().cancel_all(1) == [] and not Book().cancel_all(1)


def batch_of_one_cancel_all(owner: int) -> np.ndarray:
    commands = np.zeros(1, dtype=COMMAND_DTYPE)
    commands["op"] = int(Op.CANCEL_ALL)
    commands["owner"] = owner
    return commands


def test_events_are_copies_unaffected_by_later_commands() -> None:
    native, reference = sweep_book()
    kept_native = [native.new(200 + i, 3, BUY, 100 + i, 3) for i in range(6)]
    kept_reference = [reference.new(200 + i, 3, BUY, 100 + i, 3) for i in range(6)]
    native.cancel_all(1)
    reference.cancel_all(1)
    native.apply_batch(batch_of_one_cancel_all(3))  # and a batch, with its own event buffer
    assert kept_native == kept_reference  # read only now, after the book moved on


def test_rejected_events_keep_the_values_given() -> None:
    native, reference = Book(), ReferenceBook()
    for args in [(1, -5, BUY, 100, 1), (1, 2**40, 7, 100, 1), (1, 1, 99, 100, 1), (0, 1, BUY, 100, 1)]:
        events, expected = native.new(*args), reference.new(*args)
        assert events == expected and len(events) == 1 and events[0][0] == EventType.REJECTED
    events = native.amend(5, 2**33, 0, 0)
    assert events[0][2] == 2**33 and events[0][10] == Reject.INVALID_OWNER
