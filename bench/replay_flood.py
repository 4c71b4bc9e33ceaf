"""Replay flood (issue 15, D1): other clients' order latency and the sequencer's memory while one
authenticated trader floods it with whole-journal replay requests.

    .venv/bin/python bench/replay_flood.py [--entries 207000] [--requests 300] [--orders 300]

Fills a data dir with `--entries` journal entries (news and cancels, in batches, in process), starts
mosquitto (loopback, a free port) and `fastbook-sequencer` on it, then measures one client's order
round trip (publish on orders/carol -> its report on reports/carol), one order every 20 ms:

1. unloaded;
2. while "bob" sends `--requests` `{"from":1,"to":null}` replay requests at QoS 0 at once (as
   `yes '{"from":1,"to":null}' | head -300 | mosquitto_pub -l -q 0 ...` did) and drains its answers
   (`--distinct`: `{"from":1..300,"to":null}`, which repeats of a queued request cannot absorb).

It prints p50/p99 of both, their ratio (target <= 2), the sequencer's RSS before and at its peak
during the flood (target growth <= 50 MB), and what bob received (entries, refusals).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.wire.log import ReplayRefused, decode_log_message
from fastbook.wire.market import MarketSpec
from fastbook.wire.topics import Topics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_bench import free_port, port_open, wait_until  # noqa: E402  (the same process helpers)

MARKET = "BTC-USD"
T = Topics(MARKET)
BIN = Path(sys.executable).parent


def fill_journal(data_dir: Path, entries: int) -> None:
    """`entries` journal entries: batches of 1,000 news and their 1,000 cancels (a small book)."""
    node = SequencerNode(SequencerConfig(MarketSpec.parse(MARKET), data_dir))
    n = 0
    while node.version < entries:
        size = min(1000, (entries - node.version) // 2 or 1)
        news = [
            {"op": "new", "id": f"f{n + i}", "side": "buy", "price": "90.00", "qty": "1"} for i in range(size)
        ]
        cancels = [{"op": "cancel", "id": f"f{n + i}"} for i in range(size)]
        node.on_messages([(T.orders("filler"), json.dumps(news + cancels).encode())])
        n += size
    node.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Client:
    def __init__(self, port: int, client_id: str, topic: str, on_message: Any) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_message = lambda _c, _u, msg: on_message(msg.payload)
        self.client.connect("127.0.0.1", port)
        sock = self.client.socket()
        if isinstance(sock, socket.socket):  # as fastbook's own connections: no Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError(f"{client_id} not subscribed")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class LatencyProbe:
    """carol: one order every `gap` seconds, its report's round trip."""

    def __init__(self, port: int) -> None:
        self.sent: dict[str, float] = {}
        self.rtt: dict[str, float] = {}
        self.client = Client(port, "bench-carol", T.reports("carol"), self._on_report)
        self.n = 0

    def _on_report(self, payload: bytes) -> None:
        now = time.perf_counter()
        for report in json.loads(payload):
            sent = self.sent.get(report.get("id"))
            if sent is not None and report["id"] not in self.rtt:
                self.rtt[report["id"]] = now - sent

    def run(self, orders: int, gap: float) -> list[float]:
        ids = []
        for _ in range(orders):
            self.n += 1
            coid = f"c{self.n}"
            ids.append(coid)
            order = {"op": "new", "id": coid, "side": "buy", "price": "1.00", "qty": "1"}
            payload = json.dumps(order).encode()
            self.sent[coid] = time.perf_counter()
            self.client.client.publish(T.orders("carol"), payload, qos=1)
            time.sleep(gap)
        wait_until(lambda: all(i in self.rtt for i in ids), 120, "carol's reports")
        return sorted(self.rtt[i] for i in ids)


class Flooder:
    def __init__(self, port: int) -> None:
        self.entries = 0
        self.messages = 0
        self.refusals = 0
        self.bytes = 0
        self.last_at = 0.0
        self.client = Client(port, "bench-bob", T.replay_response("bob"), self._on_answer)

    def _on_answer(self, payload: bytes) -> None:
        self.messages += 1
        self.bytes += len(payload)
        self.last_at = time.monotonic()
        try:
            self.entries += len(decode_log_message(payload))
        except ReplayRefused:
            self.refusals += 1

    def flood(self, requests: int, distinct: bool) -> None:
        for i in range(requests):
            first = i + 1 if distinct else 1
            self.client.client.publish(T.replay_request("bob"), b'{"from":%d,"to":null}' % first, qos=0)


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=207_000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--orders", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between carol's orders")
    ap.add_argument(
        "--distinct",
        action="store_true",
        help='distinct requests ({"from": 1..N}) instead of N identical ones',
    )
    ap.add_argument(
        "--sequencer",
        default=str(BIN / "fastbook-sequencer"),
        help="the fastbook-sequencer program (e.g. another checkout's, to compare)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dir (data, process logs)")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="replay-flood-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        data = workdir / "data"
        started = time.monotonic()
        fill_journal(data / MARKET, args.entries)  # (the sequencer keeps a market in DIR/<market>)
        print(
            f"journal: {args.entries} entries "
            f"({(data / MARKET / 'journal.log').stat().st_size / 1e6:.1f} MB) "
            f"in {time.monotonic() - started:.1f} s"
        )
        port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nset_tcp_nodelay true\nlog_type error\n"
        )
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        log = open(workdir / "processes.log", "ab")  # noqa: SIM115 - closed with the processes
        procs.append(subprocess.Popen([mosquitto, "-c", str(conf)], stdout=log, stderr=log))
        wait_until(lambda: port_open(port), 10, "mosquitto")
        sequencer = subprocess.Popen(
            [args.sequencer, "--broker", f"mqtt://127.0.0.1:{port}", "--data-dir", str(data),
             "--market", MARKET, "-q"], stdout=log, stderr=log)  # fmt: skip
        procs.append(sequencer)
        book: list[bytes] = []
        watcher = Client(port, "bench-book", T.book, book.append)
        wait_until(lambda: book, 120, "the sequencer's retained book")  # (it recovered and is subscribed)
        watcher.stop()
        probe = LatencyProbe(port)
        probe.run(20, args.gap)  # warm up (connects, first snapshot)
        unloaded = probe.run(args.orders, args.gap)
        flooder = Flooder(port)
        rss_before = rss_bytes(sequencer.pid)
        peak = [rss_before]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], rss_bytes(sequencer.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        flood_start = time.monotonic()
        flooder.flood(args.requests, args.distinct)
        loaded = probe.run(args.orders, args.gap)
        # ... and until bob's answers stop (its accepted requests are served to the end)
        wait_until(lambda: time.monotonic() - max(flooder.last_at, flood_start) > 2.0, 600, "bob's answers")
        sampling.set()
        sampler.join()
        served_for = flooder.last_at - flood_start
        p50u, p99u = percentile(unloaded, 50) * 1e3, percentile(unloaded, 99) * 1e3
        p50l, p99l = percentile(loaded, 50) * 1e3, percentile(loaded, 99) * 1e3
        growth = (peak[0] - rss_before) / 1e6
        print(f"carol's order round trip, {args.orders} orders, one per {args.gap * 1e3:.0f} ms:")
        print(f"  unloaded:          p50 {p50u:.2f} ms  p99 {p99u:.2f} ms  max {unloaded[-1] * 1e3:.2f} ms")
        print(f"  under the flood:   p50 {p50l:.2f} ms  p99 {p99l:.2f} ms  max {loaded[-1] * 1e3:.2f} ms")
        print(f"  p99 ratio {p99l / p99u:.2f} (target <= 2)")
        print(
            f"sequencer RSS: {rss_before / 1e6:.1f} MB before, peak {peak[0] / 1e6:.1f} MB during "
            f"(+{growth:.1f} MB, target <= +50 MB)"
        )
        print(
            f"bob ({args.requests} requests): {flooder.entries} entries in {flooder.messages} messages "
            f"({flooder.bytes / 1e6:.1f} MB) over {served_for:.1f} s, {flooder.refusals} refusals"
        )
        probe.client.stop()
        flooder.client.stop()
        return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
