"""Seeded order flows for the engine benchmark.

Every flow is a numpy array of `COMMAND_DTYPE` (what `apply_batch` takes); `to_calls` turns the same
rows into per-command API calls, so both APIs always run exactly the same commands.

- `liquibook_perf_flow`: liquibook's test/perf/pt_order_book.cpp — inserts only, alternating buy/sell,
  bids priced 1880-1889, asks 1884-1893, qty 100..1000 in steps of 100.
- `exchange_core_flow`: a Python port of the shape of exchange-core's TestOrdersGenerator (GTC fill-up to
  a target book size, then ~9% GTC, ~3% IOC, ~6% cancel, ~82% move); it needs a live book to follow fills,
  exactly as the Java generator drives its own order book while generating.
- `deep_book_fill` / `deep_book_workload`: a book of N resting orders that never cross, and a workload
  that keeps N constant (new+cancel pairs, moves, small IOC takers) to measure per-command cost at depth N.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fastbook.engine.types import COMMAND_DTYPE, EventType, Op, OrderType, Side, Tif

_NEW, _CANCEL, _AMEND, _CANCEL_ALL = int(Op.NEW), int(Op.CANCEL), int(Op.AMEND), int(Op.CANCEL_ALL)
_BUY, _SELL = int(Side.BUY), int(Side.SELL)
_LIMIT, _GTC, _IOC = int(OrderType.LIMIT), int(Tif.GTC), int(Tif.IOC)
_TRADE, _CANCELLED, _DONE = int(EventType.TRADE), int(EventType.CANCELLED), int(EventType.DONE)

# One per-command call: (op, positional arguments of Book.new / cancel / amend / cancel_all).
Call = tuple[int, tuple[int, ...]]


class ShadowBook(Protocol):
    """What the exchange-core generator needs from a book (native Book or ReferenceBook)."""

    def new(self, *args: int) -> list[Any]: ...
    def cancel(self, order_id: int, owner: int) -> list[Any]: ...
    def amend(self, order_id: int, owner: int, price: int = 0, qty: int = 0) -> list[Any]: ...
    def counts(self) -> tuple[int, int, int, int]: ...


@dataclass(frozen=True)
class Flow:
    """A named command stream: `prefill` is applied untimed, `commands` is what gets measured."""

    name: str
    description: str
    prefill: np.ndarray
    commands: np.ndarray

    def head(self, n: int) -> Flow:
        """The same flow cut to its first n measured commands."""
        return Flow(self.name, self.description, self.prefill, self.commands[:n])


def empty_commands(n: int) -> np.ndarray:
    return np.zeros(n, dtype=COMMAND_DTYPE)


_ROW_FIELDS = ("op", "side", "type", "tif", "owner", "order_id", "price", "qty")


def commands_from_rows(rows: list[tuple[int, int, int, int, int, int, int, int]]) -> np.ndarray:
    """Rows of (op, side, type, tif, owner, order_id, price, qty) -> COMMAND_DTYPE array."""
    out = empty_commands(len(rows))
    if rows:
        columns = np.array(rows, dtype=np.int64).T
        for name, column in zip(_ROW_FIELDS, columns, strict=True):
            out[name] = column
    return out


# ------------------------------------------------------------------------------------- flow (a)


def liquibook_perf_flow(n: int, seed: int, owners: int = 1000) -> Flow:
    """liquibook's perf flow: order i is a buy when i is even; price = rand%10 + (1880 buy | 1884 sell);
    qty = (rand%10 + 1) * 100. Inserts only (GTC limits); about 60% of the orders end up matching."""
    rng = np.random.default_rng(seed)
    index = np.arange(n, dtype=np.int64)
    is_buy = index % 2 == 0
    commands = empty_commands(n)
    commands["op"] = _NEW
    commands["side"] = np.where(is_buy, _BUY, _SELL)
    commands["type"] = _LIMIT
    commands["tif"] = _GTC
    commands["owner"] = rng.integers(1, owners + 1, size=n)
    commands["order_id"] = index + 1
    commands["price"] = rng.integers(0, 10, size=n) + np.where(is_buy, 1880, 1884)
    commands["qty"] = (rng.integers(0, 10, size=n) + 1) * 100
    return Flow(
        "liquibook_perf",
        "liquibook pt_order_book: alternating buy/sell, bids 1880-1889, asks 1884-1893, qty 100-1000",
        empty_commands(0),
        commands,
    )


# ------------------------------------------------------------------------------------- flow (b)


@dataclass
class _ExchangeCoreSession:
    """The generator state of exchange-core's TestOrdersGeneratorSession that the mix depends on."""

    rng: random.Random
    target_half: int
    price_deviation: int
    min_price: int
    max_price: int
    last_trade_price: int
    price_direction: int = 0
    # order id -> owner, in insertion order (the Java generator's LinkedHashMap of live orders)
    live: dict[int, int] | None = None
    prices: dict[int, int] | None = None


def exchange_core_flow(
    n: int,
    seed: int,
    book_factory: Callable[[], ShadowBook],
    target_orders: int = 1000,
    price_deviation: int = 5000,
    central_price: int = 1_000_000,
    owners: int = 2000,
) -> Flow:
    """exchange-core's benchmark mix, generated against a live book so that cancels and moves name
    orders that are still resting (filled orders leave the live set on their DONE event).

    Ported shape (TestOrdersGenerator.generateRandomOrder): side = BID if rand(4)+direction >= 2; while a
    side lacks orders, q = rand(2 or 10) else rand(40); q < 2 places an order (GTC near the last trade
    price if the side is short of orders, else an IOC at the far price bound); otherwise pick one of the
    512 oldest live orders: q == 2 cancels it, anything else moves it 1% of the way to the last trade
    price (at least one tick). exchange-core's later `reduce` command (q == 3) is folded into `move`, as
    in the version whose published mix (9% GTC, 3% IOC, 6% cancel, 82% move) the brief quotes.
    Commands up to the point where both sides first reach the target size form the untimed prefill.
    """
    book = book_factory()
    session = _ExchangeCoreSession(
        rng=random.Random(seed),
        target_half=target_orders // 2,
        price_deviation=price_deviation,
        min_price=central_price - 5 * price_deviation,
        max_price=central_price + 5 * price_deviation,
        last_trade_price=central_price,
        live={},
        prices={},
    )
    rows: list[tuple[int, int, int, int, int, int, int, int]] = []
    filled_at: int | None = None
    next_order_id = 1
    while filled_at is None or len(rows) - filled_at < n:
        bid_orders, ask_orders, _, _ = book.counts()
        lack_ask = session.target_half - ask_orders
        lack_bid = session.target_half - bid_orders
        if filled_at is None and lack_ask <= 0 and lack_bid <= 0:
            filled_at = len(rows)
        row, next_order_id = _exchange_core_command(
            session, book, lack_ask, lack_bid, filled_at, next_order_id
        )
        if row is not None:
            rows.append(row)
    assert filled_at is not None
    commands = commands_from_rows(rows)
    return Flow(
        "exchange_core",
        f"exchange-core TestOrdersGenerator mix: ~{target_orders} resting orders, GTC/IOC/cancel/move",
        commands[:filled_at],
        commands[filled_at : filled_at + n],
    )


def _exchange_core_command(
    session: _ExchangeCoreSession,
    book: ShadowBook,
    lack_ask: int,
    lack_bid: int,
    filled_at: int | None,
    next_order_id: int,
) -> tuple[tuple[int, int, int, int, int, int, int, int] | None, int]:
    """One generated command (applied to the shadow book), or None when the Java generator retries."""
    rng = session.rng
    live, prices = session.live, session.prices
    assert live is not None and prices is not None
    side = _BUY if rng.randrange(4) + session.price_direction >= 2 else _SELL
    lack = lack_ask if side == _SELL else lack_bid
    require_fast_fill = filled_at is None or lack > min(512, session.target_half * 3 // 4)
    grow = lack > 0
    q = rng.randrange((2 if require_fast_fill else 10) if grow else 40)

    if q < 2:
        order_id = next_order_id
        owner = rng.randrange(1, 2**16)
        size = 1 + rng.randrange(6) * rng.randrange(6) * rng.randrange(6)
        if grow:
            dev = 1 + int(rng.random() ** 2 * session.price_deviation)
            p = sum(rng.randrange(dev) for _ in range(4)) // 4 * 2 - dev
            if (p > 0) != (side == _SELL):  # bids at or below the last trade, asks at or above
                p = -p
            price = session.last_trade_price + p
            row = (_NEW, side, _LIMIT, _GTC, owner, order_id, price, size)
            live[order_id] = owner
            prices[order_id] = price
            _follow(session, book.new(order_id, owner, side, price, size))
        else:
            price = session.max_price if side == _BUY else session.min_price
            row = (_NEW, side, _LIMIT, _IOC, owner, order_id, price, size)
            _follow(session, book.new(order_id, owner, side, price, size, _LIMIT, _IOC))
        return row, next_order_id + 1

    if not live:
        return None, next_order_id
    pick = rng.randrange(min(len(live), 512))
    order_id = next(itertools.islice(iter(live), pick, None))
    owner = live[order_id]
    if q == 2:
        del live[order_id]
        del prices[order_id]
        _follow(session, book.cancel(order_id, owner))
        return (_CANCEL, 0, 0, 0, owner, order_id, 0, 0), next_order_id

    previous = prices[order_id]
    move = (session.last_trade_price - previous) * 0.01
    if previous > session.last_trade_price:
        step = int(np.floor(move))
    elif previous < session.last_trade_price:
        step = int(np.ceil(move))
    else:
        step = rng.randrange(2) * 2 - 1
    price = previous + step
    prices[order_id] = price
    _follow(session, book.amend(order_id, owner, price, 0))
    return (_AMEND, 0, 0, 0, owner, order_id, price, 0), next_order_id


def _follow(session: _ExchangeCoreSession, events: list[Any]) -> None:
    """Track trades (last price, direction at the bounds) and orders leaving the book."""
    assert session.live is not None and session.prices is not None
    for event in events:
        kind = event[0]
        if kind == _TRADE:
            price = event[4]
            session.last_trade_price = min(session.max_price, max(session.min_price, price))
            if price <= session.min_price:
                session.price_direction = 1
            elif price >= session.max_price:
                session.price_direction = -1
        elif kind == _DONE or kind == _CANCELLED:
            if session.live.pop(event[1], None) is not None:
                del session.prices[event[1]]


# ------------------------------------------------------------------------------------- flow (c)

DEEP_MID_PRICE = 1_000_000
DEEP_LEVELS_PER_SIDE = 10_000


def _deep_prices(rng: np.random.Generator, sides: np.ndarray, levels: int) -> np.ndarray:
    """Bids strictly below the mid price, asks at or above it: resting orders never cross."""
    offsets = rng.integers(0, levels, size=len(sides))
    return np.where(sides == _BUY, DEEP_MID_PRICE - 1 - offsets, DEEP_MID_PRICE + offsets)


def deep_book_fill(
    depth: int, seed: int, chunk: int = 1_000_000, levels: int = DEEP_LEVELS_PER_SIDE
) -> Iterator[np.ndarray]:
    """`depth` GTC inserts (ids 1..depth, alternating sides) in chunks, so a 10M book never needs
    a 400 MB command array at once. Nothing crosses: after it the book holds exactly `depth` orders."""
    rng = np.random.default_rng([seed, depth])
    for start in range(0, depth, chunk):
        n = min(chunk, depth - start)
        ids = np.arange(start + 1, start + n + 1, dtype=np.int64)
        sides = np.where(ids % 2 == 1, _BUY, _SELL)
        commands = empty_commands(n)
        commands["op"] = _NEW
        commands["side"] = sides
        commands["type"] = _LIMIT
        commands["tif"] = _GTC
        commands["owner"] = ids % 1000 + 1
        commands["order_id"] = ids
        commands["price"] = _deep_prices(rng, sides, levels)
        commands["qty"] = rng.integers(1, 11, size=n) * 100
        yield commands


class DeepWorkload:
    """Segments of commands that keep a deep book at constant size.

    Each step is, with probability 90%, a pair (new order X on a random side and level; cancel the
    live order held by a slot, which X then takes), with 8% a move of a slot's order to a new level on
    its own side, and with 2% a 1-lot IOC that takes from the best opposite price. Slots hold the live
    order ids (initially 1..depth).

    Two ways to pick the slot, on the same book:
    - uniform: any slot, so cancels and moves land anywhere in the book — at 1M+ orders nearly every
      one is a cache miss, so this shows what memory latency adds;
    - hot: a fixed set of `hot` slots taken in turn (the order cancelled is the one placed about `hot`
      steps earlier), the way real flow mostly cancels recent orders. The hot orders themselves stay
      in cache, but the id index and their (older) queue neighbours need not, so this bounds the
      algorithmic cost from above rather than isolating it.

    A 1-lot taker can, rarely, use up a maker that a later command names; that command is then
    rejected (UNKNOWN_ORDER) and the benchmark counts it.
    """

    def __init__(self, depth: int, seed: int, levels: int = DEEP_LEVELS_PER_SIDE, hot: int = 4096) -> None:
        self.depth = depth
        self.levels = levels
        self.hot = min(hot, depth)
        self._rng = np.random.default_rng([seed, depth, 1])
        self._slot_id = np.arange(1, depth + 1, dtype=np.int64)
        self._next_id = depth + 1
        self._hot_next = 0

    @staticmethod
    def owner_of(order_id: int) -> int:
        return order_id % 1000 + 1

    @staticmethod
    def side_of(order_id: int) -> int:
        return _BUY if order_id % 2 == 1 else _SELL

    def segment(self, n: int, hot: bool = False) -> np.ndarray:
        """About n commands (a final new+cancel pair is kept whole), continuing the previous segment."""
        rng = self._rng
        kind = rng.random(n)
        if hot:
            # the hot slots are the last `hot` ones; pairs take them in turn, moves pick any of them
            first_hot = self.depth - self.hot
            turn = (self._hot_next + np.arange(n)) % self.hot
            self._hot_next = int((self._hot_next + n) % self.hot)
            pair_slots = (first_hot + turn).tolist()
            move_slots = (first_hot + rng.integers(0, self.hot, size=n)).tolist()
        else:
            pair_slots = move_slots = rng.integers(0, self.depth, size=n).tolist()
        offsets = rng.integers(0, self.levels, size=n).tolist()
        qtys = (rng.integers(1, 11, size=n) * 100).tolist()
        rows: list[tuple[int, int, int, int, int, int, int, int]] = []
        slot_id = self._slot_id
        for step in range(n):
            if len(rows) >= n:
                break
            k = kind[step]
            if k < 0.90:
                new_id = self._next_id
                self._next_id += 1
                side = self.side_of(new_id)
                price = DEEP_MID_PRICE - 1 - offsets[step] if side == _BUY else DEEP_MID_PRICE + offsets[step]
                rows.append((_NEW, side, _LIMIT, _GTC, self.owner_of(new_id), new_id, price, qtys[step]))
                slot = pair_slots[step]
                victim = int(slot_id[slot])
                slot_id[slot] = new_id
                rows.append((_CANCEL, 0, 0, 0, self.owner_of(victim), victim, 0, 0))
            elif k < 0.98:
                order_id = int(slot_id[move_slots[step]])
                side = self.side_of(order_id)
                price = DEEP_MID_PRICE - 1 - offsets[step] if side == _BUY else DEEP_MID_PRICE + offsets[step]
                rows.append((_AMEND, 0, 0, 0, self.owner_of(order_id), order_id, price, 0))
            else:
                taker_id = self._next_id
                self._next_id += 1
                side = _BUY if offsets[step] % 2 else _SELL
                price = DEEP_MID_PRICE + self.levels if side == _BUY else DEEP_MID_PRICE - 1 - self.levels
                rows.append((_NEW, side, _LIMIT, _IOC, self.owner_of(taker_id), taker_id, price, 1))
        return commands_from_rows(rows)


# ------------------------------------------------------------------------------ per-command form


def to_calls(commands: np.ndarray) -> list[Call]:
    """The per-command API calls equivalent to COMMAND_DTYPE rows (plain Python ints, as the API wants).

    A plain GTC limit passes only the five leading arguments (the defaults cover the rest), which is how
    a program would call it; anything else passes all nine.
    """
    columns = {name: commands[name].tolist() for name in COMMAND_DTYPE.names if not name.startswith("_")}
    calls: list[Call] = []
    for op, side, type_, tif, stp, post_only, owner, order_id, price, qty in zip(
        columns["op"],
        columns["side"],
        columns["type"],
        columns["tif"],
        columns["stp"],
        columns["post_only"],
        columns["owner"],
        columns["order_id"],
        columns["price"],
        columns["qty"],
        strict=True,
    ):
        if op == _NEW:
            if type_ == _LIMIT and tif == _GTC and not post_only and not stp:
                calls.append((op, (order_id, owner, side, price, qty)))
            else:
                calls.append((op, (order_id, owner, side, price, qty, type_, tif, bool(post_only), stp)))
        elif op == _CANCEL:
            calls.append((op, (order_id, owner)))
        elif op == _AMEND:
            calls.append((op, (order_id, owner, price, qty)))
        elif op == _CANCEL_ALL:
            calls.append((op, (owner,)))
        else:
            raise ValueError(f"op {op} has no per-command equivalent")
    return calls


def new_args(commands: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """(order_id, owner, side, price, qty) per row, for insert-only flows of plain GTC limits."""
    if not (np.all(commands["op"] == _NEW) and np.all(commands["tif"] == _GTC)):
        raise ValueError("new_args needs an insert-only flow of GTC limit orders")
    return list(
        zip(
            commands["order_id"].tolist(),
            commands["owner"].tolist(),
            commands["side"].tolist(),
            commands["price"].tolist(),
            commands["qty"].tolist(),
            strict=True,
        )
    )


def command_mix(commands: np.ndarray) -> dict[str, float]:
    """Share of each command kind in percent (GTC / IOC / cancel / move), for the report."""
    n = max(len(commands), 1)
    op = commands["op"]
    tif = commands["tif"]
    return {
        "gtc": round(100.0 * int(np.sum((op == _NEW) & (tif == _GTC))) / n, 2),
        "ioc": round(100.0 * int(np.sum((op == _NEW) & (tif == _IOC))) / n, 2),
        "cancel": round(100.0 * int(np.sum(op == _CANCEL)) / n, 2),
        "move": round(100.0 * int(np.sum(op == _AMEND)) / n, 2),
    }
