"""The log (sequencer -> replicas) and the replay protocol. Decoding raises ValueError: bad data
here means a bug or corruption, not a user mistake."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from fastbook.engine.types import (
    MAX_ORDER_ID,
    MAX_OWNER,
    MAX_PRICE,
    MAX_QTY,
    Op,
)
from fastbook.wire._logparse import parse_log_message
from fastbook.wire.fields import CLIENT_ORDER_ID_RE, MAX_SEQ, WIRE_VERSION, dumps, json_string, parse_hash_hex
from fastbook.wire.orders import _BadOrder, parse_json, valid_client_id


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
    """The native reader (src/fastbook/wire/_logparse.pyx): a LogBatch if the payload is a log message exactly
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


