"""The sequencer's durable, append-only journal of sequenced commands.

One file, `<data_dir>/journal.log`:

    file header : b"FBJOURN2"
    frame       : u32 run length | u32 CRC32(run) | run        (little-endian)

where a run is the log's binary run (`fastbook.wire.log.LogRun`: u32 count | u32 names length |
fixed records | names), the same bytes a log message carries. `append` writes a whole batch (one
frame, more for a batch of over FRAME_ENTRIES entries) with one write() and one fdatasync() (group
commit) and only returns once it is durable. Records are gap-free in seq across frames. Opening
scans the file, verifies every frame and truncates a torn tail (logged at WARNING): a crash
mid-write loses at most the batch that was never acknowledged. A last frame that is whole but fails
its checks may be an acknowledged record with a flipped bit: cutting it would hand its seq to
another command, so opening refuses (CorruptTail) and changes nothing, or, for the sequencer
(`hold_damaged_tail`), holds the tail aside for it to recover from the replicas
(`fastbook.log.tail_recovery`, then `rewrite_tail`); `fastbook journal repair`
(`fastbook.log.journal_repair`) is the operator's tool for it. The scan builds a sparse
in-memory index (the offset of the frame holding seq first_seq + k * INDEX_STRIDE, 8 bytes per 64
seqs, so a long-running sequencer's memory stays flat); a replay seeks there and cuts the runs.

A journal of the previous format (header b"FBJOURN1", one JSON entry per record) is refused with a
message naming the converter, `fastbook journal migrate DIR` (`fastbook.log.journal_migrate`).

A lock file (`flock`) keeps two sequencers from writing one journal.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from array import array
from pathlib import Path

import numpy as np

from fastbook.log.snapshots import write_fsynced
from fastbook.wire.log import RUN_HEAD, LogEntry, LogRun

log = logging.getLogger(__name__)

FILE_MAGIC = b"FBJOURN2"
OLD_FILE_MAGIC = b"FBJOURN1"  # JSON entries: converted by `fastbook journal migrate`
FRAME_HEAD = struct.Struct("<II")  # run length, CRC32 of the run
_SEQ = struct.Struct("<q")
MAX_FRAME = 1 << 26  # a frame larger than this is corruption, not data
FRAME_ENTRIES = 65_536  # entries per frame at most (a larger batch is several frames, one fsync)
INDEX_STRIDE = 64  # the index keeps the frame offsets of the seqs first_seq, first_seq + 64, ...
MIGRATE_COMMAND = "fastbook journal migrate"
REPAIR_COMMAND = "fastbook journal repair"
PROBE_BYTES = 1 << 16  # appended and cut again by `resume` to see that the disk takes writes again


class JournalError(Exception):
    """The journal cannot be opened or written; nothing unjournaled may be published."""


class CorruptTail(JournalError):
    """The journal's last frame is whole but fails its checks: it may be an acknowledged record
    (a bit flipped on disk), so it is not cut. Start-up recovers it from the replicas
    (fastbook.log.tail_recovery) or refuses; nothing on disk is changed before it is recovered.
    `fastbook journal repair` shows it and, with --drop-tail, sets it aside on the operator's word."""

    def __init__(self, message: str, offset: int, size: int, last_seq: int) -> None:
        super().__init__(message)
        self.offset = offset  # where the damaged tail starts (the end of the last good frame)
        self.size = size  # the file's size
        self.last_seq = last_seq  # the last good seq


def encode_frame(run: LogRun) -> bytes:
    data = run.to_bytes()
    return FRAME_HEAD.pack(len(data), zlib.crc32(data)) + data


def unfinished_write(path: Path, offset: int, size: int) -> bool:
    """Whether the bytes of the journal at `path` from `offset` to `size` can only be a write that
    never finished (so never fdatasync'd, never acknowledged): zeros (a crash in `resume`'s probe,
    or space the file system allocated), or a frame the file ends inside of whose bytes to the end
    do not pass its CRC (had they passed, it is a whole frame with a damaged length)."""
    with open(path, "rb") as f:
        f.seek(offset)
        tail = f.read(size - offset)
    if not tail.strip(b"\x00"):
        return True
    if len(tail) < FRAME_HEAD.size:
        return True
    length, crc = FRAME_HEAD.unpack_from(tail)
    if zlib.crc32(tail[FRAME_HEAD.size :]) == crc:
        return False
    return bool(FRAME_HEAD.size + length > len(tail))


class Journal:
    FILE_NAME = "journal.log"
    LOCK_NAME = "journal.lock"

    def __init__(self, data_dir: Path, hold_damaged_tail: bool = False) -> None:
        """`hold_damaged_tail`: a CorruptTail is not raised but kept in `damaged` (the file is left
        as it is, appends are refused) for the sequencer to recover the tail from its replicas
        (`fastbook.log.tail_recovery`) and `rewrite_tail` it."""
        self.data_dir = Path(data_dir)
        self.hold_damaged_tail = hold_damaged_tail
        self.damaged: CorruptTail | None = None
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
        """Scan, verify, index; truncate at the first frame that is torn, corrupt or out of sequence."""
        size = os.fstat(self._fd).st_size
        with open(self.path, "rb") as f:
            magic = f.read(len(FILE_MAGIC))
            if magic == OLD_FILE_MAGIC:
                raise JournalError(
                    f"{self.path} is a journal of the previous format ({OLD_FILE_MAGIC.decode()}, JSON "
                    f"entries); convert it with `{MIGRATE_COMMAND} {self.data_dir}` (it keeps the "
                    "original as journal.log.v1) and start again"
                )
            if magic != FILE_MAGIC:
                raise JournalError(f"{self.path} is not a fastbook journal (bad file header)")
            offset = len(FILE_MAGIC)
            problem = None
            while offset < size:
                head = f.read(FRAME_HEAD.size)
                if len(head) < FRAME_HEAD.size:
                    problem = "torn frame header"
                    break
                length, crc = FRAME_HEAD.unpack(head)
                if length > MAX_FRAME or length < RUN_HEAD.size:
                    problem = f"implausible frame length {length}"
                    break
                data = f.read(length)
                if len(data) < length:
                    problem = "torn frame"
                    break
                if zlib.crc32(data) != crc:
                    problem = "checksum mismatch"
                    break
                try:
                    run, end = LogRun.read(data)
                    if end != length or not len(run):
                        raise ValueError("frame length and run do not agree")
                except ValueError as exc:
                    problem = f"invalid run ({exc})"
                    break
                seqs = run.seqs
                first = int(seqs[0])
                expected = self.last_seq + 1 if self.last_seq else first
                if first != expected or int(seqs[-1]) - first != len(run) - 1 or (np.diff(seqs) != 1).any():
                    problem = f"seqs {first}..{int(seqs[-1])} where {expected} was expected"
                    break
                self._index_frame(offset, first, int(seqs[-1]))
                offset += FRAME_HEAD.size + length
        if problem is not None:
            following = self._valid_frame_after(offset, size)
            if following is not None:
                # Not a torn tail: durable, acknowledged records follow the bad one. Cutting here
                # would silently drop accepted commands and hand their seqs to new ones.
                raise JournalError(
                    f"journal {self.path} is corrupt: {problem} at offset {offset} (last good seq "
                    f"{self.last_seq}), but valid records follow (seq {following[0]} at offset "
                    f"{following[1]}); refusing to truncate accepted records. Restore journal.log "
                    "from a backup or a replica's log before restarting"
                )
            if not unfinished_write(self.path, offset, size):
                damage = CorruptTail(
                    f"journal {self.path} is corrupt: {problem} in its last frame at offset {offset} "
                    f"(last good seq {self.last_seq}, {size - offset} bytes after it). The frame is "
                    "whole, so it may hold commands that were accepted and published: not cut, "
                    "nothing on disk changed. Restore journal.log from a backup, or see "
                    f"`{REPAIR_COMMAND} {self.data_dir}` (it shows the damage; --drop-tail sets the "
                    "tail aside, and replicas that applied it then resync)",
                    offset, size, self.last_seq,
                )  # fmt: skip
                if not self.hold_damaged_tail:
                    raise damage
                self.damaged = damage
                self.failed = f"the journal's last frame (after seq {self.last_seq}) is damaged"
                self._size = offset  # (reads stop at the last good frame; the file is unchanged)
                return
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

    def _index_frame(self, offset: int, first: int, last: int) -> None:
        """Record the durable frame of seqs first..last at file offset `offset`."""
        if not self.first_seq:
            self.first_seq = first
        indexed = self.first_seq + len(self._index) * INDEX_STRIDE  # the next seq the index keeps
        while indexed <= last:
            self._index.append(offset)
            indexed += INDEX_STRIDE
        self.last_seq = last

    def _valid_frame_after(self, offset: int, size: int) -> tuple[int, int] | None:
        """(seq, offset) of a CRC-valid frame with a later first seq somewhere after `offset`, if any.
        Looks for the seq bytes of the next few records (a bit flip may hit any field of the bad
        frame): a frame's first seq is 16 bytes after its start."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            tail = f.read(size - offset)
        for seq in range(self.last_seq + 1, self.last_seq + 65):
            needle = _SEQ.pack(seq)
            at = tail.find(needle, 16)
            while at >= 16:
                start = at - 16
                length, crc = FRAME_HEAD.unpack_from(tail, start)
                end = start + FRAME_HEAD.size + length
                if length <= MAX_FRAME and end <= len(tail) and zlib.crc32(tail[start + 8 : end]) == crc:
                    return seq, offset + start
                at = tail.find(needle, at + 1)
        return None

    def __len__(self) -> int:
        return self.last_seq - self.first_seq + 1 if self.last_seq else 0

    def append(self, run: LogRun) -> None:
        """Append a run of records that continue the sequence; durable when this returns.
        Raises JournalError (and refuses every later append) if the write or fsync fails."""
        if self.failed is not None:
            raise JournalError(self.failed)
        n = len(run)
        if not n:
            return
        first, last = run.seq_range()
        expected = self.last_seq + 1 if self.last_seq else first
        if first != expected or last - first != n - 1 or (n > 1 and bool((np.diff(run.seqs) != 1).any())):
            raise JournalError(f"journal append out of sequence: seqs {first}..{last}, expected {expected}")
        frames = [encode_frame(run.cut(i, i + FRAME_ENTRIES)) for i in range(0, n, FRAME_ENTRIES)]
        if any(len(frame) - FRAME_HEAD.size > MAX_FRAME for frame in frames):
            raise JournalError(f"journal frame for seqs {first}..{last} too large")
        data = b"".join(frames)
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
        offset = self._size
        for i, frame in zip(range(0, n, FRAME_ENTRIES), frames, strict=True):
            self._index_frame(offset, first + i, first + min(n, i + FRAME_ENTRIES) - 1)
            offset += len(frame)
        self._size = offset

    def resume(self) -> None:
        """After a failed append: cut any partial batch, check that the journal's disk takes a
        durable write again and clear `failed`; JournalError while it does not. The probe is
        PROBE_BYTES of zeros appended to the journal, fdatasync'd and cut again: the write a batch
        needs, on the same file (a quota or a file size limit applies to it too). A crash in
        between leaves a zero tail, which the next open drops like a torn one. The records before
        the failed batch were fdatasync'd by their own appends."""
        if self.failed is None:
            return
        try:
            os.ftruncate(self._fd, self._size)
            view = memoryview(bytes(PROBE_BYTES))
            while view:
                view = view[os.write(self._fd, view) :]
            os.fdatasync(self._fd)
            os.ftruncate(self._fd, self._size)
            os.fdatasync(self._fd)
            size = os.fstat(self._fd).st_size
            if size != self._size:
                raise OSError(f"journal is {size} bytes after the cut, not {self._size}")
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise JournalError(f"journal still unwritable: {exc}") from exc
        self.failed = None

    def damaged_bytes(self) -> bytes:
        """The damaged tail held by `hold_damaged_tail` (b"" if there is none)."""
        if self.damaged is None:
            return b""
        with open(self.path, "rb") as f:
            f.seek(self.damaged.offset)
            return f.read(self.damaged.size - self.damaged.offset)

    def rewrite_tail(self, frame: bytes) -> Path:
        """Replace the damaged tail by `frame` (a whole, CRC-valid frame of exactly its size, whose
        records continue the journal): the damaged bytes are first kept in
        `journal.log.tail-<offset>` (fsync'd), then the frame is written over them in place and
        fdatasync'd. The file never changes size, so a crash in between leaves a whole frame that
        is either the repaired one or still fails its CRC (and is recovered again at the next
        start): never a shorter journal whose lost seqs could be given to new commands. Returns
        the evidence file's path; JournalError if the frame does not fit."""
        damage = self.damaged
        if damage is None:
            raise JournalError("the journal has no damaged tail to rewrite")
        if len(frame) != damage.size - damage.offset:
            tail = damage.size - damage.offset
            raise JournalError(f"a {len(frame)}-byte frame cannot replace a {tail}-byte tail")
        length, crc = FRAME_HEAD.unpack_from(frame)
        body = frame[FRAME_HEAD.size :]
        if length != len(body) or zlib.crc32(body) != crc:
            raise JournalError("the replacement frame is not a whole, CRC-valid frame")
        try:
            run, _end = LogRun.read(body)
        except ValueError as exc:
            raise JournalError(f"the replacement frame is not a valid run ({exc})") from None
        first, last = int(run.seqs[0]), int(run.seqs[-1])
        if first != self.last_seq + 1 or last - first != len(run) - 1:
            raise JournalError(f"the replacement frame holds seqs {first}..{last}, not {self.last_seq + 1}..")
        evidence = self.data_dir / f"{self.FILE_NAME}.tail-{damage.offset}"
        write_fsynced(evidence, self.damaged_bytes())
        self._fsync_dir()
        fd = os.open(self.path, os.O_WRONLY)  # (not O_APPEND: pwrite at the offset)
        try:
            view = memoryview(frame)
            at = damage.offset
            while view:
                written = os.pwrite(fd, view, at)
                view, at = view[written:], at + written
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self._reader.close()  # (its buffer may hold the damaged bytes)
        self._reader = open(self.path, "rb")  # noqa: SIM115 - lives as long as the journal
        self._index_frame(damage.offset, first, last)
        self._size = damage.size
        self.damaged = None
        self.failed = None
        return evidence

    def read(self, first: int, last: int | None = None, limit: int = 1 << 30) -> LogRun:
        """Durable records first..last (inclusive, clipped to what exists), at most `limit` of them."""
        if not self.last_seq:
            return LogRun.empty()
        first = max(first, self.first_seq)
        last = self.last_seq if last is None else min(last, self.last_seq)
        last = min(last, first + limit - 1)
        if first > last:
            return LogRun.empty()
        reader = self._reader
        reader.seek(self._index[(first - self.first_seq) // INDEX_STRIDE])
        runs = []
        expected = None
        while expected is None or expected <= last:
            head = reader.read(FRAME_HEAD.size)
            if len(head) < FRAME_HEAD.size:
                raise JournalError(f"journal frame at seq {expected} unreadable (file shrank?)")
            length, crc = FRAME_HEAD.unpack(head)
            data = reader.read(length) if length <= MAX_FRAME else b""
            if len(data) != length or zlib.crc32(data) != crc:
                raise JournalError(f"journal frame at seq {expected} unreadable (disk corruption?)")
            try:
                run, _end = LogRun.read(data)
            except ValueError as exc:
                raise JournalError(f"journal frame at seq {expected} unreadable ({exc})") from None
            start = int(run.seqs[0])
            if expected is not None and start != expected:
                raise JournalError(f"journal frame at seq {expected} starts at {start} (disk corruption?)")
            expected = start + len(run)
            if expected <= first:
                continue
            runs.append(run.cut(max(0, first - start), last - start + 1))
        return LogRun.concat(runs)

    def frame_offset(self, seq: int) -> int:
        """The file offset to read from for `seq` (a durable seq): the frame holding it, or one
        shortly before it (the index keeps every INDEX_STRIDE-th seq)."""
        return self._index[(seq - self.first_seq) // INDEX_STRIDE]

    def read_frame(self, offset: int) -> tuple[LogRun, int]:
        """The run of the durable frame at file offset `offset` (from `frame_offset` or a previous
        read_frame) and the offset of the frame after it: a reader that streams the journal frame
        by frame holds one frame at a time, never a whole range."""
        if not len(FILE_MAGIC) <= offset < self._size:
            raise JournalError(f"journal offset {offset} is outside the durable frames")
        reader = self._reader
        reader.seek(offset)
        head = reader.read(FRAME_HEAD.size)
        if len(head) < FRAME_HEAD.size:
            raise JournalError(f"journal frame at offset {offset} unreadable (file shrank?)")
        length, crc = FRAME_HEAD.unpack(head)
        data = reader.read(length) if length <= MAX_FRAME else b""
        if len(data) != length or zlib.crc32(data) != crc:
            raise JournalError(f"journal frame at offset {offset} unreadable (disk corruption?)")
        try:
            run, _end = LogRun.read(data)
        except ValueError as exc:
            raise JournalError(f"journal frame at offset {offset} unreadable ({exc})") from None
        return run, offset + FRAME_HEAD.size + length

    def entries(self, first: int = 1, last: int | None = None) -> list[LogEntry]:
        """Records first..last as LogEntry with every client id filled in (from the entries that
        introduce each owner, from the journal's start): for tools and tests, not the hot path."""
        clients: dict[int, str] = {}
        out = []
        for entry in self.read(self.first_seq, last).entries():
            if entry.client_id is not None:
                clients.setdefault(entry.owner, entry.client_id)
            else:
                entry = entry._replace(client_id=clients.get(entry.owner))
            if entry.seq >= first:
                out.append(entry)
        return out

    def close(self) -> None:
        for closer in (self._reader.close, lambda: os.close(self._fd), lambda: os.close(self._lock_fd)):
            try:
                closer()
            except OSError:
                pass
