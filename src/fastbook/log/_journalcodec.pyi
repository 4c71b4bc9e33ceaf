"""Typed surface of the native journal record encoder (src/fastbook/log/_journalcodec.pyx), used by
journal.Journal.append."""

def crc32(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """zlib.crc32(data, start)."""
    ...

def encode_records(
    records: list[tuple[int, bytes]],
    expected: int,
    first_seq: int,
    offset: int,
    stride: int,
    max_record: int,
) -> tuple[bytes, list[int], int]:
    """(data, index offsets, end offset); ValueError names the first out-of-sequence or oversized record."""
    ...
