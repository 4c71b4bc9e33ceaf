"""Memory soak: sustained order flow for a set time, sampling the RSS of every process.

    /work/venv/bin/python bench/soak.py --minutes 3 [--kind mosquitto|amqtt] [--rate 1500]

Real processes on loopback: the broker (a private mosquitto, or fastbook-broker which also holds the
sequencer), fastbook-sequencer (mosquitto only) and `--edges` fastbook-edge replicas. Clients publish
random crossing flows at `--rate` commands/s; each client sends a cancel_all every few seconds so the
resting book stays bounded (a growing book would be data, not a leak). Every `--interval` seconds
VmRSS of each process is read from /proc/<pid>/status. At the end a table, and per process the
growth after warm-up, per 100k commands.

The sequencer runs with `--dedupe-window` (default here 50,000 versions, so the window fills within
the first minute at the default rate and the run then shows the steady state; in production the
default is 1,000,000): its dedupe map is bounded by the window, and its journal index keeps one
8-byte offset per 64 seqs. What still grows by design is tiny: that index (0.125 bytes per seq) and
the journal and snapshot files on disk (not memory).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from tests.integration.test_integration_cluster import random_flow  # noqa: E402
from tests.support.brokers import Proc, wait_for  # noqa: E402
from tests.support.cluster import Cluster, Traffic  # noqa: E402


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PacedLoad:
    """`clients` clients publishing random flows at `rate` commands/s in total, with a cancel_all
    per client every `flush_every` seconds."""

    def __init__(
        self, traffic: Traffic, clients: int, rate: float, seed: int, flush_every: float = 5.0
    ) -> None:
        self.traffic = traffic
        self.names = [f"soak-{i}" for i in range(clients)]
        self.rate = rate
        self.rng = random.Random(seed)
        self.flush_every = flush_every
        self.sent = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-load", daemon=True)

    def _run(self) -> None:
        per_tick = max(1, round(self.rate / 10 / len(self.names)))
        counters = dict.fromkeys(self.names, 0)
        began = last_flush = time.monotonic()
        ticks = 0
        while not self.stop_event.is_set():
            for name in self.names:
                flow = random_flow(self.rng, name, per_tick, counters[name])
                counters[name] += per_tick
                self.traffic.publish_orders(name, flow, per_message=min(20, per_tick))
                self.sent += len(flow)
            now = time.monotonic()
            if now - last_flush >= self.flush_every:
                last_flush = now
                for name in self.names:
                    self.traffic.publish_orders(name, [{"op": "cancel_all"}])
                    self.sent += 1
            ticks += 1
            # Pace to the target rate: the next tick is due at began + ticks * 0.1 s.
            delay = began + ticks * 0.1 - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--kind", choices=("mosquitto", "amqtt"), default="mosquitto")
    parser.add_argument("--rate", type=float, default=1500.0, help="commands/s in total (default 1500)")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--edges", type=int, default=3)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--dedupe-window", type=int, default=50_000, help="the sequencer's --dedupe-window (default 50000)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        cluster = Cluster(args.kind, Path(workdir), ["--dedupe-window", str(args.dedupe_window)])
        try:
            edge_names = [f"edge-{i}" for i in range(args.edges)]
            for name in edge_names:
                cluster.start_edge(name)
            cluster.wait_converged(edge_names, 30)
            procs: dict[str, Proc] = {}
            if args.kind == "mosquitto":
                procs["mosquitto"] = cluster.broker.procs[0]
                procs["sequencer"] = cluster.sequencer
            else:
                procs["broker+seq"] = cluster.sequencer
            procs |= {name: cluster.edges[name] for name in edge_names}
            with Traffic(cluster.url, cluster.topics, "soak-traffic") as traffic:
                load = PacedLoad(traffic, args.clients, args.rate, args.seed)
                samples: list[tuple[float, int, int, dict[str, int | None]]] = []
                began = time.monotonic()
                load.start()
                header = f"{'t[s]':>6} {'sent':>9} {'version':>9} " + " ".join(f"{n:>11}" for n in procs)
                print(
                    f"soak on {args.kind}: {args.rate:.0f} cmd/s, {args.minutes} min; RSS in MiB", flush=True
                )
                print(header, flush=True)
                while time.monotonic() - began < args.minutes * 60:
                    time.sleep(args.interval)  # the sampling period
                    cluster.check_alive()
                    version = cluster.status().book_version or 0
                    rss = {name: rss_kib(proc.pid) for name, proc in procs.items()}
                    samples.append((time.monotonic() - began, load.sent, version, rss))
                    cells = " ".join(f"{(v or 0) / 1024:>11.1f}" for v in rss.values())
                    print(f"{samples[-1][0]:>6.0f} {load.sent:>9} {version:>9} {cells}", flush=True)
                load.stop()
                wait_for(lambda: cluster.status().converged(edge_names), 60, "replicas to converge")
                final = cluster.status()
                achieved = load.sent / (time.monotonic() - began)
        finally:
            cluster.stop()

    print(
        f"\nsent {load.sent} commands ({achieved:.0f}/s), final version {final.book_version}, "
        "replicas converged"
    )
    # Growth after warm-up: from the sample at 25% of the run to the last one.
    warm = samples[len(samples) // 4]
    last = samples[-1]
    versions = max(1, last[2] - warm[2])
    print(f"growth from t={warm[0]:.0f}s to t={last[0]:.0f}s ({versions} versions):")
    verdicts = []
    for name in procs:
        first_kib, last_kib = warm[3][name] or 0, last[3][name] or 0
        delta = last_kib - first_kib
        per_100k = delta / versions * 100_000 / 1024
        flat = abs(delta) <= max(2048, first_kib * 0.05)
        verdicts.append(flat)
        print(
            f"  {name:>11}: {first_kib / 1024:7.1f} -> {last_kib / 1024:7.1f} MiB  ({delta / 1024:+.1f} MiB, "
            f"{per_100k:+.1f} MiB per 100k versions)  {'flat' if flat else 'GROWS'}"
        )
    print(
        f"note: the sequencer's dedupe map holds the ids of the last {args.dedupe_window} versions (and of "
        "open orders); measure after the window has filled (the warm-up sample) for the steady state."
    )
    print(
        "memory flat for every process" if all(verdicts) else "memory NOT flat for some process (see above)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
