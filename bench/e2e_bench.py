"""End-to-end benchmark: sequencer + 3 replicas on amqtt, on mosquitto and on a 3-node NATS cluster.

For each broker it measures, in one run:
- raw: paho publish -> subscribe QoS1 messages/s through that broker (the denominator), with a
  one-order payload and with a bulk payload;
- e2e: orders/s applied at every one of 3 replica processes (EdgeNode + NodeRunner, one process each,
  like fastbook-edge) and the latency from publishing an order to it being applied everywhere
  (p50/p99), with one order per message and with bulk messages.

    python bench/e2e_bench.py                   # both brokers (about 2 minutes on 2 cores)
    python bench/e2e_bench.py --brokers mosquitto --single 20000 --bulk 200000
    python bench/e2e_bench.py --brokers nats    # a 3-node cluster on free loopback ports it starts

On NATS the sequencer and the publisher use n1 and the replicas n1, n2, n3 (one each, with the
others as failover); there is no floor run (the floor relays through a single broker).

Each replica process records (monotonic time, version) whenever its version moves; CLOCK_MONOTONIC
is system-wide on Linux, so times compare across processes. The latency of an order is
max over replicas of (first time version >= its seq) - (time its message was handed to paho).
Throughput runs send as fast as the publisher can, so their latencies include queueing at
saturation; the paced run (one order per message at a fixed rate well below saturation) gives the
latency of an unloaded system.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from fastbook.apps.status import StatusWatcher
from fastbook.transport.config import BatchPolicy, RunnerConfig
from fastbook.transport.node import Incoming, Outgoing
from fastbook.transport.runner import NodeRunner
from fastbook.wire.topics import Topics

MARKET = "BTC-USD"
REPLICAS = 3
SEQUENCER_ARGS: list[str] = []  # extra options for fastbook-broker / fastbook-sequencer (--batch-window)
REPLICA_NICE = [0]  # niceness added to each replica process (--replica-nice)
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM the ones still running, newest first; SIGKILL one that outlives `timeout`."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# ---- replica worker process ----------------------------------------------------------------------


class _TracingNode:
    """Wraps an EdgeNode; records (time, version) after each batch that moved the version."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.trace: list[tuple[float, int]] = []

    def subscriptions(self) -> list[tuple[str, int]]:
        return self.inner.subscriptions()  # type: ignore[no-any-return]

    def will(self) -> Outgoing | None:
        return self.inner.will()  # type: ignore[no-any-return]

    def on_connected(self) -> list[Outgoing]:
        return self._traced(self.inner.on_connected())

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        return self._traced(self.inner.on_messages(messages))

    def on_tick(self, now: float) -> list[Outgoing]:
        return self._traced(self.inner.on_tick(now))

    def next_deadline(self, now: float) -> float | None:
        return self.inner.next_deadline(now)  # type: ignore[no-any-return]

    def close(self) -> list[Outgoing]:
        return self.inner.close()  # type: ignore[no-any-return]

    def _traced(self, out: list[Outgoing]) -> list[Outgoing]:
        version = self.inner.version
        if not self.trace or self.trace[-1][1] != version:
            self.trace.append((time.monotonic(), version))
        return out


def replica_worker(broker: str, client_id: str, out_path: str, nice: int = 0) -> int:
    from fastbook.apps.cli.common import tune_gc_for_throughput
    from fastbook.edge.node import EdgeConfig, EdgeNode

    os.nice(nice)
    tune_gc_for_throughput()  # as fastbook-edge does at start-up

    node = _TracingNode(EdgeNode(EdgeConfig(client_id=client_id, market=MARKET)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner = NodeRunner(node, RunnerConfig(broker, f"bench-{client_id}")).start()
    stop.wait()
    runner.stop()
    Path(out_path).write_text(json.dumps(node.trace))
    return 0


# ---- raw broker rate -----------------------------------------------------------------------------


def raw_rate(port: int, payload: bytes, count: int) -> float:
    """QoS1 messages/s from one paho publisher to one paho subscriber through the broker."""
    received = 0
    done = threading.Event()
    first_sent = 0.0
    last_received = 0.0

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal received, last_received
        received += 1
        if received == count:
            last_received = time.monotonic()
            done.set()

    subscribed = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-sub-{port}")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_connect = lambda c, *_: c.subscribe("bench/raw", qos=1)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-pub-{port}")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        if not subscribed.wait(10):
            raise TimeoutError("raw subscriber not subscribed")
        first_sent = time.monotonic()
        for _ in range(count):
            pub.publish("bench/raw", payload, qos=1)
        if not done.wait(300):
            raise TimeoutError(f"raw: only {received}/{count} messages arrived")
    finally:
        pub.loop_stop()
        sub.loop_stop()
        pub.disconnect()
        sub.disconnect()
    return count / (last_received - first_sent)


# ---- where the CPU goes ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each process of a run used between start() and stop() (every order applied
    everywhere), per role: in microseconds per order, and as a share of a core over the seconds
    to applied-everywhere. On a 2-core machine every process (the bench's own publisher and report
    reader included) competes for the same cores, so this is where an end-to-end figure's time
    goes. /proc counts in 10 ms ticks: figures for runs of a few thousand orders are coarse. (The
    count stops when the bench has seen every replica's status at the last seq, a little after the
    last one applied it, so the share of a core can read slightly high.)"""

    def __init__(self, roles: dict[str, int]) -> None:
        self.roles = roles  # role -> pid
        self.start_cpu: dict[str, float | None] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self.start_cpu = {role: cpu_seconds(pid) for role, pid in self.roles.items()}

    def stop(self) -> None:
        for role, pid in self.roles.items():
            before, after = self.start_cpu.get(role), cpu_seconds(pid)
            if before is not None and after is not None:
                self.used[role] = after - before

    def report(self, orders: int, seconds: float) -> dict[str, Any]:
        used = self.used.items()
        return {
            "cpu_us_per_order": {role: round(1e6 * cpu / max(orders, 1), 2) for role, cpu in used},
            "percent_of_a_core": {role: round(100 * cpu / seconds, 1) for role, cpu in used},
        }


# ---- the system under test -----------------------------------------------------------------------

LOG_QOS: list[int | None] = [None]  # --log-qos: the sequencer's LOG_QOS for this run (None: as built)


def fastbook_program(name: str) -> list[str]:
    """The command line of fastbook-<name> (broker or sequencer), with the log's QoS overridden if
    --log-qos asked for it (a module constant: the program is started through Python to set it)."""
    if LOG_QOS[0] is None:
        return [str(BIN / f"fastbook-{name}")]
    code = (f"import sys, fastbook.log.sequencer as s; s.LOG_QOS = {LOG_QOS[0]}; "
            f"from fastbook.apps.cli.{name} import main; sys.exit(main())")
    return [sys.executable, "-c", code]



BROKERS = ("amqtt", "mosquitto", "nats")


class System:
    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.replica_urls: list[str] = []  # per replica, if not self.url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.roles: dict[str, int] = {}  # role -> pid of the broker and sequencer processes
        self.cluster: Any = None  # tests.support.nats_cluster.NatsCluster
        data = workdir / "data"
        if kind == "nats":
            self._start_nats(data)
        elif kind == "amqtt":
            broker = self._spawn("broker", [*fastbook_program("broker"), "--port", str(self.port),
                                            "--data-dir", str(data), "--market", MARKET, "-q",
                                            *SEQUENCER_ARGS])
            self.roles["broker + sequencer"] = broker.pid
        else:
            conf = workdir / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                "max_queued_messages 0\nmax_inflight_messages 1000\nset_tcp_nodelay true\nlog_type error\n"
            )
            mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            broker = self._spawn("mosquitto", [mosquitto, "-c", str(conf)])
            wait_until(lambda: port_open(self.port), 10, "mosquitto")
            sequencer = self._spawn("sequencer", [*fastbook_program("sequencer"), "--broker", self.url,
                                                  "--data-dir", str(data), "--market", MARKET, "-q",
                                                  *SEQUENCER_ARGS])
            self.roles |= {"mosquitto": broker.pid, "sequencer": sequencer.pid}
        wait_until(lambda: port_open(self.port), 30, "broker")

    def _start_nats(self, data: Path) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package
        from tests.support.nats_cluster import start_nats_cluster

        self.cluster = cluster = start_nats_cluster(self.workdir / "nats")
        first = cluster.nodes[0]
        self.port, self.url = first.mqtt_port, first.url
        self.replica_urls = [cluster.urls(i % 3, (i + 1) % 3, (i + 2) % 3) for i in range(REPLICAS)]
        sequencer = self._spawn("sequencer", [*fastbook_program("sequencer"), "--broker",
                                              cluster.urls(0, 1, 2), "--data-dir", str(data),
                                              "--market", MARKET, "-q", *SEQUENCER_ARGS])
        self.roles |= {f"nats {n.name}": n.proc.pid for n in cluster.nodes}
        self.roles["sequencer"] = sequencer.pid
        with StatusWatcher(self.url, MARKET) as watcher:
            wait_until(lambda: watcher.snapshot().book_version is not None, 60, "the sequencer's book")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def start_replicas(self, tag: str) -> list[tuple[subprocess.Popen[bytes], Path]]:
        out = []
        for i in range(REPLICAS):
            trace = self.workdir / f"trace-{tag}-{i}.json"
            args = [sys.executable, __file__, "--replica", str(REPLICA_NICE[0])]
            args += [self.replica_urls[i] if self.replica_urls else self.url, f"r{i}-{tag}", str(trace)]
            proc = self._spawn(f"replica-{tag}-{i}", args)
            out.append((proc, trace))
        return out

    def stop(self) -> None:
        stop_processes(self.procs, 15)
        if self.cluster is not None:
            self.cluster.stop()


# The start of an accepted or a rejected report as the sequencer writes them (docs/wire.md). Inside
# a JSON string every `"` is escaped, so neither can match there.
ACCEPTED = b'{"type":"accepted",'
REJECTED = b'{"type":"rejected",'


class Submitter:
    """Publishes orders, counts the answers (accepted/rejected reports) and follows the head."""

    def __init__(self, url: str, client: str) -> None:
        self.topics = Topics(MARKET)
        self.client = client
        self.report_messages: list[bytes] = []  # read after the run (accepted_seqs)
        self.answers = 0
        self.head = 0
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.runner = NodeRunner(self, RunnerConfig(url, f"bench-submitter-{client}",
                                                    batching=BatchPolicy(max_messages=20000)))

    # Node interface
    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self.topics.reports(self.client), 1), (self.topics.book, 1)]

    def will(self) -> Outgoing | None:
        return None

    def on_connected(self) -> list[Outgoing]:
        self.ready.set()
        return []

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        for topic, payload in messages:
            if topic == self.topics.book:
                self.head = json.loads(payload)["version"]
                continue
            # While the run is timed this process only counts the answers: two substring counts
            # instead of json.loads of every report (~3 us per order, CPU that the system under
            # test shares on 2 cores). The reports are read in full after the run.
            self.report_messages.append(payload)
            self.answers += payload.count(ACCEPTED) + payload.count(REJECTED)
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        return []

    def close(self) -> list[Outgoing]:
        return []

    def accepted_seqs(self) -> dict[str, int]:
        """Client order id -> the seq that accepted it, from every report received (after the run)."""
        return {
            report["id"]: report["seq"]
            for payload in list(self.report_messages)
            for report in json.loads(payload)
            if report["type"] == "accepted"
        }


def order_flow(n: int, seed: int, tag: str) -> list[dict[str, Any]]:
    """New limit orders around 100.00 (about a third cross), ids tag-0..tag-(n-1)."""
    rng = random.Random(seed)
    flow = []
    for i in range(n):
        side = "buy" if rng.random() < 0.5 else "sell"
        offset = rng.randint(-20, 60)  # mostly passive, sometimes crossing
        price = 10000 - offset if side == "buy" else 10000 + offset
        flow.append({"op": "new", "id": f"{tag}-{i}", "side": side, "price": f"{price / 100:.2f}",
                     "qty": f"{rng.randint(1, 1000) / 1000:.3f}"})
    return flow


def run_e2e(
    system: System, n: int, per_message: int, tag: str, rate: float | None = None
) -> dict[str, Any]:
    replicas = system.start_replicas(tag)
    submitter = Submitter(system.url, f"bench-{tag}")
    submitter.runner.start()
    try:
        wait_until(submitter.ready.is_set, 30, "submitter")
        names = [f"r{i}-{tag}" for i in range(REPLICAS)]
        with StatusWatcher(system.url, MARKET) as watcher:
            wait_until(lambda: watcher.snapshot().converged(names), 60, "replicas in sync")
        start_head = submitter.head
        flow = order_flow(n, 7, tag)
        messages: list[Outgoing] = []
        message_of: dict[str, int] = {}  # client order id -> index of the message that carries it
        for i in range(0, n, per_message):
            chunk = flow[i : i + per_message]
            body = chunk[0] if per_message == 1 else chunk
            message_of.update((order["id"], len(messages)) for order in chunk)
            messages.append(Outgoing(submitter.topics.orders(submitter.client), json.dumps(body).encode()))
        sent_at = [0.0] * len(messages)  # when each message was handed to paho
        client = submitter.runner.connection.client  # the bench stamps the publish itself

        def publish(first: int, count: int) -> list[Outgoing]:
            # On the runner thread: stamp each message as it is handed to paho.
            for k in range(first, first + count):
                sent_at[k] = time.monotonic()
                client.publish(messages[k].topic, messages[k].payload, qos=1)
            return []

        roles = dict(system.roles)
        roles |= {f"replica {i}": proc.pid for i, (proc, _trace) in enumerate(replicas)}
        roles["bench (publisher, report reader)"] = os.getpid()
        meter = CpuMeter(roles)
        meter.start()
        t0 = time.monotonic()
        if rate is None:
            submitter.runner.call(lambda: publish(0, len(messages))).result(600)
        else:  # open loop at a fixed message rate: latency without saturation queueing
            for k in range(len(messages)):
                delay = t0 + k / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                submitter.runner.call(lambda k=k: publish(k, 1))
        publish_seconds = time.monotonic() - t0
        wait_until(lambda: submitter.answers >= n, 600, f"{n} answers")
        answered_seconds = time.monotonic() - t0  # the sequencer's side: every order journaled + answered
        with StatusWatcher(system.url, MARKET) as watcher:  # (the traces are written at exit)
            wait_until(lambda: watcher.snapshot().converged(names), 600, "every replica at the last seq")
        meter.stop()
        seq_of = submitter.accepted_seqs()
        last_seq = max(seq_of.values())
        time.sleep(0.5)
    finally:
        submitter.runner.stop()
        for proc, _trace in replicas:
            proc.send_signal(signal.SIGTERM)
    traces = []
    for proc, trace in replicas:
        proc.wait(30)
        traces.append(json.loads(trace.read_text()))
    applied_at: list[float] = []
    latencies: list[float] = []
    for trace in traces:
        versions = [v for _t, v in trace]
        if not versions or versions[-1] < last_seq:
            stopped = versions[-1] if versions else None
            raise RuntimeError(f"a replica stopped at version {stopped} < {last_seq}")
        applied_at.append(trace[bisect_left(versions, last_seq)][0])
    for order_id, seq in seq_of.items():
        everywhere = max(trace[bisect_left([v for _t, v in trace], seq)][0] for trace in traces)
        latencies.append(everywhere - sent_at[message_of[order_id]])
    latencies.sort()
    accepted = len(seq_of)
    elapsed = max(applied_at) - t0
    return {
        "orders": n,
        "per_message": per_message,
        "paced_messages_per_second": rate,
        "accepted": accepted,
        "start_version": start_head,
        "publish_seconds": round(publish_seconds, 3),
        "seconds_to_all_reports": round(answered_seconds, 3),
        "seconds_to_applied_everywhere": round(elapsed, 3),
        "orders_per_second_applied_everywhere": round(accepted / elapsed),
        "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        # How many times each replica's version moved (about one per log message it applied): the
        # orders per applied batch show how much per-message work was shared.
        "replica_version_moves": [sum(1 for _t, v in trace if v > start_head) for trace in traces],
        "cpu": meter.report(accepted, elapsed),
        "_latencies_ms": [round(x * 1000, 4) for x in latencies],  # (for the plot; not printed)
    }


def order_payload_sizes() -> tuple[bytes, int]:
    one = json.dumps(order_flow(1, 1, "raw")[0]).encode()
    return one, len(one)


def bench_broker(
    kind: str, single: int, bulk: int, bulk_size: int, raw_count: int, paced_rate: int = 0
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"fastbook-e2e-{kind}-"))
    system = System(kind, workdir)
    result: dict[str, Any] = {"broker": kind, "replica_nice": REPLICA_NICE[0]}
    try:
        one_order, size = order_payload_sizes()
        bulk_payload = json.dumps(order_flow(bulk_size, 1, "raw")).encode()
        result["raw_msgs_per_second_one_order_payload"] = round(raw_rate(system.port, one_order, raw_count))
        bulk_raw_count = max(50, raw_count // 20)
        bulk_msgs = raw_rate(system.port, bulk_payload, bulk_raw_count)
        result["raw_msgs_per_second_bulk_payload"] = round(bulk_msgs)
        result["raw_orders_per_second_bulk_payload"] = round(bulk_msgs * bulk_size)
        result["one_order_per_message"] = run_e2e(system, single, 1, "single")
        result["bulk"] = run_e2e(system, bulk, bulk_size, "bulk")
        paced = paced_rate or PACED_RATES[kind]
        rates = sorted({paced, *SWEEP_RATES}) if kind == "mosquitto" else [paced]
        for rate in rates:
            if kind == "nats":  # no floor: it relays through one broker
                result["latency_paced"] = run_e2e(system, rate * 3, 1, f"paced{rate}", rate=rate)
                continue
            row = paced_against_floor(system, workdir, rate, one_order)
            if rate == paced:
                result["latency_paced"] = row
            else:
                result.setdefault("paced_sweep", []).append(row)
        single_rate = result["one_order_per_message"]["orders_per_second_applied_everywhere"]
        result["single_vs_raw"] = round(single_rate / result["raw_msgs_per_second_one_order_payload"], 3)
    finally:
        system.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return result


# ---- the floor, paced runs against it, the plot ------------------------------------------------------

PACED_RATES = {"amqtt": 500, "mosquitto": 1000, "nats": 200}  # messages/s, well below saturation
SWEEP_RATES: list[int] = []  # --sweep: more paced rates on mosquitto (each against its own floor run)
FLOOR = [True]  # --no-floor leaves the floor runs out


def paced_against_floor(system: System, workdir: Path, rate: int, one_order: bytes) -> dict[str, Any]:
    """fastbook paced at `rate` orders/s (one per message) and, right after in the same run, the
    floor at the same rate through the same broker; every latency and CPU figure with its ratio."""
    from e2e_floor import run_floor

    row = run_e2e(system, rate * 3, 1, f"paced{rate}", rate=rate)
    if not FLOOR[0]:
        return row
    # The broker's own CPU while it relays the floor (for fastbook-broker: its idle sequencer too).
    broker_pid = system.roles.get("broker + sequencer", system.roles.get("mosquitto"))
    floor = run_floor(system.port, workdir, rate, rate * 3, one_order, 1, cpu_seconds, broker_pid)
    row["floor"] = floor
    ratios: dict[str, float] = {}
    for key in ("latency_p50_ms", "latency_p99_ms"):
        if floor[key]:
            ratios[key.replace("_ms", "_vs_floor")] = round(row[key] / floor[key], 2)
    per_order = row["cpu"]["cpu_us_per_order"]
    relay = floor["cpu_us_per_message"]["relay"]
    subscriber = floor["cpu_us_per_message"]["bare subscriber (mean of 3)"]
    for role, us in per_order.items():
        if role.startswith("replica") and subscriber:
            ratios[f"cpu {role} vs bare subscriber"] = round(us / subscriber, 2)
        elif role in ("sequencer", "broker + sequencer") and relay:
            ratios[f"cpu {role} vs relay"] = round(us / relay, 2)
    broker = floor["cpu_us_per_message"].get("broker")
    if "broker + sequencer" in per_order and relay and broker:
        # the embedded broker's own share: against amqtt relaying the floor plus the floor's relay
        both = per_order["broker + sequencer"]
        ratios["cpu broker + sequencer vs broker + relay"] = round(both / (broker + relay), 2)
    row["vs_floor"] = ratios
    return row


def plot_latencies(results: list[dict[str, Any]], path: Path) -> None:
    """Per broker: the paced run's latency distribution, fastbook against the floor, p50/p99 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.2), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        row = result["latency_paced"]
        series = [("fastbook", row["_latencies_ms"], "tab:blue")]
        if "floor" in row:
            series.append(("floor (paho relay + fdatasync)", row["floor"]["_latencies_ms"], "tab:gray"))
        # Log-spaced bins on a log axis: the two distributions may lie orders of magnitude apart.
        low = max(0.01, min(lat[0] for _n, lat, _c in series))
        top = max(lat[-1] for _n, lat, _c in series)
        bins = [low * (top / low) ** (i / 80) for i in range(81)]
        for name, lat, color in series:
            p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
            ax.hist(lat, bins=bins, alpha=0.55, color=color, label=f"{name}: p50 {p50:.2f}, p99 {p99:.2f} ms")
            ax.axvline(p50, color=color, linestyle="-", linewidth=1)
            ax.axvline(p99, color=color, linestyle="--", linewidth=1)
        ax.set_title(f"{result['broker']}: submit -> applied at 3 replicas, "
                     f"{row['paced_messages_per_second']} msg/s")
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale); solid p50, dashed p99")
        ax.set_ylabel("messages")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def printable(value: Any) -> Any:
    """The figures without the raw latency lists (keys starting with '_')."""
    if isinstance(value, dict):
        return {k: printable(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--replica":
        return replica_worker(sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[2]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="amqtt,mosquitto",
                   help=f"comma-separated, from {', '.join(BROKERS)} (default amqtt,mosquitto)")
    p.add_argument("--single", type=int, default=0, help="orders sent one per message (default per broker)")
    p.add_argument("--bulk", type=int, default=0, help="orders sent in bulk messages (default per broker)")
    p.add_argument("--bulk-size", type=int, default=500, help="orders per bulk message")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--paced-rate", type=int, default=0, metavar="N",
                   help="messages/s of the paced latency run (default 500 on amqtt, 1000 on mosquitto)")
    p.add_argument("--sweep", default="200,1000,3000", metavar="RATES",
                   help="more paced rates on mosquitto, each against the floor ('' for none)")
    p.add_argument("--no-floor", action="store_true", help="leave out the floor runs")
    p.add_argument("--log-qos", type=int, choices=(0, 1), default=None,
                   help="publish the log with this QoS (default: the sequencer's LOG_QOS)")
    p.add_argument("--png", type=Path, default=None, help="draw the paced latency distributions here")
    p.add_argument("--replica-nice", type=int, default=0, metavar="N",
                   help="run the replica processes at this niceness (default 0: the same priority as the "
                        "sequencer; all of them share 2 cores here, where on a deployment each edge runs on "
                        "its client's machine)")
    p.add_argument("--batch-window", type=float, default=None, metavar="MS",
                   help="the sequencer's --batch-window (default: the program's default)")
    args = p.parse_args(argv)
    REPLICA_NICE[0] = args.replica_nice
    SWEEP_RATES[:] = [int(r) for r in args.sweep.split(",") if r.strip()]
    FLOOR[0] = not args.no_floor
    LOG_QOS[0] = args.log_qos
    if args.batch_window is not None:
        SEQUENCER_ARGS[:] = ["--batch-window", str(args.batch_window)]
    # (one-order-per-message orders, bulk orders, raw messages) per broker
    defaults = {"amqtt": (2000, 30000, 2000), "mosquitto": (20000, 200000, 20000),
                "nats": (2000, 30000, 2000)}
    kinds = [k.strip() for k in args.brokers.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in BROKERS]
    if unknown or not kinds:
        p.error(f"--brokers: unknown broker {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(BROKERS)}")
    results = []
    for kind in kinds:
        single, bulk, raw = defaults[kind]
        result = bench_broker(
            kind, args.single or single, args.bulk or bulk, args.bulk_size, raw, args.paced_rate
        )
        results.append(result)
        print(json.dumps(printable(result), indent=2), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps(printable(results), indent=2))
    if args.png:
        plot_latencies(results, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
