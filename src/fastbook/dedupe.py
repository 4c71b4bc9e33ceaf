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
from itertools import repeat


class DedupeWindow:
    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError("dedupe_window must be positive")
        self.window = window
        self.seen: dict[str, dict[str, int]] = {}  # client -> {client order id: seq that accepted it}
        # (seq, client, client order id) in acceptance order: the oldest is pruned first, O(1) each.
        self._accepted: deque[tuple[int, str, str]] = deque()

    def __len__(self) -> int:
        return len(self._accepted)

    def accepted_at(self, client: str, client_order_id: str) -> int | None:
        ids = self.seen.get(client)
        return None if ids is None else ids.get(client_order_id)

    def accept(self, seq: int, client: str, client_order_id: str) -> None:
        self.seen.setdefault(client, {})[client_order_id] = seq
        self._accepted.append((seq, client, client_order_id))

    def accept_many(self, client: str, seqs: list[int], client_order_ids: list[str]) -> None:
        """`accept` of each (seq, id) pair, in order, for one client."""
        self.seen.setdefault(client, {}).update(zip(client_order_ids, seqs, strict=True))
        self._accepted.extend(zip(seqs, repeat(client), client_order_ids))

    def advance(self, version: int) -> None:
        """Forget every id accepted at a seq <= version - window."""
        accepted = self._accepted
        oldest_kept = version - self.window
        while accepted and accepted[0][0] <= oldest_kept:
            seq, client, coid = accepted.popleft()
            ids = self.seen.get(client)
            if ids is not None and ids.get(coid) == seq:
                del ids[coid]
                if not ids:
                    del self.seen[client]

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy in acceptance order (clients by their oldest id in the window, ids by seq)."""
        out: dict[str, dict[str, int]] = {}
        seen = self.seen
        for seq, client, coid in self._accepted:
            if seen.get(client, {}).get(coid) == seq:
                out.setdefault(client, {})[coid] = seq
        return out
