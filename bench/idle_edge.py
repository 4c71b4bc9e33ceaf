"""What an idle edge costs: CPU seconds and messages published over a quiet window.

Starts mosquitto and fastbook-sequencer (bench/e2e_bench.py's System), then two edges with no
orders flowing: the `fastbook-edge` program (its line-mode loop, stdin not a terminal) and a bare
EdgeNode in a NodeRunner (e2e_bench's replica process, nothing listening). Once both are in sync
it waits `--settle` seconds, then counts over `--seconds` each process's CPU time (/proc, user +
system) and the messages each publishes (a subscriber on `replicas/+` and `replay/request/+`).

    python bench/idle_edge.py                  # 30 s window
    python bench/idle_edge.py --seconds 60

/proc counts CPU in 10 ms ticks: over 30 s, one tick is 0.03% of a core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from e2e_bench import BIN, MARKET, System, cpu_seconds, wait_until

from fastbook.wire.topics import Topics


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()
    topics = Topics(MARKET)
    workdir = Path(tempfile.mkdtemp(prefix="fastbook-idle-edge-"))
    system = System("mosquitto", workdir)
    counts: Counter[str] = Counter()
    counting = threading.Event()
    statuses: dict[str, Any] = {}

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        client = message.topic.rsplit("/", 1)[1]
        if message.topic.startswith(f"{topics.base}/replicas/"):
            statuses[client] = json.loads(message.payload)
        if counting.is_set() and not message.retain:
            counts[client] += 1

    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="idle-watcher")
    watcher.on_message = on_message
    watcher.connect("127.0.0.1", system.port)
    watcher.subscribe([(topics.replicas_filter, 1), (f"{topics.base}/replay/request/+", 1)])
    watcher.loop_start()
    try:
        cli = system._spawn("edge-cli", [str(BIN / "fastbook-edge"), "--client-id", "idle-cli",
                                         "--broker", system.url, "--market", MARKET])  # fmt: skip
        e2e = str(Path(__file__).parent / "e2e_bench.py")
        bare = system._spawn(
            "edge-bare", [sys.executable, e2e, "--replica", "0", system.url, "idle-bare", str(workdir / "t")]
        )
        roles = {
            "fastbook-edge (program)": ("idle-cli", cli),
            "EdgeNode in a NodeRunner": ("idle-bare", bare),
        }
        wait_until(lambda: all(statuses.get(c, {}).get("state") == "online" for c, _ in roles.values()),
                   30, "both edges online")  # fmt: skip
        time.sleep(args.settle)
        before = {role: cpu_seconds(proc.pid) for role, (_c, proc) in roles.items()}
        sequencer_before = cpu_seconds(system.roles["sequencer"])
        counting.set()
        time.sleep(args.seconds)
        counting.clear()
        after = {role: cpu_seconds(proc.pid) for role, (_c, proc) in roles.items()}
        sequencer_used = (cpu_seconds(system.roles["sequencer"]) or 0.0) - (sequencer_before or 0.0)
        print(f"idle edges over {args.seconds:.0f} s (after {args.settle:.0f} s settled), mosquitto + "
              f"fastbook-sequencer, nothing sent")  # fmt: skip
        for role, (client, proc) in roles.items():
            used = (after[role] or 0.0) - (before[role] or 0.0)
            print(f"  {role:26} CPU {used:.2f} s ({100 * used / args.seconds:.2f}% of a core), "
                  f"{counts[client]} messages published, {threads(proc.pid)} threads")  # fmt: skip
        print(f"  {'(fastbook-sequencer)':26} CPU {sequencer_used:.2f} s")
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        system.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
