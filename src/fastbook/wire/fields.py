"""Names, limits and small codecs shared by every wire contract (docs/wire.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from fastbook.engine.types import (
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
# fastbook.engine.types.Reject, e.g. "POST_ONLY_WOULD_TAKE").
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
REPLAY_LIMIT = "REPLAY_LIMIT"  # a replay request over the requester's limits (replay_refused)
INVALID_CLIENT_ID = "INVALID_CLIENT_ID"
RETAINED_COMMAND = "RETAINED_COMMAND"

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


# JSON string literal of a str (ASCII, as json.dumps writes it), without building a list around it.
json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii


def hash_hex(value: int) -> str:
    return f"{value:016x}"


HASH_HEX_RE = re.compile(r"[0-9a-fA-F]{16}")


def parse_hash_hex(text: object) -> int:
    # A regex first: int(text, 16) would also take a sign, "0x", spaces, "_" and non-ASCII digits.
    if not isinstance(text, str) or not HASH_HEX_RE.fullmatch(text):
        raise ValueError(f"hash must be 16 hex digits, got {str(text)[:40]!r}")
    return int(text, 16)


