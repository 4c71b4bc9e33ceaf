"""The sequencer's start: its data dir's market, the newest valid snapshot, and the journal after it.

`recover` rebuilds what the sequencer had durably decided: the replica at the journal's last seq
(every entry after the snapshot re-applied and hash-checked), the dedupe window and the last
public trade. Anything inconsistent (a snapshot ahead of the journal, seqs missing in between, an
entry that does not replay to its hash) is a JournalError: start-up refuses rather than guess.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastbook.engine.types import EventType, Op
from fastbook.log.dedupe import DedupeWindow
from fastbook.log.journal import Journal, JournalError
from fastbook.log.replica import HashMismatch, Replica
from fastbook.log.reports import public_trade
from fastbook.log.snapshots import SnapshotStore
from fastbook.wire.log import LogEntry, LogRun
from fastbook.wire.market import MarketSpec
from fastbook.wire.snapshot import SnapshotData

log = logging.getLogger(__name__)

MARKET_FILE = "market.json"

_TRADE = int(EventType.TRADE)
_NEW = int(Op.NEW)


@dataclass(slots=True)
class Recovered:
    replica: Replica
    dedupe: DedupeWindow
    last_trade: dict[str, Any] | None  # the public trade of the newest journaled entry that traded


class JournalRetry:
    """When a sequencer whose journal failed (disk full, I/O error) tries it again: after
    `first_delay` seconds, doubling up to `max_delay` while it still fails. Logged once per state
    change (the failure is logged where it happened; the retries that fail only at DEBUG)."""

    def __init__(self, first_delay: float = 0.5, max_delay: float = 30.0) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.delay = first_delay
        self.next_at: float | None = None  # None: the journal has not failed
        self.resumed_at: float | None = None
        self.attempts = 0

    def failed(self, now: float) -> None:
        if self.next_at is None:
            # Failing again soon after a resume (a disk with room for the probe but not a batch):
            # keep backing off rather than start from the shortest delay.
            recent = self.resumed_at is not None and now - self.resumed_at < 2 * self.max_delay
            self.delay = min(self.delay * 2, self.max_delay) if recent else self.first_delay
            self.next_at = now + self.delay

    def attempt(self, now: float, journal: Journal) -> bool:
        """True once the journal takes durable writes again (then the caller rebuilds its state)."""
        if self.next_at is None or now < self.next_at:
            return False
        self.attempts += 1
        try:
            journal.resume()
        except JournalError as exc:
            self.delay = min(self.delay * 2, self.max_delay)
            self.next_at = now + self.delay
            log.debug("%s (retry %d in %.1fs)", exc, self.attempts, self.delay)
            return False
        self.next_at = None
        self.resumed_at = now
        self.attempts = 0
        return True


def check_market_file(data_dir: Path, market: MarketSpec) -> None:
    """A data dir belongs to one market: written on first start, compared on every other."""
    path = data_dir / MARKET_FILE
    if path.exists():
        try:
            stored = MarketSpec.from_json(json.loads(path.read_bytes()))
        except (ValueError, OSError, RecursionError) as exc:
            raise ValueError(f"{path} is unreadable: {exc}") from exc
        if stored != market:
            raise ValueError(f"data dir {data_dir} belongs to market {stored}, not {market}")
    else:
        path.write_text(json.dumps(market.to_json()) + "\n")


def journal_runs(journal: Journal, first: int, last: int) -> Iterator[LogRun]:
    """Journal records first..last, read in runs; JournalError if one is missing."""
    seq = first
    while seq <= last:
        run = journal.read(seq, last, limit=50_000)
        if not len(run) or int(run.seqs[0]) != seq:
            held = f"{journal.first_seq}..{journal.last_seq}"
            raise JournalError(f"journal record {seq} is missing (the journal holds {held})")
        yield run
        seq = int(run.seqs[-1]) + 1


def _journal_entries(journal: Journal, first: int, last: int) -> Iterator[LogEntry]:
    """The journal entries first..last (the journal checked their records when it read them)."""
    for run in journal_runs(journal, first, last):
        yield from run.entries()


def _journaled_news(
    journal: Journal, first: int, last: int, clients: dict[int, str]
) -> Iterator[tuple[int, str, str]]:
    """(seq, client, client order id) of the `new`s among the journal records first..last,
    already applied to the snapshot whose owners are `clients`. Only the fields the dedupe
    window needs are read: up to `dedupe_window` records are read at every start."""
    for run in journal_runs(journal, first, last):
        news = np.flatnonzero(run.records["op"] == _NEW)
        coids = run.client_order_ids_at(news)
        seqs = run.seqs[news].tolist()
        for i, seq, owner in zip(news.tolist(), seqs, run.records["owner"][news].tolist(), strict=True):
            client = clients.get(owner)
            coid = coids[i]
            if client is None or coid is None:
                problem = f"a new of owner {owner}, whom the snapshot lacks"
                raise JournalError(f"journal record {seq}: {problem}")
            yield seq, client, coid


def recover(
    market: MarketSpec, journal: Journal, snapshots: SnapshotStore, dedupe_window: int, data_dir: Path,
    below_damage: bool = False,
) -> Recovered:
    """Latest valid snapshot file + replay of the journal after it (hash-checked). The dedupe
    window is rebuilt from the journal: the `new`s of the last `dedupe_window` versions before
    the snapshot, then those replayed after it (snapshot files do not carry it: writing it with
    every snapshot cost O(window) each time, most of the sequencer's time at the default window).
    `below_damage`: the journal's damaged tail is held aside (Journal.damaged): snapshots newer
    than its last good seq (taken after the damaged frame) are left alone, not used."""

    def restore(snap: SnapshotData) -> Replica:
        if snap.market != market:
            raise ValueError(f"snapshot is for market {snap.market}, not {market}")
        if not snap.named:
            raise ValueError("snapshot file has no names (an anonymous, published snapshot)")
        return Replica.from_snapshot(snap)

    loaded = snapshots.load_latest(restore, journal.last_seq if below_damage else None)
    if loaded is not None:
        restored = loaded[1]
        assert isinstance(restored, Replica)
        replica = restored
    else:
        replica = Replica(market)
    dedupe = DedupeWindow(dedupe_window)
    if journal.last_seq < replica.version:
        raise JournalError(
            f"snapshot version {replica.version} is ahead of the journal (last seq {journal.last_seq}) "
            f"in {data_dir}: journal records are missing"
        )
    if journal.last_seq > replica.version and journal.first_seq > replica.version + 1:
        raise JournalError(
            f"journal starts at seq {journal.first_seq} but the newest usable snapshot is version "
            f"{replica.version}: seqs in between are missing"
        )
    start = replica.version
    # The last trade up to the snapshot is in its meta (the journal after it may hold none).
    trade = snapshots.read_meta(start).get("last_trade") if loaded is not None else None
    last_trade: dict[str, Any] | None = trade if isinstance(trade, dict) else None
    # The ids of the news in the window before the snapshot (already applied to it) ...
    # (A journal that starts later than the window holds fewer: only the ids it has.)
    window_start = max(1, journal.first_seq, start - dedupe_window + 1)
    for seq, client, coid in _journaled_news(journal, window_start, start, replica.clients):
        dedupe.accept(seq, client, coid)
    dedupe.advance(start)
    # ... then the journal after the snapshot, applied and checked entry by entry.
    for entry in _journal_entries(journal, start + 1, journal.last_seq):
        try:
            events = replica.apply(entry)
        except (HashMismatch, ValueError, KeyError) as exc:
            raise JournalError(
                f"journal replay diverged ({exc}); was it written by a different engine?"
            ) from exc
        if entry.op == Op.NEW:
            named = replica.clients.get(entry.owner)
            if named is None:
                raise JournalError(f"journal record {entry.seq}: owner {entry.owner} is no client's")
            dedupe.accept(entry.seq, named, entry.client_order_id)  # type: ignore[arg-type]  # a new has an id
        dedupe.advance(entry.seq)
        trades = [event for event in events if event[0] == _TRADE]
        if trades:
            last_trade = public_trade(market, entry.seq, len(trades), trades[-1])
    log.info(
        "sequencer %s: recovered version %d (snapshot %d + %d journal entries; dedupe window %d ids)",
        market.name,
        replica.version,
        start,
        replica.version - start,
        len(dedupe),
    )
    return Recovered(replica, dedupe, last_trade)
