"""`fastbook journal repair DIR`: the operator's tool for a journal whose last frame is damaged.

The sequencer first asks its replicas for the frame's records (`fastbook.log.tail_recovery`) and
refuses to start if they do not give it back (`TailNotRecovered`), changing nothing: the frame is
whole, so it may hold commands that were accepted and published, and cutting it would give their
seqs to other commands. Without flags this shows the damage and what the options are; with
`--drop-tail` (the operator's decision, after restoring from a backup proved impossible) it:

1. copies the damaged bytes to `journal.log.tail-<offset>` (fsync'd: the evidence is kept),
2. cuts the journal at the last good frame (fsync'd),
3. moves snapshot files newer than the last good seq aside to `<version>.snap.ahead` (they hold
   the dropped commands' effects; the sequencer would refuse a snapshot ahead of its journal).

The seqs after the last good one are then given to new commands: replicas that applied the
dropped ones see a hash mismatch and resync from a snapshot, and clients whose orders they were
must check their open orders. That is why it is never done without being asked.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from fastbook.log.journal import CorruptTail, Journal, JournalError
from fastbook.log.snapshots import SUFFIX, SnapshotStore, write_fsynced


@dataclass(frozen=True, slots=True)
class RepairReport:
    damaged: bool  # the journal had a damaged tail
    dropped: bool  # ... and it was set aside (--drop-tail)
    message: str


def repair_journal(data_dir: Path, drop_tail: bool = False) -> RepairReport:
    """Inspect (and with `drop_tail`, repair) DIR's journal; JournalError if it cannot be
    repaired here (damage followed by valid records, a locked or unreadable journal)."""
    if not (data_dir / Journal.FILE_NAME).is_file():
        raise JournalError(f"no journal at {data_dir / Journal.FILE_NAME}")
    try:
        Journal(data_dir).close()
    except CorruptTail as exc:
        damage = exc
    else:
        return RepairReport(False, False, f"journal {data_dir / Journal.FILE_NAME} is sound; nothing to do")
    tail = damage.size - damage.offset
    snapshots = SnapshotStore(data_dir / "snapshots")
    ahead = [v for v in snapshots.versions() if v > damage.last_seq]
    if not drop_tail:
        lines = [
            str(damage),
            "",
            f"last good seq {damage.last_seq}; {tail} damaged bytes from offset {damage.offset}",
        ]
        if ahead:
            lines.append(f"snapshots newer than it (they hold the damaged commands' effects): {ahead}")
        lines.append(
            "to set the tail aside and let the sequencer reuse the seqs after the last good one "
            "(replicas that applied them resync), run again with --drop-tail"
        )
        return RepairReport(True, False, "\n".join(lines))
    path = data_dir / Journal.FILE_NAME
    lock_fd = os.open(data_dir / Journal.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise JournalError(f"journal {path} is locked by a running sequencer; stop it first") from None
        evidence = data_dir / f"{Journal.FILE_NAME}.tail-{damage.offset}"
        with open(path, "rb") as f:
            f.seek(damage.offset)
            data = f.read()
        write_fsynced(evidence, data)
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, damage.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        for version in ahead:
            source = snapshots.path_for(version)
            os.replace(source, source.with_name(f"{version}{SUFFIX}.ahead"))
        _fsync_dir(snapshots.directory)
        _fsync_dir(data_dir)
    finally:
        os.close(lock_fd)
    moved = f"; snapshots {ahead} moved aside (*.snap.ahead)" if ahead else ""
    message = (
        f"dropped {tail} bytes after seq {damage.last_seq} from {path} (kept in {evidence.name}){moved}. "
        f"The sequencer will give seq {damage.last_seq + 1} and on to new commands: replicas that "
        "applied the dropped ones will resync; clients should check their open orders"
    )
    return RepairReport(True, True, message)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
