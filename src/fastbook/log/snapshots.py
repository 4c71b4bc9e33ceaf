"""Immutable snapshot files: `<data_dir>/snapshots/<version>.snap`.

The bytes are `fastbook.wire.encode_snapshot` (checksummed). A file is written to a temp name,
fsync'd, renamed into place and the directory fsync'd, so a crash leaves either the whole file or
none; a snapshot for a version never changes. A file that fails its checks on load is renamed to
`<version>.snap.corrupt` (kept as evidence, logged at ERROR) and the next older one is tried.

Beside a snapshot, `<version>.meta.json` keeps what the sequencer knows at that version and the
public snapshot does not carry: the last public trade (the retained book's `last_trade`; recovery
replays only the journal after the snapshot, which may hold no trade). Written first, the same
durable way; a snapshot without one (older data dirs) has no last trade to start from.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastbook.wire.snapshot import SnapshotData, decode_snapshot, encode_snapshot

log = logging.getLogger(__name__)

SUFFIX = ".snap"
META_SUFFIX = ".meta.json"


class SnapshotStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.corrupt: list[Path] = []  # files found bad by load_latest (renamed aside)

    def path_for(self, version: int) -> Path:
        return self.directory / f"{version}{SUFFIX}"

    def versions(self) -> list[int]:
        """Versions with a snapshot file, newest first."""
        found = []
        for path in self.directory.iterdir():
            stem, suffix = path.name[: -len(SUFFIX)], path.name[-len(SUFFIX) :]
            if suffix == SUFFIX and stem.isdigit():
                found.append(int(stem))
        return sorted(found, reverse=True)

    def meta_path_for(self, version: int) -> Path:
        return self.directory / f"{version}{META_SUFFIX}"

    def write(
        self, snap: SnapshotData, data: bytes | None = None, meta: dict[str, Any] | None = None
    ) -> Path:
        """Durably write the snapshot for snap.version (`data`: its encoding, if the caller has it)
        and, first, its `meta` if given; an existing file for that version is kept."""
        final = self.path_for(snap.version)
        if final.exists():
            return final
        if data is None:
            data = encode_snapshot(snap)
        if meta is not None:
            self._write_file(self.meta_path_for(snap.version), json.dumps(meta).encode())
        self._write_file(final, data)
        return final

    def _write_file(self, final: Path, data: bytes) -> None:
        """Temp file, fsync, rename, fsync of the directory: the whole file or none after a crash."""
        temp = self.directory / f".{final.name}.tmp"
        write_fsynced(temp, data)
        os.replace(temp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read_meta(self, version: int) -> dict[str, Any]:
        """The meta of the snapshot at `version` ({} if it has none or it is unreadable)."""
        path = self.meta_path_for(version)
        try:
            meta = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            log.error("snapshot meta %s is unreadable (%s); starting without it", path, exc)
            return {}
        return meta if isinstance(meta, dict) else {}

    def prune(self, keep: int) -> list[int]:
        """Delete all but the newest `keep` snapshot files (the journal holds everything, so older
        snapshots are only a shortcut). Returns the versions deleted."""
        doomed = self.versions()[max(1, keep) :]
        for version in doomed:
            try:
                self.path_for(version).unlink()
                self.meta_path_for(version).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot delete old snapshot %s: %s", self.path_for(version), exc)
        return doomed

    def read(self, version: int) -> SnapshotData:
        """ValueError if the file is corrupt (checksum, structure); OSError if unreadable."""
        return decode_snapshot(self.path_for(version).read_bytes())

    def load_latest(
        self, check: Callable[[SnapshotData], object] | None = None, max_version: int | None = None
    ) -> tuple[SnapshotData, object] | None:
        """The newest snapshot (of at most `max_version`) that decodes and passes `check` (which may
        raise ValueError and returns something the caller wants, e.g. the restored replica), or
        None if there is none."""
        for version in self.versions():
            if max_version is not None and version > max_version:
                continue
            path = self.path_for(version)
            try:
                snap = self.read(version)
                if snap.version != version:
                    raise ValueError(f"file name says version {version}, contents say {snap.version}")
                checked = check(snap) if check is not None else None
            except (ValueError, OSError) as exc:
                aside = path.with_name(path.name + ".corrupt")
                log.error(
                    "snapshot file %s is corrupted (%s); moved to %s, trying an older one", path, exc, aside
                )
                try:
                    os.replace(path, aside)
                except OSError:
                    pass
                self.corrupt.append(path)
                continue
            return snap, checked
        return None


def write_fsynced(path: Path, data: bytes) -> None:
    """Write `data` as the whole of `path` and fsync it (the caller renames or fsyncs the folder)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
