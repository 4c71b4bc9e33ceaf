"""The sequencer's bounded dedupe window: which client order ids a retried `new` must not reuse.

A client order id accepted by a `new` at seq s is remembered while the version is below
s + window (the last `window` versions). Orders still open are refused separately by the
sequencer (the replica's id maps hold them), so an id outside the window is free again only once
its order is gone. Pruning is a function of the version alone, so the state at version V is the
same whether it was reached live or rebuilt from the journal at start-up (the sequencer reads the
window's records before its snapshot's version, then replays the rest).
"""

from __future__ import annotations

from collections import deque


class DedupeWindow:
    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("dedupe_window must be positive")
        self.window = window
        self.seen: dict[str, dict[str, int]] = {}  # client -> {client order id: seq that accepted it}
        # The accepted ids in acceptance order, as chunks (seqs, client, client order ids): one per
        # accept or accept_many call (a run of news is one chunk, not a tuple per id). The oldest
        # are pruned first; `_head` ids of the oldest chunk are pruned already.
        self._accepted: deque[tuple[list[int], str, list[str]]] = deque()
        self._head = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def accepted_at(self, client: str, client_order_id: str) -> int | None:
        ids = self.seen.get(client)
        return None if ids is None else ids.get(client_order_id)

    def accept(self, seq: int, client: str, client_order_id: str) -> None:
        self.seen.setdefault(client, {})[client_order_id] = seq
        self._accepted.append(([seq], client, [client_order_id]))
        self._count += 1

    def accept_many(self, client: str, seqs: list[int], client_order_ids: list[str]) -> None:
        """`accept` of each (seq, id) pair, in order, for one client. Keeps both lists (the caller
        must not change them afterwards)."""
        if len(seqs) != len(client_order_ids):
            raise ValueError("seqs and client_order_ids must be the same length")
        if not seqs:
            return
        self.seen.setdefault(client, {}).update(zip(client_order_ids, seqs, strict=True))
        self._accepted.append((seqs, client, client_order_ids))
        self._count += len(seqs)

    def advance(self, version: int) -> None:
        """Forget every id accepted at a seq <= version - window."""
        accepted = self._accepted
        oldest_kept = version - self.window
        while accepted:
            seqs, client, coids = accepted[0]
            i = start = self._head
            if seqs[i] > oldest_kept:
                return
            end = len(seqs)
            ids = self.seen.get(client)
            while i < end and seqs[i] <= oldest_kept:
                if ids is not None and ids.get(coids[i]) == seqs[i]:
                    del ids[coids[i]]
                i += 1
            if ids is not None and not ids:
                del self.seen[client]
            self._count -= i - start
            if i < end:
                self._head = i
                return
            accepted.popleft()
            self._head = 0

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy in acceptance order (clients by their oldest id in the window, ids by seq)."""
        out: dict[str, dict[str, int]] = {}
        seen = self.seen
        head = self._head
        for seqs, client, coids in self._accepted:
            ids = seen.get(client, {})
            for k in range(head, len(seqs)):
                if ids.get(coids[k]) == seqs[k]:
                    out.setdefault(client, {})[coids[k]] = seqs[k]
            head = 0
        return out
