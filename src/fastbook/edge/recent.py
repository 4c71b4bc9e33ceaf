"""What an edge keeps of the log it applied, for a sequencer recovering a damaged journal tail
(fastbook.log.tail_recovery, docs/wire.md "Recovering a damaged journal tail").

The last RECENT_RECORDS records it applied (the raw 56-byte records, as the log carried them) and
the client order ids of its own news and cancel_alls among them (its reports' seqs). 8,192
records: the damaged tail is one journal frame, the batch the sequencer wrote last, and a batch
that large is a bulk run; its answer (base64 records plus at most one 64-character name each)
stays under about 1.2 MB, within the broker's 2 MiB limit on a client's message
(transport/acl.py MAX_CLIENT_MESSAGE). Memory: 448 KiB of records at most.
"""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np

from fastbook.wire.log import LOG_RECORD_DTYPE, LogRun

RECENT_RECORDS = 8192


class RecentRecords:
    def __init__(self, capacity: int = RECENT_RECORDS) -> None:
        self.capacity = capacity
        # (first seq, last seq, count, the raw records) per run kept, ascending seqs: bytes, one
        # copy a run, so a lone record costs no numpy call (the names' lengths are cleared in since)
        self._runs: deque[tuple[int, int, int, bytes]] = deque()
        self._count = 0
        self.last = 0  # the highest seq kept
        self.names: OrderedDict[int, str | None] = OrderedDict()  # own seq -> client order id

    def __len__(self) -> int:
        return self._count

    def add(self, run: LogRun) -> None:
        """Keep the records of `run` (a log message or replay answer received) newer than those
        kept; after a gap, from there on (only consecutive records are of use). `since` gives
        only those the replica applied (hash-checked)."""
        records = run.records
        n = len(records)
        if not n:
            return
        rows = run._rows  # (the scalar read of a short run: its seqs without numpy)
        if rows is not None:
            first, last = rows[0][0], rows[-1][0]
        else:
            seqs = records["seq"]
            first, last = int(seqs[0]), int(seqs[-1])
        if first > self.last + 1 and self._count:
            self.clear()
        if first > self.last:
            keep = records
        else:
            keep = records[records["seq"] > self.last]
            n = len(keep)
            if not n:
                return
            first, last = int(keep["seq"][0]), int(keep["seq"][-1])
        self._runs.append((first, last, n, keep.tobytes()))
        self._count += n
        self.last = last
        while self._count - self._runs[0][2] >= self.capacity:
            self._count -= self._runs.popleft()[2]
        if run.names:  # (no names: no coid_len set)
            for i in np.flatnonzero(records["coid_len"][: len(run)]).tolist():
                _client, coid = run.names_of(i)  # (a replay answer names this client's own entries)
                self.learn(int(records["seq"][i]), coid)

    def clear(self) -> None:
        self._runs.clear()
        self._count = 0
        self.last = 0

    def learn(self, seq: int, client_order_id: str | None) -> None:
        """This client's new or cancel_all at `seq` had `client_order_id` (a report said so)."""
        self.names[seq] = client_order_id
        self.names.move_to_end(seq)
        while len(self.names) > self.capacity:
            self.names.popitem(last=False)

    def since(self, first: int, applied: int) -> tuple[np.ndarray, dict[int, str | None]]:
        """The kept records from seq `first` to `applied` (the replica's version: those it applied
        and checked), their names' lengths 0, and this client's names from `first` on."""
        raw = b"".join(data for _first, last, _n, data in self._runs if last >= first)
        records = np.frombuffer(raw, LOG_RECORD_DTYPE).copy()
        records["coid_len"] = 0
        records["client_len"] = 0
        records = records[(records["seq"] >= first) & (records["seq"] <= applied)]
        return records, {seq: coid for seq, coid in self.names.items() if seq >= first}
