"""A real replica's instructions per lone order: one observer `fastbook-edge` (headless: line mode,
stdin not a terminal) under callgrind, following a real fastbook-sequencer on a private mosquitto
while sequencer_lone.py's client sends one order per message and waits for its report (so every log
message holds one entry).

The window: callgrind zeroed once the edge has applied the `--warm` orders, dumped once its retained
status says it applied the last measured one (the status follows the version at most once a second,
so the window ends up to ~1 s after the last order: that second's idle work is in it, as every
quiet moment between the orders is). `--idle S` also counts S seconds with no orders.

    python bench/replica_instr_bench.py --orders 300 --rate 20 --idle 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from e2e_bench import free_port, stop_processes, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from sequencer_lone import (
    MARKET,
    LoneClient,
    add_callgrind_figures,
    callgrind_control,
    callgrind_wrap,
    measure_idle,
    print_result,
    start_mosquitto,
    start_program,
)

from fastbook.wire.topics import Topics

OBSERVER = "observer"


class StatusWatcher:
    """The observer edge's retained status: its state and the version it applied."""

    def __init__(self, port: int, client_id: str) -> None:
        self.state = ""
        self.version = -1
        self._lock = threading.Lock()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{client_id}-watcher")
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.subscribe(Topics(MARKET).replica(client_id), 1)
        client.loop_start()
        self.client = client

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        status = json.loads(message.payload)
        with self._lock:
            self.state, self.version = status["state"], int(status["version"])

    def applied(self, version: int) -> bool:
        with self._lock:
            return self.state == "online" and self.version >= version

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=300, help="lone orders measured")
    p.add_argument("--warm", type=int, default=100, help="lone orders sent first, not measured")
    p.add_argument("--rate", type=float, default=20.0, help="orders/s at most (closed loop)")
    p.add_argument("--idle", type=float, default=0.0, metavar="S", help="then S seconds with no orders")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fastbook-replica-instr-"))
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = [start_mosquitto(work, port)]
    client: LoneClient | None = None
    watcher: StatusWatcher | None = None
    try:
        sequencer = start_program(work, "sequencer", ["--broker", url, "--data-dir", str(work / "data"),
                                                      "--market", MARKET, "-q"], [])
        procs.append(sequencer)
        client = LoneClient(port)
        if not client.book.wait(60):  # the sequencer's retained book: it is subscribed
            raise TimeoutError("no book from the sequencer")
        watcher = StatusWatcher(port, OBSERVER)
        edge = start_program(work, "edge", ["--client-id", OBSERVER, "--broker", url, "--market", MARKET,
                                            "--no-tty"], callgrind_wrap(work, "edge"), subprocess.DEVNULL)
        procs.append(edge)
        wait_until(lambda: watcher is not None and watcher.applied(0), 300, "the edge online")
        rng = random.Random(7)
        client.send(rng, 0, args.warm, args.rate)
        wait_until(lambda: watcher is not None and client is not None and watcher.applied(client.last_seq),
                   60, "the edge at the warm-up's last order")
        callgrind_control("-z", str(edge.pid))
        t0 = time.monotonic()
        client.send(rng, args.warm, args.orders, args.rate)
        wait_until(lambda: watcher is not None and client is not None and watcher.applied(client.last_seq),
                   60, "the edge at the last order")
        seconds = time.monotonic() - t0
        callgrind_control("-d", "orders", str(edge.pid))
        result: dict[str, Any] = {"orders": args.orders, "rate": args.rate,
                                  "achieved_rate": round(args.orders / seconds, 1),
                                  "edge_version": watcher.version}
        if args.idle:
            result["idle_cpu_ms_per_s"] = measure_idle(edge.pid, args.idle, True)
        result["load_average"] = round(os.getloadavg()[0], 2)
    finally:
        for closing in (client, watcher):
            if closing is not None:
                closing.close()
        stop_processes(procs, 60)
    add_callgrind_figures(result, work, "edge", args.orders, args.idle)
    return print_result(result, work)


if __name__ == "__main__":
    sys.exit(main())
