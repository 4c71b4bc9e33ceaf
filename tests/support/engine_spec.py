"""An independent codec for the snapshot format and state hash of docs/engine.md, written from the
contract (not from either implementation), so tests can check both books against the spec itself
and craft snapshots with a valid hash but a broken structure."""

from __future__ import annotations

import struct
from typing import Any

from fastbook import backend


def book_class(name: str) -> type[Any]:
    """The book class of a backend ("native" or "reference")."""
    cls: type[Any] = backend.select("Book", name)
    return cls


def book_state(book: Any) -> tuple[int, bytes]:
    """What "unchanged" means: the hash and the canonical snapshot bytes."""
    return book.state_hash(), book.snapshot()


MASK64 = (1 << 64) - 1
SNAPSHOT_HEADER = struct.Struct("<4sHHQQ")
SNAPSHOT_RECORD = struct.Struct("<QIIqqQ")
SNAPSHOT_TRAILER = struct.Struct("<Q")

# (order_id, owner, flags, price, remaining, stamp), as in a snapshot record
SnapshotRecord = tuple[int, int, int, int, int, int]


def spec_mix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def spec_order_hash(record: SnapshotRecord) -> int:
    order_id, owner, flags, price, remaining, stamp = record
    h = spec_mix64(order_id)
    for field in (owner, price, remaining, stamp, flags):
        h = spec_mix64(h ^ (field & MASK64))
    return h


def spec_state_hash(next_stamp: int, records: list[SnapshotRecord]) -> int:
    h = spec_mix64(next_stamp)
    for record in records:
        h ^= spec_order_hash(record)
    return h


def parse_snapshot(data: bytes) -> tuple[int, list[SnapshotRecord], int]:
    """(next_stamp, records, trailer hash) of a well-formed snapshot."""
    magic, version, reserved, next_stamp, count = SNAPSHOT_HEADER.unpack_from(data, 0)
    assert (magic, version, reserved) == (b"FBSN", 1, 0)
    assert len(data) == SNAPSHOT_HEADER.size + count * SNAPSHOT_RECORD.size + SNAPSHOT_TRAILER.size
    offsets = [SNAPSHOT_HEADER.size + i * SNAPSHOT_RECORD.size for i in range(count)]
    records = [SNAPSHOT_RECORD.unpack_from(data, offset) for offset in offsets]
    (trailer,) = SNAPSHOT_TRAILER.unpack_from(data, len(data) - SNAPSHOT_TRAILER.size)
    return next_stamp, records, trailer


def build_snapshot(next_stamp: int, records: list[SnapshotRecord], state_hash: int | None = None) -> bytes:
    """Snapshot bytes with the given content; the trailer is the spec hash unless given."""
    if state_hash is None:
        state_hash = spec_state_hash(next_stamp, records)
    parts = [SNAPSHOT_HEADER.pack(b"FBSN", 1, 0, next_stamp, len(records))]
    parts += [SNAPSHOT_RECORD.pack(*record) for record in records]
    parts.append(SNAPSHOT_TRAILER.pack(state_hash))
    return b"".join(parts)
