"""Engine vocabulary shared by the native book and the reference book.

The values here are the contract of docs/engine.md; engine/contract.pxd repeats them for C, and
tests/engine/test_engine_contract.py checks that the two agree.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np

MAX_ORDER_ID = 2**63 - 1
MAX_OWNER = 2**32 - 1
MAX_QTY = 2**32 - 1
MAX_PRICE = 2**53 - 1


class Side(IntEnum):
    BUY = 1
    SELL = 2


class OrderType(IntEnum):
    LIMIT = 1
    MARKET = 2


class Tif(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3


class Stp(IntEnum):
    NONE = 0
    CANCEL_TAKER = 1
    CANCEL_MAKER = 2
    CANCEL_BOTH = 3


class Op(IntEnum):
    NEW = 1
    CANCEL = 2
    AMEND = 3
    CANCEL_ALL = 4


class EventType(IntEnum):
    ACCEPTED = 1
    REJECTED = 2
    TRADE = 3
    CANCELLED = 4
    DONE = 5
    AMENDED = 6


class Reject(IntEnum):
    INVALID_ORDER_ID = 1
    INVALID_OWNER = 2
    INVALID_SIDE = 3
    INVALID_TYPE = 4
    INVALID_TIF = 5
    INVALID_STP = 6
    INVALID_QTY = 7
    INVALID_PRICE = 8
    INVALID_POST_ONLY = 9
    DUPLICATE_ORDER_ID = 10
    UNKNOWN_ORDER = 11
    POST_ONLY_WOULD_TAKE = 12
    INVALID_AMEND = 13
    INVALID_OP = 14


class CancelReason(IntEnum):
    USER = 1
    UNFILLED = 2
    FOK = 3
    SELF_TRADE = 4


class Event(NamedTuple):
    """One engine event; equal to the plain 11-tuple the native engine returns."""

    type: int
    order_id: int
    owner: int
    side: int
    price: int
    qty: int
    remaining: int
    other_id: int = 0
    other_owner: int = 0
    other_remaining: int = 0
    reason: int = 0


# Fixed-layout records for the batch API (engine/contract.pxd declares the same packed structs).
COMMAND_DTYPE = np.dtype(
    [
        ("op", "u1"),
        ("side", "u1"),
        ("type", "u1"),
        ("tif", "u1"),
        ("stp", "u1"),
        ("post_only", "u1"),
        ("_pad", "u2"),
        ("owner", "u4"),
        ("_pad2", "u4"),
        ("order_id", "i8"),
        ("price", "i8"),
        ("qty", "i8"),
    ]
)
assert COMMAND_DTYPE.itemsize == 40

EVENT_DTYPE = np.dtype(
    [
        ("cmd", "u4"),
        ("type", "u1"),
        ("reason", "u1"),
        ("side", "u1"),
        ("_pad", "u1"),
        ("order_id", "i8"),
        ("owner", "u4"),
        ("other_owner", "u4"),
        ("other_id", "i8"),
        ("price", "i8"),
        ("qty", "i8"),
        ("remaining", "i8"),
        ("other_remaining", "i8"),
    ]
)
assert EVENT_DTYPE.itemsize == 64

EVENT_FIELDS = Event._fields
# An Event as the plain tuple the native engine returns (Event is a NamedTuple of these 11 ints).
EventTuple = tuple[int, int, int, int, int, int, int, int, int, int, int]


def _field_names(dtype: np.dtype) -> tuple[str, ...]:
    # numpy types dtype.names as optional (None for a dtype without fields).
    if dtype.names is None:
        raise TypeError(f"{dtype} is not a structured dtype")
    return dtype.names


COMMAND_FIELDS = _field_names(COMMAND_DTYPE)


def event_rows_to_tuples(rows: np.ndarray) -> list[EventTuple]:
    """Turn EVENT_DTYPE rows into the per-command API's 11-tuples (for comparison and display)."""
    cols = [rows[name].tolist() for name in EVENT_FIELDS]
    return [tuple(r) for r in zip(*cols, strict=True)]
