"""The native per-command API builds its event lists and tuples by hand: a garbage collection that runs
in the middle of that (any allocation can trigger one) must only ever see fully built objects. A crash of
this kind once slipped past every other engine test, so the collector is forced to run constantly here."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator

import pytest

from fastbook.engine._engine import Book
from fastbook.engine.reference import ReferenceBook
from fastbook.engine.types import Event


@pytest.fixture
def collector_always_running() -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def test_events_survive_constant_garbage_collection(collector_always_running: None) -> None:
    rng = random.Random(5)
    native, reference = Book(), ReferenceBook()
    kept: list[list[tuple[int, ...]]] = []
    for order_id in range(1, 4001):
        owner = rng.randrange(3)
        side = 1 + (order_id & 1)
        price = rng.randrange(1880, 1894)
        qty = rng.randrange(1, 1000)
        calls = [("new", (order_id, owner, side, price, qty))]
        if order_id % 7 == 0:
            calls.append(("cancel", (order_id - 5, owner)))
        if order_id % 11 == 0:
            calls.append(("amend", (order_id - 3, owner, 0, 50)))
        if order_id % 13 == 0:
            calls.append(("cancel_all", (owner,)))
        if order_id % 17 == 0:
            calls.append(("new", (order_id, owner, 9, 1, 1)))  # rejected: invalid side
        for name, args in calls:
            events = getattr(native, name)(*args)
            assert events == getattr(reference, name)(*args)
            assert all(type(e) is tuple and len(e) == len(Event._fields) for e in events)
            kept.append(events)
        if len(kept) > 500:
            gc.collect()
            kept.clear()
    assert native.state_hash() == reference.state_hash()
    assert native.snapshot() == reference.snapshot()
