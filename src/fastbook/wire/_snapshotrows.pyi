"""Typed surface of the native snapshot order rows writer (_snapshotrows.pyx beside it), used by
wire.snapshot (the rows' JSON) and log.replica (the rows of its order map)."""

def orders_json(orders: list[tuple[int, int, str]] | dict[int, tuple[int, str]]) -> bytes:
    """wire.dumps(orders) of a snapshot's resting orders (rows, or a replica's map: sorted by id)."""
    ...
def snapshot_order_rows(orders: dict[int, tuple[int, str]]) -> list[tuple[int, int, str]]:
    """[(engine id, owner, client order id), ...] of a replica's order map, sorted by id."""
    ...
