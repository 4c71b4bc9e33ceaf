"""`fastbook journal migrate DIR`: convert a journal of the previous format to the binary one.

The previous format (header b"FBJOURN1"): records `u32 payload length | u32 CRC32(u64 seq +
payload) | u64 seq | payload`, the payload a log entry as a JSON array of 14 fields (seq, hash hex,
client id, client order id, op, order_id, owner, side, type, tif, stp, post_only, price, qty). A
sequencer refuses to open such a journal and names this command (fastbook.log.journal).

The conversion reads and checks every record (CRC, seq order, each field as the old decoder did),
writes the same entries as binary runs (the client id on the first entry of each owner number, as
the sequencer writes them) to journal.log.new, fsyncs it, keeps the original as journal.log.v1 (a
hard link) and renames the new file into place in one os.replace: a crash at any point leaves a
whole journal.log, the old one or the new. A torn tail (a crash mid-write) is dropped as the old sequencer
would have dropped it; a bad record followed by good ones is refused, nothing is changed. It takes
the journal's lock, so it cannot run beside a sequencer.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from fastbook.engine.types import MAX_ORDER_ID, MAX_OWNER, MAX_PRICE, MAX_QTY, Op
from fastbook.log.journal import FILE_MAGIC, OLD_FILE_MAGIC, Journal, JournalError, encode_frame
from fastbook.wire.fields import CLIENT_ID_RE, CLIENT_ORDER_ID_RE, MAX_SEQ, parse_hash_hex
from fastbook.wire.log import LogEntry, LogRun, _int_in

log = logging.getLogger(__name__)

OLD_RECORD_HEAD = struct.Struct("<IIQ")
OLD_MAX_RECORD = 1 << 24
BACKUP_NAME = "journal.log.v1"
ENTRIES_PER_FRAME = 4096


def decode_json_entry(payload: bytes) -> LogEntry:
    """The previous format's JSON entry (what its `decode_entry` accepted); ValueError otherwise."""
    try:
        item = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(item, list) or len(item) != len(LogEntry._fields):
        raise ValueError(f"log entry must be an array of {len(LogEntry._fields)} items")
    seq, hsh, client, coid, op, order_id, owner, side, otype, tif, stp, post_only, price, qty = item
    if not isinstance(client, str) or not CLIENT_ID_RE.fullmatch(client):
        raise ValueError(f"client id invalid: {str(client)[:70]!r}")
    if coid is None:
        if op != Op.CANCEL_ALL:
            raise ValueError("client order id may only be null for cancel_all")
    elif not isinstance(coid, str) or not CLIENT_ORDER_ID_RE.fullmatch(coid):
        raise ValueError(f"client order id invalid: {str(coid)[:70]!r}")
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


def _old_records(data: bytes, path: Path) -> Iterator[tuple[int, bytes]]:
    """(seq, payload) of the previous format's valid records; a torn or corrupt tail ends them
    (logged), unless a valid record follows it (JournalError)."""
    offset = len(OLD_FILE_MAGIC)
    expected = 0
    while offset < len(data):
        problem = None
        if len(data) - offset < OLD_RECORD_HEAD.size:
            problem = "torn record header"
        else:
            length, crc, seq = OLD_RECORD_HEAD.unpack_from(data, offset)
            start = offset + OLD_RECORD_HEAD.size
            payload = data[start : start + length]
            if length > OLD_MAX_RECORD or len(payload) < length:
                problem = "torn record"
            elif zlib.crc32(payload, zlib.crc32(data[offset + 8 : start])) != crc:
                problem = f"checksum mismatch at seq {seq}"
            elif expected and seq != expected:
                problem = f"seq {seq} where {expected} was expected"
        if problem is not None:
            if _old_record_follows(data, offset + 1, expected):
                raise JournalError(
                    f"{path}: {problem} at offset {offset}, but valid records follow; not converted"
                )
            log.warning("%s: %s; dropping %d bytes from offset %d", path, problem, len(data) - offset, offset)
            return
        yield seq, payload
        expected = seq + 1
        offset = start + length


def _old_record_follows(data: bytes, start: int, expected: int) -> bool:
    for seq in range(max(expected, 1), max(expected, 1) + 64):
        needle = struct.pack("<Q", seq)
        at = data.find(needle, max(start, 8) + 8)
        while at >= 0:
            head = at - 8
            length, crc = struct.unpack_from("<II", data, head)
            payload = data[at + 8 : at + 8 + length]
            if len(payload) == length and zlib.crc32(payload, zlib.crc32(needle)) == crc:
                return True
            at = data.find(needle, at + 1)
    return False


def _fsync_dir(data_dir: Path) -> None:
    dir_fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _replace_atomically(data_dir: Path, path: Path, frames: list[bytes]) -> None:
    """Put the converted journal in place of `path`, keeping the original as journal.log.v1, so a
    crash at any point leaves journal.log whole: the old one (the conversion runs again) or the new.

    The new file is written beside and fsynced; the backup is a second name of the original (a
    hard link, or a copy where the file system has none), made durable with the folder; then one
    os.replace swaps the new file in, and the folder is fsynced again."""
    new_path = data_dir / (Journal.FILE_NAME + ".new")
    with open(new_path, "wb") as f:
        f.write(FILE_MAGIC)
        for frame in frames:
            f.write(frame)
        f.flush()
        os.fsync(f.fileno())
    backup_tmp = data_dir / (BACKUP_NAME + ".tmp")
    backup_tmp.unlink(missing_ok=True)
    try:
        os.link(path, backup_tmp)
    except OSError:
        shutil.copyfile(path, backup_tmp)
        with open(backup_tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(backup_tmp, data_dir / BACKUP_NAME)  # a backup left by an interrupted run is replaced
    _fsync_dir(data_dir)
    os.replace(new_path, path)  # the one step that changes journal.log: atomic
    _fsync_dir(data_dir)


def migrate_journal(data_dir: Path) -> int:
    """Convert DIR/journal.log in place (keeping DIR/journal.log.v1); returns the entries converted.
    JournalError if it is not a journal of the previous format, is corrupt, or is in use."""
    data_dir = Path(data_dir)
    path = data_dir / Journal.FILE_NAME
    try:
        lock_fd = os.open(data_dir / Journal.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise JournalError(f"cannot open {data_dir}: {exc}") from exc
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise JournalError(f"journal {path} is locked by a running sequencer: stop it first") from None
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalError(f"cannot read {path}: {exc}") from exc
        if data.startswith(FILE_MAGIC):
            raise JournalError(f"{path} is already in the binary format ({FILE_MAGIC.decode()})")
        if not data.startswith(OLD_FILE_MAGIC):
            raise JournalError(f"{path} is not a fastbook journal (bad file header)")
        frames: list[bytes] = []
        chunk: list[LogEntry] = []
        named: dict[int, str] = {}  # owner -> client id, as the entries so far say
        count = 0
        for seq, payload in _old_records(data, path):
            try:
                entry = decode_json_entry(payload)
            except ValueError as exc:
                raise JournalError(f"{path}: record {seq} is not a valid log entry ({exc})") from None
            if entry.seq != seq:
                raise JournalError(f"{path}: record {seq} holds the entry of seq {entry.seq}")
            known = named.get(entry.owner)
            if known is None:
                named[entry.owner] = entry.client_id  # type: ignore[assignment]
            elif known != entry.client_id:
                raise JournalError(f"{path}: seq {seq} gives owner {entry.owner} to two clients")
            else:
                entry = entry._replace(client_id=None)  # named once, where the owner first appears
            chunk.append(entry)
            count += 1
            if len(chunk) == ENTRIES_PER_FRAME:
                frames.append(encode_frame(LogRun.from_entries(chunk)))
                chunk = []
        if chunk:
            frames.append(encode_frame(LogRun.from_entries(chunk)))
        try:
            _replace_atomically(data_dir, path, frames)
        except OSError as exc:
            raise JournalError(f"cannot write the converted journal in {data_dir}: {exc}") from exc
        return count
    finally:
        os.close(lock_fd)
