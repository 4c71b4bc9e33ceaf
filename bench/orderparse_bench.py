"""Decoding cost of client order messages: the native reader (`fastbook.wire._orderparse.parse_orders`)
against the Python decoder (`fastbook.wire.decode_orders`), in us per order.

The messages are e2e_bench's bulk form: `json.dumps` (default separators) of arrays of new limit
orders from `order_flow`. Best of several rounds over the same messages.

    python bench/orderparse_bench.py [--orders 100000] [--per-message 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from e2e_bench import order_flow

from fastbook.wire._orderparse import parse_orders
from fastbook.wire.market import MarketSpec
from fastbook.wire.orders import OrderCommand, decode_orders


def best_seconds(decode: Callable[[bytes], Any], messages: list[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for payload in messages:
            decode(payload)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    market = MarketSpec("BTC-USD")
    scales = (market._tick_places, market._tick_units, market._lot_places, market._lot_units)
    flow = order_flow(args.orders, 7, "bench")
    step = args.per_message
    messages = [json.dumps(flow[i : i + step]).encode() for i in range(0, len(flow), step)]

    # The two agree on these messages (tests/test_orderparse.py checks it in general).
    for payload in messages:
        got = parse_orders(payload, *scales)
        assert got is not None, "the benchmark form must be read natively"
        commands, ids = got
        expected = decode_orders(payload, market)
        assert all(isinstance(cmd, OrderCommand) for cmd in expected)
        assert ids == [cmd.client_order_id for cmd in expected]  # type: ignore[union-attr]
        assert commands["price"].tolist() == [cmd.price for cmd in expected]  # type: ignore[union-attr]
        assert commands["qty"].tolist() == [cmd.qty for cmd in expected]  # type: ignore[union-attr]

    native = best_seconds(lambda p: parse_orders(p, *scales), messages, args.rounds)
    python = best_seconds(lambda p: decode_orders(p, market), messages, args.rounds)
    n = len(flow)
    print(f"{n} orders in {len(messages)} messages of {step} ({len(messages[0])} bytes each)")
    print(f"parse_orders (native): {native / n * 1e6:.3f} us/order")
    print(f"decode_orders (Python): {python / n * 1e6:.3f} us/order")
    print(f"ratio: {python / native:.1f}x")


if __name__ == "__main__":
    main()
