"""The matching engine: one deterministic limit order book per market (docs/engine.md).

`new_book()` / `restore_book(data)` build a book of the backend `fastbook.backend` selects: the
native `fastbook.engine._engine.Book` (Cython, top-level engine/) or the pure-Python
`fastbook.engine.reference.ReferenceBook`, which implement the same contract. Nothing in this layer
knows MQTT, JSON or files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from fastbook import backend
from fastbook.engine.types import EventTuple

# (price, total_qty, order_count)
LevelTuple = tuple[int, int, int]
# (order_id, owner, side, price, remaining, stamp, stp, post_only)
OrderTuple = tuple[int, int, int, int, int, int, int, bool]


class OrderBook(Protocol):
    """What the layers above use of a book: the API both backends' books implement (docs/engine.md;
    native `_engine.Book`, typed in _engine.pyi, and `reference.ReferenceBook`)."""

    def new(
        self,
        order_id: int,
        owner: int,
        side: int,
        price: int,
        qty: int,
        type: int = ...,
        tif: int = ...,
        post_only: bool = ...,
        stp: int = ...,
    ) -> Sequence[EventTuple]: ...
    def cancel(self, order_id: int, owner: int) -> Sequence[EventTuple]: ...
    def amend(self, order_id: int, owner: int, price: int = ..., qty: int = ...) -> Sequence[EventTuple]: ...
    def cancel_all(self, owner: int) -> Sequence[EventTuple]: ...
    def apply_batch(
        self,
        commands: npt.NDArray[np.void],
        hashes: npt.NDArray[np.uint64] | None = ...,
        next_order_id: int | None = ...,
    ) -> npt.NDArray[np.void]: ...
    def best_bid(self) -> LevelTuple | None: ...
    def best_ask(self) -> LevelTuple | None: ...
    def depth(self, n: int) -> tuple[list[LevelTuple], list[LevelTuple]]: ...
    def order(self, order_id: int) -> OrderTuple | None: ...
    def __len__(self) -> int: ...
    def counts(self) -> tuple[int, int, int, int]: ...
    def state_hash(self) -> int: ...
    def snapshot(self) -> bytes: ...


class OrderBookClass(Protocol):
    """A backend's book class: builds an empty book, or restores one from snapshot bytes."""

    def __call__(self) -> OrderBook: ...
    def restore(self, data: bytes) -> OrderBook: ...


def book_class() -> OrderBookClass:
    """The selected backend's book class."""
    cls: OrderBookClass = backend.select("Book")
    return cls


def new_book() -> OrderBook:
    """An empty book of the selected backend."""
    return book_class()()


def restore_book(data: bytes) -> OrderBook:
    """A book of the selected backend rebuilt from canonical snapshot bytes (ValueError if invalid)."""
    return book_class().restore(data)


if TYPE_CHECKING:  # for mypy only: both backends' book classes are OrderBookClasses
    from fastbook.engine import _engine, reference

    _native: OrderBookClass = _engine.Book
    _reference: OrderBookClass = reference.ReferenceBook
