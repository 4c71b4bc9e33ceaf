"""Every payload that crosses MQTT: decoding client orders, encoding reports/book/trades/status, and
the log, replay and snapshot messages replicas consume. docs/wire.md is the reader's version of this
module; the two must agree.

Decoding never raises on bad client input: an order message turns into commands and `WireReject`s
(reason code + human message). Decoding sequencer output (log, snapshot) raises `ValueError`, because
bad data there means a bug or corruption, not a user mistake.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from fastbook._logparse import parse_log_message
from fastbook._runwriter import orders_json
from fastbook.market import MarketSpec
from fastbook.types import (
    COMMAND_DTYPE,
    MAX_ORDER_ID,
    MAX_OWNER,
    MAX_PRICE,
    MAX_QTY,
    Op,
    OrderType,
    Side,
    Stp,
    Tif,
)

WIRE_VERSION = 1
MAX_ORDERS_PER_MESSAGE = 10_000
MAX_SEQ = 2**63 - 1  # seqs, versions and heads are int64
REPLAY_MAX_ENTRIES = 100_000  # entries the sequencer serves per replay request; ask again for more
CLIENT_ORDER_ID_RE = re.compile(r"[!-~]{1,64}")  # printable ASCII, no spaces
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
ID_RULE = "id must be a string of 1-64 printable ASCII characters (no spaces)"

# Reject codes produced before the engine sees a command (the engine's own codes are the names of
# fastbook.types.Reject, e.g. "POST_ONLY_WOULD_TAKE").
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
INVALID_UTF8 = "INVALID_UTF8"
MALFORMED_JSON = "MALFORMED_JSON"
INVALID_MESSAGE = "INVALID_MESSAGE"
UNKNOWN_FIELD = "UNKNOWN_FIELD"
MISSING_FIELD = "MISSING_FIELD"
INVALID_FIELD = "INVALID_FIELD"
INVALID_OP = "INVALID_OP"
INVALID_PRICE = "INVALID_PRICE"
INVALID_QTY = "INVALID_QTY"
INVALID_AMEND = "INVALID_AMEND"
UNKNOWN_MARKET = "UNKNOWN_MARKET"
DUPLICATE_CLIENT_ORDER_ID = "DUPLICATE_CLIENT_ORDER_ID"
UNKNOWN_ORDER = "UNKNOWN_ORDER"
JOURNAL_UNAVAILABLE = "JOURNAL_UNAVAILABLE"
INVALID_CLIENT_ID = "INVALID_CLIENT_ID"

# Name -> plain int (not the IntEnum member: ints are cheaper to compare and format on the hot path).
OP_NAMES = {op.name.lower(): int(op) for op in (Op.NEW, Op.CANCEL, Op.AMEND, Op.CANCEL_ALL)}
OP_TEXT = {v: k for k, v in OP_NAMES.items()}
SIDE_NAMES = {"buy": int(Side.BUY), "sell": int(Side.SELL)}
SIDE_TEXT = {v: k for k, v in SIDE_NAMES.items()}
TYPE_NAMES = {"limit": int(OrderType.LIMIT), "market": int(OrderType.MARKET)}
TYPE_TEXT = {v: k for k, v in TYPE_NAMES.items()}
TIF_NAMES = {"gtc": int(Tif.GTC), "ioc": int(Tif.IOC), "fok": int(Tif.FOK)}
TIF_TEXT = {v: k for k, v in TIF_NAMES.items()}
STP_NAMES = {
    "none": int(Stp.NONE),
    "cancel_taker": int(Stp.CANCEL_TAKER),
    "cancel_maker": int(Stp.CANCEL_MAKER),
    "cancel_both": int(Stp.CANCEL_BOTH),
}
STP_TEXT = {v: k for k, v in STP_NAMES.items()}
_OP_NEW = int(Op.NEW)
CANCEL_REASON_TEXT = {1: "user", 2: "unfilled", 3: "fok", 4: "self_trade"}

FIELDS_BY_OP: dict[int, frozenset[str]] = {
    Op.NEW: frozenset({"op", "id", "side", "type", "price", "qty", "tif", "post_only", "stp", "market"}),
    Op.CANCEL: frozenset({"op", "id", "market"}),
    Op.AMEND: frozenset({"op", "id", "price", "qty", "market"}),
    Op.CANCEL_ALL: frozenset({"op", "id", "market"}),
}


def dumps(obj: Any) -> bytes:
    """Compact JSON, UTF-8."""
    # ensure_ascii: echoed client text may hold lone surrogates, which UTF-8 cannot encode.
    return json.dumps(obj, separators=(",", ":")).encode()


def describe(value: Any) -> str:
    """A short quote of a client's JSON value for a reject message. Never recurses: a value nested
    just shallowly enough to parse must not blow the stack when quoted."""
    if isinstance(value, str):
        return json.dumps(value[:40])
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return repr(value)[:40]


def hash_hex(value: int) -> str:
    return f"{value:016x}"


HASH_HEX_RE = re.compile(r"[0-9a-fA-F]{16}")


def parse_hash_hex(text: object) -> int:
    # A regex first: int(text, 16) would also take a sign, "0x", spaces, "_" and non-ASCII digits.
    if not isinstance(text, str) or not HASH_HEX_RE.fullmatch(text):
        raise ValueError(f"hash must be 16 hex digits, got {str(text)[:40]!r}")
    return int(text, 16)


# ---------------------------------------------------------------------------------------------
# Client orders (in)
# ---------------------------------------------------------------------------------------------


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


def order_rows(payload: bytes, market: MarketSpec) -> tuple[np.ndarray, list[str | None]] | None:
    """`decode_orders` as COMMAND_DTYPE rows (owner and order_id 0) and client order ids, or None
    unless every order in the message is valid. Only a new carries order attributes in its row
    (as in a log entry); an amend's price and qty are 0 where not given. The sequencer reads with
    the native `_orderparse.parse_orders` (the same rows for the messages it reads, None for the
    rest); this reads any valid JSON (escaped ids too): tests use it to drive the run path."""
    items = decode_orders(payload, market)
    rows = np.zeros(len(items), dtype=COMMAND_DTYPE)
    coids: list[str | None] = []
    for index, item in enumerate(items):
        if not isinstance(item, OrderCommand):
            return None
        row = rows[index : index + 1]
        row["op"], row["price"], row["qty"] = item.op, item.price, item.qty
        if item.op == _OP_NEW:
            row["side"], row["type"], row["tif"] = item.side, item.order_type, item.tif
            row["stp"], row["post_only"] = item.stp, int(item.post_only)
        coids.append(item.client_order_id)
    return rows, coids


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


# ---------------------------------------------------------------------------------------------
# Reports, book, trades, status (out)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The log (sequencer -> replicas) and the replay protocol
# ---------------------------------------------------------------------------------------------


class LogEntry(NamedTuple):
    """One sequenced engine command. JSON form: an array in exactly this field order, with `hash` as
    16 hex digits and `client_order_id` possibly null (cancel_all)."""

    seq: int
    hash: int
    client_id: str
    client_order_id: str | None
    op: int
    order_id: int
    owner: int
    side: int
    order_type: int
    tif: int
    stp: int
    post_only: int
    price: int
    qty: int


# A string as json.dumps writes it (quoted, escaped, ASCII-only), for JSON formatted by hand.
json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def encode_entry(entry: LogEntry) -> bytes:
    """Compact JSON array; the journal stores exactly these bytes and log messages splice them in.
    Formatted by hand (the hot path of the sequencer); equal to dumps([seq, hash_hex(hash), ...])."""
    seq, state_hash, client, coid, op, order_id, owner, side, otype, tif, stp, post_only, price, qty = entry
    coid_json = "null" if coid is None else json_string(coid)
    return (
        f'[{seq},"{state_hash:016x}",{json_string(client)},{coid_json},{op},{order_id},{owner},{side},'
        f"{otype},{tif},{stp},{post_only},{price},{qty}]"
    ).encode()


def _int_in(value: Any, low: int, high: int, name: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {repr(value)[:40]}")
    return value


def decode_entry(item: Any) -> LogEntry:
    if not isinstance(item, list) or len(item) != len(LogEntry._fields):
        raise ValueError(f"log entry must be an array of {len(LogEntry._fields)} items")
    seq, hsh, client, coid, op, order_id, owner, side, otype, tif, stp, post_only, price, qty = item
    if not isinstance(client, str) or not valid_client_id(client):
        raise ValueError(f"log entry client id invalid: {client!r}")
    if coid is None:
        if op != Op.CANCEL_ALL:
            raise ValueError("log entry client order id may only be null for cancel_all")
    elif not isinstance(coid, str) or not CLIENT_ORDER_ID_RE.fullmatch(coid):
        raise ValueError(f"log entry client order id invalid: {str(coid)[:70]!r}")
    return LogEntry(
        _int_in(seq, 1, MAX_SEQ, "seq"),
        parse_hash_hex(hsh),
        client,
        coid,
        _int_in(op, 1, 4, "op"),
        _int_in(order_id, 0, MAX_ORDER_ID, "order_id"),
        _int_in(owner, 0, MAX_OWNER, "owner"),
        _int_in(side, 0, 2, "side"),
        _int_in(otype, 0, 2, "type"),
        _int_in(tif, 0, 3, "tif"),
        _int_in(stp, 0, 3, "stp"),
        _int_in(post_only, 0, 1, "post_only"),
        _int_in(price, 0, MAX_PRICE, "price"),
        _int_in(qty, 0, MAX_QTY, "qty"),
    )


def encode_log_message(
    market: str, head: int, encoded_entries: Iterable[bytes], replay: bool = False
) -> bytes:
    """{"v":1,"market":M,"head":H,"replay":bool,"entries":[...]} built by splicing pre-encoded entries."""
    prefix = dumps({"v": WIRE_VERSION, "market": market, "head": head, "replay": replay})[:-1]
    return prefix + b',"entries":[' + b",".join(encoded_entries) + b"]}"


@dataclass(slots=True)
class LogMessage:
    market: str
    head: int
    replay: bool
    entries: list[LogEntry] = field(default_factory=list)


def decode_log_message(payload: bytes) -> LogMessage:
    """Raises ValueError on anything that is not a well-formed log message."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"log message is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("log message must be a JSON object")
    if type(doc.get("v")) is not int or doc.get("v") != WIRE_VERSION:
        raise ValueError(f"unsupported log message version {doc.get('v')!r}")
    market, head, entries = doc.get("market"), doc.get("head"), doc.get("entries")
    if (
        not isinstance(market, str)
        or type(head) is not int
        or not 0 <= head <= MAX_SEQ
        or not isinstance(entries, list)
    ):
        raise ValueError("log message needs market (string), head (integer 0..2^63-1) and entries (array)")
    return LogMessage(market, head, bool(doc.get("replay", False)), [decode_entry(e) for e in entries])


@dataclass(slots=True)
class LogBatch:
    """A log message as columns, from the native reader (`read_log_batch`): what a replica applies
    in one `Book.apply_batch` call. Row i is the entry with seq `seqs[i]`."""

    market: str
    head: int
    replay: bool
    seqs: np.ndarray  # int64
    hashes: np.ndarray  # uint64: the post-state hash the sequencer computed after each entry
    commands: np.ndarray  # COMMAND_DTYPE: the entries' engine commands
    client_ids: list[str]
    client_order_ids: list[str | None]

    def __len__(self) -> int:
        return len(self.seqs)

    def consecutive(self) -> bool:
        """Seqs strictly one apart (what a sequencer publishes: one batch, in order)."""
        seqs = self.seqs
        n = len(seqs)
        return n < 2 or (int(seqs[-1]) - int(seqs[0]) == n - 1 and bool(np.all(np.diff(seqs) == 1)))

    def tail(self, start: int) -> LogBatch:
        return LogBatch(
            self.market,
            self.head,
            self.replay,
            self.seqs[start:],
            self.hashes[start:],
            self.commands[start:],
            self.client_ids[start:],
            self.client_order_ids[start:],
        )

    def entry(self, i: int) -> LogEntry:
        return self._entry(int(self.seqs[i]), int(self.hashes[i]), i, self.commands[i].tolist())

    def entries(self) -> list[LogEntry]:
        rows = zip(self.seqs.tolist(), self.hashes.tolist(), self.commands.tolist(), strict=True)
        return [self._entry(seq, state_hash, i, row) for i, (seq, state_hash, row) in enumerate(rows)]

    def _entry(self, seq: int, state_hash: int, i: int, row: tuple[int, ...]) -> LogEntry:
        op, side, otype, tif, stp, post_only, _pad, owner, _pad2, order_id, price, qty = row
        client, coid = self.client_ids[i], self.client_order_ids[i]
        return LogEntry(
            seq, state_hash, client, coid, op, order_id, owner, side, otype, tif, stp, post_only, price, qty
        )


def read_log_batch(payload: bytes) -> LogBatch | None:
    """The native reader (engine/_logparse.pyx): a LogBatch if the payload is a log message exactly
    as `encode_log_message` writes it, else None (then `decode_log_message` decodes it, or names
    what is wrong). Every entry it accepts passes `decode_entry`'s checks."""
    parsed = parse_log_message(payload)
    return None if parsed is None else LogBatch(*parsed)


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    first: int  # first seq wanted (>= 1)
    last: int | None  # last seq wanted, None = up to the head
    snapshot: bool = False  # send the latest snapshot first (resync)


def encode_replay_request(req: ReplayRequest) -> bytes:
    body: dict[str, Any] = {"from": req.first, "to": req.last}
    if req.snapshot:
        body["snapshot"] = True
    return dumps(body)


def decode_replay_request(payload: bytes) -> ReplayRequest:
    try:
        doc = parse_json(payload)
    except _BadOrder as bad:
        raise ValueError(bad.message) from None
    if not isinstance(doc, dict) or not doc.keys() <= {"v", "from", "to", "snapshot"}:
        raise ValueError('replay request must be {"from": N, "to": N or null[, "snapshot": bool]}')
    first, last, snap = doc.get("from"), doc.get("to"), doc.get("snapshot", False)
    if type(first) is not int or first < 1:
        raise ValueError("replay request 'from' must be an integer >= 1")
    if last is not None and (type(last) is not int or last < first):
        raise ValueError("replay request 'to' must be null or an integer >= from")
    if not isinstance(snap, bool):
        raise ValueError("replay request 'snapshot' must be true or false")
    return ReplayRequest(first, last, snap)


# ---------------------------------------------------------------------------------------------
# Snapshot messages and files (the same bytes)
# ---------------------------------------------------------------------------------------------

SNAPSHOT_MAGIC = b"FBSS"
SNAPSHOT_FORMAT = 1
_SNAP_HEAD = struct.Struct("<4sHHI")  # magic, format, flags, meta length
_SNAP_FLAG_DEDUPE = 1


@dataclass(slots=True)
class SnapshotData:
    """Everything a replica (and, with `seen`, the sequencer) needs to resume at `version`."""

    market: MarketSpec
    version: int
    state_hash: int
    engine: bytes  # the engine's canonical snapshot bytes (docs/engine.md)
    next_order_id: int
    owners: dict[str, int]  # client id -> engine owner number
    orders: list[tuple[int, int, str]]  # resting orders: (engine order id, owner, client order id)
    # client -> {client order id: seq that accepted it} for every "new" ever sequenced (the dedupe
    # set; files only). Decoding also takes the older form client -> [ids] (seq unknown: 0).
    seen: dict[str, dict[str, int]] | None = None


def encode_snapshot(snap: SnapshotData, orders: dict[int, tuple[int, str]] | None = None) -> bytes:
    """The snapshot's bytes. `orders`: a replica's map (engine id -> (owner, client order id)) to
    write the order rows from instead of `snap.orders` (the same bytes, without building the rows)."""
    meta: dict[str, Any] = {
        "market": snap.market.to_json(),
        "version": snap.version,
        "hash": hash_hex(snap.state_hash),
        "next_order_id": snap.next_order_id,
        "owners": snap.owners,
    }
    # The same bytes as dumps(meta) with "orders" (then "seen") added: the orders, a JSON array
    # of [engine id, owner, client order id] arrays, written natively (there can be millions).
    parts = [dumps(meta)[:-1], b',"orders":', orders_json(snap.orders if orders is None else orders)]
    flags = 0
    if snap.seen is not None:
        parts += [b',"seen":', dumps(snap.seen)]
        flags |= _SNAP_FLAG_DEDUPE
    meta_bytes = b"".join(parts) + b"}"
    body = b"".join(
        [
            _SNAP_HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, flags, len(meta_bytes)),
            meta_bytes,
            struct.pack("<Q", len(snap.engine)),
            snap.engine,
        ]
    )
    return body + struct.pack("<I", zlib.crc32(body))


def decode_snapshot(data: bytes) -> SnapshotData:
    """Checks magic, format, lengths and the CRC32 before trusting anything; ValueError names the problem."""
    if len(data) < _SNAP_HEAD.size + 12:
        raise ValueError(f"snapshot too short ({len(data)} bytes)")
    magic, fmt, flags, meta_len = _SNAP_HEAD.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise ValueError(f"not a snapshot (magic {magic!r})")
    if fmt != SNAPSHOT_FORMAT:
        raise ValueError(f"unsupported snapshot format {fmt}")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(memoryview(data)[:-4]) != crc:
        raise ValueError("snapshot checksum mismatch (corrupted)")
    pos = _SNAP_HEAD.size
    if pos + meta_len + 8 > len(data) - 4:
        raise ValueError("snapshot meta length out of range")
    meta_raw = data[pos : pos + meta_len]
    pos += meta_len
    (engine_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    if pos + engine_len != len(data) - 4:
        raise ValueError("snapshot engine length does not match the file size")
    engine = bytes(data[pos : pos + engine_len])
    try:
        meta = json.loads(meta_raw)
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
        market = MarketSpec.from_json(meta["market"])
        version = _int_in(meta["version"], 0, MAX_ORDER_ID, "snapshot version")
        next_order_id = _int_in(meta["next_order_id"], 1, MAX_ORDER_ID + 1, "snapshot next_order_id")
        owners = meta["owners"]
        if not isinstance(owners, dict):
            raise ValueError("owners must be an object")
        for client, owner in owners.items():
            if not valid_client_id(client):
                raise ValueError(f"owners: invalid client id {client[:70]!r}")
            _int_in(owner, 0, MAX_OWNER, "snapshot owner")
        rows = meta["orders"]
        if not isinstance(rows, list):
            raise ValueError("orders must be an array")
        orders = []
        for row in rows:
            if not isinstance(row, list) or len(row) != 3:
                raise ValueError("each order must be [engine order id, owner, client order id]")
            order_id, owner, coid = row
            _int_in(order_id, 1, MAX_ORDER_ID, "snapshot order id")
            _int_in(owner, 0, MAX_OWNER, "snapshot order owner")
            if not isinstance(coid, str) or not CLIENT_ORDER_ID_RE.fullmatch(coid):
                raise ValueError(f"orders: invalid client order id {str(coid)[:70]!r}")
            orders.append((order_id, owner, coid))
        raw_seen = meta.get("seen") if flags & _SNAP_FLAG_DEDUPE else None
        seen: dict[str, dict[str, int]] | None = None
        if raw_seen is not None:
            if not isinstance(raw_seen, dict):
                raise ValueError("seen must be an object")
            seen = {}
            for client, ids in raw_seen.items():
                if not valid_client_id(client) or not isinstance(ids, (dict, list)):
                    raise ValueError(f"seen: bad entry for {client[:70]!r}")
                pairs = ids.items() if isinstance(ids, dict) else ((i, 0) for i in ids)
                accepted: dict[str, int] = {}
                for coid, seq in pairs:
                    if not isinstance(coid, str) or not CLIENT_ORDER_ID_RE.fullmatch(coid):
                        raise ValueError(f"seen: invalid client order id for {client[:70]!r}")
                    accepted[coid] = _int_in(seq, 0, MAX_SEQ, "seen seq")
                seen[client] = accepted
        state_hash = parse_hash_hex(meta["hash"])
        return SnapshotData(market, version, state_hash, engine, next_order_id, owners, orders, seen)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"snapshot metadata invalid: {str(exc)[:200]}") from None


def is_snapshot_payload(payload: bytes) -> bool:
    return payload[:4] == SNAPSHOT_MAGIC
