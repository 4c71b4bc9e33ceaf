"""What one lone order costs, output by output, at the sequencer and at an edge: in one process,
no broker. A SequencerNode gets one order per `on_messages` call (the everyday path: a batch of
one); everything it publishes that an edge subscribes to is handed at once to two EdgeNodes (the
order's own client, which derives its reports from the log, and an observer), one message per
`on_messages` call, as a runner would.

Each output's work is wrapped where the node does it (the sequencer's journal commit, log message,
reports, trades, book, snapshot; the edge's log decode, apply, reports, book, status) and costed
two ways:

- `--measure cpu` (default): thread CPU time (`time.thread_time_ns`) per order, µs. Other
  processes on the machine only show through caches and frequency, not as waiting.
- `--measure instructions`: the same run under `valgrind --tool=callgrind`, instructions per
  order. Each section runs through a small C trampoline (built here with the system `cc`), and its
  inclusive cost in callgrind's output is the section's; the trampoline's own cost (an empty
  section) is subtracted. Repeatable under any load, ~50x slower.

    python bench/lone_order_bench.py                           # 3,000 orders, fdatasync real
    python bench/lone_order_bench.py --fsync stub --orders 1000 --measure instructions

`--fsync stub` replaces `os.fdatasync` by a no-op (labelled in the output): the figure is then the
CPU of fastbook's own work, without the disk. Ends by checking both edges reached the sequencer's
version and hash.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_apply_bench import order_flow  # (its flow, with the price spread as a parameter)

import fastbook.edge.node as edge_module
import fastbook.log.commit as commit_module
from fastbook.apps.cli.common import tune_gc_for_throughput
from fastbook.edge.node import EdgeConfig, EdgeNode
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

MARKET = "BTC-USD"
CLIENT = "bench"
# Client requests (valgrind/callgrind.h): work the same whatever symbols callgrind can read.
_TOGGLE_C = "#include <valgrind/callgrind.h>\nvoid fb_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }\n"


class Sections:
    """Named costs: each wrapped call adds its thread CPU time; or, under callgrind, collection
    is switched on around the calls of one chosen section only (its instruction count is then the
    run's total)."""

    def __init__(self, collect: str | None = None) -> None:
        self.names: list[str] = []
        self.ns: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.collect = collect
        self._toggle: Any = None
        if collect is not None:
            build = Path(tempfile.mkdtemp(prefix="fastbook-lone-"))
            (build / "t.c").write_text(_TOGGLE_C)
            subprocess.run(
                ["cc", "-O1", "-shared", "-fPIC", "-o", str(build / "t.so"), str(build / "t.c")], check=True
            )
            self._toggle = ctypes.CDLL(str(build / "t.so")).fb_toggle

    def index(self, name: str) -> int:
        if name not in self.names:
            self.names.append(name)
        return self.names.index(name)

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.calls[name] += 1
        if self._toggle is not None:
            if name != self.collect:
                return fn(*args, **kwargs)
            self._toggle()
            try:
                return fn(*args, **kwargs)
            finally:
                self._toggle()
        start = time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            self.ns[name] += time.thread_time_ns() - start

    def wrap(self, owner: Any, attr: str, name: str) -> bool:
        """Replace owner.attr by a wrapped call (False if the attribute is not there)."""
        fn = getattr(owner, attr, None)
        if fn is None:
            return False
        self.index(name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return self.run(name, fn, *args, **kwargs)

        setattr(owner, attr, wrapped)
        return True


def drive(orders: int, seed: int, spread: int, fsync: str, sections: Sections) -> dict[str, Any]:
    topics = Topics(MARKET)
    if fsync == "stub":
        os.fdatasync = lambda fd: None
    # The edge's decode is wrapped in the module (the node calls the module's name); the
    # sequencer's log, reports and trades encoding likewise (BatchCommit.publish, log/commit.py).
    sections.wrap(edge_module, "decode_log_message", "edge: decode log message")
    sections.wrap(commit_module, "encode_log_message", "seq: log message")
    sections.wrap(commit_module, "encode_report_texts", "seq: reports messages")
    sections.wrap(commit_module, "encode_trades", "seq: trades message")
    with tempfile.TemporaryDirectory(prefix="fastbook-lone-order-") as data_dir:
        seq = SequencerNode(SequencerConfig(MarketSpec.parse(MARKET), Path(data_dir) / "seq"))
        seq.on_connected()
        sections.wrap(seq.commit, "commit", "seq: journal commit (write + fdatasync)")
        # (the book: whether its levels changed (builds that ask), then its message)
        sections.wrap(seq.commit._book_writer, "same", "seq: book changed?")
        sections.wrap(seq.commit, "book_message", "seq: book message")
        sections.wrap(seq, "_take_snapshot", "seq: snapshot")
        edges = {
            "own": EdgeNode(EdgeConfig(client_id=CLIENT)),
            "observer": EdgeNode(EdgeConfig(client_id="watcher")),
        }
        for role, edge in edges.items():
            edge.on_connected()
            for topic, payload in [(o.topic, o.payload) for o in seq.on_connected()]:
                edge.on_messages([(topic, payload)])  # the retained book and snapshot
            sections.wrap(edge, "_status", f"edge {role}: status")
            sections.wrap(edge.follower, "on_batch", f"edge {role}: apply log (follower + replica)")
            sections.wrap(edge.follower, "on_applied", f"edge {role}: reports derived from the log")
            sections.wrap(edge, "_deliver_report", f"edge {role}: reports delivered")
        kinds = {topics.log: "log", topics.book: "book", topics.trades: "trades", topics.snapshot: "snapshot"}
        published: dict[str, int] = defaultdict(int)
        delivered: dict[str, int] = defaultdict(int)
        flow = order_flow(orders, seed, spread)
        for order in flow:
            out = sections.run(
                "seq: whole batch", seq.on_messages, [(topics.orders(CLIENT), json.dumps(order).encode())]
            )
            for message in out:
                kind = kinds.get(message.topic, "reports")
                published[kind] += 1
                for role, edge in edges.items():
                    if message.topic in {topic for topic, _qos in edge.subscriptions()}:
                        delivered[f"{role} {kind}"] += 1
                        sections.run(
                            f"edge {role}: whole {kind} message",
                            edge.on_messages,
                            [(message.topic, message.payload)],
                        )
        for role, edge in edges.items():
            if (edge.version, edge.state_hash) != (seq.version, seq.state_hash) or not edge.in_sync:
                raise SystemExit(f"edge {role} did not converge: v{edge.version} {edge.state_hash:016x}, "
                                 f"sequencer v{seq.version} {seq.state_hash:016x}")  # fmt: skip
        result = {"version": seq.version, "hash": f"{seq.state_hash:016x}", "published": dict(published),
                  "delivered": dict(delivered)}  # fmt: skip
        seq.close()
    return result


def child(args: argparse.Namespace) -> None:
    """The run itself; prints one JSON line (the section names, CPU figures, counts)."""
    tune_gc_for_throughput()  # as fastbook-edge and fastbook-sequencer start
    sections = Sections(args.collect)
    result = drive(args.orders, args.seed, args.spread, args.fsync, sections)
    result["sections"] = sections.names + [n for n in sections.calls if n not in sections.names]
    result["ns"] = dict(sections.ns)
    result["calls"] = dict(sections.calls)
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(args: argparse.Namespace, collect: str | None) -> tuple[dict[str, Any], int]:
    """(the child's result, instructions callgrind counted: those of section `collect`)."""
    command = [sys.executable, __file__, "--child", "--orders", str(args.orders), "--seed", str(args.seed),
               "--spread", str(args.spread), "--fsync", args.fsync]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fastbook-lone-cg-") as scratch:
        out_file = Path(scratch) / "callgrind.out"
        if collect is not None:
            command = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
                       f"--callgrind-out-file={out_file}", *command, "--collect", collect]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True)
        lines = [li for li in run.stdout.splitlines() if li.startswith("RESULT ")]
        if run.returncode != 0 or not lines:
            raise SystemExit(run.stdout + run.stderr)
        instructions = 0
        if collect is not None:
            totals = re.search(r"^(?:summary|totals): (\d+)", out_file.read_text(), re.MULTILINE)
            instructions = int(totals.group(1)) if totals else 0
    return json.loads(lines[-1][len("RESULT ") :]), instructions


# The sections `--measure instructions` counts by default (one callgrind run each).
WHOLE = ("seq: whole batch", "edge own: whole log message", "edge observer: whole log message",
         "edge own: whole reports message", "edge own: whole book message")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spread", type=int, default=5, help="price spread of the flow, ticks")
    parser.add_argument("--fsync", choices=("real", "stub"), default="real")
    parser.add_argument("--measure", choices=("cpu", "instructions"), default="cpu")
    parser.add_argument(
        "--sections", default=",".join(WHOLE), help="with --measure instructions: sections to count (a,b,...)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--collect", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error("--orders must be at least 1")
    if args.child:
        child(args)
        return 0
    n = args.orders
    counted: dict[str, int] = {}
    if args.measure == "cpu":
        result, _ = _run_child(args, None)
    else:
        for name in [s for s in args.sections.split(",") if s]:
            result, counted[name] = _run_child(args, name)
    backend = os.environ.get("FASTBOOK_BACKEND", "native")
    print(
        f"lone orders: {n}, spread {args.spread} ticks, fdatasync {args.fsync}, measure {args.measure}, "
        f"backend {backend}, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"sequencer v{result['version']} hash {result['hash']}; published per order: "
        + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(result["published"].items()))
    )
    print(
        "delivered per order: "
        + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(result["delivered"].items()))
    )
    unit = "µs/order" if args.measure == "cpu" else "instr/order"
    print(f"{'section':58} {'calls/order':>11} {unit:>12}")
    names = result["sections"] if args.measure == "cpu" else list(counted)
    for name in names:
        calls = result["calls"].get(name, 0)
        if args.measure == "cpu":
            cost = f"{result['ns'].get(name, 0) / 1000 / n:12.1f}"
        else:
            cost = f"{counted[name] / n:12,.0f}"
        print(f"{name:58} {calls / n:11.2f} {cost}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
