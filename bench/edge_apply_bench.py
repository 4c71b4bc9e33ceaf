"""An edge's CPU per applied log entry, in one process with no broker: a sequencer turns a seeded
order flow into log messages, then one EdgeNode (what `fastbook-edge` runs) is handed everything it
subscribes to, and the CPU time (user + system, `time.process_time`) of its `on_messages` calls is
divided by the entries it applied. It ends by checking the edge reached the sequencer's version and
hash, and prints one JSON line.

    python bench/edge_apply_bench.py                      # 20,000 orders, one per message
    python bench/edge_apply_bench.py --orders 20000 --per-message 500

.ci/crossarch runs it under qemu on the aarch64 wheel: that figure is emulation (qemu-user on an
x86_64 host), and says only that the edge runs there, nothing of a real device's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastbook.backend import ENV_VAR
from fastbook.edge.node import EdgeConfig, EdgeNode
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

MARKET = "BTC-USD"


def order_flow(n: int, seed: int, spread: int = 5) -> list[dict[str, Any]]:
    """Limit orders up to `spread` ticks either side of 100.00 +- 2 ticks (5: about half of them
    trade and nearly every one lands in the 20 levels the book shows; 200: most rest deeper), and
    a cancel of an earlier order every tenth command."""
    rng = random.Random(seed)
    flow: list[dict[str, Any]] = []
    for i in range(n):
        if i % 10 == 9:
            flow.append({"op": "cancel", "id": f"o{rng.randrange(i)}"})
            continue
        side = rng.choice(("buy", "sell"))
        ticks = rng.randint(-spread, spread) + (-2 if side == "buy" else 2)
        flow.append({"op": "new", "id": f"o{i}", "side": side, "price": f"{100 + ticks * 0.01:.2f}",
                     "qty": f"{rng.randint(1, 20) * 0.001:.3f}"})
    return flow


def measure(orders: int, per_message: int, seed: int) -> dict[str, Any]:
    topics = Topics(MARKET)
    with tempfile.TemporaryDirectory(prefix="fastbook-edge-apply-") as data_dir:
        seq = SequencerNode(SequencerConfig(MarketSpec.parse(MARKET), Path(data_dir) / "seq"))
        published = list(seq.on_connected())
        flow = order_flow(orders, seed)
        for first in range(0, orders, per_message):
            chunk = flow[first : first + per_message]
            payload = json.dumps(chunk[0] if per_message == 1 else chunk).encode()
            published += seq.on_messages([(topics.orders("bench"), payload)])
        edge = EdgeNode(EdgeConfig(client_id="edge-bench"))
        edge.on_connected()
        wanted = {topic for topic, _qos in edge.subscriptions()}
        deliveries = [(o.topic, o.payload) for o in published if o.topic in wanted]
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for delivery in deliveries:
            edge.on_messages([delivery])
        cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
        if (edge.version, edge.state_hash) != (seq.version, seq.state_hash) or not edge.in_sync:
            raise SystemExit(f"the edge did not converge: edge v{edge.version} {edge.state_hash:016x}, "
                             f"sequencer v{seq.version} {seq.state_hash:016x}")
        seq.close()
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "backend": os.environ.get(ENV_VAR, "native"),
        "orders": orders,
        "orders_per_message": per_message,
        "entries_applied": edge.version,
        "messages_delivered": len(deliveries),
        "cpu_us_per_entry": round(1e6 * cpu / max(edge.version, 1), 2),
        "wall_s": round(wall, 3),
        "final_hash": f"{edge.state_hash:016x}",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--per-message", type=int, default=1, help="orders in one order message")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.orders < 1 or args.per_message < 1:
        parser.error("--orders and --per-message must be at least 1")
    print(json.dumps(measure(args.orders, args.per_message, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
