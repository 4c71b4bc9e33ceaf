"""Cost of a replica's id-map changes per log entry: the native `fastbook.log._idmaps.MapChanges`
against the Python reference `fastbook.log.replica._MapChanges`, and a whole in-process
`Replica.apply_batch` per entry with each, in us per log entry.

The log is e2e_bench's bulk flow (`order_flow`: new limit orders from one client, about a third
crossing) sequenced by a real SequencerNode in messages of --per-message orders and read with the
native log reader as an edge reads it (untimed). A replica of the e2e bench follows the log for a
client that sends nothing, so each message is one `apply_batch` whose map changes are one
`advance(applied - 1)`: that is what both parts time, over the whole log from an empty book.

- advance: for every message, the map-change object built from the columns `apply_batch` gives it
  and advanced to the message's last entry. The reference as apply_batch fed it before the native
  class (Python lists from `.tolist()`, their making included) and as it is fed now (numpy
  columns, converted inside); the native class from the numpy columns.
- apply_batch: `Replica.apply_batch(batch)` with the replica's `map_changes` set to each class.

Best of several rounds, each from empty maps and an empty book.

    python bench/idmaps_bench.py [--orders 100000] [--per-message 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from e2e_bench import order_flow

from fastbook.log._idmaps import MapChanges
from fastbook.log.replica import Replica, _MapChanges
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.log import LogBatch, decode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

MARKET = "BTC-USD"


def sequenced_log(orders: int, per_message: int, data_dir: Path) -> list[LogBatch]:
    """The log messages a sequencer writes for the bulk flow, read as an edge reads them."""
    node = SequencerNode(SequencerConfig(MarketSpec.parse(MARKET), data_dir))
    topics = Topics(MARKET)
    flow = order_flow(orders, 7, "bench")
    batches = []
    for i in range(0, len(flow), per_message):
        payload = json.dumps(flow[i : i + per_message]).encode()
        for out in node.on_messages([(topics.orders("bench"), payload)]):
            if out.topic == topics.log:
                batch = decode_log_message(out.payload)
                assert len(batch), "the sequencer's log message holds entries"
                batches.append(batch)
    node.close()
    return batches


def map_inputs(batches: list[LogBatch]) -> list[tuple[Any, ...]]:
    """The columns `Replica.apply_batch` gives the map-change class for each message (entry index,
    order id and owner of each new, the client order ids, entry index and order id of each order
    gone), recorded from a replica applying the log."""
    recorded: list[tuple[Any, ...]] = []

    class Recorder(_MapChanges):
        def __init__(self, replica: Replica, *columns: Any) -> None:
            super().__init__(replica, *columns)
            recorded.append(columns)

    replica = Replica(MarketSpec.parse(MARKET))
    replica.map_changes = Recorder  # type: ignore[misc]
    for batch in batches:
        replica.apply_batch(batch)
    assert len(recorded) == len(batches)
    return recorded


def as_lists(columns: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(c.tolist() if isinstance(c, np.ndarray) else c for c in columns)


def best_seconds(make_run: Callable[[], Callable[[], None]], rounds: int) -> float:
    """Best time of `rounds` runs, each made fresh by `make_run` (untimed: the last round's maps
    are freed before the clock starts)."""
    best = float("inf")
    for _ in range(rounds):
        run = make_run()
        gc.collect()
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def advance_all(cls: Any, inputs: list[tuple[Any, ...]], lists: bool) -> Callable[[], None]:
    """A round: every message's map changes from empty maps (lists: `.tolist()` first, timed)."""
    replica = Replica(MarketSpec.parse(MARKET))

    def run() -> None:
        for columns in inputs:
            args = as_lists(columns) if lists else columns
            cls(replica, *args).advance(len(columns[3]) - 1)

    return run


def apply_all(cls: Any, batches: list[LogBatch]) -> Callable[[], None]:
    """A round: a fresh replica applies the whole log, message by message."""
    replica = Replica(MarketSpec.parse(MARKET))
    replica.map_changes = cls

    def run() -> None:
        for batch in batches:
            replica.apply_batch(batch)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        batches = sequenced_log(args.orders, args.per_message, Path(tmp))
    inputs = map_inputs(batches)
    entries = sum(len(b) for b in batches)
    news = sum(len(c[0]) for c in inputs)
    gones = sum(len(c[4]) for c in inputs)
    print(f"{entries} log entries in {len(batches)} messages: {news} news, {gones} orders gone "
          f"({gones / entries:.0%} of entries)")  # fmt: skip

    # The two classes leave the same maps and return the same `removed` (tests/test_idmaps.py).
    final = []
    for cls in (_MapChanges, MapChanges):
        replica = Replica(MarketSpec.parse(MARKET))
        removed = [cls(replica, *columns).advance(len(columns[3]) - 1) for columns in inputs]
        final.append((removed, list(replica.orders.items()), replica.by_owner))
    assert final[0] == final[1]

    runs: dict[str, Callable[[], Callable[[], None]]] = {
        "advance, reference (lists, as before)": lambda: advance_all(_MapChanges, inputs, True),
        "advance, reference (numpy columns)": lambda: advance_all(_MapChanges, inputs, False),
        "advance, native (numpy columns)": lambda: advance_all(MapChanges, inputs, False),
        "apply_batch, reference maps": lambda: apply_all(_MapChanges, batches),
        "apply_batch, native maps": lambda: apply_all(MapChanges, batches),
    }
    for name, make_run in runs.items():
        print(f"{name}: {best_seconds(make_run, args.rounds) / entries * 1e6:.3f} us/entry")


if __name__ == "__main__":
    main()
