"""A real sequencer process's CPU per lone order: fastbook-sequencer on a private mosquitto (or
fastbook-broker, `--broker amqtt`), driven by one client that sends one order per message and waits
for its report before the next (closed loop, paced at `--rate`), so every batch holds one order.

Measured over `--orders` orders after `--warm` unmeasured ones: the process's CPU from /proc (user
and system, 10 ms ticks: use a thousand orders or more) and, with `--callgrind`, its user-space
instructions (valgrind's callgrind, zeroed at the window's start and dumped at its end with
`callgrind_control`; robust to other load on the machine, ~50x slower: use `--rate 20`). The
kernel's work (syscalls, loopback TCP) is in the /proc figure only. `--idle S` also measures S
seconds with no orders (the process's fixed per-second cost). `--followers N` adds N bare paho
subscribers of the log, at QoS 1 as an edge subscribes: with `--broker amqtt` the figure then
includes the broker's fan-out of the log to N replicas.

`--relay` runs the floor's relay (bench/e2e_floor.py: receive, write, fdatasync, republish, one
paho client on one thread) in the sequencer's place, driven the same way (each message waits for
the relay's copy), for the same figures measured the same way: the floor the issue compares the
sequencer's CPU with, here in instructions, which the machine's load does not move.

    python bench/sequencer_lone.py --orders 2000 --rate 1000
    python bench/sequencer_lone.py --orders 300 --rate 20 --callgrind --idle 5
    python bench/sequencer_lone.py --orders 300 --rate 20 --callgrind --relay
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
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
from e2e_bench import free_port, port_open, stop_processes, wait_until
from e2e_floor import IN_TOPIC, LOG_TOPIC
from paho.mqtt.enums import CallbackAPIVersion

MARKET = "BTC-USD"
CLIENT = "lone"
SEQ = re.compile(rb'"seq":(\d+)')


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def order(rng: random.Random, i: int) -> bytes:
    side = "buy" if rng.random() < 0.5 else "sell"
    offset = rng.randint(-20, 60)  # mostly passive, sometimes crossing (as bench/e2e_bench.py)
    price = 10000 - offset if side == "buy" else 10000 + offset
    body = {"op": "new", "id": f"o-{i}", "side": side, "price": f"{price / 100:.2f}",
            "qty": f"{rng.randint(1, 1000) / 1000:.3f}"}
    return json.dumps(body).encode()


class LoneClient:
    """Publishes one order at a time and waits for its report (paho's network thread); with
    `relay`, to the floor relay's input, waiting for its copy on the relay's output."""

    def __init__(self, port: int, relay: bool = False) -> None:
        self.relay = relay
        self.orders_topic = IN_TOPIC if relay else f"fastbook/{MARKET}/orders/{CLIENT}"
        self.answers = 0
        self.last_seq = 0  # the log position of the last report's command (what a replica must reach)
        self.answered = threading.Condition()
        self.book = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{CLIENT}-publisher")
        client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(  # no Nagle: one order at a time
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        if relay:
            client.on_subscribe = lambda *_: self.book.set()
            client.subscribe(LOG_TOPIC, 1)
        else:
            client.subscribe([(f"fastbook/{MARKET}/reports/{CLIENT}", 1), (f"fastbook/{MARKET}/book", 0)])
        self.client = client

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        if self.relay:
            with self.answered:
                self.answers += 1
                self.answered.notify_all()
            return
        if message.topic.endswith("/book"):
            self.book.set()
            return
        with self.answered:
            payload = message.payload
            self.answers += payload.count(b'"type":"accepted"') + payload.count(b'"type":"rejected"')
            self.last_seq = max([self.last_seq, *map(int, SEQ.findall(payload))])
            self.answered.notify_all()

    def send(self, rng: random.Random, first: int, count: int, rate: float) -> None:
        due = time.monotonic()
        for i in range(first, first + count):
            want = self.answers + 1
            self.client.publish(self.orders_topic, order(rng, i), qos=1)
            with self.answered:
                if not self.answered.wait_for(lambda want=want: self.answers >= want, 60):  # type: ignore[misc]
                    raise TimeoutError(f"no report for order {i}")
            due += 1.0 / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class LogFollower:
    """A bare subscriber of the market's log (QoS 1, as an edge subscribes): only counts."""

    def __init__(self, port: int, name: str) -> None:
        self.messages = 0
        self.subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name)
        client.on_connect = lambda c, *_: c.subscribe(f"fastbook/{MARKET}/log", qos=1)
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client

    def _on_message(self, _client: Any, _userdata: Any, _message: paho.MQTTMessage) -> None:
        self.messages += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def callgrind_total(path: Path) -> int | None:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return None


def callgrind_wrap(work: Path, name: str) -> list[str]:
    """The command prefix that runs a program under callgrind, its dumps in `work/name.out.N`."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/{name}.out"]


def callgrind_totals(work: Path, name: str) -> list[int | None]:
    """The instruction totals of `name`'s dumps, in the order they were made."""
    dumps = sorted(work.glob(f"{name}.out.*"), key=lambda f: int(f.name.rsplit(".", 1)[1]))
    return [callgrind_total(f) for f in dumps]


def add_callgrind_figures(result: dict[str, Any], work: Path, name: str, orders: int, idle: float) -> None:
    """Instructions per order (the first dump) and per idle second (the second, if `idle`)."""
    totals = callgrind_totals(work, name)
    if totals and totals[0] is not None:
        result["instructions_per_order"] = round(totals[0] / orders)
    if idle and len(totals) > 1 and totals[1] is not None:
        result["idle_instructions_per_s"] = round(totals[1] / idle)


def print_result(result: dict[str, Any], work: Path, keep: Path | None = None) -> int:
    """The run's figures as one JSON line; its callgrind dumps copied to `keep` (for
    callgrind_annotate); its work directory removed."""
    print(json.dumps(result))
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for dump in work.glob("cg.out*"):
            shutil.copy(dump, keep / dump.name)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def start_mosquitto(work: Path, port: int) -> subprocess.Popen[bytes]:
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 0\nset_tcp_nodelay true\nlog_type error\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)])
    wait_until(lambda: port_open(port), 10, "mosquitto")
    return proc


def start_program(work: Path, program: str, args: list[str], wrap: list[str],
                  stdin: int | None = None) -> subprocess.Popen[bytes]:
    """`fastbook.apps.cli.<program>`'s main in this interpreter (under `wrap`), logging to
    work/<program>.log."""
    code = f"import sys\nfrom fastbook.apps.cli.{program} import main\nsys.exit(main())"
    with open(work / f"{program}.log", "wb") as log:
        return subprocess.Popen([*wrap, sys.executable, "-c", code, *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=stdin)


def start_relay(work: Path, port: int, wrap: list[str]) -> subprocess.Popen[bytes]:
    """bench/e2e_floor.py's relay (QoS 1, as the floor runs it) under `wrap`, logging to
    work/relay.log (it prints READY once subscribed)."""
    floor = Path(__file__).with_name("e2e_floor.py")
    with open(work / "relay.log", "wb") as log:
        return subprocess.Popen([*wrap, sys.executable, str(floor), "relay", str(port), "1",
                                 str(work / "relay.journal")], stdout=log, stderr=subprocess.STDOUT)


def measure_idle(pid: int, seconds: float, callgrind: bool) -> float:
    """CPU ms per second of process `pid` over `seconds` with nothing sent (a callgrind dump
    "idle" of the same window if it runs under callgrind)."""
    if callgrind:
        callgrind_control("-z", str(pid))
    before = sum(cpu_seconds(pid))
    time.sleep(seconds)
    idle = sum(cpu_seconds(pid)) - before
    if callgrind:
        callgrind_control("-d", "idle", str(pid))
    return round(1e3 * idle / seconds, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", choices=("mosquitto", "amqtt"), default="mosquitto")
    p.add_argument("--orders", type=int, default=2000, help="lone orders measured")
    p.add_argument("--warm", type=int, default=100, help="lone orders sent first, not measured")
    p.add_argument("--rate", type=float, default=1000.0, help="orders/s at most (closed loop)")
    p.add_argument("--callgrind", action="store_true", help="run the sequencer under callgrind")
    p.add_argument("--idle", type=float, default=0.0, metavar="S", help="then S seconds with no orders")
    p.add_argument("--followers", type=int, default=0, metavar="N", help="bare log subscribers (QoS 1)")
    p.add_argument("--relay", action="store_true",
                   help="measure the floor's relay instead of the sequencer (mosquitto only)")
    p.add_argument("--keep-dumps", type=Path, metavar="DIR",
                   help="copy the callgrind dumps here (for callgrind_annotate)")
    args = p.parse_args()
    if args.relay and (args.broker != "mosquitto" or args.followers):
        p.error("--relay runs on mosquitto, without --followers")
    work = Path(tempfile.mkdtemp(prefix="fastbook-lone-"))
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    wrap = callgrind_wrap(work, "cg") if args.callgrind else []
    common = ["--data-dir", str(work / "data"), "--market", MARKET, "-q"]
    if args.broker == "mosquitto":
        procs.append(start_mosquitto(work, port))
        program, where = "sequencer", ["--broker", f"mqtt://127.0.0.1:{port}"]
    else:
        program, where = "broker", ["--port", str(port)]
    if args.relay:
        sequencer = start_relay(work, port, wrap)
    else:
        sequencer = start_program(work, program, [*where, *common], wrap)
    procs.append(sequencer)
    client: LoneClient | None = None
    followers: list[LogFollower] = []
    try:
        wait_until(lambda: port_open(port), 120, "the broker")
        followers = [LogFollower(port, f"follower-{i}") for i in range(args.followers)]
        for follower in followers:
            if not follower.subscribed.wait(120):
                raise TimeoutError("a log follower did not subscribe")
        if args.relay:
            log = work / "relay.log"
            wait_until(lambda: b"READY" in log.read_bytes(), 300, "the relay subscribed")
        client = LoneClient(port, relay=args.relay)
        if not client.book.wait(300):  # the sequencer's retained book: it is subscribed
            raise TimeoutError("no book from the sequencer" if not args.relay else "not subscribed")
        rng = random.Random(7)
        client.send(rng, 0, args.warm, args.rate)
        if args.callgrind:
            callgrind_control("-z", str(sequencer.pid))
        user0, sys0 = cpu_seconds(sequencer.pid)
        t0 = time.monotonic()
        client.send(rng, args.warm, args.orders, args.rate)
        seconds = time.monotonic() - t0
        user1, sys1 = cpu_seconds(sequencer.pid)
        result: dict[str, Any] = {
            "process": "floor relay" if args.relay else program,
            "broker": args.broker, "orders": args.orders, "rate": args.rate, "followers": args.followers,
            "achieved_rate": round(args.orders / seconds, 1),
            "cpu_us_per_order": {"user": round(1e6 * (user1 - user0) / args.orders),
                                 "system": round(1e6 * (sys1 - sys0) / args.orders)},
        }
        if args.callgrind:
            callgrind_control("-d", "orders", str(sequencer.pid))
        if args.idle:
            result["idle_cpu_ms_per_s"] = measure_idle(sequencer.pid, args.idle, args.callgrind)
        result["load_average"] = round(os.getloadavg()[0], 2)
    finally:
        if client is not None:
            client.close()
        for follower in followers:
            follower.close()
        stop_processes(procs, 60)
    if args.callgrind:
        add_callgrind_figures(result, work, "cg", args.orders, args.idle)
    return print_result(result, work, args.keep_dumps)


if __name__ == "__main__":
    sys.exit(main())
