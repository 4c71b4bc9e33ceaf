"""Journal throughput with fsync group commit: commands/s for several batch sizes; then the whole
sequencer (decode, execute, journal with group commit, encode log/reports/book) and a replica
applying the resulting log, in-process without a broker, as the ceiling for end-to-end figures.

Each journal command is a real log entry (the JSON array the sequencer journals). Prints figures;
asserts nothing. Usage: python bench/journal_bench.py [--commands 200000] [--dir DIR] [--orders 100000]
(FASTBOOK_BACKEND=reference|native selects the backend; native by default).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from fastbook.backend import backend_name
from fastbook.edge.node import EdgeConfig, EdgeNode
from fastbook.log.journal import Journal
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.log import LogEntry, LogRun
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics


def run(directory: Path, commands: int, batch: int) -> tuple[float, float]:
    journal = Journal(directory)
    entries = [
        LogEntry(
            seq,
            seq * 0x9E3779B97F4A7C15 % 2**64,
            "client-7" if seq == 1 else None,
            f"o-{seq}",
            1,
            seq,
            7,
            1,
            1,
            1,
            0,
            0,
            10_000 + seq % 500,
            1 + seq % 1000,
        )
        for seq in range(1, commands + 1)
    ]
    runs = [LogRun.from_entries(entries[i : i + batch]) for i in range(0, commands, batch)]
    start = time.perf_counter()
    for run in runs:
        journal.append(run)
    elapsed = time.perf_counter() - start
    reopen_start = time.perf_counter()
    journal.close()
    Journal(directory).close()
    return commands / elapsed, time.perf_counter() - reopen_start


def sequencer_run(directory: Path, orders: int, per_message: int, per_batch: int) -> tuple[float, float]:
    """(orders/s through SequencerNode.on_messages, entries/s applied by an EdgeNode replica)."""
    rng = random.Random(1)
    topics = Topics("BTC-USD")
    flow = [
        {
            "op": "new",
            "id": f"o{i}",
            "side": rng.choice(["buy", "sell"]),
            "price": f"{rng.randint(9900, 10100) / 100:.2f}",
            "qty": f"{rng.randint(1, 2000) / 1000:.3f}",
        }
        for i in range(orders)
    ]
    messages = []
    for i in range(0, orders, per_message):
        chunk = flow[i : i + per_message]
        body = chunk[0] if per_message == 1 else chunk
        messages.append((topics.orders(f"client{(i // per_message) % 10}"), json.dumps(body).encode()))
    node = SequencerNode(SequencerConfig(MarketSpec.parse("BTC-USD"), directory))
    snapshot = node.on_connected()[1].payload
    outputs = []
    start = time.perf_counter()
    for i in range(0, len(messages), per_batch):
        outputs.append(node.on_messages(messages[i : i + per_batch]))
    sequencer_rate = orders / (time.perf_counter() - start)
    version = node.version
    node.close()
    edge = EdgeNode(EdgeConfig("bench"))
    edge.on_messages([(topics.snapshot, snapshot)])
    logs = [(o.topic, o.payload) for out in outputs for o in out if o.topic == topics.log]
    start = time.perf_counter()
    for i in range(0, len(logs), 10):
        edge.on_messages(logs[i : i + 10])
    replica_rate = version / (time.perf_counter() - start)
    assert edge.version == version
    return sequencer_rate, replica_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None, help="parent directory (default: system temp)")
    parser.add_argument("--orders", type=int, default=100_000, help="orders for the sequencer section")
    args = parser.parse_args()
    print(f"journal group commit, {args.commands} commands, one write()+fdatasync() per batch")
    for batch in (1, 10, 100, 1000, 5000):
        commands = min(args.commands, 5000) if batch == 1 else args.commands
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            rate, reopen = run(Path(tmp), commands, batch)
        print(f"  batch {batch:>5}: {rate:>12,.0f} commands/s   (reopen scan of {commands}: {reopen:.2f}s)")

    print(f"sequencer + replica in-process ({backend_name()} backend), {args.orders} orders, 10 clients")
    for per_message, per_batch in ((1, 100), (1, 1000), (100, 10), (1000, 1)):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            seq_rate, replica_rate = sequencer_run(Path(tmp), args.orders, per_message, per_batch)
        print(
            f"  {per_message:>4} orders/message, {per_batch:>4} messages/batch: sequencer {seq_rate:>9,.0f} "
            f"orders/s, replica apply {replica_rate:>9,.0f} entries/s"
        )


if __name__ == "__main__":
    main()
