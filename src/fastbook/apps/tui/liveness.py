"""What the status bar says about the replica: one state, from what the edge exposes."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ReplicaState(enum.Enum):
    DISCONNECTED = "disconnected"  # no broker connection: orders typed now are queued
    SYNCING = "syncing"  # connected, not yet caught up for the first time
    RESYNCING = "resyncing"  # was in sync, now restoring from a snapshot or filling a gap
    STALLED = "stalled"  # connected and nominally in sync, but the log has stopped arriving
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
    # The edge does not say "stalled" yet (a heartbeat check is being added to edge/node.py);
    # whoever fills this in gets STALLED from replica_state with no other change.
    stalled: bool = False


def replica_state(view: ReplicaView) -> ReplicaState:
    """The one mapping from the edge's flags to the state shown (TUI status bar, log lines)."""
    if not view.connected:
        return ReplicaState.DISCONNECTED
    if not view.in_sync:
        return ReplicaState.RESYNCING if view.synced_once else ReplicaState.SYNCING
    if view.stalled:
        return ReplicaState.STALLED
    return ReplicaState.SYNCED


# Rich styles of each state in the status bar.
STATE_STYLE = {
    ReplicaState.DISCONNECTED: "bold white on red",
    ReplicaState.SYNCING: "bold black on yellow",
    ReplicaState.RESYNCING: "bold black on yellow",
    ReplicaState.STALLED: "bold black on dark_orange",
    ReplicaState.SYNCED: "bold black on green",
}
