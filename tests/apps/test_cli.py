"""Programs: --help, bad arguments (non-zero exit + a message), taken ports, typed order commands."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastbook.apps.cli.commands import CommandError, parse_command
from tests.support.brokers import (
    Broker,
    Proc,
    child_env,
    free_port,
    port_open,
    program,
    start_mosquitto,
    wait_for,
)


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=child_env(),
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    "prog", ["fastbook", "fastbook-broker", "fastbook-sequencer", "fastbook-edge"]
)
def test_help(prog: str) -> None:
    result = run(program(prog), "--help")
    assert result.returncode == 0
    assert "usage:" in result.stdout


@pytest.mark.parametrize(
    "prog", ["fastbook", "fastbook-broker", "fastbook-sequencer", "fastbook-edge"]
)
def test_version(prog: str) -> None:
    from importlib.metadata import version

    result = run(program(prog), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{prog} {version('fastbook')}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fastbook"], "required"),
        (["fastbook", "frobnicate"], "invalid choice"),
        (["fastbook", "status", "--broker", "localhost:1883"], "no scheme"),
        (["fastbook", "status", "--market", "a/b"], "market name"),
        (["fastbook", "demo", "--orders", "0"], "positive integer"),
        (["fastbook-broker", "--port", "70000"], "port must be"),
        (["fastbook-broker", "--port", "x"], "port must be"),
        (["fastbook-broker", "--market", "BTC-USD:tick=abc"], "tick"),
        (["fastbook-broker", "--market", "BTC-USD", "--market", "BTC-USD"], "twice"),
        (["fastbook-sequencer", "--data-dir", "/tmp/x", "--market", "BTC-USD"], "--broker"),
        (["fastbook-sequencer", "--broker", "mqtt://h:1", "--market", "BTC-USD"], "--data-dir"),
        (["fastbook-sequencer", "--broker", "ftp://h", "--data-dir", "/tmp/x", "--market", "X"], "scheme"),
        (["fastbook-sequencer", "--broker", "mqtt://h", "--data-dir", "/tmp/x", "--market", "X:lot=0"],
         "lot"),
        (["fastbook-sequencer", "--broker", "mqtt://h", "--data-dir", "/tmp/x", "--market", "X",
          "--dedupe-window", "0"], "positive integer"),
        (["fastbook-broker", "--dedupe-window", "-5"], "positive integer"),
        (["fastbook-broker", "--batch-window", "-1"], "milliseconds between 0 and 1000"),
        (["fastbook-broker", "--batch-window", "nan"], "milliseconds between 0 and 1000"),
        (["fastbook-edge"], "--client-id"),
        (["fastbook-edge", "--client-id", "a/b"], "client id"),
        (["fastbook-edge", "--client-id", "ok", "--broker", "mqtt://h:0"], "port"),
    ],
)
def test_bad_arguments_exit_non_zero_with_message(args: list[str], message: str) -> None:
    result = run(program(args[0]), *args[1:])
    assert result.returncode == 2, result
    assert message in result.stderr


def test_broker_on_taken_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(program("fastbook-broker"), "--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_without_broker_fails_clearly() -> None:
    first, second = free_port(), free_port()
    result = run(program("fastbook"), "status", "--broker",
                 f"mqtt://127.0.0.1:{first},mqtt://127.0.0.1:{second}", "--timeout", "1")
    assert result.returncode == 1
    # every URL tried, each with what happened
    assert "no MQTT broker answered" in result.stderr
    for port in (first, second):
        assert f"mqtt://127.0.0.1:{port} did not answer within 1s (cannot connect:" in result.stderr


def test_sequencer_with_unusable_data_dir_fails_clearly(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run(program("fastbook-sequencer"), "--broker", "mqtt://127.0.0.1:1", "--data-dir",
                 str(not_a_dir), "--market", "BTC-USD")
    assert result.returncode == 1
    assert "cannot open the sequencer for BTC-USD" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto-cli"))
    yield broker
    broker.stop()


@pytest.mark.broker
@pytest.mark.parametrize("prog", ["fastbook-edge", "fastbook-sequencer", "fastbook-broker"])
def test_programs_stop_cleanly_on_sigterm(prog: str, mosquitto: Broker, tmp_path: Path) -> None:
    port = free_port()
    args = {
        "fastbook-edge": [program(prog), "--client-id", "sigterm-test", "--broker", mosquitto.url],
        "fastbook-sequencer": [program(prog), "--broker", mosquitto.url, "--data-dir", str(tmp_path),
                               "--market", f"SIG-{port}"],
        "fastbook-broker": [program(prog), "--port", str(port), "--data-dir", str(tmp_path)],
    }[prog]
    proc = Proc(args, tmp_path / "out.log")
    try:
        if prog == "fastbook-broker":
            wait_for(lambda: port_open(port) or not proc.alive(), 20, "broker listening")
        else:
            wait_for(lambda: "connected to" in proc.output() or not proc.alive(), 20, "connected")
        assert proc.alive(), proc.output()
    finally:
        code = proc.stop()
    assert code == 0, proc.output()
    assert "Traceback" not in proc.output()


@pytest.mark.parametrize(
    ("line", "order"),
    [
        ("buy 1.5 @ 100.25", {"op": "new", "side": "buy", "type": "limit", "qty": "1.5", "price": "100.25"}),
        ("sell 2 @101", {"op": "new", "side": "sell", "type": "limit", "qty": "2", "price": "101"}),
        ("SELL 2@101 ioc", {"op": "new", "side": "sell", "type": "limit", "qty": "2", "price": "101",
                            "tif": "ioc"}),
        ("buy 1 @ 99 post id=my-1", {"op": "new", "side": "buy", "type": "limit", "qty": "1", "price": "99",
                                     "post_only": True, "id": "my-1"}),
        ("buy 1 market", {"op": "new", "side": "buy", "type": "market", "qty": "1"}),
        ("cancel o-3", {"op": "cancel", "id": "o-3"}),
        ("cancel #2", {"op": "cancel", "id": "#2"}),
        ("amend #2 qty 1", {"op": "amend", "id": "#2", "qty": "1"}),
        ("buy 1 @ 99 stp=cancel_taker", {"op": "new", "side": "buy", "type": "limit", "qty": "1",
                                         "price": "99", "stp": "cancel_taker"}),
        ("sell 1 market STP=both", {"op": "new", "side": "sell", "type": "market", "qty": "1",
                                    "stp": "cancel_both"}),
        ("cancel all", {"op": "cancel_all"}),
        ("amend o-3 qty 1.0", {"op": "amend", "id": "o-3", "qty": "1.0"}),
        ("amend o-3 qty 1.0 price 100.5", {"op": "amend", "id": "o-3", "qty": "1.0", "price": "100.5"}),
    ],
)
def test_typed_orders(line: str, order: dict[str, object]) -> None:
    command = parse_command(line)
    assert command.kind == "order" and command.order == order


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "empty"),
        ("buy", "usage"),
        ("buy 1.5 100", "usage"),
        ("buy -1 @ 100", "quantity"),
        ("buy 1 @ 1e5", "price"),
        ("buy 1 @ 1.2.3", "price"),
        ("buy 1 @ 100 forever", "unknown option"),
        ("cancel", "usage"),
        ("amend o-1", "usage"),
        ("amend o-1 colour red", "usage"),
        ("buy 1 @ 99 stp=sometimes", "stp must be one of"),
        ("buy 1 @ 99 id=#3", "may not start with #"),
        ("sudo make me a sandwich", "unknown command"),
    ],
)
def test_typed_orders_rejected(line: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command(line)


def test_typed_meta_commands() -> None:
    assert parse_command("help").kind == "help"
    assert parse_command(" quit ").kind == "quit"
    assert parse_command("book").kind == "book"


@pytest.mark.broker
def test_demo_converges_and_exits_zero() -> None:
    """`fastbook demo` picks its own free port (the machine's 1883 may be taken) and ends by itself."""
    result = run(program("fastbook"), "demo", "--orders", "600", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CONVERGED: sequencer and 3 replicas at version" in result.stdout
    for client in ("alice", "bob", "carol"):
        assert re.search(rf"^\s+{client}\s+online\s+\d+\s+[0-9a-f]{{16}}\s+0\s+yes$", result.stdout, re.M)
    assert "commands sent 600, answered 600" in result.stdout


@pytest.mark.broker
def test_demo_makes_a_new_data_dir_and_keeps_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "demo"
    result = run(program("fastbook"), "demo", "--orders", "100", "--data-dir", str(data_dir), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CONVERGED" in result.stdout
    assert list((data_dir / "data").rglob("*journal*")), sorted(p.name for p in data_dir.rglob("*"))


def test_demo_data_dir_that_is_a_file_fails_clearly(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run(program("fastbook"), "demo", "--data-dir", str(not_a_dir / "sub"), timeout=60)
    assert result.returncode != 0
    assert f"cannot use --data-dir {not_a_dir / 'sub'}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.broker
def test_status_shows_replicas_versions_and_hashes(tmp_path: Path) -> None:
    from tests.support.cluster import Cluster

    cluster = Cluster("mosquitto", tmp_path)
    try:
        cluster.start_edge("edge-s")
        status = cluster.wait_converged(["edge-s"], 30)
        result = run(program("fastbook"), "status", "--broker", cluster.url)
        assert result.returncode == 0, result.stderr
        assert f"sequencer: version {status.book_version} hash {status.book_hash}" in result.stdout
        assert re.search(r"edge-s\s+online\s+\d+\s+[0-9a-f]{16}\s+0\s+yes", result.stdout), result.stdout
        as_json = json.loads(run(program("fastbook"), "status", "--broker", cluster.url, "--json").stdout)
        assert as_json["replicas"][0]["client_id"] == "edge-s"
        assert as_json["sequencer"] == {"version": status.book_version, "hash": status.book_hash}
    finally:
        cluster.stop()


@pytest.mark.broker
def test_edge_on_a_terminal_runs_the_tui(mosquitto: Broker, tmp_path: Path) -> None:
    """fastbook-edge on a pseudo-terminal starts the full-screen UI (the TUI itself is tested with
    textual's pilot in test_tui_app.py): it shows the replica synced, takes a typed order, and
    `quit` ends it with status 0 and the terminal restored."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    sequencer = Proc([program("fastbook-sequencer"), "--broker", mosquitto.url, "--data-dir", str(tmp_path),
                      "--market", "TTY-USD"], tmp_path / "seq.log")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = dict(child_env(), TERM="xterm-256color")
    edge = subprocess.Popen([program("fastbook-edge"), "--client-id", "tty-user", "--broker", mosquitto.url,
                             "--market", "TTY-USD"], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    screen = bytearray()

    def read_screen() -> str:
        while select.select([master], [], [], 0.05)[0]:
            try:
                screen.extend(os.read(master, 65536))
            except OSError:
                break
        return screen.decode(errors="replace")

    def typed(text: str) -> None:
        for ch in text:  # a key at a time, as a person types
            os.write(master, ch.encode())

    try:
        wait_for(lambda: " SYNCED " in read_screen(), 30, "the status bar to show a synced replica")
        typed("buy 1.5 @ 99.50\r")
        wait_for(lambda: "#1 ACCEPTED buy 1.500 @ 99.50" in read_screen(), 30, "the accepted report")
        assert edge.poll() is None
        typed("quit\r")
        deadline = time.monotonic() + 15
        while edge.poll() is None and time.monotonic() < deadline:
            read_screen()
        assert edge.returncode == 0, read_screen()[-2000:]
        assert "\x1b[?1049l" in read_screen()  # left the alternate screen: the shell's is back
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.wait(5)
        os.close(master)
        sequencer.stop()


@pytest.mark.broker
def test_edge_log_mode_human_and_json(mosquitto: Broker, tmp_path: Path) -> None:
    """Without a terminal: human report lines by default, the raw report JSON with --json."""
    sequencer = Proc([program("fastbook-sequencer"), "--broker", mosquitto.url, "--data-dir", str(tmp_path),
                      "--market", "LOG-USD"], tmp_path / "seq.log")
    procs = {}
    try:
        for name, flags in (("human", []), ("machine", ["--json"])):
            procs[name] = Proc([program("fastbook-edge"), "--client-id", name, "--broker", mosquitto.url,
                                "--market", "LOG-USD", *flags], tmp_path / f"{name}.log", stdin_pipe=True)
        for proc in procs.values():
            wait_for(lambda p=proc: "in sync" in p.output() or not p.alive(), 30, "the edge in sync")
            proc.send_lines(["buy 1 @ 5.00 id=log-1"])
        human, machine = procs["human"], procs["machine"]
        wait_for(lambda: "#1 ACCEPTED" in human.output(), 30, "the human accept line")  # #1 exists now
        wait_for(lambda: '"type":"accepted"' in machine.output(), 30, "the JSON accept")
        for proc in procs.values():
            proc.send_lines(["cancel #1", "buy 1 @ 5.001"])
        wait_for(lambda: "#1 CANCELLED 1.000 (by you)" in human.output(), 30, "the human cancel line")
        out = human.output()
        assert "sent: buy 1 @ 5.00 id=log-1" in out and "#1 ACCEPTED buy 1.000 @ 5.00" in out
        wait_for(lambda: "REJECTED new: INVALID_PRICE" in human.output(), 30, "the human reject line")
        wait_for(lambda: '"type":"cancelled","id":"log-1"' in machine.output(), 30, "the JSON cancel")
        wait_for(lambda: '"type":"rejected"' in machine.output(), 30, "the JSON reject")
        assert '"type":"accepted","id":"log-1"' in machine.output()
        assert "ACCEPTED" not in machine.output()
        assert re.search(r"edge human LOG-USD in sync version \d+ hash [0-9a-f]{16} lag 0 queued 0", out)
    finally:
        for proc in procs.values():
            assert proc.stop() == 0, proc.output()
        sequencer.stop()


@pytest.mark.broker
@pytest.mark.parametrize("signum", [2, 15])
def test_demo_keep_running_stops_cleanly_on_signal(tmp_path: Path, signum: int) -> None:
    import os

    args = [program("fastbook"), "demo", "--keep-running", "--orders", "100", "--data-dir", str(tmp_path)]
    proc = Proc(args, tmp_path / "demo.out")
    try:
        wait_for(lambda: "Ctrl-C to stop" in proc.output() or not proc.alive(), 60, "the demo summary")
        assert "CONVERGED" in proc.output()
        os.kill(proc.pid, signum)
        proc.popen.wait(30)
    finally:
        code = proc.stop()
    assert code == 0, proc.output()
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert {"broker.log", "edge-alice.log", "edge-bob.log", "edge-carol.log"} <= set(logs)
    assert "fastbook broker stopped" in logs["broker.log"]  # children got a clean SIGTERM too


@pytest.mark.broker
def test_status_prune_clears_stale_replica_entries(mosquitto: Broker, tmp_path: Path) -> None:
    """An edge that stopped leaves a retained `offline` entry; --prune clears it and keeps the live."""
    from fastbook.edge.client import Edge

    sequencer = Proc([program("fastbook-sequencer"), "--broker", mosquitto.url, "--data-dir", str(tmp_path),
                      "--market", "PRUNE-USD"], tmp_path / "seq.log")
    status = [program("fastbook"), "status", "--broker", mosquitto.url, "--market", "PRUNE-USD"]
    try:
        with Edge("stays", mosquitto.url, "PRUNE-USD") as live:
            with Edge("gone", mosquitto.url, "PRUNE-USD") as gone:
                assert gone.wait_synced(30) and live.wait_synced(30)
            wait_for(lambda: re.search(r"gone\s+offline", run(*status).stdout), 20, "gone offline")
            pruned = run(*status, "--prune")
            assert pruned.returncode == 0, pruned.stderr
            assert "cleared replicas/gone (offline)" in pruned.stderr
            assert "gone" not in pruned.stdout and re.search(r"stays\s+online", pruned.stdout)
            again = run(*status, "--prune")
            assert "no stale replica entries" in again.stderr and "gone" not in again.stdout
    finally:
        sequencer.stop()


def test_installed_wheel_has_licence_and_metadata() -> None:
    """What `pip show fastbook` and an index show: the wheel's METADATA, and LICENSE inside it."""
    from importlib.metadata import distribution

    dist = distribution("fastbook")
    meta = dist.metadata
    assert meta["License"] == "MIT" and meta["Author"] == "the fastbook developers"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert (meta.get_payload() or "").startswith("# fastbook")  # the README is the long description
    licences = [f for f in dist.files or [] if f.name == "LICENSE"]
    assert licences and "MIT License" in licences[0].read_text()
    assert "textual>=8.2" in (dist.requires or [])


def test_edge_tui_shows_warnings_in_its_log_panel() -> None:
    """With the broker down the runner logs `cannot connect`; on a terminal that goes to the TUI's
    log panel, not raw to stderr over the screen."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    edge = subprocess.Popen([program("fastbook-edge"), "--client-id", "lonely", "--broker",
                             f"mqtt://127.0.0.1:{free_port()}"], stdin=slave, stdout=slave, stderr=slave,
                            env=dict(child_env(), TERM="xterm-256color"))
    os.close(slave)
    screen = bytearray()

    def read_screen() -> str:
        while select.select([master], [], [], 0.05)[0]:
            try:
                screen.extend(os.read(master, 65536))
            except OSError:
                break
        return screen.decode(errors="replace")

    try:
        wait_for(lambda: " DISCONNECTED " in read_screen(), 30, "the disconnected state")
        wait_for(lambda: "warning: edge-lonely: cannot connect to" in read_screen(), 30, "the warning")
        assert "WARNING " not in read_screen()  # no raw log line (the stderr format) on the screen
        os.write(master, b"\x03")  # Ctrl-C quits
        edge.wait(15)
        assert edge.returncode == 0
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.wait(5)
        os.close(master)


def test_status_shows_a_stalled_replica_as_stalled() -> None:
    """An online edge whose status says `"sync":"stalled"` (or no_sequencer) shows that state."""
    from fastbook.apps.status import MarketStatus, ReplicaStatus, format_status
    from fastbook.wire.messages import encode_status

    stalled = ReplicaStatus.from_payload("carol", encode_status("carol", "online", 7, 1, 0, sync="stalled"))
    plain = ReplicaStatus.from_payload("dave", encode_status("dave", "online", 7, 1, 0))  # an older edge
    lonely = ReplicaStatus.from_payload("erin", encode_status("erin", "online", 0, 0, 0, sync="no_sequencer"))
    status = MarketStatus("BTC-USD", 7, "0000000000000001", replicas={"carol": stalled, "dave": plain,
                                                                        "erin": lonely})
    rows = {line.split()[0]: line.split()[1] for line in format_status(status).splitlines()[3:]}
    assert rows == {"carol": "stalled", "dave": "online", "erin": "no_sequencer"}
    assert stalled.sync == "stalled" and plain.sync is None


def test_status_shows_what_the_sequencer_says_is_wrong() -> None:
    from fastbook.apps.status import MarketStatus, format_status

    full = "journal write failed: [Errno 28] No space left on device"
    denied = "cannot write snapshot 7: [Errno 13] Permission denied"
    status = MarketStatus("BTC-USD", 7, "0000000000000001", health={
        "journal": {"state": "unavailable", "error": full, "since": 1_764_000_000_500, "retrying": True},
        "snapshots": {"state": "failing", "error": denied, "since": 1_764_000_000_000},
    })  # fmt: skip
    lines = format_status(status).splitlines()
    since = "since 2025-11-24 16:00:00 UTC"
    assert lines[2] == f"  journal unavailable {since}, retrying (every order is rejected): {full}"
    assert lines[3] == f"  snapshots failing {since}: {denied}"
    assert format_status(MarketStatus("BTC-USD", 7, "0000000000000001")).count("\n") == 2  # nothing wrong
    assert status.to_json()["sequencer"]["health"] == status.health
