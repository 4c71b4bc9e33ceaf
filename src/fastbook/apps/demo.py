"""`fastbook demo`: the whole system on one machine, converging in front of you.

Starts `fastbook-broker` (amqtt + the BTC-USD sequencer) on a free port, three `fastbook-edge`
processes, feeds a seeded random order flow on behalf of the three edges' clients, waits until every
replica reports the sequencer's version and hash, prints a summary and exits 0 (1 if they do not
converge before the deadline). Nothing here is shared with a running system: own port, own data dir.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fastbook.apps.status import MarketStatus, StatusWatcher, format_status
from fastbook.transport.broker import free_port
from fastbook.transport.config import RunnerConfig
from fastbook.transport.node import Incoming, Outgoing
from fastbook.transport.runner import NodeRunner
from fastbook.wire.topics import Topics

# Waited on a condition, so it costs nothing when the edges start fast; three edge processes under
# qemu on two loaded cores took over 30 s to import and connect (.ci/crossarch).
COME_UP_TIMEOUT = 120.0
MARKET = "BTC-USD"
EDGE_CLIENTS = ("alice", "bob", "carol")
ORDERS_PER_MESSAGE = 10
ANSWER_TYPES = frozenset({"accepted", "amended", "rejected", "cancelled_all"})


def program_command(script: str, module: str) -> list[str]:
    """The console script next to this interpreter, else `python -m module` (a source checkout)."""
    candidate = Path(sys.executable).parent / script
    return [str(candidate)] if candidate.exists() else [sys.executable, "-m", module]


def sample_flow(n: int, clients: Sequence[str], seed: int) -> list[tuple[str, dict[str, Any]]]:
    """A seeded mix of limit/market orders, cancels and amends around 100.00 (tick 0.01, lot 0.001)."""
    rng = random.Random(seed)
    flow: list[tuple[str, dict[str, Any]]] = []
    live: dict[str, list[str]] = {c: [] for c in clients}
    for i in range(n):
        client = rng.choice(clients)
        roll = rng.random()
        if roll < 0.15 and live[client]:
            flow.append((client, {"op": "cancel", "id": live[client].pop(rng.randrange(len(live[client])))}))
            continue
        if roll < 0.20 and live[client]:
            qty = f"{rng.randint(1, 1500) / 1000:.3f}"
            flow.append((client, {"op": "amend", "id": rng.choice(live[client]), "qty": qty}))
            continue
        side = rng.choice(("buy", "sell"))
        order: dict[str, Any] = {"op": "new", "id": f"{client}-{i}", "side": side,
                                 "qty": f"{rng.randint(1, 2000) / 1000:.3f}"}
        if roll > 0.93:
            order["type"] = "market"
        else:
            # Buyers mostly below 100, sellers mostly above, with some overlap so trades happen.
            centre = 99.90 if side == "buy" else 100.10
            order["price"] = f"{centre + rng.randint(-40, 40) / 100:.2f}"
            live[client].append(order["id"])
        flow.append((client, order))
    return flow


@dataclass
class _FlowWatcher:
    """A node that publishes the flow and counts the reports and public trades that come back."""

    topics: Topics
    reports: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    trades: int = 0
    subscribed: bool = False
    last_seq: int = 0  # the highest seq a report named: the sequencer's version once all are answered

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(f"{self.topics.base}/reports/+", 1), (self.topics.trades, 1)]

    def will(self) -> Outgoing | None:
        return None

    def on_connected(self) -> list[Outgoing]:
        self.subscribed = True
        return []

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        for topic, payload in messages:
            try:
                doc = json.loads(payload)
            except ValueError:
                continue
            if topic == self.topics.trades:
                trades = doc.get("trades") if isinstance(doc, dict) else None
                self.trades += len(trades) if isinstance(trades, list) else 0
                continue
            for report in doc if isinstance(doc, list) else [doc]:
                if isinstance(report, dict):
                    kind = str(report.get("type"))
                    self.reports[kind] += 1
                    seq = report.get("seq")
                    if type(seq) is int and seq > self.last_seq:
                        self.last_seq = seq
                    # Exactly one of these answers each command: accepted (new), amended (amend),
                    # cancelled by the user (cancel), or rejected (any op).
                    if kind in ANSWER_TYPES or (kind == "cancelled" and report.get("reason") == "user"):
                        self.answered += 1
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        return []

    def next_deadline(self, now: float) -> float | None:
        return None  # no timers: woken by messages only

    def close(self) -> list[Outgoing]:
        return []


class Demo:
    def __init__(self, orders: int, seed: int, data_dir: Path | None, out: TextIO) -> None:
        self.orders = orders
        self.seed = seed
        self.out = out
        self.own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="fastbook-demo-"))
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.data_dir / f"{name}.log"
        self.logs[name] = log_path
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.logs[name].read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{tail}")

    def start(self) -> None:
        self.say(f"fastbook demo: broker + sequencer on {self.url}, data in {self.data_dir}")
        self.spawn("broker", program_command("fastbook-broker", "fastbook.apps.cli.broker")
                   + ["--host", "127.0.0.1", "--port", str(self.port),
                      "--data-dir", str(self.data_dir / "data"), "--market", MARKET])
        deadline = time.monotonic() + COME_UP_TIMEOUT
        while "fastbook-broker listening on" not in self.logs["broker"].read_text(errors="replace"):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"fastbook-broker did not start within {COME_UP_TIMEOUT:.0f} s")
            time.sleep(0.05)
        for client in EDGE_CLIENTS:
            self.spawn(f"edge-{client}", program_command("fastbook-edge", "fastbook.apps.cli.edge")
                       + ["--client-id", client, "--broker", self.url, "--market", MARKET])

    def wait_status(self, watcher: StatusWatcher, timeout: float, want: int | None) -> MarketStatus:
        deadline = time.monotonic() + timeout
        status = watcher.snapshot()
        while time.monotonic() < deadline:
            self.check_alive()
            status = watcher.snapshot()
            if status.converged(EDGE_CLIENTS) and (want is None or status.book_version == want):
                return status
            time.sleep(0.1)
        return status

    def run(self, keep_running: bool) -> int:
        topics = Topics(MARKET)
        flow = sample_flow(self.orders, EDGE_CLIENTS, self.seed)
        feeder = _FlowWatcher(topics)
        started = time.monotonic()
        self.start()
        with (
            StatusWatcher(self.url, MARKET) as watcher,
            NodeRunner(feeder, RunnerConfig(self.url, "fastbook-demo-feeder")) as feeder_runner,
        ):
            # 1. everyone up: the sequencer's book is retained and the three edges report online
            status = self.wait_status(watcher, COME_UP_TIMEOUT, None)
            if not status.converged(EDGE_CLIENTS):
                self.say(format_status(status))
                self.say("FAILED: the edges did not come up in sync")
                return 1
            while not feeder.subscribed:
                time.sleep(0.05)
            self.say(f"3 edges in sync at version {status.book_version}; sending {len(flow)} orders "
                     f"from {len(EDGE_CLIENTS)} clients (seed {self.seed})")
            # 2. the flow, in small bulk messages per client (each client's orders stay in order)
            messages: list[Outgoing] = []
            batch: dict[str, list[dict[str, Any]]] = {c: [] for c in EDGE_CLIENTS}
            for client, order in flow:
                batch[client].append(order)
                if len(batch[client]) == ORDERS_PER_MESSAGE:
                    messages.append(Outgoing(topics.orders(client), json.dumps(batch[client]).encode()))
                    batch[client] = []
            messages += [Outgoing(topics.orders(c), json.dumps(b).encode()) for c, b in batch.items() if b]
            sent_at = time.monotonic()
            feeder_runner.call(lambda: messages).result(30)
            # 3. all answered, then every replica at the sequencer's version and hash
            deadline = time.monotonic() + 60 + self.orders / 50
            while feeder.answered < len(flow) and time.monotonic() < deadline:
                self.check_alive()
                time.sleep(0.1)
            answered = feeder.answered
            # (the version every report was answered at: the retained book reaches it at once if
            # the last batch changed its levels, else at the sequencer's idle heartbeat)
            want = feeder.last_seq if answered == len(flow) else watcher.snapshot().book_version
            status = self.wait_status(watcher, max(5.0, deadline - time.monotonic()), want)
            elapsed = time.monotonic() - sent_at
            self.say("")
            self.say(format_status(status))
            self.say("")
            counts = feeder.reports
            self.say(f"commands sent {len(flow)}, answered {answered}: accepted {counts['accepted']}, "
                     f"amended {counts['amended']}, cancelled {counts['cancelled']}, "
                     f"rejected {counts['rejected']}; public trades {feeder.trades}; "
                     f"fills reported {counts['trade']}; {elapsed:.1f}s after sending "
                     f"({time.monotonic() - started:.1f}s total)")
            ok = answered == len(flow) and status.converged(EDGE_CLIENTS)
            if ok:
                self.say(f"CONVERGED: sequencer and {len(EDGE_CLIENTS)} replicas at version "
                         f"{status.book_version} hash {status.book_hash}")
            else:
                self.say("FAILED: the replicas did not converge (logs in "
                         f"{self.data_dir}; rerun with --keep-running to inspect)")
            if keep_running:
                self.say(f"\nkeep running: broker at {self.url}; try\n"
                         f"  fastbook status --broker {self.url}\n"
                         f"  fastbook-edge --client-id you --broker {self.url}\n"
                         "Ctrl-C to stop.")
                try:
                    while True:
                        self.check_alive()
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    pass
            return 0 if ok else 1

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def run_demo(orders: int = 2000, seed: int = 7, keep_running: bool = False, data_dir: Path | None = None,
             out: TextIO | None = None) -> int:
    demo = Demo(orders, seed, data_dir, out or sys.stdout)
    failed = False
    try:
        code = demo.run(keep_running)
        failed = code != 0
        return code
    except RuntimeError as exc:
        failed = True
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130 if not keep_running else 0
    finally:
        if failed and demo.own_dir:
            demo.own_dir = False  # keep the logs for a look
            print(f"logs kept in {demo.data_dir}", file=sys.stderr)
        demo.stop()
