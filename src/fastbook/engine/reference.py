"""A small pure-Python order book that follows docs/engine.md to the letter.

It exists as the yardstick for the native engine (`fastbook.engine._engine.Book`): tests feed both the same
commands and demand identical events, state hashes and snapshot bytes. It is written to be read, not
to be fast: plain dicts, a sorted price list per side, and one method per rule of the contract.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fastbook.engine.types import (
    COMMAND_DTYPE,
    COMMAND_FIELDS,
    EVENT_DTYPE,
    EVENT_FIELDS,
    MAX_ORDER_ID,
    MAX_OWNER,
    MAX_PRICE,
    MAX_QTY,
    CancelReason,
    Event,
    EventType,
    Op,
    OrderType,
    Reject,
    Side,
    Stp,
    Tif,
)

_MASK64 = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

SNAPSHOT_MAGIC = b"FBSN"
SNAPSHOT_VERSION = 1
_HEADER = struct.Struct("<4sHHQQ")  # magic, version, reserved, next_stamp, order_count
_RECORD = struct.Struct("<QIIqqQ")  # id, owner, flags, price, remaining, stamp
_TRAILER = struct.Struct("<Q")  # state_hash

# Plain ints for the hot comparisons (IntEnum members compare equal, but events should carry ints).
_BUY, _SELL = int(Side.BUY), int(Side.SELL)
_LIMIT, _MARKET = int(OrderType.LIMIT), int(OrderType.MARKET)
_GTC, _IOC, _FOK = int(Tif.GTC), int(Tif.IOC), int(Tif.FOK)
_STP_NONE, _STP_TAKER, _STP_MAKER, _STP_BOTH = (int(s) for s in Stp)

LevelSummary = tuple[int, int, int]  # (price, total_qty, order_count)
OrderInfo = tuple[int, int, int, int, int, int, int, bool]


def mix64(z: int) -> int:
    """The splitmix64 finaliser, modulo 2^64."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _flags(side: int, stp: int, post_only: bool) -> int:
    return side | (stp << 8) | (int(post_only) << 16)


def _check_int(name: str, value: object) -> int:
    """The per-command API's programming-error gate: a Python int within signed 64-bit range."""
    if not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{name} must fit in a signed 64-bit integer, got {value}")
    return int(value)


@dataclass(slots=True)
class _Order:
    """A resting order, or a taker while it matches (then it is not yet in the book)."""

    order_id: int
    owner: int
    side: int
    price: int  # limit price; 0 for a market order
    remaining: int
    stp: int
    post_only: bool
    stamp: int = 0

    def flags(self) -> int:
        return _flags(self.side, self.stp, self.post_only)

    def hash(self) -> int:
        h = mix64(self.order_id)
        h = mix64(h ^ self.owner)
        h = mix64(h ^ self.price)
        h = mix64(h ^ self.remaining)
        h = mix64(h ^ self.stamp)
        return mix64(h ^ self.flags())


class _BookSide:
    """One side of the book: price levels, each a FIFO of orders in ascending stamp."""

    def __init__(self, side: int) -> None:
        self.side = side
        # Insertion-ordered dict per level: orders are appended with ever-increasing stamps, so
        # iteration order is queue order, and removal by id is O(1).
        self.levels: dict[int, dict[int, _Order]] = {}
        self.prices: list[int] = []  # ascending

    def best_price(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.side == _BUY else self.prices[0]

    def prices_best_first(self) -> list[int]:
        return list(reversed(self.prices)) if self.side == _BUY else list(self.prices)

    def orders_best_first(self) -> Iterator[_Order]:
        for price in self.prices_best_first():
            yield from list(self.levels[price].values())

    def oldest_at(self, price: int) -> _Order:
        return next(iter(self.levels[price].values()))

    def append(self, order: _Order) -> None:
        level = self.levels.get(order.price)
        if level is None:
            level = self.levels[order.price] = {}
            insort(self.prices, order.price)
        level[order.order_id] = order

    def remove(self, order: _Order) -> None:
        level = self.levels[order.price]
        del level[order.order_id]
        if not level:
            del self.levels[order.price]
            del self.prices[bisect_left(self.prices, order.price)]

    def summary(self, price: int) -> LevelSummary:
        level = self.levels[price]
        return (price, sum(o.remaining for o in level.values()), len(level))

    def order_count(self) -> int:
        return sum(len(level) for level in self.levels.values())


def _rejected(reason: int, order_id: int, owner: int, side: int, price: int, qty: int) -> Event:
    return Event(int(EventType.REJECTED), order_id, owner, side, price, qty, 0, reason=reason)


def _cancelled(order: _Order, qty: int, reason: CancelReason) -> Event:
    return Event(
        int(EventType.CANCELLED),
        order.order_id,
        order.owner,
        order.side,
        order.price,
        qty,
        0,
        reason=int(reason),
    )


def _done(order: _Order) -> Event:
    return Event(int(EventType.DONE), order.order_id, order.owner, order.side, order.price, 0, 0)


class ReferenceBook:
    """The contract of docs/engine.md in plain Python; same API as `fastbook.engine._engine.Book`."""

    def __init__(self) -> None:
        self._orders: dict[int, _Order] = {}
        self._bids = _BookSide(_BUY)
        self._asks = _BookSide(_SELL)
        self._next_stamp = 1
        self._hash = mix64(self._next_stamp)

    # ----------------------------------------------------------------- commands (per-command API)

    def new(
        self,
        order_id: int,
        owner: int,
        side: int,
        price: int,
        qty: int,
        type: int = OrderType.LIMIT,
        tif: int = Tif.GTC,
        post_only: bool = False,
        stp: int = Stp.NONE,
    ) -> list[Event]:
        return self._new(
            _check_int("order_id", order_id),
            _check_int("owner", owner),
            _check_int("side", side),
            _check_int("price", price),
            _check_int("qty", qty),
            _check_int("type", type),
            _check_int("tif", tif),
            _check_int("post_only", post_only) != 0,
            _check_int("stp", stp),
        )

    def cancel(self, order_id: int, owner: int) -> list[Event]:
        return self._cancel(_check_int("order_id", order_id), _check_int("owner", owner))

    def amend(self, order_id: int, owner: int, price: int = 0, qty: int = 0) -> list[Event]:
        return self._amend(
            _check_int("order_id", order_id),
            _check_int("owner", owner),
            _check_int("price", price),
            _check_int("qty", qty),
        )

    def cancel_all(self, owner: int) -> list[Event]:
        return self._cancel_all(_check_int("owner", owner))

    # ------------------------------------------------------------------------------- the rules

    def _new(
        self,
        order_id: int,
        owner: int,
        side: int,
        price: int,
        qty: int,
        order_type: int,
        tif: int,
        post_only: bool,
        stp: int,
    ) -> list[Event]:
        def reject(reason: Reject) -> list[Event]:
            return [_rejected(int(reason), order_id, owner, side, price, qty)]

        # Validation order is part of the contract: the first failure wins.
        if not 1 <= order_id <= MAX_ORDER_ID:
            return reject(Reject.INVALID_ORDER_ID)
        if not 0 <= owner <= MAX_OWNER:
            return reject(Reject.INVALID_OWNER)
        if side not in (_BUY, _SELL):
            return reject(Reject.INVALID_SIDE)
        if order_type not in (_LIMIT, _MARKET):
            return reject(Reject.INVALID_TYPE)
        if tif not in (_GTC, _IOC, _FOK):
            return reject(Reject.INVALID_TIF)
        if stp not in (_STP_NONE, _STP_TAKER, _STP_MAKER, _STP_BOTH):
            return reject(Reject.INVALID_STP)
        if not 1 <= qty <= MAX_QTY:
            return reject(Reject.INVALID_QTY)
        if order_type == _LIMIT and not 1 <= price <= MAX_PRICE:
            return reject(Reject.INVALID_PRICE)
        if order_type == _MARKET and price != 0:
            return reject(Reject.INVALID_PRICE)
        if post_only and not (order_type == _LIMIT and tif == _GTC):
            return reject(Reject.INVALID_POST_ONLY)
        if order_id in self._orders:
            return reject(Reject.DUPLICATE_ORDER_ID)
        if post_only and self._would_cross(side, price):
            return reject(Reject.POST_ONLY_WOULD_TAKE)

        taker = _Order(order_id, owner, side, price, qty, stp, post_only)
        events = [Event(int(EventType.ACCEPTED), order_id, owner, side, price, qty, qty)]
        if tif == _FOK and self._fillable(taker) < qty:
            events.append(_cancelled(taker, qty, CancelReason.FOK))
            return events
        stopped_by_stp = self._match(taker, events)
        if taker.remaining == 0:
            events.append(_done(taker))
        elif stopped_by_stp:
            pass  # the STP cancel of the taker was the last word; nothing rests
        elif order_type == _LIMIT and tif == _GTC:
            self._rest(taker)
        else:
            events.append(_cancelled(taker, taker.remaining, CancelReason.UNFILLED))
        return events

    def _cancel(self, order_id: int, owner: int) -> list[Event]:
        if not 0 <= owner <= MAX_OWNER:
            return [_rejected(int(Reject.INVALID_OWNER), order_id, owner, 0, 0, 0)]
        order = self._orders.get(order_id)
        if order is None or order.owner != owner:
            return [_rejected(int(Reject.UNKNOWN_ORDER), order_id, owner, 0, 0, 0)]
        event = _cancelled(order, order.remaining, CancelReason.USER)
        self._unrest(order)
        return [event]

    def _amend(self, order_id: int, owner: int, price: int, qty: int) -> list[Event]:
        def reject(reason: Reject) -> list[Event]:
            return [_rejected(int(reason), order_id, owner, 0, price, qty)]

        if not 0 <= owner <= MAX_OWNER:
            return reject(Reject.INVALID_OWNER)
        order = self._orders.get(order_id)
        if order is None or order.owner != owner:
            return reject(Reject.UNKNOWN_ORDER)
        if price == 0 and qty == 0:
            return reject(Reject.INVALID_AMEND)
        if not 0 <= qty <= MAX_QTY:
            return reject(Reject.INVALID_QTY)
        if not 0 <= price <= MAX_PRICE:
            return reject(Reject.INVALID_PRICE)
        new_price = price if price != 0 else order.price
        new_qty = qty if qty != 0 else order.remaining
        # A resting order never crosses its own price, so only a new price can make this fire.
        if order.post_only and self._would_cross(order.side, new_price):
            return reject(Reject.POST_ONLY_WOULD_TAKE)

        if new_price == order.price and new_qty <= order.remaining:
            self._hash ^= order.hash()
            order.remaining = new_qty
            self._hash ^= order.hash()
            return [self._amended(order, priority_kept=True)]

        # Loses priority: out of the book, new values, then it is a GTC limit taker like any other.
        self._unrest(order)
        order.price = new_price
        order.remaining = new_qty
        events = [self._amended(order, priority_kept=False)]
        stopped_by_stp = self._match(order, events)
        if order.remaining == 0:
            events.append(_done(order))
        elif not stopped_by_stp:
            self._rest(order)
        return events

    def _cancel_all(self, owner: int) -> list[Event]:
        if not 0 <= owner <= MAX_OWNER:
            return [_rejected(int(Reject.INVALID_OWNER), 0, owner, 0, 0, 0)]
        events = []
        for order_id in sorted(oid for oid, o in self._orders.items() if o.owner == owner):
            order = self._orders[order_id]
            events.append(_cancelled(order, order.remaining, CancelReason.USER))
            self._unrest(order)
        return events

    @staticmethod
    def _amended(order: _Order, priority_kept: bool) -> Event:
        return Event(
            int(EventType.AMENDED),
            order.order_id,
            order.owner,
            order.side,
            order.price,
            order.remaining,
            order.remaining,
            reason=int(priority_kept),
        )

    def _opposite(self, side: int) -> _BookSide:
        return self._asks if side == _BUY else self._bids

    def _would_cross(self, side: int, price: int) -> bool:
        best = self._opposite(side).best_price()
        if best is None:
            return False
        return price >= best if side == _BUY else price <= best

    @staticmethod
    def _accepts(taker: _Order, maker_price: int) -> bool:
        if taker.price == 0:  # market: any price
            return True
        return maker_price <= taker.price if taker.side == _BUY else maker_price >= taker.price

    def _fillable(self, taker: _Order) -> int:
        """FOK pre-check: what matching could fill, walking the opposite side without touching it."""
        total = 0
        for maker in self._opposite(taker.side).orders_best_first():
            if not self._accepts(taker, maker.price):
                break
            if taker.stp != _STP_NONE and maker.owner == taker.owner:
                if taker.stp in (_STP_TAKER, _STP_BOTH):
                    break  # matching would stop here too
                continue  # cancel-maker: removed, never filled against
            total += maker.remaining
            if total >= taker.remaining:
                break
        return total

    def _match(self, taker: _Order, events: list[Event]) -> bool:
        """Match the taker against the opposite side; True if STP cancelled the taker."""
        opposite = self._opposite(taker.side)
        while taker.remaining > 0:
            best = opposite.best_price()
            if best is None or not self._accepts(taker, best):
                return False
            maker = opposite.oldest_at(best)
            if taker.stp != _STP_NONE and maker.owner == taker.owner:
                if taker.stp == _STP_TAKER:
                    events.append(_cancelled(taker, taker.remaining, CancelReason.SELF_TRADE))
                    return True
                events.append(_cancelled(maker, maker.remaining, CancelReason.SELF_TRADE))
                self._unrest(maker)
                if taker.stp == _STP_BOTH:
                    events.append(_cancelled(taker, taker.remaining, CancelReason.SELF_TRADE))
                    return True
                continue
            fill = min(taker.remaining, maker.remaining)
            taker.remaining -= fill
            self._hash ^= maker.hash()
            maker.remaining -= fill
            self._hash ^= maker.hash()
            events.append(
                Event(
                    int(EventType.TRADE),
                    taker.order_id,
                    taker.owner,
                    taker.side,
                    maker.price,
                    fill,
                    taker.remaining,
                    maker.order_id,
                    maker.owner,
                    maker.remaining,
                )
            )
            if maker.remaining == 0:
                events.append(_done(maker))
                self._unrest(maker)
        return False

    # ------------------------------------------------------------------ state changes + hash

    def _set_next_stamp(self, value: int) -> None:
        self._hash ^= mix64(self._next_stamp) ^ mix64(value)
        self._next_stamp = value

    def _rest(self, order: _Order) -> None:
        """Queue an order at the back of its level with a fresh priority stamp."""
        order.stamp = self._next_stamp
        self._set_next_stamp(self._next_stamp + 1)
        self._insert(order)

    def _insert(self, order: _Order) -> None:
        self._orders[order.order_id] = order
        (self._bids if order.side == _BUY else self._asks).append(order)
        self._hash ^= order.hash()

    def _unrest(self, order: _Order) -> None:
        self._hash ^= order.hash()
        (self._bids if order.side == _BUY else self._asks).remove(order)
        del self._orders[order.order_id]

    # -------------------------------------------------------------------------------- queries

    def best_bid(self) -> LevelSummary | None:
        price = self._bids.best_price()
        return None if price is None else self._bids.summary(price)

    def best_ask(self) -> LevelSummary | None:
        price = self._asks.best_price()
        return None if price is None else self._asks.summary(price)

    def depth(self, n: int) -> tuple[list[LevelSummary], list[LevelSummary]]:
        n = _check_int("n", n)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        bids = [self._bids.summary(p) for p in self._bids.prices_best_first()[:n]]
        asks = [self._asks.summary(p) for p in self._asks.prices_best_first()[:n]]
        return bids, asks

    def order(self, order_id: int) -> OrderInfo | None:
        order = self._orders.get(_check_int("order_id", order_id))
        if order is None:
            return None
        return (
            order.order_id,
            order.owner,
            order.side,
            order.price,
            order.remaining,
            order.stamp,
            order.stp,
            order.post_only,
        )

    def __len__(self) -> int:
        return len(self._orders)

    def counts(self) -> tuple[int, int, int, int]:
        return (
            self._bids.order_count(),
            self._asks.order_count(),
            len(self._bids.prices),
            len(self._asks.prices),
        )

    @property
    def next_stamp(self) -> int:
        return self._next_stamp

    def state_hash(self) -> int:
        return self._hash

    # ----------------------------------------------------------------------- snapshot / restore

    def snapshot(self) -> bytes:
        resting = list(self._bids.orders_best_first()) + list(self._asks.orders_best_first())
        parts = [_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, 0, self._next_stamp, len(resting))]
        for o in resting:
            parts.append(_RECORD.pack(o.order_id, o.owner, o.flags(), o.price, o.remaining, o.stamp))
        parts.append(_TRAILER.pack(self._hash))
        return b"".join(parts)

    @classmethod
    def restore(cls, data: bytes) -> ReferenceBook:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"snapshot must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size + _TRAILER.size:
            raise ValueError(f"snapshot truncated: {len(data)} bytes is shorter than header + trailer")
        magic, version, reserved, next_stamp, count = _HEADER.unpack_from(data, 0)
        if magic != SNAPSHOT_MAGIC:
            raise ValueError(f"snapshot has bad magic {magic!r}, expected {SNAPSHOT_MAGIC!r}")
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot format version {version} is not supported (expected 1)")
        if reserved != 0:
            raise ValueError(f"snapshot reserved header field is {reserved}, expected 0")
        expected_len = _HEADER.size + count * _RECORD.size + _TRAILER.size
        if len(data) != expected_len:
            raise ValueError(
                f"snapshot length {len(data)} does not match {count} orders ({expected_len} bytes)"
            )
        if not 1 <= next_stamp <= _INT64_MAX:
            raise ValueError(f"snapshot next_stamp {next_stamp} out of range 1..2^63-1")

        book = cls()
        book._set_next_stamp(next_stamp)
        seen_stamps: set[int] = set()
        previous: _Order | None = None
        for index in range(count):
            order_id, owner, flags, price, remaining, stamp = _RECORD.unpack_from(
                data, _HEADER.size + index * _RECORD.size
            )
            where = f"snapshot order #{index} (id {order_id})"
            side, stp, post_only = flags & 0xFF, (flags >> 8) & 0xFF, flags >> 16
            if not 1 <= order_id <= MAX_ORDER_ID:
                raise ValueError(f"{where}: order id out of range")
            if side not in (_BUY, _SELL) or stp > _STP_BOTH or post_only > 1:
                raise ValueError(f"{where}: invalid flags {flags:#x}")
            if not 1 <= price <= MAX_PRICE:
                raise ValueError(f"{where}: price {price} out of range")
            if not 1 <= remaining <= MAX_QTY:
                raise ValueError(f"{where}: remaining {remaining} out of range")
            if not 1 <= stamp < next_stamp:
                raise ValueError(f"{where}: stamp {stamp} not in 1..next_stamp-1 ({next_stamp - 1})")
            if order_id in book._orders:
                raise ValueError(f"{where}: duplicate order id")
            if stamp in seen_stamps:
                raise ValueError(f"{where}: duplicate stamp {stamp}")
            order = _Order(order_id, owner, side, price, remaining, stp, bool(post_only), stamp)
            if previous is not None and not _in_snapshot_order(previous, order):
                raise ValueError(f"{where}: orders not in canonical order (bids desc, then asks asc)")
            if side == _SELL and book._would_cross(_SELL, price):
                raise ValueError(f"{where}: ask at {price} crosses the best bid (crossed book)")
            seen_stamps.add(stamp)
            book._insert(order)
            previous = order
        (trailer_hash,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
        if trailer_hash != book._hash:
            raise ValueError(
                f"snapshot state hash mismatch: trailer {trailer_hash:#018x}, recomputed {book._hash:#018x}"
            )
        return book

    # ------------------------------------------------------------------------------- batch API

    def apply_batch(
        self, commands: np.ndarray, hashes: np.ndarray | None = None, next_order_id: int | None = None
    ) -> np.ndarray:
        """The batch API's output, one slow Python call per command (`hashes`: the state hash
        after each command, as the native engine writes it; `next_order_id`: news numbered as the
        native engine numbers them, written into `commands`)."""
        if not isinstance(commands, np.ndarray) or commands.dtype != COMMAND_DTYPE or commands.ndim != 1:
            raise ValueError("commands must be a 1-D numpy array of COMMAND_DTYPE")
        if hashes is not None and (
            not isinstance(hashes, np.ndarray)
            or hashes.dtype != np.uint64
            or hashes.ndim != 1
            or len(hashes) != len(commands)
            or not hashes.flags.c_contiguous
            or not hashes.flags.writeable
        ):
            raise ValueError("hashes must be a one-dimensional uint64 array, one per command")
        if next_order_id is not None:
            if type(next_order_id) is not int:
                raise ValueError("next_order_id must be an int")
            if not commands.flags.c_contiguous or not commands.flags.writeable:
                raise ValueError("with next_order_id, commands must be a writable contiguous array")
        rows: list[tuple[int, Event]] = []
        for index, cmd in enumerate(commands.tolist()):
            fields = dict(zip(COMMAND_FIELDS, cmd, strict=True))
            numbered = next_order_id is not None and fields["op"] == Op.NEW
            if numbered:
                fields["order_id"] = next_order_id
                commands["order_id"][index] = next_order_id
            events = self._apply_command(fields)
            if numbered and not (len(events) == 1 and events[0].type == EventType.REJECTED):
                next_order_id += 1  # type: ignore[operator]
            for event in events:
                rows.append((index, event))
            if hashes is not None:
                hashes[index] = self.state_hash()
        out = np.zeros(len(rows), dtype=EVENT_DTYPE)
        if rows:
            out["cmd"] = [index for index, _ in rows]
            for position, name in enumerate(EVENT_FIELDS):
                out[name] = [event[position] for _, event in rows]
        return out

    def _apply_command(self, c: dict[str, int]) -> list[Event]:
        op = c["op"]
        if op == Op.NEW:
            return self._new(
                c["order_id"],
                c["owner"],
                c["side"],
                c["price"],
                c["qty"],
                c["type"],
                c["tif"],
                c["post_only"] != 0,
                c["stp"],
            )
        if op == Op.CANCEL:
            return self._cancel(c["order_id"], c["owner"])
        if op == Op.AMEND:
            return self._amend(c["order_id"], c["owner"], c["price"], c["qty"])
        if op == Op.CANCEL_ALL:
            return self._cancel_all(c["owner"])
        return [_rejected(int(Reject.INVALID_OP), c["order_id"], c["owner"], c["side"], c["price"], c["qty"])]


def _in_snapshot_order(before: _Order, after: _Order) -> bool:
    """Canonical record order: bids (price desc, stamp asc), then asks (price asc, stamp asc)."""
    if before.side != after.side:
        return before.side == _BUY and after.side == _SELL
    if before.price != after.price:
        return before.price > after.price if after.side == _BUY else before.price < after.price
    return before.stamp < after.stamp
