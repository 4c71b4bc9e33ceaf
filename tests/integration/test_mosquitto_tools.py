"""edge/README.md's mosquitto_pub / mosquitto_sub commands, run exactly as written (only the port is
the test broker's), and the shipped edge/mosquitto.conf."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastbook.transport.config import RunnerConfig
from fastbook.transport.node import Outgoing
from fastbook.transport.runner import NodeRunner
from tests.support.brokers import MOSQUITTO, Proc, free_port, port_open, wait_for
from tests.support.cluster import Cluster
from tests.transport.test_mqtt import Recorder

pytestmark = pytest.mark.broker
EDGE_DIR = Path(__file__).resolve().parents[2] / "edge"


def readme_commands() -> list[str]:
    """Every mosquitto_pub/mosquitto_sub line of the README's ```sh blocks, in order."""
    text = (EDGE_DIR / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("mosquitto_")]


def on_port(command: str, port: int) -> list[str]:
    args = shlex.split(command)
    assert args[args.index("-p") + 1] == "1883" and args[args.index("-h") + 1] == "127.0.0.1"
    args[args.index("-p") + 1] = str(port)
    return args


@pytest.fixture(params=["amqtt", "mosquitto"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(request.param, tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_readme_commands_work_as_written(cluster: Cluster, tmp_path: Path) -> None:
    commands = readme_commands()
    subs = [c for c in commands if c.startswith("mosquitto_sub")]
    pubs = [c for c in commands if c.startswith("mosquitto_pub")]
    assert len(subs) == 3 and len(pubs) == 4
    reports_cmd, book_cmd, replicas_cmd = subs
    cluster.start_edge("device-001")
    cluster.wait_converged(["device-001"], 30)

    follower = Proc(on_port(reports_cmd, cluster.broker.port), tmp_path / "reports.out")
    try:
        # mosquitto_sub prints nothing when subscribed; give the SUBACK a moment by checking that a
        # probe report arrives (a rejected empty message to the same client), then send the README's.
        def probe_seen() -> bool:
            subprocess.run(
                [
                    "mosquitto_pub",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(cluster.broker.port),
                    "-q",
                    "1",
                    "-t",
                    "fastbook/BTC-USD/orders/alice",
                    "-m",
                    "[]",
                ],
                check=True,
                timeout=10,
            )
            return "INVALID_MESSAGE" in follower.output()

        wait_for(probe_seen, 20, "mosquitto_sub subscribed", interval=0.5)
        for command in pubs:
            subprocess.run(on_port(command, cluster.broker.port), check=True, timeout=10)
        wait_for(lambda: "INVALID_PRICE" in follower.output(), 30, "the rejected report")
    finally:
        follower.stop()
    reports = [r for line in follower.output().splitlines() if line.strip() for r in json.loads(line)]
    reports = [r for r in reports if r.get("code") != "INVALID_MESSAGE"]  # the probes
    assert [(r["type"], r["id"]) for r in reports] == [
        ("accepted", "a-1"),
        ("accepted", "a-2"),
        ("accepted", "a-3"),
        ("cancelled", "a-1"),
        ("rejected", "a-4"),
    ]
    assert reports[3]["reason"] == "user"
    readme = (EDGE_DIR / "README.md").read_text()
    rejected = json.dumps(reports[4], separators=(",", ":"))
    assert f"[{rejected}]" in readme  # the exact rejected report, as mosquitto_sub prints it
    printed = [line for line in follower.output().splitlines()
               if line.strip() and "INVALID_MESSAGE" not in line]
    shown = [line for block in re.findall(r"```text\n(.*?)```", readme, flags=re.S)
             for line in block.splitlines() if line.startswith("[")]
    assert printed == shown  # every line mosquitto_sub printed, exactly as the README shows it

    book = subprocess.run(on_port(book_cmd, cluster.broker.port), capture_output=True, text=True, timeout=10)
    assert book.returncode == 0
    doc = json.loads(book.stdout)
    assert doc["version"] == 4 and doc["bids"] == []
    assert doc["asks"] == [["101.00", "0.500", 1], ["101.50", "2.000", 1]]

    replicas = subprocess.run(
        on_port(replicas_cmd, cluster.broker.port), capture_output=True, text=True, timeout=10
    )
    line = next(
        li for li in replicas.stdout.splitlines() if li.startswith("fastbook/BTC-USD/replicas/device-001 ")
    )
    status = json.loads(line.split(" ", 1)[1])
    assert status["state"] == "online" and isinstance(status["version"], int)
    cluster.check_alive()


def shipped_mosquitto_conf(tmp_path: Path, port: int, drop_limits: bool = False) -> Path:
    """edge/mosquitto.conf with only the port, persistence directory and log destination changed."""
    text = (EDGE_DIR / "mosquitto.conf").read_text()
    text = text.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
    text = text.replace("persistence_location /var/lib/mosquitto/", f"persistence_location {tmp_path}/")
    text = text.replace("log_dest syslog", "log_dest stdout")
    if drop_limits:  # what mosquitto does without this file's queue settings
        text = text.replace("max_queued_messages 0", "").replace("max_queued_bytes 268435456", "")
    conf = tmp_path / f"mosquitto-{port}.conf"
    conf.write_text(text)
    return conf


@pytest.mark.parametrize(("drop_limits", "expected"), [(False, 3000), (True, 1000)])
def test_shipped_mosquitto_conf_does_not_drop_qos1(tmp_path: Path, drop_limits: bool, expected: int) -> None:
    """An offline persistent subscriber gets every QoS1 message with edge/mosquitto.conf; with mosquitto's
    default queue limit it would lose all but 1000 (which is why the file exists)."""
    port = free_port()
    proc = Proc(
        [MOSQUITTO, "-c", str(shipped_mosquitto_conf(tmp_path, port, drop_limits))], tmp_path / "m.log"
    )
    url = f"mqtt://127.0.0.1:{port}"
    try:
        wait_for(lambda: port_open(port) or not proc.alive(), 10, "mosquitto with the shipped config")
        assert proc.alive(), proc.output()
        slow = Recorder(["test/flood"])
        with NodeRunner(slow, RunnerConfig(url, "slow-device", clean_session=False)):
            wait_for(lambda: slow.connects == 1, 10, "subscribed")
        with NodeRunner(Recorder([]), RunnerConfig(url, "flooder")) as flooder:
            assert flooder.wait_connected(10)
            infos = flooder.call(lambda: [Outgoing("test/flood", b"%d" % i) for i in range(3000)]).result(10)
            assert len(infos) == 3000
            wait_for(lambda: flooder.published >= 3000, 10, "flood published")
        back = Recorder(["test/flood"])
        with NodeRunner(back, RunnerConfig(url, "slow-device", clean_session=False)):
            wait_for(lambda: len(back.messages) >= expected, 30, f"{expected} queued messages")
            if expected < 3000:
                received = len(back.messages)
                wait_for(lambda: back.connects == 1, 10, "resubscribed")
                assert len(back.messages) == received == expected
        assert [int(p) for _, p in back.messages[:expected]] == list(range(expected))
    finally:
        proc.stop()


def test_readme_python_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = re.search(r"```python\n(.*?)```", (EDGE_DIR / "README.md").read_text(), flags=re.S)
    assert code is not None
    cluster = Cluster("mosquitto", tmp_path)
    try:
        exec(compile(code.group(1).replace("mqtt://127.0.0.1:1883", cluster.url), "README.md", "exec"), {})
    finally:
        cluster.stop()
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("accepted ")
