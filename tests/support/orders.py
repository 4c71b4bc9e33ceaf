"""Order messages into the sequencer's run path whatever their form: tests of the run writer give
it client order ids that JSON escapes, which the native reader (wire/_orderparse.pyx) leaves to
`decode_orders` and so to the per-command path."""

from __future__ import annotations

import numpy as np

from fastbook.engine.types import COMMAND_DTYPE, Op
from fastbook.wire.market import MarketSpec
from fastbook.wire.orders import OrderCommand, decode_orders


def decoded_rows(payload: bytes, market: MarketSpec) -> tuple[np.ndarray, list[str | None]] | None:
    """`decode_orders` as the native reader's rows (owner and order_id 0; only a new carries order
    attributes, an amend its price and qty) and client order ids, or None unless every order in
    the message is valid."""
    items = decode_orders(payload, market)
    rows = np.zeros(len(items), dtype=COMMAND_DTYPE)
    coids: list[str | None] = []
    for index, item in enumerate(items):
        if not isinstance(item, OrderCommand):
            return None
        row = rows[index : index + 1]
        row["op"], row["price"], row["qty"] = item.op, item.price, item.qty
        if item.op == Op.NEW:
            row["side"], row["type"], row["tif"] = item.side, item.order_type, item.tif
            row["stp"], row["post_only"] = item.stp, int(item.post_only)
        coids.append(item.client_order_id)
    return rows, coids
