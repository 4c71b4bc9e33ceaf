"""`fastbook log dump|tail` against a real broker and sequencer: the binary log as JSON lines."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.brokers import Broker, Proc, program, start_mosquitto, start_sequencer, wait_for

pytestmark = pytest.mark.broker

ORDERS = [
    ("alice", {"op": "new", "id": "a1", "side": "sell", "price": "100.25", "qty": "1.5"}),
    ("bob", {"op": "new", "id": "b1", "side": "buy", "price": "100.30", "qty": "1"}),
    ("alice", {"op": "cancel", "id": "a1"}),
]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Path]]:
    workdir = tmp_path_factory.mktemp("log-cli")
    broker = start_mosquitto(workdir)
    sequencer = start_sequencer(workdir, broker.url, workdir / "data", "BTC-USD")
    try:
        # (a dump answered, even with nothing: the sequencer is subscribed, orders will reach it)
        wait_for(lambda: try_dump(broker, workdir) is not None or not sequencer.alive(), 30, "the sequencer")
        publish(broker, ORDERS)
        wait_for(lambda: len(try_dump(broker, workdir) or []) == 3, 20, "three sequenced entries")
        yield broker, workdir
    finally:
        sequencer.stop()
        broker.stop()


def publish(broker: Broker, orders: list[tuple[str, dict[str, Any]]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"log-cli-test-{time.monotonic_ns()}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for who, order in orders:
            client.publish(f"fastbook/BTC-USD/orders/{who}", json.dumps(order), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def run_dump(broker: Broker, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [program("fastbook"), "log", "dump", "--broker", broker.url, *args, "--timeout", "3"],
        capture_output=True, text=True, timeout=60, cwd=workdir,
    )  # fmt: skip


def dump(broker: Broker, workdir: Path, *args: str) -> list[dict[str, Any]]:
    run = run_dump(broker, workdir, *args)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def try_dump(broker: Broker, workdir: Path) -> list[dict[str, Any]] | None:
    run = run_dump(broker, workdir, "--from", "1")
    return [json.loads(line) for line in run.stdout.splitlines()] if run.returncode == 0 else None


def test_dump_prints_every_entry_as_json(market: tuple[Broker, Path]) -> None:
    broker, workdir = market
    entries = dump(broker, workdir, "--from", "1", "--to", "3")
    assert [e["seq"] for e in entries] == [1, 2, 3]
    first, second, third = entries
    # The feed is anonymous: orders by engine id and owner number, no client id or client order id.
    assert not any("client_id" in e or "id" in e for e in entries)
    assert (first["op"], first["order_id"], first["owner"]) == ("new", 1, 1)
    assert (first["side"], first["type"]) == ("sell", "limit")
    assert (first["price"], first["qty"]) == ("100.25", "1.500")  # decimals: the snapshot gave tick and lot
    assert (second["owner"], second["price"]) == (2, "100.30")
    # seq 3 is alice's cancel of a1: the same owner number and engine order id
    assert (third["op"], third["order_id"], third["owner"]) == ("cancel", 1, 1)
    assert all(len(e["hash"]) == 16 for e in entries)
    assert [e["seq"] for e in dump(broker, workdir, "--from", "2")] == [2, 3]  # up to the head


def test_tail_from_a_seq_then_follows_the_live_log(market: tuple[Broker, Path]) -> None:
    broker, workdir = market
    tail = Proc(
        [program("fastbook"), "log", "tail", "--broker", broker.url, "--from", "2"], workdir / "tail.log"
    )
    try:
        wait_for(lambda: tail.output().count("\n") >= 2 or not tail.alive(), 20, "the replayed entries")
        publish(broker, [("carol", {"op": "new", "id": "c1", "side": "buy", "price": "99", "qty": "2"})])
        wait_for(lambda: '"seq": 4' in tail.output() or not tail.alive(), 20, "the live entry")
        lines = [json.loads(line) for line in tail.output().splitlines() if line.startswith("{")]
        assert [e["seq"] for e in lines] == [2, 3, 4]
        assert "client_id" not in lines[-1] and "id" not in lines[-1]  # (anonymous)
        assert (lines[-1]["op"], lines[-1]["owner"], lines[-1]["price"]) == ("new", 3, "99.00")
    finally:
        tail.stop()
