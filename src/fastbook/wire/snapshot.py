"""Snapshot messages and files (the same bytes)."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from fastbook.engine.types import (
    MAX_ORDER_ID,
    MAX_OWNER,
)
from fastbook.wire._snapshotrows import orders_json
from fastbook.wire.fields import CLIENT_ORDER_ID_RE, MAX_SEQ, dumps, hash_hex, parse_hash_hex
from fastbook.wire.log import _int_in
from fastbook.wire.market import MarketSpec
from fastbook.wire.orders import valid_client_id

SNAPSHOT_MAGIC = b"FBSS"
# Format 2: the published snapshot is anonymous ("owners" is the number of owners); only the
# sequencer's files hold the names (flag bit 1). Format 1 (files of older sequencers) is read too.
SNAPSHOT_FORMAT = 2
_SNAP_HEAD = struct.Struct("<4sHHI")  # magic, format, flags, meta length
_SNAP_FLAG_DEDUPE = 1
_SNAP_FLAG_NAMES = 2


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
    # Owner numbers assigned (1..owner_count); None: len(owners). An anonymous (published)
    # snapshot has no `owners` and no `orders`, only this count.
    owner_count: int | None = None

    @property
    def named(self) -> bool:
        """Whether it holds the names (clients, order rows): the sequencer's files only."""
        return self.owner_count is None

    @property
    def owners_assigned(self) -> int:
        return len(self.owners) if self.owner_count is None else self.owner_count


def encode_snapshot(
    snap: SnapshotData, orders: dict[int, tuple[int, str]] | None = None, named: bool = True
) -> bytes:
    """The snapshot's bytes. `orders`: a replica's map (engine id -> (owner, client order id)) to
    write the order rows from instead of `snap.orders` (the same bytes, without building the rows).
    `named` False: the published form, without client ids and client order ids (and dedupe set)."""
    meta: dict[str, Any] = {
        "market": snap.market.to_json(),
        "version": snap.version,
        "hash": hash_hex(snap.state_hash),
        "next_order_id": snap.next_order_id,
        "owners": snap.owners_assigned,
    }
    if not named or not snap.named:
        meta_bytes = dumps(meta)
        head = _SNAP_HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, 0, len(meta_bytes))
        body = b"".join([head, meta_bytes, struct.pack("<Q", len(snap.engine)), snap.engine])
        return body + struct.pack("<I", zlib.crc32(body))
    meta["clients"] = snap.owners
    # The same bytes as dumps(meta) with "orders" (then "seen") added: the orders, a JSON array
    # of [engine id, owner, client order id] arrays, written natively (there can be millions).
    parts = [dumps(meta)[:-1], b',"orders":', orders_json(snap.orders if orders is None else orders)]
    flags = _SNAP_FLAG_NAMES
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
    if fmt not in (1, SNAPSHOT_FORMAT):
        raise ValueError(f"unsupported snapshot format {fmt}")
    if fmt == 1:
        flags |= _SNAP_FLAG_NAMES  # format 1 always held the names, "owners" the client map
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
        state_hash = parse_hash_hex(meta["hash"])
        if not flags & _SNAP_FLAG_NAMES:
            if meta.keys() != {"market", "version", "hash", "next_order_id", "owners"}:
                keys = "market, version, hash, next_order_id, owners"
                raise ValueError(f"an anonymous snapshot's meta has {keys}")
            count = _int_in(meta["owners"], 0, MAX_OWNER, "snapshot owners")
            return SnapshotData(market, version, state_hash, engine, next_order_id, {}, [], None, count)
        owners = meta["owners"] if fmt == 1 else meta["clients"]
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
        if fmt != 1 and meta["owners"] != len(owners):
            raise ValueError(f"owners says {meta['owners']!r:.20}, clients holds {len(owners)}")
        return SnapshotData(market, version, state_hash, engine, next_order_id, owners, orders, seen)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"snapshot metadata invalid: {str(exc)[:200]}") from None


def is_snapshot_payload(payload: bytes) -> bool:
    return payload[:4] == SNAPSHOT_MAGIC
