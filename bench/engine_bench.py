"""fastbook engine benchmark: seeded order flows, both APIs, peers, depth series, JSON and a plot.

    python bench/engine_bench.py [--quick] [--json out.json] [--plot out.png] [--seed N]

Flows (bench/flows.py): (a) liquibook's perf flow, (b) exchange-core's command mix, (c) a deep book
series (1k .. 10M resting orders). fastbook's per-command API and batch API (`apply_batch`) run every
flow; on flow (a) the same run measures the PyPI packages `liquibook` and `cython-orderbook` and the
pure-Python `ReferenceBook`, and prints the ratios against the targets of issue 2. Timings are best of
N repetitions with `time.perf_counter`, after a warm-up, each on a fresh book, with the cyclic GC off
during the timed loop. Progress goes to stderr; the table to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import peers
from flows import (
    Call,
    DeepWorkload,
    Flow,
    command_mix,
    deep_book_fill,
    exchange_core_flow,
    liquibook_perf_flow,
    new_args,
    to_calls,
)

from fastbook.engine.types import EVENT_DTYPE, EventType, Reject, event_rows_to_tuples

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "results" / "engine.json"

PROBE_CHUNK = 100_000  # commands per apply_batch while the memory probe builds its book

TARGET_BATCH_CMDS_PER_S = 20e6
TARGET_VS_LIQUIBOOK = 2.0
TARGET_VS_CYTHON_ORDERBOOK = 15.0

_TRADE = int(EventType.TRADE)
_REJECTED = int(EventType.REJECTED)
_UNKNOWN_ORDER = int(Reject.UNKNOWN_ORDER)


@dataclass(frozen=True)
class Sizes:
    """How much work each part does; `quick` keeps a whole run to a few seconds."""

    flow_a: int
    flow_a_cython_orderbook: int
    flow_a_reference: int
    flow_b: int
    deep_depths: tuple[int, ...]
    deep_segment: int
    reps: int
    batch_reps: int
    peer_reps: int
    check_prefix: int


FULL = Sizes(
    flow_a=1_000_000,
    flow_a_cython_orderbook=200_000,
    flow_a_reference=20_000,
    flow_b=500_000,
    deep_depths=(1_000, 10_000, 100_000, 1_000_000, 10_000_000),
    deep_segment=200_000,
    reps=5,
    batch_reps=7,
    peer_reps=3,
    check_prefix=20_000,
)
QUICK = Sizes(
    flow_a=20_000,
    flow_a_cython_orderbook=5_000,
    flow_a_reference=2_000,
    flow_b=10_000,
    deep_depths=(1_000, 10_000),
    deep_segment=5_000,
    reps=2,
    batch_reps=2,
    peer_reps=1,
    check_prefix=2_000,
)


@dataclass
class Result:
    """One timed (flow, engine, api, size): the best of `reps` runs."""

    flow: str
    engine: str
    api: str
    commands: int
    best_seconds: float
    reps: int
    trades: int | None = None
    note: str = ""
    cmds_per_s: float = field(init=False)
    ns_per_cmd: float = field(init=False)

    def __post_init__(self) -> None:
        self.cmds_per_s = self.commands / self.best_seconds
        self.ns_per_cmd = 1e9 * self.best_seconds / self.commands


@dataclass
class DeepPoint:
    """Per-command cost and memory at one book depth (ns are per command, best of the reps)."""

    depth: int
    build_cmds_per_s: float
    per_command_ns: float  # uniform workload: cancels/moves anywhere in the book
    batch_ns: float
    hot_per_command_ns: float  # hot workload: cancels/moves among the 4096 most recent orders
    hot_batch_ns: float
    workload_commands: int
    workload_rejects: int
    workload_trades: int
    engine_bytes_per_order: float | None  # Book.memory_usage() / depth, if the engine has it
    rss_bytes_per_order: float  # RSS growth while a fresh process builds the book / depth
    rss_delta_bytes: int


# --------------------------------------------------------------------------------------- helpers

_started = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    """Resident set size from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def load_engine(name: str) -> type[Any]:
    if name == "reference":
        from fastbook.engine.reference import ReferenceBook

        return ReferenceBook
    try:
        from fastbook.engine._engine import Book
    except ImportError as error:
        raise SystemExit(
            f"fastbook.engine._engine.Book is not available ({error}); build it with "
            "`pip install --no-build-isolation -e .` (or run with --engine reference to try the harness)"
        ) from error
    return Book


def fresh_book(book_cls: type[Any], flow: Flow) -> Any:
    book = book_cls()
    if len(flow.prefill):
        book.apply_batch(flow.prefill)
    return book


def best_of(reps: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(reps))


def count_trades(events: np.ndarray) -> int:
    return int(np.count_nonzero(events["type"] == _TRADE))


# ------------------------------------------------------------------------------ fastbook, timed


def time_per_command(book_cls: type[Any], flow: Flow, calls: list[Call], reps: int) -> tuple[float, int]:
    """Best seconds for the per-command API over `calls` (dispatching on the op as a program would),
    and the state hash the last run ended with."""
    best = float("inf")
    state_hash = 0
    for _ in range(reps):
        book = fresh_book(book_cls, flow)
        methods = (None, book.new, book.cancel, book.amend, book.cancel_all)

        def loop(methods: tuple[Any, ...] = methods) -> None:
            for op, args in calls:
                methods[op](*args)

        best = min(best, peers.timed(loop)[0])
        state_hash = book.state_hash()
    return best, state_hash


def time_per_command_inserts(
    book_cls: type[Any],
    flow: Flow,
    args: list[tuple[int, int, int, int, int]],
    reps: int,
    read_events: bool = False,
) -> tuple[float, int]:
    """Best seconds for `book.new(*args)` over an insert-only flow (the peers' loop shape); with
    `read_events`, every event of every command is also read (its tuple built)."""
    best = float("inf")
    state_hash = 0
    for _ in range(reps):
        book = fresh_book(book_cls, flow)
        new = book.new

        def loop(new: Callable[..., Any] = new) -> None:
            for call_args in args:  # new(*args) is the fastest loop shape (vs unpacking the tuple)
                new(*call_args)

        def loop_reading(new: Callable[..., Any] = new) -> None:
            for call_args in args:
                for _event in new(*call_args):
                    pass

        best = min(best, peers.timed(loop_reading if read_events else loop)[0])
        state_hash = book.state_hash()
    return best, state_hash


def time_batch(book_cls: type[Any], flow: Flow, reps: int) -> tuple[float, int, np.ndarray]:
    """Best seconds for one `apply_batch` of the flow; the state hash and the events of the last run."""
    best = float("inf")
    state_hash = 0
    events = np.zeros(0, dtype=EVENT_DTYPE)
    for _ in range(reps):
        book = fresh_book(book_cls, flow)
        del events  # free the previous run's events before this run allocates its own
        seconds, events = peers.timed(partial(book.apply_batch, flow.commands))
        best = min(best, seconds)
        state_hash = book.state_hash()
    return best, state_hash, events


def events_agree(book_cls: type[Any], flow: Flow, prefix: int) -> bool:
    """Per-command and batch give the same events on the first `prefix` commands (docs/engine.md)."""
    head = flow.head(prefix)
    batch_events = event_rows_to_tuples(fresh_book(book_cls, head).apply_batch(head.commands))
    book = fresh_book(book_cls, head)
    methods = (None, book.new, book.cancel, book.amend, book.cancel_all)
    per_command_events = [
        tuple(event) for op, args in to_calls(head.commands) for event in methods[op](*args)
    ]
    return per_command_events == batch_events


# ------------------------------------------------------------------------------------- flow (a)


def bench_flow_a(book_cls: type[Any], engine: str, sizes: Sizes, seed: int) -> dict[str, Any]:
    """liquibook's perf flow: fastbook both APIs, liquibook, cython-orderbook and the reference."""
    flow = liquibook_perf_flow(sizes.flow_a, seed)
    results: list[Result] = []
    checks: dict[str, Any] = {}

    progress(f"flow a: {len(flow.commands):,} inserts; checking per-command == batch events on a prefix")
    checks["per_command_equals_batch_events"] = events_agree(book_cls, flow, sizes.check_prefix)

    args = new_args(flow.commands)
    warm = flow.head(min(len(flow.commands), 20_000))
    time_per_command_inserts(book_cls, warm, new_args(warm.commands), 1)
    time_batch(book_cls, warm, 1)

    progress(f"flow a: fastbook batch x{sizes.batch_reps}")
    seconds, batch_hash, events = time_batch(book_cls, flow, sizes.batch_reps)
    fastbook_fills = count_trades(events)
    fastbook_filled_qty = int(events["qty"][events["type"] == _TRADE].sum())
    del events
    results.append(
        Result(
            flow.name, f"fastbook[{engine}]", "batch", len(args), seconds, sizes.batch_reps, fastbook_fills
        )
    )

    progress(f"flow a: fastbook per-command x{sizes.reps}")
    seconds, per_command_hash = time_per_command_inserts(book_cls, flow, args, sizes.reps)
    results.append(
        Result(
            flow.name, f"fastbook[{engine}]", "per-command", len(args), seconds, sizes.reps, fastbook_fills
        )
    )
    checks["per_command_hash_equals_batch_hash"] = per_command_hash == batch_hash

    # Events are built into tuples when first read: the same loop reading every event.
    progress(f"flow a: fastbook per-command, every event read x{sizes.reps}")
    seconds, _ = time_per_command_inserts(book_cls, flow, args, sizes.reps, read_events=True)
    results.append(
        Result(
            flow.name,
            f"fastbook[{engine}]",
            "per-command, events read",
            len(args),
            seconds,
            sizes.reps,
            fastbook_fills,
            "each event's tuple built and iterated",
        )
    )

    # The same loop with every order rejected (side 0) costs the call, argument checks and one event,
    # but no book work: the floor under the per-command figure.
    floor_args = [(order_id, owner, 0, price, qty) for order_id, owner, _, price, qty in args]
    progress(f"flow a: fastbook per-command floor (all rejected) x{sizes.reps}")
    seconds, _ = time_per_command_inserts(book_cls, flow, floor_args, sizes.reps)
    results.append(
        Result(
            flow.name,
            f"fastbook[{engine}]",
            "per-command, all rejected",
            len(args),
            seconds,
            sizes.reps,
            0,
            "floor: call + checks + 1 event, no book work",
        )
    )

    versions = peers.peer_versions()
    insert_flow = peers.InsertFlow.from_commands(flow.commands)
    liquibook_fills: int | None = None
    liquibook_filled_qty: int | None = None
    if versions["liquibook"]:
        for kind in peers.LIQUIBOOK_BOOKS:
            progress(f"flow a: liquibook {kind} add x{sizes.peer_reps}")
            runs = [peers.liquibook_add_seconds(insert_flow, kind) for _ in range(sizes.peer_reps)]
            resting = runs[-1][1]
            results.append(
                Result(
                    flow.name,
                    f"liquibook {versions['liquibook']} ({kind})",
                    "add (orders pre-built)",
                    len(insert_flow),
                    min(r[0] for r in runs),
                    sizes.peer_reps,
                    None,
                    f"{resting:,} left resting",
                )
            )
        build = best_of(sizes.peer_reps, lambda: peers.liquibook_build_seconds(insert_flow))
        no_depth = next(r for r in results if r.engine.endswith("(no_depth)"))
        results.append(
            Result(
                flow.name,
                f"liquibook {versions['liquibook']} (no_depth)",
                "build SimpleOrder + add",
                len(insert_flow),
                build + no_depth.best_seconds,
                sizes.peer_reps,
                None,
                "add-only best + order-building best",
            )
        )
        progress("flow a: liquibook fill count (untimed run with a fill listener)")
        liquibook_fills, liquibook_filled_qty = peers.liquibook_fills(insert_flow)

    cython_fills: int | None = None
    fastbook_fills_c: int | None = None
    if versions["cython-orderbook"]:
        head = flow.head(sizes.flow_a_cython_orderbook)
        head_flow = peers.InsertFlow.from_commands(head.commands)
        progress(f"flow a: cython-orderbook on {len(head_flow):,} x{sizes.peer_reps}")
        runs = [peers.cython_orderbook_add_seconds(head_flow) for _ in range(sizes.peer_reps)]
        cython_fills = runs[-1][1]
        results.append(
            Result(
                head.name,
                f"cython-orderbook {versions['cython-orderbook']}",
                "add_limit_order (pre-built)",
                len(head_flow),
                min(r[0] for r in runs),
                sizes.peer_reps,
                cython_fills,
            )
        )
        seconds, _ = time_per_command_inserts(book_cls, head, new_args(head.commands), sizes.reps)
        fastbook_fills_c = count_trades(fresh_book(book_cls, head).apply_batch(head.commands))
        results.append(
            Result(
                head.name,
                f"fastbook[{engine}]",
                "per-command",
                len(head.commands),
                seconds,
                sizes.reps,
                fastbook_fills_c,
                "same prefix as cython-orderbook",
            )
        )

    head = flow.head(sizes.flow_a_reference)
    progress(f"flow a: pure-Python ReferenceBook on {len(head.commands):,}")
    from fastbook.engine.reference import ReferenceBook

    reference_reps = max(1, sizes.peer_reps)
    seconds, _ = time_per_command_inserts(ReferenceBook, head, new_args(head.commands), reference_reps)
    results.append(
        Result(
            head.name,
            "ReferenceBook (pure Python)",
            "per-command",
            len(head.commands),
            seconds,
            reference_reps,
        )
    )
    seconds, _ = time_per_command_inserts(book_cls, head, new_args(head.commands), sizes.reps)
    results.append(
        Result(
            head.name,
            f"fastbook[{engine}]",
            "per-command",
            len(head.commands),
            seconds,
            sizes.reps,
            None,
            "same prefix as the reference",
        )
    )

    fills = {
        "commands": len(flow.commands),
        "fastbook": fastbook_fills,
        "liquibook": liquibook_fills,
        "equal": liquibook_fills is not None and liquibook_fills == fastbook_fills,
        "fastbook_filled_qty": fastbook_filled_qty,
        "liquibook_filled_qty": liquibook_filled_qty,
        "filled_qty_equal": liquibook_filled_qty is not None and liquibook_filled_qty == fastbook_filled_qty,
        "cython_orderbook_prefix": sizes.flow_a_cython_orderbook,
        "cython_orderbook": cython_fills,
        "fastbook_on_cython_orderbook_prefix": fastbook_fills_c,
    }
    return {"flow": flow_info(flow), "results": results, "checks": checks, "fills": fills}


def flow_info(flow: Flow) -> dict[str, Any]:
    return {
        "name": flow.name,
        "description": flow.description,
        "prefill_commands": len(flow.prefill),
        "commands": len(flow.commands),
        "mix_percent": command_mix(flow.commands),
    }


# ------------------------------------------------------------------------------------- flow (b)


def bench_flow_b(book_cls: type[Any], engine: str, sizes: Sizes, seed: int) -> dict[str, Any]:
    progress(f"flow b: generating {sizes.flow_b:,} exchange-core commands against a live book")
    flow = exchange_core_flow(sizes.flow_b, seed, book_cls)
    calls = to_calls(flow.commands)
    checks = {"per_command_equals_batch_events": events_agree(book_cls, flow, sizes.check_prefix)}

    shape = fresh_book(book_cls, flow)
    samples = []
    for start in range(0, len(flow.commands), max(1, len(flow.commands) // 50)):
        shape.apply_batch(flow.commands[start : start + max(1, len(flow.commands) // 50)])
        samples.append(shape.counts())
    counts = np.array(samples, dtype=np.float64)
    book_shape = {
        "mean_resting_orders": round(float(counts[:, 0:2].sum(axis=1).mean()), 1),
        "mean_price_levels": round(float(counts[:, 2:4].sum(axis=1).mean()), 1),
    }

    warm = flow.head(min(len(flow.commands), 20_000))
    time_per_command(book_cls, warm, to_calls(warm.commands), 1)
    progress(f"flow b: fastbook batch x{sizes.batch_reps}")
    seconds, batch_hash, events = time_batch(book_cls, flow, sizes.batch_reps)
    trades = count_trades(events)
    rejects = int(np.count_nonzero(events["type"] == _REJECTED))
    del events
    results = [
        Result(flow.name, f"fastbook[{engine}]", "batch", len(calls), seconds, sizes.batch_reps, trades)
    ]
    progress(f"flow b: fastbook per-command x{sizes.reps}")
    seconds, per_command_hash = time_per_command(book_cls, flow, calls, sizes.reps)
    results.append(
        Result(flow.name, f"fastbook[{engine}]", "per-command", len(calls), seconds, sizes.reps, trades)
    )
    checks["per_command_hash_equals_batch_hash"] = per_command_hash == batch_hash
    info = flow_info(flow) | book_shape | {"rejects": rejects}
    return {"flow": info, "results": results, "checks": checks}


# ------------------------------------------------------------------------------------- flow (c)


def bench_deep(book_cls: type[Any], engine: str, sizes: Sizes, seed: int, max_depth: int) -> dict[str, Any]:
    """Build books of growing depth; at each, time both APIs on constant-depth workloads (uniform and
    hot) and measure bytes per resting order (the engine's own count, and RSS in a fresh process)."""
    points: list[DeepPoint] = []
    for depth in (d for d in sizes.deep_depths if d <= max_depth):
        progress(f"deep {depth:,}: memory probe in a fresh process")
        memory = memory_probe(depth, seed, engine)
        book, build_seconds = build_deep_book(book_cls, depth, seed)
        if len(book) != depth:
            raise RuntimeError(f"deep book: {len(book)} resting orders after {depth} non-crossing inserts")
        memory_usage = getattr(book, "memory_usage", None)
        engine_bytes = memory_usage() / depth if callable(memory_usage) else None

        workload = DeepWorkload(depth, seed)
        book.apply_batch(workload.segment(min(sizes.deep_segment, 10_000)))  # warm-up
        timings: dict[tuple[bool, str], float] = {}
        rejects = trades = commands = 0
        for hot in (False, True):
            mode = "hot" if hot else "uniform"
            progress(f"deep {depth:,}: {mode} workload, per-command x{sizes.reps}, batch x{sizes.batch_reps}")
            best = float("inf")
            for _ in range(sizes.reps):
                segment = workload.segment(sizes.deep_segment, hot)
                calls = to_calls(segment)
                methods = (None, book.new, book.cancel, book.amend, book.cancel_all)

                def loop(calls: list[Call] = calls, methods: tuple[Any, ...] = methods) -> None:
                    for op, args in calls:
                        methods[op](*args)

                best = min(best, peers.timed(loop)[0] / len(segment))
            timings[hot, "per-command"] = best
            best = float("inf")
            for _ in range(sizes.batch_reps):
                segment = workload.segment(sizes.deep_segment, hot)
                seconds, events = peers.timed(partial(book.apply_batch, segment))
                best = min(best, seconds / len(segment))
                commands += len(segment)
                trades += count_trades(events)
                rejects += int(np.count_nonzero(events["type"] == _REJECTED))
                del events
            timings[hot, "batch"] = best
        if abs(len(book) - depth) > depth // 10 + 10:
            raise RuntimeError(f"deep book drifted from {depth} to {len(book)} resting orders")
        points.append(
            DeepPoint(
                depth=depth,
                build_cmds_per_s=depth / build_seconds,
                per_command_ns=1e9 * timings[False, "per-command"],
                batch_ns=1e9 * timings[False, "batch"],
                hot_per_command_ns=1e9 * timings[True, "per-command"],
                hot_batch_ns=1e9 * timings[True, "batch"],
                workload_commands=commands,
                workload_rejects=rejects,
                workload_trades=trades,
                engine_bytes_per_order=engine_bytes,
                rss_bytes_per_order=memory["rss_delta_bytes"] / depth,
                rss_delta_bytes=memory["rss_delta_bytes"],
            )
        )
        del book, workload
        gc.collect()
    return {"points": points, "engine": engine}


def build_deep_book(
    book_cls: type[Any], depth: int, seed: int, chunk_size: int = 1_000_000
) -> tuple[Any, float]:
    """A book holding `depth` non-crossing orders, and the seconds its apply_batch calls took."""
    book = book_cls()
    build_seconds = 0.0
    for chunk in deep_book_fill(depth, seed, chunk_size):
        start = time.perf_counter()
        events = book.apply_batch(chunk)
        build_seconds += time.perf_counter() - start
        del events
    return book, build_seconds


def memory_probe(depth: int, seed: int, engine: str) -> dict[str, Any]:
    """Run `--memory-probe` in a fresh interpreter: RSS growth there is the book's alone (in this
    process, memory freed by earlier flows would be reused and hide it)."""
    run = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-probe",
            str(depth),
            "--seed",
            str(seed),
            "--engine",
            engine,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if run.returncode != 0:
        raise RuntimeError(f"memory probe for depth {depth} failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout)


def probe_memory(book_cls: type[Any], depth: int, seed: int) -> dict[str, Any]:
    """Body of `--memory-probe`: build the deep book and report the RSS it added."""
    build_deep_book(book_cls, 1_000, seed)  # first-use allocations (module state, numpy) happen here
    gc.collect()
    before = rss_bytes()
    # small batches: an engine may keep its last event buffer for reuse, which is not per-order memory
    book, _ = build_deep_book(book_cls, depth, seed, PROBE_CHUNK)
    gc.collect()
    after = rss_bytes()
    memory_usage = getattr(book, "memory_usage", None)
    return {
        "depth": depth,
        "resting": len(book),
        "rss_delta_bytes": after - before,
        "engine_bytes": memory_usage() if callable(memory_usage) else None,
    }


# ------------------------------------------------------------------------------------- reporting


def find(results: list[Result], engine_prefix: str, api: str, commands: int | None = None) -> Result | None:
    for result in results:
        if result.engine.startswith(engine_prefix) and result.api == api:
            if commands is None or result.commands == commands:
                return result
    return None


def ratio(numerator: Result | None, denominator: Result | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    return numerator.cmds_per_s / denominator.cmds_per_s


def compute_ratios(flow_a: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    results: list[Result] = flow_a["results"]
    batch = find(results, "fastbook", "batch")
    per_command = find(results, "fastbook", "per-command", sizes.flow_a)
    per_command_c = find(results, "fastbook", "per-command", sizes.flow_a_cython_orderbook)
    per_command_r = find(results, "fastbook", "per-command", sizes.flow_a_reference)
    liquibook = find(results, "liquibook", "add (orders pre-built)")
    liquibook_depth = next(
        (r for r in results if r.engine.endswith("(depth5)") and r.api == "add (orders pre-built)"), None
    )
    liquibook_with_build = find(results, "liquibook", "build SimpleOrder + add")
    cython_orderbook = find(results, "cython-orderbook", "add_limit_order (pre-built)")
    reference = find(results, "ReferenceBook", "per-command")

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    ratios = {
        "batch_cmds_per_s_flow_a": None if batch is None else round(batch.cmds_per_s),
        "per_command_vs_liquibook": rounded(ratio(per_command, liquibook)),
        "per_command_vs_liquibook_depth5": rounded(ratio(per_command, liquibook_depth)),
        "per_command_vs_liquibook_with_order_building": rounded(ratio(per_command, liquibook_with_build)),
        "batch_vs_liquibook": rounded(ratio(batch, liquibook)),
        "per_command_vs_cython_orderbook": rounded(ratio(per_command_c, cython_orderbook)),
        "per_command_vs_reference": rounded(ratio(per_command_r, reference)),
        "batch_vs_per_command": rounded(ratio(batch, per_command)),
    }
    targets = {
        "batch_cmds_per_s_flow_a >= 20M": _met(ratios["batch_cmds_per_s_flow_a"], TARGET_BATCH_CMDS_PER_S),
        "per_command_vs_liquibook >= 2x": _met(ratios["per_command_vs_liquibook"], TARGET_VS_LIQUIBOOK),
        "per_command_vs_cython_orderbook >= 15x": _met(
            ratios["per_command_vs_cython_orderbook"], TARGET_VS_CYTHON_ORDERBOOK
        ),
    }
    return {"ratios": ratios, "targets": targets}


def _met(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


def format_table(results: list[Result]) -> str:
    header = (
        f"{'flow':<15} {'engine':<36} {'api':<28} {'commands':>10} {'best s':>9} {'cmds/s':>13} "
        f"{'ns/cmd':>9} {'trades':>9}  note"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        trades = "" if r.trades is None else f"{r.trades:,}"
        lines.append(
            f"{r.flow:<15} {r.engine:<36} {r.api:<28} {r.commands:>10,} {r.best_seconds:>9.4f} "
            f"{r.cmds_per_s:>13,.0f} {r.ns_per_cmd:>9.1f} {trades:>9}  {r.note}"
        )
    return "\n".join(lines)


def format_deep(points: list[DeepPoint]) -> str:
    header = (
        f"{'resting orders':>14} {'build cmds/s':>13} | {'uniform: per-cmd ns':>19} {'batch ns':>9} | "
        f"{'hot: per-cmd ns':>15} {'batch ns':>9} | {'B/order engine':>14} {'B/order RSS':>11} "
        f"{'trades':>7} {'rejects':>7}"
    )
    lines = [header, "-" * len(header)]
    for p in points:
        engine = "n/a" if p.engine_bytes_per_order is None else f"{p.engine_bytes_per_order:.1f}"
        rss = f"{p.rss_bytes_per_order:.1f}" + ("*" if p.depth < 100_000 else "")
        lines.append(
            f"{p.depth:>14,} {p.build_cmds_per_s:>13,.0f} | {p.per_command_ns:>19.1f} {p.batch_ns:>9.1f} | "
            f"{p.hot_per_command_ns:>15.1f} {p.hot_batch_ns:>9.1f} | {engine:>14} {rss:>11} "
            f"{p.workload_trades:>7,} {p.workload_rejects:>7,}"
        )
    lines.append("(* RSS grows in whole pages, so below 100k orders the RSS figure is mostly noise)")
    return "\n".join(lines)


def format_summary(report: dict[str, Any]) -> str:
    lines = ["", "ratios (cmds/s over cmds/s, same flow and size):"]
    for name, value in report["ratios"].items():
        shown = "n/a" if value is None else (f"{value:,}" if name.startswith("batch_cmds") else f"{value}x")
        lines.append(f"  {name:<48} {shown}")
    lines.append("targets (issue 2):")
    for name, met in report["targets"].items():
        lines.append(f"  {name:<48} {'n/a' if met is None else ('MET' if met else 'NOT MET')}")
    fills = report["fills"]
    liquibook = "n/a" if fills["liquibook"] is None else f"{fills['liquibook']:,}"
    liquibook_qty = "n/a" if fills["liquibook_filled_qty"] is None else f"{fills['liquibook_filled_qty']:,}"
    lines.append(
        f"fills on flow a ({fills['commands']:,} inserts): fastbook {fills['fastbook']:,}, "
        f"liquibook {liquibook} -> {'EQUAL' if fills['equal'] else 'DIFFERENT'}; filled qty: fastbook "
        f"{fills['fastbook_filled_qty']:,}, liquibook {liquibook_qty} -> "
        f"{'EQUAL' if fills['filled_qty_equal'] else 'DIFFERENT'}"
    )
    if fills["cython_orderbook"] is not None:
        lines.append(
            f"fills on the first {fills['cython_orderbook_prefix']:,}: "
            f"fastbook {fills['fastbook_on_cython_orderbook_prefix']:,}, "
            f"cython-orderbook {fills['cython_orderbook']:,}"
        )
    lines.append("checks: " + ", ".join(f"{k}={v}" for k, v in report["checks"].items()))
    return "\n".join(lines)


def meta(args: argparse.Namespace, engine: str, load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    def git_commit() -> str | None:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "seed": args.seed,
        "engine": engine,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "git_commit": git_commit(),
        "peers": peers.peer_versions(),
        # other work on the machine skews timings: the 1/5/15-minute load averages say how busy it was
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "method": "best of N perf_counter runs after a warm-up, fresh book per run, GC off while timed",
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6.5))
    rows = report["results"]
    labels = [f"{r['flow']}: {r['engine']}\n{r['api']} n={r['commands']:,}" for r in rows]
    values = [r["cmds_per_s"] for r in rows]
    colors = ["tab:blue" if r["engine"].startswith("fastbook") else "tab:gray" for r in rows]
    left.barh(range(len(rows)), values, color=colors)
    left.set_yticks(range(len(rows)), labels, fontsize=6)
    left.set_xscale("log")
    left.invert_yaxis()
    left.set_xlabel("commands / s (log)")
    left.set_title("flows (a) liquibook perf and (b) exchange-core mix")
    for i, v in enumerate(values):
        left.text(v, i, f" {v / 1e6:.2f}M", va="center", fontsize=7)

    points = report["deep_book"]["points"]
    if points:
        depths = [p["depth"] for p in points]
        right.plot(depths, [p["per_command_ns"] for p in points], "o-", label="per-command, uniform")
        right.plot(depths, [p["batch_ns"] for p in points], "s-", label="batch, uniform")
        right.plot(depths, [p["hot_per_command_ns"] for p in points], "o--", label="per-command, hot")
        right.plot(depths, [p["hot_batch_ns"] for p in points], "s--", label="batch, hot")
        right.set_xscale("log")
        right.set_ylim(bottom=0)
        right.set_xlabel("resting orders (log)")
        right.set_ylabel("ns / command")
        right.set_title("flow (c): cost per command vs book depth")
        for p in points:
            size = p["engine_bytes_per_order"] or p["rss_bytes_per_order"]
            if size:
                right.annotate(
                    f"{size:.0f} B/order",
                    (p["depth"], p["per_command_ns"]),
                    textcoords="offset points",
                    xytext=(0, 8),
                    fontsize=7,
                    ha="center",
                )
        right.legend()
    fig.suptitle(
        f"fastbook engine benchmark ({report['meta']['date_utc']}, {report['meta']['cpu']})", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of a few seconds)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    parser.add_argument("--plot", type=Path, help="also draw a PNG plot here")
    parser.add_argument("--seed", type=int, default=1, help="seed of every flow (default 1)")
    parser.add_argument(
        "--max-depth", type=int, default=10_000_000, help="largest deep-book depth to build (default 10M)"
    )
    parser.add_argument("--memory-probe", type=int, metavar="DEPTH", help=argparse.SUPPRESS)
    parser.add_argument(
        "--engine",
        choices=("native", "reference"),
        default="native",
        help="engine under test; 'reference' only exercises the harness (slow)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    book_cls = load_engine(args.engine)
    if args.memory_probe:
        print(json.dumps(probe_memory(book_cls, args.memory_probe, args.seed)))
        return 0

    load_at_start = os.getloadavg()
    flow_a = bench_flow_a(book_cls, args.engine, sizes, args.seed)
    flow_b = bench_flow_b(book_cls, args.engine, sizes, args.seed)
    deep = bench_deep(book_cls, args.engine, sizes, args.seed, args.max_depth)
    results: list[Result] = flow_a["results"] + flow_b["results"]

    report: dict[str, Any] = {"meta": meta(args, args.engine, load_at_start)}
    report["flows"] = {"a": flow_a["flow"], "b": flow_b["flow"]}
    report["results"] = [asdict(r) for r in results]
    report |= compute_ratios(flow_a, sizes)
    report["fills"] = flow_a["fills"]
    report["checks"] = {f"flow_a_{k}": v for k, v in flow_a["checks"].items()} | {
        f"flow_b_{k}": v for k, v in flow_b["checks"].items()
    }
    deep_points: list[DeepPoint] = deep["points"]
    report["deep_book"] = {
        "levels_per_side": DeepWorkload(1, 0).levels,
        "segment_commands": sizes.deep_segment,
        "memory_probe_batch_commands": PROBE_CHUNK,
        "points": [asdict(p) for p in deep_points],
        "per_command_ns_max_over_min_depth": (
            round(deep_points[-1].per_command_ns / deep_points[0].per_command_ns, 2) if deep_points else None
        ),
        "batch_ns_max_over_min_depth": (
            round(deep_points[-1].batch_ns / deep_points[0].batch_ns, 2) if deep_points else None
        ),
        "hot_per_command_ns_max_over_min_depth": (
            round(deep_points[-1].hot_per_command_ns / deep_points[0].hot_per_command_ns, 2)
            if deep_points
            else None
        ),
        "hot_batch_ns_max_over_min_depth": (
            round(deep_points[-1].hot_batch_ns / deep_points[0].hot_batch_ns, 2) if deep_points else None
        ),
    }

    print(format_table(results))
    print()
    print(
        f"flow b mix %: {flow_b['flow']['mix_percent']}, mean resting orders "
        f"{flow_b['flow']['mean_resting_orders']}, mean price levels {flow_b['flow']['mean_price_levels']}"
    )
    print()
    print(
        f"flow c: deep book ({report['deep_book']['levels_per_side']:,} price levels per side, "
        f"{sizes.deep_segment:,}-command segments at constant depth)"
    )
    print(format_deep(deep_points))
    print(format_summary(report))
    loads = report["meta"]["load_average_at_start"][0], report["meta"]["load_average_at_end"][0]
    print(f"load average (1 min) at start / end: {loads[0]} / {loads[1]} on {os.cpu_count()} cpus")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    progress(f"wrote {args.json}")
    if args.plot:
        plot(report, args.plot)
        progress(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
