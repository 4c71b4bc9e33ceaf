"""Journal throughput with fsync group commit: commands/s for several batch sizes.

Each command is a real log entry (the JSON array the sequencer journals). Prints figures; asserts nothing.
Usage: python bench/journal_bench.py [--commands 200000] [--dir /path/on/the/disk/to/measure]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fastbook.journal import Journal
from fastbook.wire import LogEntry, encode_entry


def run(directory: Path, commands: int, batch: int) -> tuple[float, float]:
    journal = Journal(directory)
    payloads = [
        encode_entry(
            LogEntry(
                seq,
                seq * 0x9E3779B97F4A7C15 % 2**64,
                "client-7",
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
        )
        for seq in range(1, commands + 1)
    ]
    start = time.perf_counter()
    for i in range(0, commands, batch):
        journal.append([(i + k + 1, p) for k, p in enumerate(payloads[i : i + batch])])
    elapsed = time.perf_counter() - start
    reopen_start = time.perf_counter()
    journal.close()
    Journal(directory).close()
    return commands / elapsed, time.perf_counter() - reopen_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None, help="parent directory (default: system temp)")
    args = parser.parse_args()
    print(f"journal group commit, {args.commands} commands, one write()+fdatasync() per batch")
    for batch in (1, 10, 100, 1000, 5000):
        commands = min(args.commands, 5000) if batch == 1 else args.commands
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            rate, reopen = run(Path(tmp), commands, batch)
        print(f"  batch {batch:>5}: {rate:>12,.0f} commands/s   (reopen scan of {commands}: {reopen:.2f}s)")


if __name__ == "__main__":
    main()
