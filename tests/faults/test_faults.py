"""Fault injection: nothing accepted is ever lost or applied twice.

Real processes on real brokers on loopback (amqtt via fastbook-broker, and a private mosquitto +
fastbook-sequencer): SIGKILL and SIGSTOP/SIGCONT of edges, the sequencer and the broker at seeded
random moments under load from several clients; a TCP proxy that drops, delays and stalls an edge's
connection; bit-flipped journal records, corrupted snapshot files and retained snapshots; a journal
write error; an embedded broker restart. After each run the invariants are checked against the
journal (`check_invariants`).

`run_fault_loop` is also the engine of bench/fault_soak.py (longer runs, more faults).

What is promised about reports: every report a client receives agrees with the journal, no fill is
ever applied twice, and no fill report is lost or delivered twice. The reports the sequencer publishes
on reports/<client> are plain QoS1 messages that are never re-sent (a batch in flight when the
sequencer or broker dies, or sent while the client is disconnected, never arrives), but each edge
also derives its own client's reports from the log its replica applies, and the log is replayed until
every replica has it; a report arriving both ways, or twice, is delivered once (docs/wire.md). Every
run asserts `fill_reports_missing` and `duplicate_report_deliveries` are zero.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import resource
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fastbook.apps.status import MarketStatus, StatusWatcher
from fastbook.edge.client import Edge
from fastbook.engine.types import EventType, Op
from fastbook.log.journal import FILE_MAGIC, FRAME_HEAD, Journal, JournalError
from fastbook.log.replica import Replica
from fastbook.log.sequencer import SequencerConfig, SequencerNode
from fastbook.log.snapshots import SnapshotStore
from fastbook.transport.node import Outgoing
from fastbook.wire.market import MarketSpec
from fastbook.wire.snapshot import decode_snapshot, encode_snapshot
from fastbook.wire.topics import Topics
from tests.integration.test_integration_cluster import random_flow
from tests.support.brokers import MOSQUITTO, Proc, port_open, program, start_edge, wait_for
from tests.support.cluster import MARKET, Cluster, Traffic
from tests.support.tcp_proxy import TcpProxy

SPEC = MarketSpec.parse(MARKET)
_TRADE = int(EventType.TRADE)
DUPLICATE_AT = re.compile(r"already accepted at seq (\d+)")

# ---------------------------------------------------------------------------------------------------
# Load: API clients (fastbook.edge.client.Edge, each a replica too) sending random flows with retries
# ---------------------------------------------------------------------------------------------------


@dataclass
class ClientLoad:
    """One client's flow, its answers (one per command) and every report it received."""

    name: str
    orders: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any] | BaseException] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self) -> int:
        with self.lock:
            return len(self.answers)


class LoadDriver:
    """Clients that keep submitting chunks of orders until stopped; every command is retried (same
    client order id) until answered, so a command sent into a dead sequencer or broker is not lost."""

    def __init__(self, url: str, clients: int, seed: int, chunk: int = 20) -> None:
        self.url = url
        self.chunk = chunk
        self.stop_event = threading.Event()
        self.loads = [ClientLoad(f"api-{i}") for i in range(clients)]
        self.edges: list[Edge] = []
        self.rngs = [random.Random(seed * 1000 + i) for i in range(clients)]
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self) -> None:
        for load in self.loads:
            edge = Edge(load.name, self.url, MARKET, retry_after=1.5, max_attempts=200)
            edge.add_listener(self._recorder(load))
            edge.start()
            self.edges.append(edge)
        for edge in self.edges:
            assert edge.wait_synced(30), f"{edge.client_id} never synced"
        for load, edge, rng in zip(self.loads, self.edges, self.rngs, strict=True):
            thread = threading.Thread(target=self._run, args=(load, edge, rng), name=f"load-{load.name}")
            thread.start()
            self.threads.append(thread)

    @staticmethod
    def _recorder(load: ClientLoad) -> Callable[[str, dict[str, Any]], None]:
        def record(kind: str, data: dict[str, Any]) -> None:
            if kind == "report":
                with load.lock:
                    load.reports.append(data)

        return record

    def _run(self, load: ClientLoad, edge: Edge, rng: random.Random) -> None:
        start = 0
        try:
            while not self.stop_event.is_set():
                orders = random_flow(rng, load.name, self.chunk, start)
                start += self.chunk
                futures: list[Future[dict[str, Any]]] = [edge.submit(o) for o in orders]
                with load.lock:
                    load.orders.extend(orders)
                for future in futures:
                    try:
                        answer: dict[str, Any] | BaseException = future.result(600)
                    except Exception as exc:  # recorded: check_invariants fails on it
                        answer = exc
                    with load.lock:
                        load.answers.append(answer)
        except BaseException as exc:
            self.errors.append(exc)

    def total_answered(self) -> int:
        return sum(load.answered() for load in self.loads)

    def stop(self, timeout: float = 180) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "a load thread never got its answers"
        assert not self.errors, self.errors

    def close(self) -> None:
        self.stop_event.set()
        for edge in self.edges:
            edge.close()


# ---------------------------------------------------------------------------------------------------
# Invariants, checked against the journal
# ---------------------------------------------------------------------------------------------------


@dataclass
class JournalFacts:
    last_seq: int
    state_hash: int
    new_at: dict[tuple[str, str], int]  # (client, client order id) -> seq of its NEW entry
    fills: dict[tuple[str, str, str], dict[str, Any]]  # (client, trade_id, liquidity) -> fill


def read_journal(data_dir: Path) -> JournalFacts:
    """Replay the whole journal on a fresh replica (hash-checked at every entry) and list every
    new order and every fill it implies. The sequencer must be stopped (the journal is locked)."""
    journal = Journal(data_dir)
    try:
        records = journal.entries()
    finally:
        journal.close()
    seqs = [entry.seq for entry in records]
    assert seqs == list(range(1, len(seqs) + 1)), "journal seqs have a gap or a duplicate"
    replica = Replica(SPEC)
    new_at: dict[tuple[str, str], int] = {}
    fills: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in records:
        seq = entry.seq
        events = replica.apply(entry)  # raises HashMismatch if the journal does not chain
        if entry.op == Op.NEW:
            key = (entry.client_id, str(entry.client_order_id))
            assert key not in new_at, f"order {key} is in the journal twice (seqs {new_at[key]}, {seq})"
            new_at[key] = seq
        number = 0
        for event in events:
            if event[0] != _TRADE:
                continue
            number += 1
            trade_id = f"{seq}-{number}"
            for order_id, liquidity in ((event[1], "taker"), (event[7], "maker")):
                who = replica.describe(order_id)
                assert who is not None
                client, coid = replica.clients[who[0]], who[1]
                fills[(client, trade_id, liquidity)] = {
                    "id": coid,
                    "seq": seq,
                    "price": SPEC.ticks_to_price(event[4]),
                    "qty": SPEC.lots_to_qty(event[5]),
                }
    return JournalFacts(replica.version, replica.state_hash, new_at, fills)


@dataclass
class InvariantReport:
    commands: int = 0
    accepted_new: int = 0
    fills_reported: int = 0
    fills_in_journal: int = 0
    fill_reports_missing: int = 0  # journal fills of a client never reported to it (must stay 0)
    duplicate_report_deliveries: int = 0  # the same report delivered to a listener twice (must stay 0)

    def line(self) -> str:
        return (
            f"commands {self.commands}, accepted new orders {self.accepted_new}, fills in journal "
            f"{self.fills_in_journal}, fill reports {self.fills_reported} "
            f"(missing {self.fill_reports_missing}, redelivered {self.duplicate_report_deliveries})"
        )


def check_invariants(loads: list[ClientLoad], facts: JournalFacts) -> InvariantReport:
    """Every accepted order is in the journal exactly once (at the seq its report named), no rejected
    order is, every fill a client was told about is a fill of the journal, and every journal fill of
    a client was told to it exactly once."""
    out = InvariantReport()
    order_qty: dict[tuple[str, str], Decimal] = {}
    for load in loads:
        with load.lock:
            orders, answers, reports = list(load.orders), list(load.answers), list(load.reports)
        assert len(answers) == len(orders), f"{load.name}: {len(orders) - len(answers)} commands unanswered"
        out.commands += len(orders)
        for order, answer in zip(orders, answers, strict=True):
            assert isinstance(answer, dict), f"{load.name} {order}: no answer ({answer!r})"
            if order["op"] != "new":
                continue
            key = (load.name, order["id"])
            order_qty[key] = Decimal(order["qty"])
            in_journal = facts.new_at.get(key)
            if answer["type"] == "accepted":
                assert in_journal == answer["seq"], (key, answer, in_journal)
                out.accepted_new += 1
            elif answer.get("code") == "DUPLICATE_CLIENT_ORDER_ID":
                # The first send was accepted but its answer was lost; the retry says where.
                match = DUPLICATE_AT.search(answer["message"])
                assert match and in_journal == int(match.group(1)), (key, answer, in_journal)
                out.accepted_new += 1
            else:
                assert answer["type"] == "rejected", (key, answer)
                assert in_journal is None, f"rejected order {key} is in the journal at seq {in_journal}"
        # Reports agree with the journal: every fill report is a journal fill of this client.
        told: Counter[tuple[str, str, str]] = Counter()
        for report in reports:
            if report.get("type") != "trade":
                continue
            key3 = (load.name, str(report["trade_id"]), str(report["liquidity"]))
            fill = facts.fills.get(key3)
            assert fill is not None, f"{load.name} was told of a fill the journal does not hold: {report}"
            for name in ("id", "seq", "price", "qty"):
                assert report[name] == fill[name], (report, fill)
            told[key3] += 1
        out.duplicate_report_deliveries += sum(n - 1 for n in told.values())
        out.fills_reported += len(told)
        mine = [k for k in facts.fills if k[0] == load.name]
        out.fills_in_journal += len(mine)
        out.fill_reports_missing += sum(1 for k in mine if k not in told)
        # Whatever died, every fill reached its client once: a report lost in flight is derived from
        # the log by the client's own replica (see the module docstring).
        lost = [k for k in mine if k not in told]
        assert not lost, f"{load.name}: {len(lost)} fills never reported, e.g. {lost[:3]}; {out.line()}"
        twice = [k for k, n in told.items() if n > 1]
        assert not twice, f"{load.name}: {len(twice)} fill reports delivered twice, e.g. {twice[:3]}"
    # No order filled beyond its quantity (a double fill would show here).
    filled: Counter[tuple[str, str]] = Counter()
    for (client, _trade, _liq), fill in facts.fills.items():
        filled[(client, fill["id"])] += Decimal(fill["qty"])  # type: ignore[assignment]
    for key, qty in filled.items():
        if key in order_qty:
            assert qty <= order_qty[key], f"{key} filled {qty} > its qty {order_qty[key]}"
    return out


# ---------------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------------


def restart_mosquitto(cluster: Cluster) -> None:
    """SIGKILL the private mosquitto and start it again on the same port (it keeps no state)."""
    old = cluster.broker.procs[0]
    old.kill()
    old.stop()
    wait_for(lambda: not port_open(cluster.broker.port), 10, "old mosquitto gone")
    conf = cluster.workdir / f"mosquitto-{cluster.broker.port}.conf"
    proc = Proc([MOSQUITTO, "-c", str(conf)], cluster.workdir / f"mosquitto-{time.monotonic_ns()}.log")
    cluster.broker.procs = [proc]
    wait_for(lambda: port_open(cluster.broker.port) or not proc.alive(), 10, "mosquitto back")
    assert proc.alive(), proc.output()


def pause(proc: Proc, seconds: float) -> None:
    """SIGSTOP, hold, SIGCONT (the process is frozen, its sockets stay open)."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the length of the fault, not synchronisation
    finally:
        os.kill(proc.pid, signal.SIGCONT)


EDGE_FAULTS = ("edge_kill", "edge_stop")


def fault_kinds(kind: str, edges_only: bool = False) -> list[str]:
    if edges_only:
        return list(EDGE_FAULTS)
    if kind == "amqtt":  # fastbook-broker: broker and sequencer are one process
        return [*EDGE_FAULTS, "broker_kill", "broker_stop"]
    return [*EDGE_FAULTS, "sequencer_kill", "sequencer_stop", "broker_kill", "broker_stop"]


def inject(cluster: Cluster, fault: str, rng: random.Random, edges: list[str]) -> str:
    """Apply one fault and undo it (restart / SIGCONT); returns a description."""
    if fault == "edge_kill":
        name = rng.choice(edges)
        old = cluster.edges[name]
        old.kill()
        old.stop()
        cluster.start_edge(name)
        return f"SIGKILL {name}, restarted"
    if fault == "edge_stop":
        name = rng.choice(edges)
        held = rng.uniform(0.3, 2.5)
        pause(cluster.edges[name], held)
        return f"SIGSTOP {name} {held:.1f}s"
    if fault == "sequencer_kill" or (fault == "broker_kill" and cluster.kind == "amqtt"):
        cluster.kill_sequencer()
        cluster.restart_sequencer()
        return "SIGKILL sequencer" + (" (fastbook-broker)" if cluster.kind == "amqtt" else "") + ", restarted"
    if fault == "sequencer_stop" or (fault == "broker_stop" and cluster.kind == "amqtt"):
        held = rng.uniform(0.3, 2.5)
        pause(cluster.sequencer, held)
        return f"SIGSTOP sequencer {held:.1f}s"
    if fault == "broker_kill":
        restart_mosquitto(cluster)
        return "SIGKILL mosquitto, restarted"
    if fault == "broker_stop":
        held = rng.uniform(0.3, 2.5)
        pause(cluster.broker.procs[0], held)
        return f"SIGSTOP mosquitto {held:.1f}s"
    raise ValueError(fault)


KILL_COMPONENTS = ("sequencer", "edges", "broker")


def killed_components(kind: str, fault: str) -> list[str]:
    """The components a fault SIGKILLs: on amqtt (fastbook-broker) the broker and the sequencer are
    one process, so one kill of it counts for both."""
    if fault == "edge_kill":
        return ["edges"]
    if fault == "sequencer_kill":
        return ["sequencer"]
    if fault == "broker_kill":
        return ["broker", "sequencer"] if kind == "amqtt" else ["broker"]
    return []


@dataclass
class FaultRun:
    kind: str
    seed: int
    faults: list[str] = field(default_factory=list)
    invariants: InvariantReport | None = None
    version: int = 0
    seconds: float = 0.0
    kills: Counter[str] = field(default_factory=Counter)  # SIGKILLs per component (KILL_COMPONENTS)
    stops: int = 0  # SIGSTOP/SIGCONT faults
    state_hash: str = ""

    def enough_kills(self, per_component: int) -> bool:
        return all(self.kills[c] >= per_component for c in KILL_COMPONENTS)


def wait_final_state(
    cluster: Cluster, edge_names: Sequence[str], api_edges: Sequence[Edge], timeout: float
) -> MarketStatus:
    """After the load stopped: the book, the cluster's edges and every API client's replica at one
    version. No client's view bounds it from above: a command whose answer timed out during a fault
    (counted as answered) can still be executed later. So: converged at or above what the API
    clients hold, and again while any of them is beyond the book's version (a "converged" seen one
    batch early, before the last batch's book reached the watcher)."""
    deadline = time.monotonic() + timeout
    while True:
        floor = max(edge.state()[0] for edge in api_edges)
        status = cluster.wait_converged(edge_names, max(1.0, deadline - time.monotonic()), min_version=floor)
        version = status.book_version
        assert version is not None
        for edge in api_edges:
            assert edge.wait_synced(max(1.0, deadline - time.monotonic()), version), (
                f"{edge.client_id} never reached version {version}"
            )
        if max(edge.state()[0] for edge in api_edges) == version:
            return status
        assert time.monotonic() < deadline, f"no final state within {timeout} s: {status.to_json()}"


def wait_for_progress(
    cluster: Cluster, run: FaultRun, progressed: Callable[[], bool], when: str = ""
) -> None:
    """Wait for the load to go on; if it does not, fail with the faults so far and the tails of the
    sequencer's and the broker's logs (a stall is rare and needs its story in the CI output)."""
    try:
        wait_for(progressed, 120, "load making progress" + when)
    except AssertionError as stalled:
        story = [str(stalled), "faults so far:", *run.faults]
        story += ["sequencer log (tail):", cluster.sequencer.output()[-4000:]]
        story += ["broker log (tail):", *(proc.output()[-3000:] for proc in cluster.broker.procs)]
        raise AssertionError("\n".join(story)) from None


def run_fault_loop(
    kind: str,
    workdir: Path,
    seed: int,
    faults: int,
    minutes: float | None = None,
    clients: int = 2,
    edges: int = 2,
    edges_only: bool = False,
    say: Callable[[str], None] = lambda _line: None,
    kills_per_component: int | None = None,
    one_stop_per_round: bool = False,
) -> FaultRun:
    """Load from `clients` API clients, `faults` seeded faults (or as many as fit in `minutes`, or
    until every component was SIGKILLed `kills_per_component` times), then convergence and the
    journal invariants. Raises AssertionError on any violation. Every kind of fault comes once per
    round, in a seeded random order (with `one_stop_per_round`, every kill kind and one seeded
    SIGSTOP kind)."""
    rng = random.Random(seed)
    run = FaultRun(kind, seed)
    began = time.monotonic()
    cluster = Cluster(kind, workdir)
    driver = LoadDriver(cluster.url, clients, seed)
    edge_names = [f"edge-{i}" for i in range(edges)]
    try:
        for name in edge_names:
            cluster.start_edge(name)
        cluster.wait_converged(edge_names, 30)
        driver.start()
        deadline = None if minutes is None else began + minutes * 60
        upcoming: list[str] = []
        def more() -> bool:
            if kills_per_component is not None:
                return not run.enough_kills(kills_per_component)
            return (len(run.faults) < faults) if deadline is None else (time.monotonic() < deadline)

        while more():
            # A seeded random moment, under load: let some commands through first.
            base = driver.total_answered()
            wait_for_progress(cluster, run, lambda b=base: driver.total_answered() >= b + 10)
            time.sleep(rng.uniform(0.0, 1.0))  # the random moment itself, not synchronisation
            if not upcoming:
                upcoming = fault_kinds(kind, edges_only)
                if one_stop_per_round:
                    stops = [f for f in upcoming if f.endswith("_stop")]
                    upcoming = [f for f in upcoming if f.endswith("_kill")] + [rng.choice(stops)]
                rng.shuffle(upcoming)
            fault = upcoming.pop()
            description = inject(cluster, fault, rng, edge_names)
            run.faults.append(description)
            run.kills.update(killed_components(kind, fault))
            run.stops += fault.endswith("_stop")
            say(f"fault {len(run.faults)}: {description} (answered so far {driver.total_answered()})")
        base = driver.total_answered()
        wait_for_progress(cluster, run, lambda: driver.total_answered() >= base + 10, " after the faults")
        driver.stop()
        status = wait_final_state(cluster, edge_names, driver.edges, 120)
        version = status.book_version
        assert version is not None
        for edge in driver.edges:
            assert edge.wait_synced(60, version), f"{edge.client_id} never reached version {version}"
            v, h, _in_sync, _lag = edge.state()
            assert (v, f"{h:016x}") == (version, status.book_hash), (edge.client_id, v, h, status.to_json())
        cluster.kill_sequencer()  # release the journal lock
        facts = read_journal(cluster.journal_path().parent)
        assert (facts.last_seq, f"{facts.state_hash:016x}") == (version, status.book_hash)
        run.invariants = check_invariants(driver.loads, facts)
        run.version = version
        run.state_hash = status.book_hash or ""
        say(f"converged at version {version}; {run.invariants.line()}")
    finally:
        driver.close()
        for proc in cluster.edges.values():  # never leave a stopped process behind
            if proc.alive():
                os.kill(proc.pid, signal.SIGCONT)
        cluster.stop()
    run.seconds = time.monotonic() - began
    return run


# ---------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------


@pytest.mark.broker
@pytest.mark.parametrize(
    ("kind", "seed", "faults", "edges_only"),
    [("mosquitto", 4101, 12, False), ("amqtt", 4102, 8, False), ("amqtt", 4111, 4, True)],
)
def test_kill_and_stop_processes_under_load(
    kind: str, seed: int, faults: int, edges_only: bool, tmp_path: Path
) -> None:
    lines: list[str] = []
    run = run_fault_loop(kind, tmp_path, seed, faults, edges_only=edges_only, say=lines.append)
    print("\n".join(lines))
    assert len(run.faults) == faults
    assert run.invariants is not None
    assert run.invariants.accepted_new > 100  # the faults happened under real load
    assert run.invariants.fills_in_journal > 0
    assert run.invariants.fill_reports_missing == 0  # checked by check_invariants, whatever died


@pytest.fixture
def mosquitto_cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster("mosquitto", tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.mark.broker
def test_edge_behind_proxy_survives_drop_delay_and_stall(mosquitto_cluster: Cluster) -> None:
    cluster = mosquitto_cluster
    rng = random.Random(4103)
    with (
        TcpProxy(cluster.broker.port) as proxy,
        Traffic(cluster.url, cluster.topics, "test-traffic") as traffic,
    ):
        name = "edge-proxied"
        cluster.edges[name] = start_edge(cluster.workdir, f"mqtt://127.0.0.1:{proxy.port}", name, MARKET)
        cluster.wait_converged([name], 30)
        sent = 0

        def send_and_converge(what: str) -> int:
            nonlocal sent
            flow = random_flow(rng, "api", 150, sent)
            sent += len(flow)
            traffic.publish_orders("api", flow, per_message=10)
            wait_for(lambda: traffic.answers("api") >= sent, 60, f"answers ({what})")
            status = cluster.wait_converged([name], 60)
            assert status.book_version is not None
            return status.book_version

        send_and_converge("baseline")
        # Drop: the edge sees its connection reset, reconnects and replays what it missed.
        connections = proxy.accepted
        flow = random_flow(rng, "api", 150, sent)
        sent += len(flow)
        traffic.publish_orders("api", flow[:75], per_message=5)
        assert proxy.drop_all() == 1
        traffic.publish_orders("api", flow[75:], per_message=5)
        wait_for(lambda: proxy.accepted > connections, 30, "the edge reconnected through the proxy")
        wait_for(lambda: traffic.answers("api") >= sent, 60, "answers (drop)")
        cluster.wait_converged([name], 60)
        # Delay: every chunk 150 ms late, both ways; the edge keeps up.
        proxy.set_delay(0.15)
        send_and_converge("delay")
        proxy.set_delay(0.0)
        # Stall: a black hole (no FIN, no RST) while the market moves, then the link comes back.
        proxy.stall()
        flow = random_flow(rng, "api", 150, sent)
        sent += len(flow)
        traffic.publish_orders("api", flow, per_message=10)
        wait_for(lambda: traffic.answers("api") >= sent, 60, "answers while the edge is stalled")
        head = cluster.status().book_version
        assert head is not None
        assert cluster.status().replicas[name].version < head  # it really saw nothing
        proxy.resume()
        cluster.wait_converged([name], 60, version=head)
        # A stalled link that is then cut (what a keepalive timeout does): a full reconnect.
        proxy.stall()
        connections = proxy.accepted
        proxy.drop_all()
        proxy.resume()
        final = send_and_converge("after stall + drop")
        assert proxy.accepted > connections
        assert final == sent - sum(  # every command was sequenced except the rejected ones
            1 for r in traffic.reports_of("api") if r.get("type") == "rejected"
        )
        cluster.check_alive()


# -- corruption: journal, snapshot file, retained snapshot -------------------------------------------


def sequencer_with_orders(data_dir: Path, orders: int, snapshot_every: int = 10_000) -> tuple[int, int]:
    """Run an in-process sequencer over `orders` crossing orders; returns its (version, hash)."""
    node = SequencerNode(SequencerConfig(SPEC, data_dir, snapshot_every=snapshot_every))
    topics = Topics(MARKET)
    flow = random_flow(random.Random(4104), "alice", orders)
    try:
        for i in range(0, len(flow), 10):
            node.on_messages([(topics.orders("alice"), json.dumps(flow[i : i + 10]).encode())])
        return node.version, node.state_hash
    finally:
        node.close()


def record_offsets(path: Path) -> list[int]:
    """File offset of every frame (one per sequencer batch) of a valid journal."""
    data = path.read_bytes()
    offsets, offset = [], len(FILE_MAGIC)
    while offset < len(data):
        offsets.append(offset)
        offset += FRAME_HEAD.size + FRAME_HEAD.unpack_from(data, offset)[0]
    return offsets


def test_bit_flipped_journal_record_mid_file_refuses_to_start(tmp_path: Path) -> None:
    """A record in the middle that fails its CRC is corruption, not a torn tail: truncating there would
    silently drop accepted, published commands (and re-use their seqs), so the sequencer must refuse."""
    data_dir = tmp_path / "d"
    version, _hash = sequencer_with_orders(data_dir, 200)
    assert version > 150
    path = data_dir / Journal.FILE_NAME
    offsets = record_offsets(path)
    middle = offsets[len(offsets) // 2]
    data = bytearray(path.read_bytes())
    data[middle + 16 + 5] ^= 0x04  # one bit inside the payload of a record in the middle
    path.write_bytes(bytes(data))
    size = path.stat().st_size
    with pytest.raises(JournalError, match=r"(?i)corrupt.*valid records follow"):
        SequencerNode(SequencerConfig(SPEC, data_dir))
    assert path.stat().st_size == size  # nothing was cut


def test_bit_flipped_journal_record_refused_by_the_sequencer_program(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    sequencer_with_orders(data_dir / MARKET, 120)
    path = data_dir / MARKET / Journal.FILE_NAME
    offsets = record_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[10] + 2] ^= 0x01  # the length field of record 11
    path.write_bytes(bytes(data))
    proc = Proc(
        [
            program("fastbook-sequencer"),
            "--broker",
            "mqtt://127.0.0.1:9",
            "--data-dir",
            str(data_dir),
            "--market",
            MARKET,
        ],
        tmp_path / "sequencer.log",
    )
    assert proc.popen.wait(60) != 0
    output = proc.output()
    proc.stop()
    assert "cannot open the sequencer" in output and "valid records follow" in output, output
    assert "Traceback" not in output


def test_corrupted_snapshot_file_is_set_aside_and_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "d"
    version, state_hash = sequencer_with_orders(data_dir, 300, snapshot_every=100)
    store = SnapshotStore(data_dir / "snapshots")
    newest = store.versions()[0]
    assert newest >= 200
    path = store.path_for(newest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="fastbook.log.snapshots"):
        node = SequencerNode(SequencerConfig(SPEC, data_dir, snapshot_every=100))
    try:
        # Reported, set aside as evidence, and the same state rebuilt from an older snapshot + journal.
        assert "is corrupted" in caplog.text and "checksum" in caplog.text
        assert path.with_name(path.name + ".corrupt").exists()
        assert (node.version, node.state_hash) == (version, state_hash)
    finally:
        node.close()


@pytest.mark.broker
def test_corrupted_retained_snapshot_is_refused_and_the_edge_converges(tmp_path: Path) -> None:
    cluster = Cluster("amqtt", tmp_path)
    try:
        with Traffic(cluster.url, cluster.topics, "test-traffic") as traffic:
            flow = random_flow(random.Random(4105), "api", 200)
            traffic.publish_orders("api", flow, per_message=20)
            wait_for(lambda: traffic.answers("api") >= len(flow), 60, "answers")
            version = cluster.status().book_version
            assert version
            # The retained snapshot the sequencer published (version 0 at start), one bit flipped.
            snaps = SnapshotStore(cluster.data_dir / MARKET / "snapshots")
            published = encode_snapshot(snaps.read(snaps.versions()[0]), named=False)  # (anonymous)
            bad = bytearray(published)
            bad[len(bad) // 2] ^= 0x01
            with pytest.raises(ValueError, match="checksum"):
                decode_snapshot(bytes(bad))
            traffic.runner.call(lambda: [Outgoing(cluster.topics.snapshot, bytes(bad), retain=True)]).result(
                30
            )
            late = cluster.start_edge("late")
            status = cluster.wait_converged(["late"], 60, version=version)
            assert status.replicas["late"].hash == status.book_hash
            output = late.output()
            assert "ignoring bad message" in output and "checksum" in output, output
            assert "REPLICA DIVERGED" not in output
    finally:
        cluster.stop()


# -- a journal write error -------------------------------------------------------------------------


@pytest.mark.broker
def test_journal_write_error_stops_accepting_and_publishes_nothing_undurable(
    mosquitto_cluster: Cluster,
) -> None:
    cluster = mosquitto_cluster
    cluster.start_edge("edge-a")
    with Traffic(cluster.url, cluster.topics, "test-traffic") as traffic:
        cluster.wait_converged(["edge-a"], 30)
        flow = random_flow(random.Random(4106), "api", 100)
        traffic.publish_orders("api", flow, per_message=10)
        wait_for(lambda: traffic.answers("api") >= len(flow), 60, "answers")
        before = cluster.wait_converged(["edge-a"], 30).book_version
        assert before
        # The journal's file system is "full": the sequencer may not grow any file beyond its size now.
        journal_size = cluster.journal_path().stat().st_size
        resource.prlimit(cluster.sequencer.pid, resource.RLIMIT_FSIZE, (journal_size, journal_size))
        more = random_flow(random.Random(4107), "api", 30, start=100)
        traffic.publish_orders("api", more, per_message=1)
        total = len(flow) + len(more)
        wait_for(lambda: traffic.answers("api") >= total, 60, "answers while the journal is broken")
        answers = traffic.reports_of("api")[-60:]
        journal_rejects = [r for r in answers if r.get("code") == "JOURNAL_UNAVAILABLE"]
        assert journal_rejects, answers
        assert all("journal write failed" in r["message"] for r in journal_rejects), journal_rejects
        assert not any(r.get("type") == "accepted" and r.get("seq", 0) > before for r in answers)
        assert "rejecting every order until the journal takes writes again" in cluster.sequencer.output()
        # ... and says so in the retained book, which `fastbook status` shows.
        shown = fastbook_status(cluster.url)
        assert re.search(r"journal unavailable since .* UTC, retrying .*File too large", shown), shown
        # Nothing beyond the durable journal was published: the book, the edge and the file agree.
        cluster.wait_converged(["edge-a"], 30, version=before)
        assert cluster.journal_path().stat().st_size == journal_size
        # Still so after the broker restarts and the failed sequencer republishes its retained book:
        # that book must be the durable one, not the in-memory state of the batch that failed.
        restart_mosquitto(cluster)
        wait_for(
            lambda: "connected" in cluster.sequencer.output().rsplit("File too large", 1)[-1],
            30,
            "the sequencer reconnected",
        )
        with StatusWatcher(cluster.url, MARKET, client_id="test-status-fresh") as fresh:
            wait_for(lambda: fresh.snapshot().book_version == before, 30, "the retained book republished")
            wait_for(lambda: "edge-a" in fresh.snapshot().replicas, 30, "edge-a's status republished")
            republished = fresh.snapshot()
        durable_hash = republished.replicas["edge-a"].hash  # the edge applied only durable entries
        assert republished.replicas["edge-a"].version == before
        assert republished.book_hash == durable_hash, "the book republished non-durable state"
        # A restart (the disk has room again) resumes from the journal and accepts again.
        cluster.kill_sequencer()
        facts = read_journal(cluster.journal_path().parent)
        assert facts.last_seq == before
        cluster.restart_sequencer()
        again = random_flow(random.Random(4108), "api", 30, start=200)
        traffic.publish_orders("api", again, per_message=5)
        wait_for(lambda: traffic.answers("api") >= total + len(again), 60, "answers after the restart")
        wait_for(lambda: (cluster.status().book_version or 0) > before, 30, "the book moving again")
        cluster.wait_converged(["edge-a"], 60)
        assert "journal unavailable" not in fastbook_status(cluster.url)


def fastbook_status(url: str) -> str:
    """What `fastbook status` prints (it must succeed)."""
    result = subprocess.run(
        [program("fastbook"), "status", "--broker", url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- embedded broker restart ---------------------------------------------------------------------


@pytest.mark.broker
def test_embedded_broker_restart_restores_retained_state_and_edges_converge(tmp_path: Path) -> None:
    cluster = Cluster("amqtt", tmp_path)
    try:
        edges = ["edge-a", "edge-b"]
        for name in edges:
            cluster.start_edge(name)
        with Traffic(cluster.url, cluster.topics, "test-traffic") as traffic:
            cluster.wait_converged(edges, 30)
            flow = random_flow(random.Random(4109), "api", 300)
            traffic.publish_orders("api", flow, per_message=20)
            wait_for(lambda: traffic.answers("api") >= len(flow), 60, "answers")
            before = cluster.wait_converged(edges, 30)
            assert before.book_version
            cluster.kill_sequencer()  # SIGKILL fastbook-broker: broker, retained messages, sequencer
            cluster.restart_sequencer()  # same port, same data dir
            # A fresh reader sees the retained book again, at the same version and hash.
            with StatusWatcher(cluster.url, MARKET, client_id="test-status-after") as fresh:
                wait_for(
                    lambda: fresh.snapshot().book_version == before.book_version, 30, "retained book back"
                )
                assert fresh.snapshot().book_hash == before.book_hash
            # The edges resubscribed by themselves and follow new traffic.
            more = random_flow(random.Random(4110), "api", 100, start=300)
            traffic.publish_orders("api", more, per_message=20)
            wait_for(lambda: traffic.answers("api") >= len(flow) + len(more), 60, "answers after restart")
            wait_for(lambda: (cluster.status().book_version or 0) > before.book_version, 30, "book moving")
            after = cluster.wait_converged(edges, 60)
            assert after.book_version is not None
            # The retained snapshot is back too: a late joiner starts from it (at the recovered
            # version), not from seq 1.
            late = cluster.start_edge("late")
            cluster.wait_converged(["late"], 60, version=after.book_version)
            requests = traffic.requests_from("late")
            assert all(r["from"] > before.book_version for r in requests), requests
            assert "no snapshot within" not in late.output()
    finally:
        cluster.stop()
