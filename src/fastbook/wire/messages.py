"""What the sequencer and edges publish for people and programs: reports, the book, public trades,
replica status (docs/wire.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastbook.wire.fields import RETAINED_COMMAND, UNKNOWN_MARKET, WIRE_VERSION, dumps, hash_hex, json_string
from fastbook.wire.market import MarketSpec


def reject_report(client_order_id: str | None, op: str | None, code: str, message: str) -> dict[str, Any]:
    return {"type": "rejected", "id": client_order_id, "op": op, "code": code, "message": message}


def retained_command_report() -> dict[str, Any]:
    """The answer to an order message the broker delivered as a retained copy: a broker resends it
    at every (re)subscribe, so acting on it would run the same commands again each time."""
    return reject_report(None, None, RETAINED_COMMAND,
                         "retained order messages are ignored (a broker resends them at every "
                         "reconnect); publish orders without the retain flag, and clear the retained "
                         "one with an empty retained message on the same topic")


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


class BookWriter:
    """Writes a market's `book` messages: the bytes of dumps({"v", "market", "version", "hash",
    "bids", "asks", "last_trade"}) with each level as [price, qty, orders].

    One is written after every batch that moved the version; most levels are the same as in the
    last one, so each level's text is kept (bounded) and the last trade's text is reused while the
    same object is passed: a lone order costs the levels it changed, not 40 decimal conversions
    and a json.dumps of the whole book."""

    MAX_LEVELS_KEPT = 8192

    def __init__(self, market: MarketSpec) -> None:
        self.market = market
        self._head = f'{{"v":{WIRE_VERSION},"market":{json_string(market.name)},"version":'
        self._levels: dict[tuple[int, int, int], str] = {}
        self._trade: dict[str, Any] | None = None
        self._trade_text = "null"
        self._depth: Any = None  # the levels of the last encode
        # (levels, text) of each side's last encode: a lone order mostly changes one side
        self._sides: list[tuple[Any, str]] = [(None, ""), (None, "")]

    def same(
        self,
        depth: tuple[Sequence[tuple[int, int, int]], Sequence[tuple[int, int, int]]],
        last_trade: dict[str, Any] | None,
    ) -> bool:
        """Whether `depth` and `last_trade` are those of the last `encode`: only the version and
        hash would differ (a lone order deeper than the levels shown, or one that changed nothing
        visible)."""
        return last_trade is self._trade and depth == self._depth

    def _side(self, k: int, levels: Sequence[tuple[int, int, int]]) -> str:
        last, text = self._sides[k]
        if levels != last:
            text = self._levels_text(levels)
            self._sides[k] = (levels, text)
        return text

    def _levels_text(self, levels: Sequence[tuple[int, int, int]]) -> str:
        known = self._levels
        get = known.get
        texts = [get(level) for level in levels]  # (a level is its own key: no tuple made per level)
        if None in texts:
            for i, level in enumerate(levels):
                if texts[i] is None:
                    if len(known) >= self.MAX_LEVELS_KEPT:
                        known.clear()
                    price, qty, orders = level
                    m = self.market
                    text = f'["{m.ticks_to_price(price)}","{m.lots_to_qty(qty)}",{int(orders)}]'
                    known[(price, qty, orders)] = texts[i] = text
        return ",".join(texts)  # type: ignore[arg-type]  # (every None was filled)

    def encode(
        self,
        version: int,
        state_hash: int,
        depth: tuple[Sequence[tuple[int, int, int]], Sequence[tuple[int, int, int]]],
        last_trade: dict[str, Any] | None,
    ) -> bytes:
        if last_trade is not self._trade:
            self._trade, self._trade_text = last_trade, dumps(last_trade).decode()
        self._depth = depth
        bids, asks = depth
        return (
            f'{self._head}{int(version)},"hash":"{hash_hex(state_hash)}","bids":[{self._side(0, bids)}],'
            f'"asks":[{self._side(1, asks)}],"last_trade":{self._trade_text}}}'
        ).encode()


def encode_book(
    market: MarketSpec,
    version: int,
    state_hash: int,
    depth: tuple[Sequence[tuple[int, int, int]], Sequence[tuple[int, int, int]]],
    last_trade: dict[str, Any] | None,
) -> bytes:
    """One book message (a program that writes many keeps a BookWriter)."""
    return BookWriter(market).encode(version, state_hash, depth, last_trade)


def with_health(book: bytes, health: dict[str, Any] | None) -> bytes:
    """A book message (as BookWriter wrote it: one JSON object) with the sequencer's `health` added
    (docs/wire.md, "Book"); unchanged when there is nothing to report (`health` None or empty)."""
    if not health:
        return book
    if not book.endswith(b"}"):
        raise ValueError("not a book message")
    return book[:-1] + b',"health":' + dumps(health) + b"}"


def encode_trades(market: MarketSpec, trades: Sequence[str]) -> bytes:
    """The trades message of public trades already written as compact JSON (`dumps(trade)`,
    decoded): the bytes of dumps({"v": ..., "market": ..., "trades": [...]})."""
    head = f'{{"v":{WIRE_VERSION},"market":{json_string(market.name)},"trades":['
    return f'{head}{",".join(trades)}]}}'.encode()


def encode_status(client_id: str, state: str, version: int, state_hash: int, lag: int, *,
                  sync: str | None = None, instance: str | None = None, started: int | None = None,
                  n: int | None = None, yielded_to: str | None = None) -> bytes:
    """An edge's retained status (docs/wire.md, "Replica status"); the keyword fields are left
    out when None."""
    doc: dict[str, object] = {
        "client_id": client_id, "state": state, "version": version, "hash": hash_hex(state_hash), "lag": lag
    }
    optional = {"sync": sync, "instance": instance, "started": started, "n": n, "yielded_to": yielded_to}
    for name, value in optional.items():
        if value is not None:
            doc[name] = value
    return dumps(doc)


