from __future__ import annotations

import logging
import os
import random
import zlib
from pathlib import Path

import pytest

from fastbook.log import journal as journal_mod
from fastbook.log._journalcodec import crc32, encode_records
from fastbook.log.journal import Journal, JournalError


def payload(seq: int) -> bytes:
    return b'{"entry":%d}' % seq


def fill(j: Journal, first: int, last: int, batch: int = 7) -> None:
    seqs = list(range(first, last + 1))
    for i in range(0, len(seqs), batch):
        j.append([(s, payload(s)) for s in seqs[i : i + batch]])


def test_append_read_and_reopen(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    assert (j.first_seq, j.last_seq, len(j)) == (0, 0, 0)
    assert j.read(1) == []
    fill(j, 1, 100)
    assert (j.first_seq, j.last_seq, len(j)) == (1, 100, 100)
    assert j.read(40, 42) == [(40, payload(40)), (41, payload(41)), (42, payload(42))]
    assert [s for s, _ in j.read(95)] == [95, 96, 97, 98, 99, 100]
    assert [s for s, _ in j.read(1, None, limit=3)] == [1, 2, 3]
    assert j.read(101) == []
    j.close()
    j = Journal(tmp_path)
    assert (j.first_seq, j.last_seq, j.dropped_bytes) == (1, 100, 0)
    fill(j, 101, 120)
    assert j.read(99, 102) == [(s, payload(s)) for s in range(99, 103)]
    j.close()


@pytest.mark.parametrize("first_seq", [1, 1000])
def test_every_range_reads_back_through_the_sparse_index(tmp_path: Path, first_seq: int) -> None:
    """The index holds one offset per INDEX_STRIDE records: reads that start between indexed records,
    on them, and across stride boundaries return exactly the asked range, before and after a reopen
    (the reopened index is rebuilt by the scan, the live one by append)."""
    stride = journal_mod.INDEX_STRIDE
    last_seq = first_seq + 3 * stride + 9
    j = Journal(tmp_path)
    fill(j, first_seq, last_seq, batch=stride - 3)
    assert len(j._index) == 4  # sparse: one offset per stride, not one per record
    for _ in range(2):
        assert (j.first_seq, j.last_seq, len(j)) == (first_seq, last_seq, last_seq - first_seq + 1)
        for first in range(first_seq, last_seq + 1, 5):
            for span in (0, 1, stride - 1, stride, 2 * stride + 1):
                last = min(first + span, last_seq)
                assert j.read(first, first + span) == [(s, payload(s)) for s in range(first, last + 1)]
        assert j.read(first_seq - 10, first_seq + 1) == [
            (first_seq, payload(first_seq)),
            (first_seq + 1, payload(first_seq + 1)),
        ]
        assert [s for s, _ in j.read(first_seq + stride - 1, None, limit=2)] == [
            first_seq + stride - 1,
            first_seq + stride,
        ]
        j.close()
        j = Journal(tmp_path)
    j.close()


def test_index_memory_is_sparse(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    fill(j, 1, 10_000, batch=1000)
    assert len(j) == 10_000
    assert len(j._index) == (10_000 + journal_mod.INDEX_STRIDE - 1) // journal_mod.INDEX_STRIDE
    j.close()


def test_append_out_of_sequence_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    fill(j, 1, 5)
    with pytest.raises(JournalError, match="out of sequence"):
        j.append([(7, b"x")])
    with pytest.raises(JournalError, match="out of sequence"):
        j.append([(6, b"x"), (8, b"y")])
    assert j.last_seq == 5
    j.close()


@pytest.mark.parametrize("cut", [1, 5, 16, 17])
def test_torn_tail_truncated(tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture) -> None:
    j = Journal(tmp_path)
    fill(j, 1, 10)
    j.close()
    path = tmp_path / Journal.FILE_NAME
    size = path.stat().st_size
    os.truncate(path, size - cut)
    with caplog.at_level(logging.WARNING, logger="fastbook.log.journal"):
        j = Journal(tmp_path)
    assert j.last_seq == 9
    assert j.dropped_bytes > 0
    assert "dropping" in caplog.text
    fill(j, 10, 12)  # continues with no gap
    j.close()
    j = Journal(tmp_path)
    assert (j.last_seq, j.dropped_bytes) == (12, 0)
    assert j.read(8) == [(s, payload(s)) for s in range(8, 13)]
    j.close()


def test_corrupt_record_and_garbage_tail(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    fill(j, 1, 10)
    j.close()
    path = tmp_path / Journal.FILE_NAME
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the payload of record 10
    path.write_bytes(bytes(data) + b"\x00" * 100)
    j = Journal(tmp_path)
    assert j.last_seq == 9
    j.close()
    assert path.stat().st_size < len(data)


def test_not_a_journal(tmp_path: Path) -> None:
    (tmp_path / Journal.FILE_NAME).write_bytes(b"hello world")
    with pytest.raises(JournalError, match="not a fastbook journal"):
        Journal(tmp_path)


def test_second_writer_locked_out(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    with pytest.raises(JournalError, match="locked"):
        Journal(tmp_path)
    j.close()
    Journal(tmp_path).close()


def test_fsync_failure_refuses_and_leaves_no_partial_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = Journal(tmp_path)
    fill(j, 1, 3)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_mod.os, "fdatasync", broken)
    with pytest.raises(JournalError, match="Input/output error"):
        j.append([(4, b"x"), (5, b"y")])
    monkeypatch.undo()
    assert j.failed is not None and j.last_seq == 3
    with pytest.raises(JournalError):
        j.append([(4, b"x")])
    j.close()
    j = Journal(tmp_path)
    assert (j.last_seq, j.dropped_bytes) == (3, 0)
    j.close()


def test_native_record_encoding_equals_the_format(tmp_path: Path) -> None:
    rng = random.Random(3)
    records = [(seq, rng.randbytes(rng.choice([0, 1, 5, 90, 4000]))) for seq in range(40, 240)]
    data, indexed, end = encode_records(records, 40, 8, 100, 64, journal_mod.MAX_RECORD)
    assert data == b"".join(journal_mod.encode_record(seq, payload) for seq, payload in records)
    assert end == 100 + len(data)
    offsets = [100]
    for _seq, payload in records[:-1]:
        offsets.append(offsets[-1] + 16 + len(payload))
    assert indexed == [offsets[i] for i, (seq, _) in enumerate(records) if (seq - 8) % 64 == 0]
    for start in (0, 0xFFFFFFFF, rng.randrange(2**32)):
        payload = rng.randbytes(333)
        assert crc32(payload, start) == zlib.crc32(payload, start)


def test_native_record_encoding_refuses_gaps_and_oversized_records() -> None:
    with pytest.raises(ValueError, match="out of sequence: seq 7, expected 6"):
        encode_records([(5, b"a"), (7, b"b")], 5, 1, 0, 64, 100)
    with pytest.raises(ValueError, match="seq 6 too large"):
        encode_records([(5, b"a"), (6, bytes(101))], 5, 1, 0, 64, 100)
    with pytest.raises(TypeError):
        encode_records([(5, "text")], 5, 1, 0, 64, 100)
