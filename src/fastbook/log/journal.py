"""The sequencer's durable, append-only journal of sequenced commands.

One file, `<data_dir>/journal.log`:

    file header : b"FBJOURN1"
    record      : u32 payload length | u32 CRC32(seq bytes + payload) | u64 seq | payload   (little-endian)

Records are gap-free in seq. `append` writes a whole batch with one write() and one fdatasync()
(group commit) and only returns once the batch is durable. Opening scans the file, verifies every
record and truncates a torn or corrupt tail (logged at WARNING): a crash mid-write loses at most the
batch that was never acknowledged. The scan builds a sparse in-memory index (the file offset of
every INDEX_STRIDE-th record, 8 bytes per 64 seqs, so a long-running sequencer's memory stays flat),
so a replay request seeks to at most 63 records before the first wanted one.

A lock file (`flock`) keeps two sequencers from writing one journal.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from array import array
from collections.abc import Sequence
from pathlib import Path

from fastbook.log._journalcodec import encode_records

log = logging.getLogger(__name__)

FILE_MAGIC = b"FBJOURN1"
RECORD_HEAD = struct.Struct("<IIQ")
_SEQ = struct.Struct("<Q")
MAX_RECORD = 1 << 24  # a record larger than this is corruption, not data
INDEX_STRIDE = 64  # the index keeps the offset of the records first_seq, first_seq + 64, ...


class JournalError(Exception):
    """The journal cannot be opened or written; nothing unjournaled may be published."""


def _crc(seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq)))


def encode_record(seq: int, payload: bytes) -> bytes:
    return RECORD_HEAD.pack(len(payload), _crc(seq, payload), seq) + payload


class Journal:
    FILE_NAME = "journal.log"
    LOCK_NAME = "journal.lock"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / self.FILE_NAME
        self.first_seq = 0  # seq of the first record; 0 while empty
        self.last_seq = 0  # seq of the last durable record; 0 while empty
        self.dropped_bytes = 0  # torn/corrupt tail removed by the last open
        self.failed: str | None = None  # set after a write error: the journal refuses further appends
        # _index[k] = file offset of the record with seq first_seq + k * INDEX_STRIDE
        self._index = array("q")
        self._size = 0
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.data_dir / self.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open journal in {self.data_dir}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise JournalError(f"journal {self.path} is locked by another running sequencer") from None
        try:
            self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self) -> None:
        created = not self.path.exists()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            if created or os.fstat(self._fd).st_size == 0:
                os.write(self._fd, FILE_MAGIC)
                os.fsync(self._fd)
                self._fsync_dir()
            self._recover()
            self._reader = open(self.path, "rb")  # noqa: SIM115 - lives as long as the journal
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _recover(self) -> None:
        """Scan, verify, index; truncate at the first record that is torn, corrupt or out of sequence."""
        size = os.fstat(self._fd).st_size
        with open(self.path, "rb") as f:
            if f.read(len(FILE_MAGIC)) != FILE_MAGIC:
                raise JournalError(f"{self.path} is not a fastbook journal (bad file header)")
            offset = len(FILE_MAGIC)
            problem = None
            expected = 0
            while offset < size:
                head = f.read(RECORD_HEAD.size)
                if len(head) < RECORD_HEAD.size:
                    problem = "torn record header"
                    break
                length, crc, seq = RECORD_HEAD.unpack(head)
                if length > MAX_RECORD:
                    problem = f"implausible record length {length}"
                    break
                payload = f.read(length)
                if len(payload) < length:
                    problem = "torn record payload"
                    break
                if _crc(seq, payload) != crc:
                    problem = f"checksum mismatch at seq {seq}"
                    break
                if expected and seq != expected:
                    problem = f"seq {seq} where {expected} was expected"
                    break
                if not expected:
                    self.first_seq = seq
                if (seq - self.first_seq) % INDEX_STRIDE == 0:
                    self._index.append(offset)
                self.last_seq = seq
                expected = seq + 1
                offset += RECORD_HEAD.size + length
        if problem is not None:
            following = self._valid_record_after(offset, size)
            if following is not None:
                # Not a torn tail: durable, acknowledged records follow the bad one. Cutting here
                # would silently drop accepted commands and hand their seqs to new ones.
                raise JournalError(
                    f"journal {self.path} is corrupt: {problem} at offset {offset} (last good seq "
                    f"{self.last_seq}), but valid records follow (seq {following[0]} at offset "
                    f"{following[1]}); refusing to truncate accepted records. Restore journal.log "
                    "from a backup or a replica's log before restarting"
                )
            self.dropped_bytes = size - offset
            log.warning(
                "journal %s: %s; dropping %d bytes from offset %d (last good seq %d)",
                self.path,
                problem,
                self.dropped_bytes,
                offset,
                self.last_seq,
            )
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        self._size = offset

    def _valid_record_after(self, offset: int, size: int) -> tuple[int, int] | None:
        """(seq, offset) of a CRC-valid record with a later seq somewhere after `offset`, if any.
        Looks for the seq bytes of the next few records (a bit flip may hit any field of the bad one)."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            tail = f.read(size - offset)
        for seq in range(self.last_seq + 1, self.last_seq + 65):
            needle = _SEQ.pack(seq)
            at = tail.find(needle, 8)
            while at >= 8:
                start = at - 8
                length, crc, _seq = RECORD_HEAD.unpack_from(tail, start)
                end = start + RECORD_HEAD.size + length
                if length <= MAX_RECORD and end <= len(tail) and _crc(seq, tail[at + 8 : end]) == crc:
                    return seq, offset + start
                at = tail.find(needle, at + 1)
        return None

    def __len__(self) -> int:
        return self.last_seq - self.first_seq + 1 if self.last_seq else 0

    def append(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Append (seq, payload) records that continue the sequence; durable when this returns.
        Raises JournalError (and refuses every later append) if the write or fsync fails."""
        if self.failed is not None:
            raise JournalError(self.failed)
        if not records:
            return
        expected = self.last_seq + 1 if self.last_seq else records[0][0]
        first_seq = self.first_seq or records[0][0]
        try:  # encode_record of each, in C, with the sequence and size checks
            data, indexed, offset = encode_records(
                list(records), expected, first_seq, self._size, INDEX_STRIDE, MAX_RECORD
            )
        except ValueError as exc:
            raise JournalError(str(exc)) from None
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fdatasync(self._fd)
        except OSError as exc:
            self.failed = f"journal write failed: {exc}"
            log.error("%s; refusing further commands", self.failed)
            try:  # best effort: leave no partial batch behind for the next open to find
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise JournalError(self.failed) from exc
        self.first_seq = first_seq
        self._index.extend(indexed)
        self.last_seq = records[-1][0]
        self._size = offset

    def read(self, first: int, last: int | None = None, limit: int = 1 << 30) -> list[tuple[int, bytes]]:
        """Durable records first..last (inclusive, clipped to what exists), at most `limit` of them."""
        if not self.last_seq:
            return []
        first = max(first, self.first_seq)
        last = self.last_seq if last is None else min(last, self.last_seq)
        last = min(last, first + limit - 1)
        if first > last:
            return []
        reader = self._reader
        k = (first - self.first_seq) // INDEX_STRIDE
        reader.seek(self._index[k])
        out = []
        for expected in range(self.first_seq + k * INDEX_STRIDE, last + 1):
            head = reader.read(RECORD_HEAD.size)
            if len(head) < RECORD_HEAD.size:
                raise JournalError(f"journal record {expected} unreadable (file shrank?)")
            length, crc, seq = RECORD_HEAD.unpack(head)
            if seq != expected or length > MAX_RECORD:
                raise JournalError(f"journal record {expected} unreadable (disk corruption?)")
            if expected < first:  # between the indexed record and the first wanted one: skip it
                reader.seek(length, os.SEEK_CUR)
                continue
            payload = reader.read(length)
            if _crc(seq, payload) != crc:
                raise JournalError(f"journal record {expected} unreadable (disk corruption?)")
            out.append((seq, payload))
        return out

    def close(self) -> None:
        for closer in (self._reader.close, lambda: os.close(self._fd), lambda: os.close(self._lock_fd)):
            try:
                closer()
            except OSError:
                pass
