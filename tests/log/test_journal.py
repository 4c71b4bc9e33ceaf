from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from fastbook.log import journal as journal_mod
from fastbook.log.journal import Journal, JournalError
from fastbook.wire.log import LogEntry, LogRun


def entry(seq: int) -> LogEntry:
    """The entry of seq `seq` in these tests (client "c" introduced by seq 1)."""
    return LogEntry(
        seq, seq * 7919, "c" if seq == 1 else None, f"o-{seq}", 1, seq, 1, 1, 1, 1, 0, 0, 100, seq
    )


def expect(first: int, last: int) -> list[LogEntry]:
    return [entry(s) for s in range(first, last + 1)]


def fill(j: Journal, first: int, last: int, batch: int = 7) -> None:
    seqs = list(range(first, last + 1))
    for i in range(0, len(seqs), batch):
        j.append(LogRun.from_entries(entry(s) for s in seqs[i : i + batch]))


def seqs_of(run: LogRun) -> list[int]:
    return run.seqs.tolist()


def test_append_read_and_reopen(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    assert (j.first_seq, j.last_seq, len(j)) == (0, 0, 0)
    assert j.read(1).entries() == []
    fill(j, 1, 100)
    assert (j.first_seq, j.last_seq, len(j)) == (1, 100, 100)
    assert j.read(40, 42).entries() == expect(40, 42)
    assert seqs_of(j.read(95)) == [95, 96, 97, 98, 99, 100]
    assert seqs_of(j.read(1, None, limit=3)) == [1, 2, 3]
    assert j.read(101).entries() == []
    j.close()
    j = Journal(tmp_path)
    assert (j.first_seq, j.last_seq, j.dropped_bytes) == (1, 100, 0)
    fill(j, 101, 120)
    assert j.read(99, 102).entries() == expect(99, 102)
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
                assert j.read(first, first + span).entries() == expect(first, last)
        assert j.read(first_seq - 10, first_seq + 1).entries() == expect(first_seq, first_seq + 1)
        assert seqs_of(j.read(first_seq + stride - 1, None, limit=2)) == [
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
        j.append(LogRun.from_entries([entry(7)]))
    with pytest.raises(JournalError, match="out of sequence"):
        j.append(LogRun.from_entries([entry(6), entry(8)]))
    assert j.last_seq == 5
    j.close()


@pytest.mark.parametrize("cut", [1, 5, 8, 9, 20, 65])
def test_torn_tail_truncated(tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture) -> None:
    j = Journal(tmp_path)
    fill(j, 1, 10, batch=1)
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
    assert j.read(8).entries() == expect(8, 12)
    j.close()


def test_a_damaged_last_record_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    """A whole last frame that fails its CRC may be an accepted, published record (issue 15, D2):
    cutting it would give its seq to another command. Refused; the file is left as it was."""
    j = Journal(tmp_path)
    fill(j, 1, 10, batch=1)
    j.close()
    path = tmp_path / Journal.FILE_NAME
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the names of record 10 (its own frame)
    for damaged in (bytes(data), bytes(data) + b"\x00" * 100):
        path.write_bytes(damaged)
        with pytest.raises(journal_mod.CorruptTail, match="last good seq 9.*nothing on disk changed") as info:
            Journal(tmp_path)
        assert path.read_bytes() == damaged
        assert "fastbook journal repair" in str(info.value)


def test_a_damaged_length_that_looks_torn_is_refused(tmp_path: Path) -> None:
    """A flipped high bit in the last frame's length makes it run past the end of the file, like a
    torn write; its bytes to the end still pass its CRC, so it is a whole record: refused."""
    j = Journal(tmp_path)
    fill(j, 1, 10, batch=1)
    j.close()
    path = tmp_path / Journal.FILE_NAME
    data = bytearray(path.read_bytes())
    last = len(journal_mod.encode_frame(LogRun.from_entries([entry(10)])))
    data[len(data) - last + 2] ^= 0x01  # bit 16 of the length
    path.write_bytes(bytes(data))
    with pytest.raises(journal_mod.CorruptTail):
        Journal(tmp_path)
    assert path.read_bytes() == bytes(data)


def test_a_zero_tail_is_dropped(tmp_path: Path) -> None:
    """Zeros after the last frame (space allocated by a crash, or resume's probe) held no record."""
    j = Journal(tmp_path)
    fill(j, 1, 10, batch=1)
    j.close()
    path = tmp_path / Journal.FILE_NAME
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x00" * 300)
    j = Journal(tmp_path)
    assert (j.last_seq, j.dropped_bytes) == (10, 300)
    j.close()
    assert path.stat().st_size == size


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
        j.append(LogRun.from_entries([entry(4), entry(5)]))
    monkeypatch.undo()
    assert j.failed is not None and j.last_seq == 3
    with pytest.raises(JournalError):
        j.append(LogRun.from_entries([entry(4)]))
    j.close()
    j = Journal(tmp_path)
    assert (j.last_seq, j.dropped_bytes) == (3, 0)
    j.close()


def test_a_batch_is_one_frame_of_the_log_run_bytes(tmp_path: Path) -> None:
    """The journal stores a batch as one CRC frame holding exactly the log's run bytes."""
    j = Journal(tmp_path)
    run = LogRun.from_entries(expect(1, 5))
    j.append(run)
    j.close()
    data = (tmp_path / Journal.FILE_NAME).read_bytes()
    assert data == journal_mod.FILE_MAGIC + journal_mod.encode_frame(run)
    assert data.endswith(run.to_bytes())


def test_a_batch_larger_than_a_frame_is_several_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_mod, "FRAME_ENTRIES", 64)
    j = Journal(tmp_path)
    fill(j, 1, 300, batch=300)
    assert j.read(60, 140).entries() == expect(60, 140)
    j.close()
    j = Journal(tmp_path)
    assert (j.last_seq, j.dropped_bytes) == (300, 0)
    assert j.read(250).entries() == expect(250, 300)
    j.close()


def test_a_valid_frame_after_a_corrupt_one_is_refused_not_truncated(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    fill(j, 1, 10, batch=2)
    j.close()
    path = tmp_path / Journal.FILE_NAME
    data = bytearray(path.read_bytes())
    frame = len(journal_mod.encode_frame(LogRun.from_entries(expect(3, 4))))
    data[8 + len(journal_mod.encode_frame(LogRun.from_entries(expect(1, 2)))) + frame - 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="valid records follow"):
        Journal(tmp_path)


def test_previous_format_is_refused_naming_the_converter(tmp_path: Path) -> None:
    (tmp_path / Journal.FILE_NAME).write_bytes(b"FBJOURN1")
    with pytest.raises(JournalError, match=f"{journal_mod.MIGRATE_COMMAND} {tmp_path}"):
        Journal(tmp_path)
