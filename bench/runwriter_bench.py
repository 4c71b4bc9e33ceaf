"""The sequencer's run writer: native (log/_runwriter.pyx) against the Python reference, same run.

A sequencer executes the e2e bench's order flow (new limit orders around 100.00, about a third
crossing) in messages of N orders, in-process, its journal in a temporary folder. Every call to
the run writer is recorded (the replica's maps copied, so a call can be replayed); then each
recorded call is written again by both writers, alternately, ROUNDS times, and the median µs per
order of each is printed. The second figure is the whole sequencer's CPU per order (process time
of on_messages, journal included) with each writer, alternately, so the writer's share is seen.

    python bench/runwriter_bench.py                  # 1 and 1000 orders per message
    python bench/runwriter_bench.py --sizes 1,10,1000 --orders 20000

Last, the snapshot order rows writer (wire/_snapshotrows.pyx) against wire.dumps of the rows, on a
replica's map of --resting orders. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from e2e_bench import order_flow  # noqa: E402

from fastbook.log.runwriter import (  # noqa: E402
    NewsRun,
    NewsRunInput,
    write_news_run_native,
    write_news_run_reference,
)
from fastbook.log.sequencer import SequencerConfig, SequencerNode  # noqa: E402
from fastbook.wire._snapshotrows import orders_json  # noqa: E402
from fastbook.wire.fields import dumps  # noqa: E402
from fastbook.wire.market import MarketSpec  # noqa: E402
from fastbook.wire.topics import Topics  # noqa: E402

SPEC = MarketSpec.parse("BTC-USD")
WRITERS: dict[str, Callable[..., NewsRun]] = {
    "native": write_news_run_native,
    "python": write_news_run_reference,
}


def messages(orders: int, per_message: int) -> list[tuple[str, bytes]]:
    """The order flow as (topic, payload) messages of `per_message` orders, two clients taking turns."""
    topics = Topics(SPEC.name)
    flow = order_flow(orders, seed=1, tag="b")
    out = []
    for n, i in enumerate(range(0, orders, per_message)):
        client = "alice" if n % 2 == 0 else "bob"
        out.append((f"{topics.base}/orders/{client}", json.dumps(flow[i : i + per_message]).encode()))
    return out


def batches(msgs: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    """One on_messages call per message for bulk, 100 messages per call for one order each (as a
    loaded sequencer drains them)."""
    size = 100 if len(msgs[0][1]) < 200 else 1
    return [msgs[i : i + size] for i in range(0, len(msgs), size)]


def record_calls(workdir: Path, msgs: list[tuple[str, bytes]]) -> list[NewsRunInput]:
    node = SequencerNode(SequencerConfig(SPEC, workdir))
    calls: list[NewsRunInput] = []

    def recording(job: NewsRunInput) -> NewsRun:
        calls.append(NewsRunInput(job.market, job.client, job.version, job.rows.copy(), list(job.coids),
                                  job.hashes.copy(), job.events.copy(), dict(job.orders), dict(job.clients),
                                  job.reject))  # fmt: skip
        return write_news_run_native(job)

    node.write_news_run = recording
    for batch in batches(msgs):
        node.on_messages(batch)
    node.close()
    return calls


def writer_us_per_order(calls: list[NewsRunInput], rounds: int) -> dict[str, float]:
    orders = sum(len(call.rows) for call in calls)
    times: dict[str, list[float]] = {name: [] for name in WRITERS}
    for _ in range(rounds):
        for name, write in WRITERS.items():  # alternately: the machine's drift hits both
            t0 = time.process_time()
            for call in calls:
                write(call)
            times[name].append(1e6 * (time.process_time() - t0) / orders)
    return {name: statistics.median(values) for name, values in times.items()}


def sequencer_us_per_order(root: Path, msgs: list[tuple[str, bytes]], rounds: int) -> dict[str, float]:
    orders = sum(len(json.loads(payload)) for _topic, payload in msgs)
    times: dict[str, list[float]] = {name: [] for name in WRITERS}
    for r in range(rounds):
        for name, write in WRITERS.items():
            node = SequencerNode(SequencerConfig(SPEC, root / f"{name}-{r}"))
            node.write_news_run = write
            work = batches(msgs)
            t0 = time.process_time()
            for batch in work:
                node.on_messages(batch)
            times[name].append(1e6 * (time.process_time() - t0) / orders)
            node.close()
    return {name: statistics.median(values) for name, values in times.items()}


def snapshot_rows_ms(orders: int, rounds: int) -> tuple[float, float]:
    """(native, Python) ms of a snapshot's order rows from a replica's map of `orders` resting
    orders: wire/_snapshotrows.orders_json against wire.dumps of the sorted rows (the same bytes)."""
    resting = {i: (i % 50, f"o-{i}") for i in range(1, orders + 1)}
    times: dict[str, list[float]] = {"native": [], "python": []}
    for _ in range(rounds):
        t0 = time.process_time()
        native = orders_json(resting)
        times["native"].append(1e3 * (time.process_time() - t0))
        t0 = time.process_time()
        python = dumps(sorted((i, owner, coid) for i, (owner, coid) in resting.items()))
        times["python"].append(1e3 * (time.process_time() - t0))
        assert native == python
    return statistics.median(times["native"]), statistics.median(times["python"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1,1000", help="orders per message")
    p.add_argument("--orders", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--resting", type=int, default=200_000, help="resting orders of the snapshot rows figure")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            msgs = messages(args.orders, size)
            calls = record_calls(Path(tmp) / f"record-{size}", msgs)
            writer = writer_us_per_order(calls, args.rounds)
            whole = sequencer_us_per_order(Path(tmp) / f"whole-{size}", msgs, max(3, args.rounds // 2))
            print(
                f"{size:>5} orders/message: writer native {writer['native']:.2f} µs/order, "
                f"python {writer['python']:.2f} (x{writer['python'] / writer['native']:.1f}); "
                f"sequencer CPU native {whole['native']:.2f} µs/order, python {whole['python']:.2f} "
                f"(+{100 * (whole['python'] / whole['native'] - 1):.0f}%)",
                flush=True,
            )
    native_ms, python_ms = snapshot_rows_ms(args.resting, args.rounds)
    print(f"snapshot rows of {args.resting} resting orders: native {native_ms:.1f} ms, "
          f"python (sorted rows, dumps) {python_ms:.1f} ms (x{python_ms / native_ms:.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
