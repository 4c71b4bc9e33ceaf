"""Client orders in: `orders/<client_id>` messages decoded to integer commands, or rejects
(code + message). Decoding never raises on bad client input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastbook.engine.types import (
    Op,
    OrderType,
    Stp,
    Tif,
)
from fastbook.wire.fields import (
    _OP_NEW,
    CLIENT_ID_RE,
    CLIENT_ORDER_ID_RE,
    FIELDS_BY_OP,
    ID_RULE,
    INVALID_AMEND,
    INVALID_FIELD,
    INVALID_MESSAGE,
    INVALID_OP,
    INVALID_PRICE,
    INVALID_QTY,
    INVALID_UTF8,
    MALFORMED_JSON,
    MAX_ORDERS_PER_MESSAGE,
    MISSING_FIELD,
    OP_NAMES,
    PAYLOAD_TOO_LARGE,
    SIDE_NAMES,
    STP_NAMES,
    TIF_NAMES,
    TYPE_NAMES,
    UNKNOWN_FIELD,
    UNKNOWN_MARKET,
    describe,
)
from fastbook.wire.market import MarketSpec
from fastbook.wire.messages import reject_report


@dataclass(slots=True)
class OrderCommand:
    """One decoded client command, integers only, not yet mapped to engine ids."""

    op: int  # an Op value
    client_order_id: str | None
    side: int = 0
    order_type: int = OrderType.LIMIT
    tif: int = Tif.GTC
    stp: int = Stp.NONE
    post_only: bool = False
    price: int = 0  # ticks; 0 = none (market order) / keep (amend)
    qty: int = 0  # lots; 0 = keep (amend)


@dataclass(slots=True)
class WireReject:
    """A command refused before it reached the engine; becomes a "rejected" report."""

    client_order_id: str | None
    op: str | None
    code: str
    message: str

    def report(self) -> dict[str, Any]:
        return reject_report(self.client_order_id, self.op, self.code, self.message)


class _BadOrder(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _reject_constant(name: str) -> Any:
    raise _BadOrder(MALFORMED_JSON, f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _BadOrder(MALFORMED_JSON, f"duplicate field {key!r}")
            seen.add(key)
    return obj


def parse_json(payload: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no duplicate keys. Raises _BadOrder."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadOrder(INVALID_UTF8, f"payload is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise _BadOrder(MALFORMED_JSON, f"malformed JSON: {exc.msg} at {where}") from None
    except RecursionError:
        raise _BadOrder(MALFORMED_JSON, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise _BadOrder(MALFORMED_JSON, f"malformed JSON: {str(exc)[:80]}") from None


def decode_orders(
    payload: bytes, market: MarketSpec, max_payload: int = 1 << 20
) -> list[OrderCommand | WireReject]:
    """An orders/<client_id> payload (one JSON object or an array of them) -> commands and rejects,
    in message order. Never raises."""
    if len(payload) > max_payload:
        message = f"payload of {len(payload)} bytes exceeds {max_payload}"
        return [WireReject(None, None, PAYLOAD_TOO_LARGE, message)]
    try:
        doc = parse_json(payload)
    except _BadOrder as bad:
        return [WireReject(None, None, bad.code, bad.message)]
    if isinstance(doc, dict):
        return [decode_order(doc, market)]
    if isinstance(doc, list):
        if not doc:
            return [WireReject(None, None, INVALID_MESSAGE, "empty order array")]
        if len(doc) > MAX_ORDERS_PER_MESSAGE:
            message = f"{len(doc)} orders in one message; max {MAX_ORDERS_PER_MESSAGE}"
            return [WireReject(None, None, INVALID_MESSAGE, message)]
        return [
            decode_order(item, market)
            if isinstance(item, dict)
            else WireReject(None, None, INVALID_MESSAGE, f"array item {i} is not a JSON object")
            for i, item in enumerate(doc)
        ]
    message = "an order message must be a JSON object or an array of objects"
    return [WireReject(None, None, INVALID_MESSAGE, message)]


def _enum_field(obj: dict[str, Any], name: str, names: dict[str, Any], default: Any) -> Any:
    value = obj.get(name)
    if value is None:
        if name in obj:
            raise _BadOrder(INVALID_FIELD, f"{name} must be one of {', '.join(names)}, got null")
        return default
    if not isinstance(value, str) or value not in names:
        got = describe(value)
        raise _BadOrder(INVALID_FIELD, f"{name} must be one of {', '.join(names)}, got {got}")
    return names[value]


def decode_order(obj: dict[str, Any], market: MarketSpec) -> OrderCommand | WireReject:
    """One order object -> OrderCommand or WireReject (never raises)."""
    raw_id = obj.get("id")
    client_order_id = raw_id if isinstance(raw_id, str) and CLIENT_ORDER_ID_RE.fullmatch(raw_id) else None
    raw_op = obj.get("op")
    op_text = raw_op if isinstance(raw_op, str) and raw_op in OP_NAMES else None
    try:
        if raw_op is None:
            raise _BadOrder(MISSING_FIELD, 'missing field "op" (new, cancel, amend or cancel_all)')
        if op_text is None:
            got = describe(raw_op)
            raise _BadOrder(INVALID_OP, f"op must be new, cancel, amend or cancel_all, got {got}")
        op = OP_NAMES[op_text]
        if not obj.keys() <= FIELDS_BY_OP[op]:
            unknown = obj.keys() - FIELDS_BY_OP[op]
            names = ", ".join(json.dumps(name[:40]) for name in sorted(unknown)[:5])
            raise _BadOrder(UNKNOWN_FIELD, f"unknown field(s) for {op_text}: {names}")
        if "market" in obj and obj["market"] != market.name:
            raise _BadOrder(UNKNOWN_MARKET, f"market {describe(obj['market'])} is not {market.name}")
        if raw_id is None:
            if op != Op.CANCEL_ALL:
                raise _BadOrder(MISSING_FIELD, 'missing field "id" (the client order id)')
            if "id" in obj:
                raise _BadOrder(INVALID_FIELD, ID_RULE)
        elif client_order_id is None:
            raise _BadOrder(INVALID_FIELD, ID_RULE)
        if op == Op.NEW:
            return _decode_new(obj, market, client_order_id)
        if op == Op.AMEND:
            price = _amount(obj, "price", market.price_to_ticks, INVALID_PRICE)
            qty = _amount(obj, "qty", market.qty_to_lots, INVALID_QTY)
            if price == 0 and qty == 0:
                raise _BadOrder(INVALID_AMEND, "amend needs a new price and/or qty")
            return OrderCommand(op, client_order_id, price=price, qty=qty)
        return OrderCommand(op, client_order_id)
    except _BadOrder as bad:
        return WireReject(client_order_id, op_text, bad.code, bad.message)


def _amount(obj: dict[str, Any], name: str, convert: Any, code: str) -> int:
    if name not in obj:
        return 0
    try:
        return int(convert(obj[name]))
    except ValueError as exc:
        raise _BadOrder(code, str(exc)) from None


def _decode_new(obj: dict[str, Any], market: MarketSpec, client_order_id: str | None) -> OrderCommand:
    if "side" not in obj:
        raise _BadOrder(MISSING_FIELD, 'missing field "side" (buy or sell)')
    side = _enum_field(obj, "side", SIDE_NAMES, None)
    order_type = _enum_field(obj, "type", TYPE_NAMES, OrderType.LIMIT)
    tif = _enum_field(obj, "tif", TIF_NAMES, Tif.GTC)
    stp = _enum_field(obj, "stp", STP_NAMES, Stp.NONE)
    post_only = obj.get("post_only", False)
    if not isinstance(post_only, bool):
        raise _BadOrder(INVALID_FIELD, "post_only must be true or false")
    if "qty" not in obj:
        raise _BadOrder(MISSING_FIELD, 'missing field "qty"')
    qty = _amount(obj, "qty", market.qty_to_lots, INVALID_QTY)
    if order_type == OrderType.MARKET:
        if "price" in obj:
            raise _BadOrder(INVALID_PRICE, "a market order takes no price")
        price = 0
    else:
        if "price" not in obj:
            raise _BadOrder(MISSING_FIELD, 'missing field "price" (a limit order needs one)')
        price = _amount(obj, "price", market.price_to_ticks, INVALID_PRICE)
    return OrderCommand(_OP_NEW, client_order_id, side, order_type, tif, stp, post_only, price, qty)


def valid_client_id(client_id: str) -> bool:
    return bool(CLIENT_ID_RE.fullmatch(client_id))


