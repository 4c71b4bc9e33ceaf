"""One frame of the edge's replica, read in a single call on the runner thread (so the depth, the
own orders and the version belong to the same applied state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fastbook.apps.tui.liveness import ReplicaView
from fastbook.edge.client import Edge
from fastbook.edge.liveness import SyncState

Level = tuple[str, str, int]  # price, qty, order count


@dataclass(frozen=True, slots=True)
class EdgeView:
    bids: list[Level]
    asks: list[Level]
    orders: list[dict[str, Any]]  # this client's open orders, oldest first
    replica: ReplicaView
    # (side, price) -> this client's quantity resting there, to mark its levels in the ladder
    mine: dict[tuple[str, str], str] = field(default_factory=dict)


def own_quantities(orders: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    totals: dict[tuple[str, str], Decimal] = {}
    for order in orders:
        key = (str(order.get("side")), str(order.get("price")))
        totals[key] = totals.get(key, Decimal(0)) + Decimal(str(order.get("qty")))
    return {key: f"{qty:f}" for key, qty in totals.items()}


def read_view(edge: Edge, levels: int, timeout: float = 1.0) -> EdgeView:
    """The replica's depth (`levels` a side), own orders and status, as of one applied version."""
    node = edge.node
    connected = edge.runner.connected

    def read() -> tuple[EdgeView, list[Any]]:
        depth = node.depth(levels)
        orders = node.own_orders()
        status = node.status()
        unusual = status.stalled or status.sync is SyncState.NO_SEQUENCER
        replica = ReplicaView(connected.is_set(), node.version, node.state_hash, node.lag, node.in_sync,
                              node.synced_once, stalled=status.stalled,
                              no_sequencer=status.sync is SyncState.NO_SEQUENCER,
                              detail=status.detail if unusual else "", conflict=status.conflict)
        bids = [(str(p), str(q), int(c)) for p, q, c in depth["bids"]]
        asks = [(str(p), str(q), int(c)) for p, q, c in depth["asks"]]
        return EdgeView(bids, asks, orders, replica, own_quantities(orders)), []

    return edge.runner.call_with_result(read).result(timeout)
