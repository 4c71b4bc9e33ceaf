"""When the sequencer writes and publishes a snapshot, and the bytes it last published.

A snapshot costs O(resting orders): spacing them at least as many versions apart as the last one
held orders keeps their cost O(1) per command however deep the book. A command adds at most one
order, so the next snapshot holds at most twice the spacing: at most 2 order rows written per
command (a book that grows by one order per command gets a snapshot whenever the version
doubles), about 1 on a book of steady depth; and a late joiner replays at most about as many
entries as the snapshot holds. An idle market that moved gets one after `interval` seconds.
"""

from __future__ import annotations

import logging
from typing import Any

from fastbook.log.replica import Replica
from fastbook.log.snapshots import SnapshotStore
from fastbook.wire.snapshot import encode_snapshot

log = logging.getLogger(__name__)


class SnapshotPolicy:
    def __init__(self, store: SnapshotStore, every: int, interval: float, keep: int) -> None:
        self.store = store
        self.every = every
        self.interval = interval
        self.keep = keep
        self.published = b""  # the bytes of the latest snapshot (retained on the snapshot topic)
        self.published_version = -1
        self._orders = 0  # resting orders in the last snapshot (sets the spacing)
        self._time: float | None = None
        self.failure: str | None = None  # why the last snapshot file could not be written

    def due_after_batch(self, version: int) -> bool:
        return version - self.published_version >= max(self.every, self._orders)

    def due_on_tick(self, version: int, now: float) -> bool:
        if self._time is None:
            self._time = now
        return version > self.published_version and now - self._time >= self.interval

    def next_due(self, version: int, now: float) -> float | None:
        """When due_on_tick turns true (None: not before the version moves)."""
        if version <= self.published_version:
            return None
        return now if self._time is None else self._time + self.interval

    def take(self, replica: Replica, now: float, last_trade: dict[str, Any] | None = None) -> bytes:
        """Write <version>.snap (with the names, and its meta: the last public trade) and return
        the anonymous form to publish retained (no client ids, no client order ids: docs/wire.md,
        "Snapshots")."""
        # The order rows are written straight from the replica's map: a snapshot costs O(resting
        # orders), and building the rows first was about a third of it.
        snap = replica.snapshot_data(rows=False)
        data = encode_snapshot(snap, named=False)
        try:
            if not self.store.path_for(snap.version).exists():  # (the named form costs an encoding)
                named = encode_snapshot(snap, orders=replica.orders)
                self.store.write(snap, named, meta={"last_trade": last_trade})
            self.store.prune(self.keep)
        except OSError as exc:
            # Published all the same (the journal holds every entry, so a restart recovers without
            # it); said once per state change, and kept in `failure` for the sequencer's health.
            if self.failure is None:
                log.error("sequencer %s: cannot write snapshot %d: %s", snap.market.name, snap.version, exc)
            self.failure = f"cannot write snapshot {snap.version}: {exc}"
        else:
            if self.failure is not None:
                log.warning("sequencer %s: snapshot %d written again", snap.market.name, snap.version)
            self.failure = None
        self.published = data
        self.published_version = snap.version
        self._orders = len(replica.orders)
        self._time = now
        return data
