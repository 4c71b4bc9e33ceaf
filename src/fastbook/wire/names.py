"""A client's own names: the private message that tells one client its owner number and the engine
order id -> client order id of its open orders (docs/wire.md, "Names").

The public log and snapshots identify orders by engine order id and owner number only; a client
learns which are its own from this message (on its replay answer topic, answering a replay request
with `"names": true`), from its replay answers (whose records carry its own names) and from the
`seq` of its `accepted` / `cancelled_all` reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastbook.engine.types import MAX_ORDER_ID, MAX_OWNER
from fastbook.wire.fields import CLIENT_ORDER_ID_RE, MAX_SEQ, dumps
from fastbook.wire.log import _int_in

NAMES_TYPE = "names"


@dataclass(frozen=True, slots=True)
class OwnNames:
    market: str
    version: int  # the sequencer's version the names are of
    owner: int | None  # the client's owner number (None: it has sequenced nothing yet)
    orders: list[tuple[int, str]]  # (engine order id, client order id) of its open orders, by id


def encode_names(names: OwnNames) -> bytes:
    body: dict[str, Any] = {
        "v": 1,
        "type": NAMES_TYPE,
        "market": names.market,
        "version": names.version,
        "owner": names.owner,
        "orders": [list(row) for row in names.orders],
    }
    return dumps(body)


def is_names_payload(payload: bytes | memoryview) -> bool:
    return bytes(payload[:1]) == b"{"


def decode_names(payload: bytes | memoryview) -> OwnNames:
    """ValueError if the payload is not a names message."""
    try:
        doc = json.loads(bytes(payload))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"names message is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != NAMES_TYPE or doc.get("v") != 1:
        raise ValueError("not a names message")
    market = doc.get("market")
    if not isinstance(market, str):
        raise ValueError("names message: market must be a string")
    version = _int_in(doc.get("version"), 0, MAX_SEQ, "names version")
    owner = doc.get("owner")
    if owner is not None:
        _int_in(owner, 1, MAX_OWNER, "names owner")
    rows = doc.get("orders")
    if not isinstance(rows, list) or (rows and owner is None):
        raise ValueError("names message: orders must be an array (empty without an owner)")
    orders = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 2:
            raise ValueError("names message: each order must be [engine order id, client order id]")
        order_id, coid = row
        _int_in(order_id, 1, MAX_ORDER_ID, "names order id")
        if not isinstance(coid, str) or not CLIENT_ORDER_ID_RE.fullmatch(coid):
            raise ValueError(f"names message: invalid client order id {str(coid)[:70]!r}")
        orders.append((order_id, coid))
    return OwnNames(market, version, owner, orders)
