"""Snapshot bytes, restore() validation and the state hash, checked against the spec codec in
conftest (written from docs/engine.md, independent of both books)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from fastbook.engine.types import OrderType, Side, Stp, Tif
from tests.support.engine_spec import (
    SNAPSHOT_HEADER,
    SNAPSHOT_RECORD,
    build_snapshot,
    parse_snapshot,
    spec_mix64,
    spec_state_hash,
)

BUY, SELL = Side.BUY, Side.SELL


def _flags(side: int, stp: int = 0, post_only: int = 0) -> int:
    return side | (stp << 8) | (post_only << 16)


def _small_book(book: Any) -> None:
    book.new(10, 1, BUY, 100, 5)  # stamp 1
    book.new(11, 2, BUY, 101, 6, stp=Stp.CANCEL_MAKER)  # stamp 2
    book.new(12, 3, BUY, 100, 7, post_only=True)  # stamp 3
    book.new(13, 4, SELL, 104, 8)  # stamp 4
    book.new(14, 5, SELL, 103, 9, stp=Stp.CANCEL_BOTH, post_only=True)  # stamp 5
    book.new(15, 6, SELL, 104, 10)  # stamp 6
    book.new(16, 7, SELL, 0, 2, type=OrderType.MARKET)  # fills 2 of #11: no stamp


SMALL_BOOK_RECORDS = [
    (11, 2, _flags(BUY, Stp.CANCEL_MAKER), 101, 4, 2),
    (10, 1, _flags(BUY), 100, 5, 1),
    (12, 3, _flags(BUY, 0, 1), 100, 7, 3),
    (14, 5, _flags(SELL, Stp.CANCEL_BOTH, 1), 103, 9, 5),
    (13, 4, _flags(SELL), 104, 8, 4),
    (15, 6, _flags(SELL), 104, 10, 6),
]


def test_empty_book_snapshot_bytes(book: Any) -> None:
    expected = b"FBSN" + struct.pack("<HHQQQ", 1, 0, 1, 0, spec_mix64(1))
    assert book.snapshot() == expected
    assert book.state_hash() == spec_mix64(1)


def test_snapshot_layout_matches_spec(book: Any) -> None:
    _small_book(book)
    expected = build_snapshot(7, SMALL_BOOK_RECORDS)
    assert book.snapshot() == expected
    assert book.state_hash() == spec_state_hash(7, SMALL_BOOK_RECORDS)


def test_restore_round_trip_continues_identically(book_cls: type[Any]) -> None:
    original = book_cls()
    _small_book(original)
    data = original.snapshot()
    restored = book_cls.restore(data)
    assert restored.snapshot() == data
    assert restored.state_hash() == original.state_hash()
    assert restored.next_stamp == original.next_stamp
    assert restored.depth(10) == original.depth(10)
    assert restored.counts() == original.counts()
    for oid in range(10, 17):
        assert restored.order(oid) == original.order(oid)
    follow_up = [
        lambda b: b.new(20, 9, BUY, 104, 20),
        lambda b: b.amend(10, 1, qty=2),
        lambda b: b.amend(12, 3, price=102),
        lambda b: b.new(21, 5, BUY, 0, 3, type=OrderType.MARKET, tif=Tif.FOK, stp=Stp.CANCEL_TAKER),
        lambda b: b.cancel_all(2),
    ]
    for command in follow_up:
        assert command(restored) == command(original)
        assert restored.state_hash() == original.state_hash()
    assert restored.snapshot() == original.snapshot()


def test_restore_accepts_bytearray_and_memoryview(book_cls: type[Any]) -> None:
    book = book_cls()
    _small_book(book)
    data = book.snapshot()
    assert book_cls.restore(bytearray(data)).snapshot() == data
    assert book_cls.restore(memoryview(data)).snapshot() == data


def test_restore_empty_book(book_cls: type[Any]) -> None:
    book = book_cls.restore(build_snapshot(1, []))
    assert len(book) == 0
    assert book.state_hash() == spec_mix64(1)
    assert book.next_stamp == 1


def test_restore_keeps_next_stamp_beyond_the_orders(book_cls: type[Any]) -> None:
    """Stamps are state: a book whose orders all left still remembers its next stamp."""
    book = book_cls.restore(build_snapshot(1000, [(5, 1, _flags(BUY), 100, 3, 999)]))
    assert book.next_stamp == 1000
    book.new(6, 1, BUY, 100, 3)
    assert book.order(6)[5] == 1000


# ------------------------------------------------------------------------------------ corruption


def _valid_snapshot(book_cls: type[Any]) -> bytes:
    book = book_cls()
    _small_book(book)
    return book.snapshot()


def test_restore_rejects_truncation(book_cls: type[Any]) -> None:
    data = _valid_snapshot(book_cls)
    for length in range(len(data)):
        with pytest.raises(ValueError):
            book_cls.restore(data[:length])
    with pytest.raises(ValueError):
        book_cls.restore(data + b"\x00")


def test_restore_rejects_every_single_bit_flip(book_cls: type[Any]) -> None:
    data = _valid_snapshot(book_cls)
    for bit in range(len(data) * 8):
        corrupted = bytearray(data)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ValueError):
            book_cls.restore(bytes(corrupted))


def test_restore_rejects_header_problems(book_cls: type[Any]) -> None:
    data = _valid_snapshot(book_cls)
    body = data[SNAPSHOT_HEADER.size :]
    _, _, _, next_stamp, count = SNAPSHOT_HEADER.unpack_from(data)
    for header in (
        SNAPSHOT_HEADER.pack(b"FBSM", 1, 0, next_stamp, count),
        SNAPSHOT_HEADER.pack(b"FBSN", 2, 0, next_stamp, count),
        SNAPSHOT_HEADER.pack(b"FBSN", 0, 0, next_stamp, count),
        SNAPSHOT_HEADER.pack(b"FBSN", 1, 1, next_stamp, count),
        SNAPSHOT_HEADER.pack(b"FBSN", 1, 0, next_stamp, count + 1),
        SNAPSHOT_HEADER.pack(b"FBSN", 1, 0, next_stamp, count - 1),
        SNAPSHOT_HEADER.pack(b"FBSN", 1, 0, next_stamp, 2**64 - 1),
    ):
        with pytest.raises(ValueError):
            book_cls.restore(header + body)
    for not_bytes in ("FBSN", None, 42, [1, 2]):
        with pytest.raises(ValueError):
            book_cls.restore(not_bytes)


def test_restore_rejects_wrong_hash(book_cls: type[Any]) -> None:
    next_stamp, records, trailer = parse_snapshot(_valid_snapshot(book_cls))
    for wrong in (0, trailer ^ 1, spec_mix64(next_stamp)):
        with pytest.raises(ValueError, match="(?i)hash"):
            book_cls.restore(build_snapshot(next_stamp, records, state_hash=wrong))


def _replace(records: list[tuple[int, ...]], index: int, **changes: int) -> list[tuple[int, ...]]:
    names = ("order_id", "owner", "flags", "price", "remaining", "stamp")
    out = list(records)
    fields = dict(zip(names, out[index], strict=True))
    fields.update(changes)
    out[index] = tuple(fields[name] for name in names)
    return out


R = SMALL_BOOK_RECORDS
# Structurally broken snapshots whose trailer carries the correct spec hash, so only the structural
# checks can catch them. Record order: bid 101, bid 100 (#10, #12), ask 103, ask 104 (#13, #15).
STRUCTURAL_CORRUPTIONS: dict[str, tuple[int, list[tuple[int, ...]]]] = {
    "order id 0": (7, _replace(R, 0, order_id=0)),
    "order id 2^63": (7, _replace(R, 0, order_id=2**63)),
    "duplicate id": (7, _replace(R, 2, order_id=10)),
    "side 0": (7, _replace(R, 1, flags=_flags(0))),
    "side 3": (7, _replace(R, 1, flags=_flags(3))),
    "stp 4": (7, _replace(R, 1, flags=_flags(BUY, 4))),
    "post_only 2": (7, _replace(R, 1, flags=_flags(BUY, 0, 2))),
    "stray flag bit": (7, _replace(R, 1, flags=_flags(BUY) | 1 << 4)),
    "high flag bit": (7, _replace(R, 1, flags=_flags(BUY) | 1 << 31)),
    "price 0": (7, _replace(R, 4, price=0)),
    "price negative": (7, _replace(R, 4, price=-104)),
    "price above max": (7, _replace(R, 4, price=2**53)),
    "remaining 0": (7, _replace(R, 4, remaining=0)),
    "remaining negative": (7, _replace(R, 4, remaining=-1)),
    "remaining above max": (7, _replace(R, 4, remaining=2**32)),
    "stamp 0": (7, _replace(R, 0, stamp=0)),
    "stamp == next_stamp": (7, _replace(R, 0, stamp=7)),
    "stamp > next_stamp": (7, _replace(R, 5, stamp=2**40)),
    "next_stamp 0": (0, [(1, 1, _flags(BUY), 100, 1, 0)]),
    "duplicate stamp across levels": (7, _replace(R, 3, stamp=1)),
    "stamps not ascending in level": (7, _replace(_replace(R, 1, stamp=3), 2, stamp=1)),
    "equal stamps in level": (7, _replace(R, 2, stamp=1)),
    "bids not price descending": (7, [R[1], R[0], R[2], R[3], R[4], R[5]]),
    "asks not price ascending": (7, [R[0], R[1], R[2], R[4], R[5], R[3]]),
    "ask before bids": (7, [R[3], R[0], R[1], R[2], R[4], R[5]]),
    "crossed book": (7, _replace(R, 0, price=103)),
    "locked book": (7, [(1, 1, _flags(BUY), 100, 1, 1), (2, 1, _flags(SELL), 100, 1, 2)]),
}


@pytest.mark.parametrize("case", list(STRUCTURAL_CORRUPTIONS))
def test_restore_rejects_structural_problems_despite_valid_hash(book_cls: type[Any], case: str) -> None:
    next_stamp, records = STRUCTURAL_CORRUPTIONS[case]
    with pytest.raises(ValueError):
        book_cls.restore(build_snapshot(next_stamp, records))


def test_restore_accepts_snapshot_built_from_spec(book_cls: type[Any]) -> None:
    """The counterpart of the corruption cases: the unmodified records restore fine."""
    book = book_cls.restore(build_snapshot(7, SMALL_BOOK_RECORDS))
    assert book.best_bid() == (101, 4, 1)
    assert book.best_ask() == (103, 9, 1)
    assert book.order(14) == (14, 5, SELL, 103, 9, 5, Stp.CANCEL_BOTH, True)


def test_snapshot_record_size_is_forty() -> None:
    assert SNAPSHOT_RECORD.size == 40
    assert SNAPSHOT_HEADER.size == 24
