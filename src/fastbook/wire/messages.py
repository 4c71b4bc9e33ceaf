"""What the sequencer and edges publish for people and programs: reports, the book, public trades,
replica status (docs/wire.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastbook.wire.fields import UNKNOWN_MARKET, WIRE_VERSION, dumps, hash_hex, json_string
from fastbook.wire.market import MarketSpec


def reject_report(client_order_id: str | None, op: str | None, code: str, message: str) -> dict[str, Any]:
    return {"type": "rejected", "id": client_order_id, "op": op, "code": code, "message": message}


def unknown_market_reports(market_name: str, known: Iterable[str]) -> bytes:
    """The answer for orders sent to `<prefix>/<market>/orders/<client>` of a market nobody sequences
    (for a broker process that hosts the sequencers and subscribes to `<prefix>/+/orders/+`)."""
    listed = ", ".join(sorted(known)) or "none"
    message = f"no sequencer for market {market_name[:64]!r} here (markets: {listed})"
    return encode_reports([reject_report(None, None, UNKNOWN_MARKET, message)])


def encode_reports(reports: Sequence[dict[str, Any]]) -> bytes:
    """A reports/<client_id> message is always a JSON array of report objects."""
    return dumps(list(reports))


def encode_report_texts(texts: Sequence[str]) -> bytes:
    """encode_reports of reports already written as compact JSON (`dumps(report).decode()` each)."""
    return f"[{','.join(texts)}]".encode()


def encode_book(
    market: MarketSpec,
    version: int,
    state_hash: int,
    depth: tuple[Sequence[tuple[int, int, int]], Sequence[tuple[int, int, int]]],
    last_trade: dict[str, Any] | None,
) -> bytes:
    bids, asks = depth
    tp, lq = market.ticks_to_price, market.lots_to_qty
    return dumps(
        {
            "v": WIRE_VERSION,
            "market": market.name,
            "version": version,
            "hash": hash_hex(state_hash),
            "bids": [[tp(p), lq(q), n] for p, q, n in bids],
            "asks": [[tp(p), lq(q), n] for p, q, n in asks],
            "last_trade": last_trade,
        }
    )


def encode_trades(market: MarketSpec, trades: Sequence[str]) -> bytes:
    """The trades message of public trades already written as compact JSON (`dumps(trade)`,
    decoded): the bytes of dumps({"v": ..., "market": ..., "trades": [...]})."""
    head = f'{{"v":{WIRE_VERSION},"market":{json_string(market.name)},"trades":['
    return f'{head}{",".join(trades)}]}}'.encode()


def encode_status(client_id: str, state: str, version: int, state_hash: int, lag: int) -> bytes:
    return dumps(
        {"client_id": client_id, "state": state, "version": version, "hash": hash_hex(state_hash), "lag": lag}
    )


