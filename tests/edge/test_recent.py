"""RecentRecords: the last records an edge applied, kept for a sequencer's journal-tail recovery."""

from __future__ import annotations

from fastbook.edge.recent import RecentRecords
from fastbook.wire.log import SCALAR_RUN, LogEntry, LogRun


def entry(seq: int, coid: str | None = None, client: str | None = None) -> LogEntry:
    return LogEntry(seq, seq * 7919, client, coid, 1, seq, 1, 1, 1, 1, 0, 0, 9900, 1000)


def received(seqs: range, named: bool = False) -> LogRun:
    """A run as a log message carries it, read back from its bytes (short runs take the scalar
    read, longer ones numpy's)."""
    run = LogRun.from_entries(entry(s, f"c{s}" if named else None, "bob" if named and s == seqs[0] else None)
                              for s in seqs)
    return LogRun.read(run.to_bytes(), named=False)[0]


def kept(recent: RecentRecords, first: int = 1, applied: int = 10**9) -> list[int]:
    return recent.since(first, applied)[0]["seq"].tolist()


def test_runs_short_and_long_are_kept_with_their_names_cleared() -> None:
    recent = RecentRecords()
    recent.add(received(range(1, 2)))
    recent.add(received(range(2, 3 + SCALAR_RUN), named=True))  # the numpy read
    recent.add(received(range(3 + SCALAR_RUN, 5 + SCALAR_RUN), named=True))  # the scalar read
    records, names = recent.since(2, 3 + SCALAR_RUN)
    assert records["seq"].tolist() == list(range(2, 4 + SCALAR_RUN))
    assert not records["coid_len"].any() and not records["client_len"].any()
    assert records["hash"].tolist() == [s * 7919 for s in range(2, 4 + SCALAR_RUN)]
    assert names == {s: f"c{s}" for s in range(2, 5 + SCALAR_RUN)}
    assert len(recent) == 4 + SCALAR_RUN and recent.last == 4 + SCALAR_RUN


def test_an_overlap_keeps_only_the_newer_records_and_a_gap_starts_afresh() -> None:
    recent = RecentRecords()
    recent.add(received(range(1, 6)))
    recent.add(received(range(3, 8)))  # a replay answer overlapping what was kept
    recent.add(received(range(2, 5)))  # nothing new
    assert kept(recent) == list(range(1, 8)) and len(recent) == 7
    recent.add(received(range(10, 11)))  # after a gap: only consecutive records are of use
    assert kept(recent) == [10] and len(recent) == 1 and recent.last == 10
    recent.add(received(range(11, 12)))
    assert kept(recent, 11) == [11]


def test_the_oldest_runs_go_beyond_the_capacity() -> None:
    recent = RecentRecords(capacity=4)
    for seq in range(1, 8):
        recent.add(received(range(seq, seq + 1)))
    assert kept(recent) == [4, 5, 6, 7] and len(recent) == 4
