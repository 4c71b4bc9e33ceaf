"""Decoding cost of client order messages, same run: the native reader
(`fastbook.wire._orderparse.parse_orders`), the msgspec reader (`msgspec_orders.OrderReader`, bench only)
and the Python decoder (`fastbook.wire.orders.decode_orders`), in us per order.

Valid messages: e2e_bench's new limit orders (`order_flow`, `json.dumps` with default separators),
as bulk arrays of --per-message orders and as one order per message. Invalid messages (one order
each, one per reject kind below): a reader finds *that* the message is bad and `decode_orders`
then says why (the reject's code and message are the contract's), so their cost is the reader's
plus the decoder's; measured against the decoder alone.

Each of --runs runs times every decoder in turn over the same messages (best of --rounds); the
table gives the min and median over the runs.

    python bench/orderparse_bench.py [--orders 100000] [--per-message 500] [--lone 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from e2e_bench import order_flow
from msgspec_orders import OrderReader

from fastbook.wire._orderparse import parse_orders
from fastbook.wire.market import MarketSpec
from fastbook.wire.orders import OrderCommand, WireReject, decode_orders

GOOD = {"op": "new", "id": "bad-1", "side": "buy", "price": "100.25", "qty": "0.500"}
# One message per reject kind the contract names before the engine (docs/wire.md, "Reports").
INVALID: dict[str, bytes] = {
    "misaligned price": json.dumps({**GOOD, "price": "100.255"}).encode(),
    "unknown field": json.dumps({**GOOD, "colour": "red"}).encode(),
    "bad side": json.dumps({**GOOD, "side": "up"}).encode(),
    "missing qty": json.dumps({k: v for k, v in GOOD.items() if k != "qty"}).encode(),
    "number price": json.dumps({**GOOD, "price": 100.25}).encode(),
    "duplicate key": json.dumps(GOOD).encode()[:-1] + b', "side": "sell"}',
    "malformed JSON": json.dumps(GOOD).encode()[:-1],
    "invalid UTF-8": json.dumps({**GOOD, "id": "b\xe9"}).encode().replace(b"\\u00e9", b"\xe9"),
}


def best_seconds(decode: Callable[[bytes], Any], messages: list[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for payload in messages:
            decode(payload)
        best = min(best, time.perf_counter() - t0)
    return best


def check_agree(messages: list[bytes], market: MarketSpec, native: Callable[[bytes], Any],
                reader: OrderReader) -> None:
    """Both readers read these messages into the same rows and ids as decode_orders'."""
    for payload in messages:
        got, other = native(payload), reader.read(payload)
        assert got is not None and other is not None, "the benchmark form must be read by both"
        assert got[0].tobytes() == other[0].tobytes() and got[1] == other[1]
        expected = decode_orders(payload, market)
        assert all(isinstance(cmd, OrderCommand) for cmd in expected)
        assert got[1] == [cmd.client_order_id for cmd in expected]  # type: ignore[union-attr]
        assert got[0]["price"].tolist() == [cmd.price for cmd in expected]  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--lone", type=int, default=20_000, help="one-order messages")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    market = MarketSpec("BTC-USD")
    scales = (market._tick_places, market._tick_units, market._lot_places, market._lot_units)
    reader = OrderReader(market)
    flow = order_flow(args.orders, 7, "bench")
    step = args.per_message
    bulk = [json.dumps(flow[i : i + step]).encode() for i in range(0, len(flow), step)]
    lone = [json.dumps(order).encode() for order in flow[: args.lone]]

    def native(payload: bytes) -> Any:
        return parse_orders(payload, *scales)

    check_agree(bulk, market, native, reader)
    check_agree(lone, market, native, reader)
    for name, payload in INVALID.items():
        assert native(payload) is None and reader.read(payload) is None, name
        assert isinstance(decode_orders(payload, market)[0], WireReject), name

    def then_decode(read: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        return lambda payload: read(payload) or decode_orders(payload, market)

    valid = {
        "native": native,
        "msgspec": reader.read,
        "decode_orders": lambda payload: decode_orders(payload, market),
    }
    invalid = {
        "native + decode_orders": then_decode(native),
        "msgspec + decode_orders": then_decode(reader.read),
        "decode_orders": lambda payload: decode_orders(payload, market),
    }
    cases: list[tuple[str, list[bytes], int, dict[str, Callable[[bytes], Any]]]] = [
        (f"bulk ({step}/message)", bulk, len(flow), valid),
        ("lone (1/message)", lone, len(lone), valid),
    ]
    for name, payload in INVALID.items():
        cases.append((f"invalid: {name}", [payload] * 2000, 2000, invalid))
    figures: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        for case, messages, count, decoders in cases:
            for name, decode in decoders.items():
                seconds = best_seconds(decode, messages, args.rounds)
                figures.setdefault((case, name), []).append(seconds / count * 1e6)
    print(f"{len(flow)} orders: {len(bulk)} messages of {step} ({len(bulk[0])} bytes each), "
          f"{len(lone)} one-order messages ({len(lone[0])} bytes); {args.runs} runs")
    print(f"{'messages':<28} {'decoder':<26} {'min us/order':>12} {'median':>8}")
    for (case, name), values in figures.items():
        print(f"{case:<28} {name:<26} {min(values):>12.3f} {statistics.median(values):>8.3f}")


if __name__ == "__main__":
    main()
