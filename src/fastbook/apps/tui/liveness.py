"""What the status bar says about the replica: one state, from what the edge exposes."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ReplicaState(enum.Enum):
    DISCONNECTED = "disconnected"  # no broker connection: orders typed now are queued
    SYNCING = "syncing"  # connected, not yet caught up for the first time
    RESYNCING = "resyncing"  # was in sync, now restoring from a snapshot or filling a gap
    STALLED = "stalled"  # the sequencer was heard, then nothing for a while: reconnecting
    NO_SEQUENCER = "no sequencer"  # connected, and no sequencer of the market ever heard
    SYNCED = "synced"  # applying the log live, hash-checked


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """The replica's status fields, read together on the runner thread."""

    connected: bool
    version: int
    state_hash: int
    lag: int
    in_sync: bool
    synced_once: bool
    stalled: bool = False  # the edge's SyncState.STALLED (edge/liveness.py)
    no_sequencer: bool = False  # SyncState.NO_SEQUENCER
    detail: str = ""  # the edge's own words for stalled / no sequencer ("no sequencer for market X")
    conflict: str | None = None  # another process under this client id (EdgeStatus.conflict)


def replica_state(view: ReplicaView) -> ReplicaState:
    """The one mapping from the edge's flags to the state shown (TUI status bar, log lines)."""
    if not view.connected:
        return ReplicaState.DISCONNECTED
    if view.no_sequencer:
        return ReplicaState.NO_SEQUENCER
    if view.stalled:
        return ReplicaState.STALLED
    if not view.in_sync:
        return ReplicaState.RESYNCING if view.synced_once else ReplicaState.SYNCING
    return ReplicaState.SYNCED


# Rich styles of each state in the status bar.
STATE_STYLE = {
    ReplicaState.DISCONNECTED: "bold white on red",
    ReplicaState.SYNCING: "bold black on yellow",
    ReplicaState.RESYNCING: "bold black on yellow",
    ReplicaState.STALLED: "bold black on dark_orange",
    ReplicaState.NO_SEQUENCER: "bold white on red",
    ReplicaState.SYNCED: "bold black on green",
}
