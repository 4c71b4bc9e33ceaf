"""Adapters for the PyPI order books the benchmark compares against, on insert-only flows.

- `liquibook` 2.0.1: the SWIG wrapper of liquibook's C++ engine. `liquibook_book_OrderBook` is the
  book without depth tracking (liquibook's fastest configuration), `DepthOrderBook` tracks 5 levels
  of depth (the "with depth" case of liquibook's own perf test). Orders are `SimpleOrder(is_buy,
  price, qty)`; the book keeps raw pointers to them, so the caller keeps them alive.
- `cython-orderbook` 0.1.2 (module `cython_orderbook`): `OrderBook.add_limit_order(Order(side, qty,
  price))`; it matches on insert and appends every fill to `trade_log`.

As in liquibook's own perf test, orders are built before the clock starts (the timed loop is only the
book's insert call); building them is timed separately. Both favour the peers: fastbook's per-command
API takes plain ints and builds nothing beforehand.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from fastbook.engine.types import Side

LIQUIBOOK_BOOKS = {
    "no_depth": "liquibook_book_OrderBook",
    "depth5": "DepthOrderBook",
}


@dataclass(frozen=True)
class InsertFlow:
    """An insert-only flow in the peers' terms."""

    is_buy: list[bool]
    price: list[int]
    qty: list[int]

    @classmethod
    def from_commands(cls, commands: np.ndarray) -> InsertFlow:
        return cls(
            (commands["side"] == int(Side.BUY)).tolist(),
            commands["price"].tolist(),
            commands["qty"].tolist(),
        )

    def __len__(self) -> int:
        return len(self.price)


def peer_versions() -> dict[str, str | None]:
    """Installed versions of the peers (None when one is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for dist in ("liquibook", "cython-orderbook"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


T = TypeVar("T")


def timed(run: Callable[[], T]) -> tuple[float, T]:
    """(seconds one call of `run` takes, its result), with the cyclic GC off as timeit does."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = run()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


# ------------------------------------------------------------------------------------ liquibook


def liquibook_orders(flow: InsertFlow) -> list[Any]:
    import liquibook

    make = liquibook.SimpleOrder
    return [make(b, p, q) for b, p, q in zip(flow.is_buy, flow.price, flow.qty, strict=True)]


def liquibook_build_seconds(flow: InsertFlow) -> float:
    """Seconds to build the SimpleOrder objects alone (the part the add-only timing leaves out)."""
    return timed(lambda: liquibook_orders(flow))[0]


def liquibook_add_seconds(flow: InsertFlow, book_kind: str) -> tuple[float, int]:
    """(seconds for `book.add` of every pre-built order, orders left resting)."""
    import liquibook

    orders = liquibook_orders(flow)
    book = getattr(liquibook, LIQUIBOOK_BOOKS[book_kind])()
    add = book.add

    def loop() -> None:
        for order in orders:
            add(order)

    seconds, _ = timed(loop)
    resting = book.bids().size() + book.asks().size()
    return seconds, resting


def liquibook_fills(flow: InsertFlow) -> tuple[int, int]:
    """(fills, filled quantity) liquibook reports on the flow (one `on_fill` per match): an untimed run
    with a listener."""
    import liquibook

    class FillCounter(liquibook.OrderListener):
        def __init__(self) -> None:
            liquibook.OrderListener.__init__(self)
            self.fills = 0
            self.filled_qty = 0

        def on_fill(self, order: Any, matched_order: Any, fill_qty: int, fill_cost: int) -> None:
            self.fills += 1
            self.filled_qty += fill_qty

        def on_accept(self, order: Any) -> None:
            pass

        def on_reject(self, order: Any, reason: str) -> None:
            raise RuntimeError(f"liquibook rejected an order of an insert-only flow: {reason}")

    orders = liquibook_orders(flow)
    book = liquibook.liquibook_book_OrderBook()
    counter = FillCounter()
    book.set_order_listener(counter)
    for order in orders:
        book.add(order)
    return counter.fills, counter.filled_qty


# ------------------------------------------------------------------------------ cython-orderbook


def cython_orderbook_orders(flow: InsertFlow) -> list[Any]:
    from cython_orderbook import Order, OrderSide

    bid, ask = OrderSide.BID, OrderSide.ASK
    return [Order(bid if b else ask, q, p) for b, p, q in zip(flow.is_buy, flow.price, flow.qty, strict=True)]


def cython_orderbook_add_seconds(flow: InsertFlow) -> tuple[float, int]:
    """(seconds for `add_limit_order` of every pre-built order, fills in its trade log)."""
    from cython_orderbook import OrderBook

    orders = cython_orderbook_orders(flow)
    book = OrderBook()
    add = book.add_limit_order

    def loop() -> None:
        for order in orders:
            add(order)

    seconds, _ = timed(loop)
    return seconds, len(book.trade_log)
