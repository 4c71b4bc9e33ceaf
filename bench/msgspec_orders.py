"""Order messages read with msgspec (Structs tagged on "op", unknown fields forbidden) into the
engine command rows the sequencer executes: the same rows and client order ids as the native
`fastbook.wire._orderparse.parse_orders`, or None when the message is not valid as a whole (then
`fastbook.wire.orders.decode_orders` names what is wrong; a reject's code and message come only
from there).

Bench only (orderparse_bench.py): it was written to see whether msgspec could replace the native
reader, and measured several times slower (bench/README.md, "Reading order messages"), so the
package keeps the native reader; this stays to repeat the measurement.

msgspec finds *that* a message is bad, never *why* in the contract's words. It also keeps the
last of two equal keys where the contract rejects the message: so a message with a backslash is
left to the decoder, every quote in the rest delimits a string, and the quotes are counted against
the strings the Structs account for (a duplicate key adds at least one string).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec
import numpy as np
from msgspec import UNSET, UnsetType

from fastbook.engine.types import COMMAND_DTYPE, Op, OrderType, Side, Stp, Tif
from fastbook.wire.fields import MAX_ORDERS_PER_MESSAGE
from fastbook.wire.market import MarketSpec


class _Named(enum.Enum):
    """A wire name whose member carries the engine's integer as `code` (an attribute read, not a
    dict lookup hashing the member in Python)."""

    code: int

    def __new__(cls, text: str, code: int) -> _Named:
        member = object.__new__(cls)
        member._value_ = text
        member.code = code
        return member


class SideName(_Named):
    BUY = "buy", int(Side.BUY)
    SELL = "sell", int(Side.SELL)


class TypeName(_Named):
    LIMIT = "limit", int(OrderType.LIMIT)
    MARKET = "market", int(OrderType.MARKET)


class TifName(_Named):
    GTC = "gtc", int(Tif.GTC)
    IOC = "ioc", int(Tif.IOC)
    FOK = "fok", int(Tif.FOK)


class StpName(_Named):
    NONE = "none", int(Stp.NONE)
    CANCEL_TAKER = "cancel_taker", int(Stp.CANCEL_TAKER)
    CANCEL_MAKER = "cancel_maker", int(Stp.CANCEL_MAKER)
    CANCEL_BOTH = "cancel_both", int(Stp.CANCEL_BOTH)


# wire.CLIENT_ORDER_ID_RE; msgspec searches, hence the anchors.
ClientOrderId = Annotated[str, msgspec.Meta(pattern=r"^[!-~]{1,64}\Z")]
# Decimal strings; their rules (plain notation, a whole number of steps, the range) are
# MarketSpec's conversions, which also memoize.
Amount = str


# Every optional field defaults to UNSET, not to its default value: what a message gave is counted.
class _Order(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, kw_only=True, gc=False):
    market: str | UnsetType = UNSET


class NewOrder(_Order, tag="new"):
    id: ClientOrderId
    side: SideName
    qty: Amount
    price: Amount | UnsetType = UNSET
    type: TypeName | UnsetType = UNSET
    tif: TifName | UnsetType = UNSET
    stp: StpName | UnsetType = UNSET
    post_only: bool | UnsetType = UNSET


class CancelOrder(_Order, tag="cancel"):
    id: ClientOrderId


class AmendOrder(_Order, tag="amend"):
    id: ClientOrderId
    price: Amount | UnsetType = UNSET
    qty: Amount | UnsetType = UNSET


class CancelAllOrder(_Order, tag="cancel_all"):
    id: ClientOrderId | UnsetType = UNSET


AnyOrder = NewOrder | CancelOrder | AmendOrder | CancelAllOrder
OrderArray = Annotated[list[AnyOrder], msgspec.Meta(min_length=1, max_length=MAX_ORDERS_PER_MESSAGE)]
OrderMessage = AnyOrder | OrderArray

_NEW, _CANCEL, _AMEND, _CANCEL_ALL = int(Op.NEW), int(Op.CANCEL), int(Op.AMEND), int(Op.CANCEL_ALL)
_LIMIT, _MARKET = int(OrderType.LIMIT), int(OrderType.MARKET)
_GTC, _STP_NONE = int(Tif.GTC), int(Stp.NONE)


class OrderReader:
    """`read(payload)` -> (COMMAND_DTYPE rows, owner and order_id 0, client order ids) when every
    order in the message is valid, else None. One per market: it holds the market's conversions."""

    def __init__(self, market: MarketSpec, max_payload: int = 1 << 20) -> None:
        self.market = market
        self.max_payload = max_payload
        self._decode = msgspec.json.Decoder(OrderMessage).decode

    def read(self, payload: bytes) -> tuple[np.ndarray, list[str | None]] | None:
        if len(payload) > self.max_payload or b"\\" in payload:
            return None
        try:
            doc: Any = self._decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        orders = doc if type(doc) is list else [doc]
        rows: list[tuple[int, ...]] = []
        ids: list[str | None] = []
        strings = 0  # the strings these orders account for: 2 per key, less 1 per post_only
        ticks, lots, name = self.market.price_to_ticks, self.market.qty_to_lots, self.market.name
        try:
            for order in orders:
                kind = type(order)
                if order.market is not UNSET:
                    if order.market != name:
                        return None
                    strings += 2
                if kind is NewOrder:
                    strings += 8  # op, id, side, qty
                    order_type = _LIMIT
                    if order.type is not UNSET:
                        order_type = order.type.code
                        strings += 2
                    tif = _GTC
                    if order.tif is not UNSET:
                        tif = order.tif.code
                        strings += 2
                    stp = _STP_NONE
                    if order.stp is not UNSET:
                        stp = order.stp.code
                        strings += 2
                    if order.price is UNSET:
                        if order_type != _MARKET:
                            return None
                        price = 0
                    elif order_type == _MARKET:
                        return None
                    else:
                        price = ticks(order.price)
                        strings += 2
                    post_only = order.post_only
                    if post_only is UNSET:
                        post_only = False
                    else:
                        strings += 1
                    rows.append((_NEW, order.side.code, order_type, tif, stp, post_only, 0, 0, 0, 0,
                                 price, lots(order.qty)))
                    ids.append(order.id)
                elif kind is CancelOrder:
                    strings += 4
                    rows.append(_CANCEL_ROW)
                    ids.append(order.id)
                elif kind is AmendOrder:
                    if order.price is UNSET and order.qty is UNSET:
                        return None
                    strings += 4
                    price = qty = 0
                    if order.price is not UNSET:
                        price = ticks(order.price)
                        strings += 2
                    if order.qty is not UNSET:
                        qty = lots(order.qty)
                        strings += 2
                    rows.append((_AMEND, 0, 0, 0, 0, 0, 0, 0, 0, 0, price, qty))
                    ids.append(order.id)
                else:
                    strings += 2
                    if order.id is UNSET:
                        ids.append(None)
                    else:
                        strings += 2
                        ids.append(order.id)
                    rows.append(_CANCEL_ALL_ROW)
        except ValueError:  # an amount MarketSpec refuses
            return None
        if payload.count(b'"') != 2 * strings:
            return None  # a duplicate key
        return np.array(rows, dtype=COMMAND_DTYPE), ids


_CANCEL_ROW = (_CANCEL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
_CANCEL_ALL_ROW = (_CANCEL_ALL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
