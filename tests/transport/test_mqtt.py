"""NodeRunner (connection + driver on one thread) and broker URLs against a private mosquitto,
with small fake nodes."""

from __future__ import annotations

import fcntl
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from fastbook.transport.config import (
    BatchPolicy,
    BrokerAddress,
    RunnerConfig,
    parse_broker_url,
    parse_broker_urls,
)
from fastbook.transport.driver import HOLD_AFTER, HOLD_SPACING
from fastbook.transport.node import Incoming, Outgoing
from fastbook.transport.runner import NodeRunner
from fastbook.transport.seam import RunnerError
from tests.support.brokers import MOSQUITTO, Broker, Proc, free_port, port_open, start_mosquitto, wait_for

pytestmark = pytest.mark.broker


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883)),
        ("mqtt://localhost", BrokerAddress("localhost", 1883)),
        ("tcp://broker.local:8883", BrokerAddress("broker.local", 8883)),
        (" mqtt://[::1]:1884 ", BrokerAddress("::1", 1884)),
    ],
)
def test_parse_broker_url(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("127.0.0.1:1883", "no scheme"),
        ("http://h:1", "unsupported scheme"),
        ("mqtt://h:0", "port"),
        ("mqtt://h:99999", "port"),
        ("mqtt://h:abc", "port"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h:1/x", "path"),
        ("mqtt://u:p@h:1", "credentials"),
    ],
)
def test_parse_broker_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_broker_url(url)


def test_parse_several_urls() -> None:
    assert parse_broker_urls("mqtt://a:1, mqtt://b:2") == [BrokerAddress("a", 1), BrokerAddress("b", 2)]
    assert parse_broker_urls(["mqtt://a:1", "mqtt://b:2,mqtt://c"]) == [
        BrokerAddress("a", 1),
        BrokerAddress("b", 2),
        BrokerAddress("c", 1883),
    ]
    with pytest.raises(ValueError, match="no broker URL"):
        parse_broker_urls(" , ")


class Recorder:
    """A fake node: records everything it is given, echoes 'in' messages to 'out'."""

    def __init__(self, subs: Sequence[str], echo: bool = False, will: Outgoing | None = None) -> None:
        self.subs = list(subs)
        self.echo = echo
        self._will = will
        self.messages: list[Incoming] = []
        self.batches: list[int] = []
        self.batch_starts: list[float] = []
        self.connects = 0
        self.ticks = 0
        self.closed = False
        self.threads: set[str] = set()
        self.fail_on: bytes | None = None
        self.cost = 0.0  # seconds each batch takes (the work itself: what the batch hold spaces)

    def _seen(self) -> None:
        self.threads.add(threading.current_thread().name)

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(s, 1) for s in self.subs]

    def will(self) -> Outgoing | None:
        return self._will

    def on_connected(self) -> list[Outgoing]:
        self._seen()
        self.connects += 1
        return [Outgoing("test/status", b"online", retain=True)]

    def on_messages(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        self._seen()
        self.batch_starts.append(time.monotonic())
        if self.fail_on is not None and any(p == self.fail_on for _, p in messages):
            raise RuntimeError("node bug")
        self.messages.extend(messages)
        self.batches.append(len(messages))
        if self.cost:
            time.sleep(self.cost)
        if self.echo:
            return [Outgoing("test/out", p) for topic, p in messages if topic.startswith("test/in")]
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        self._seen()
        self.ticks += 1
        return []

    def close(self) -> list[Outgoing]:
        self._seen()
        self.closed = True
        return [Outgoing("test/status", b"closed", retain=True)]


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


def test_runner_delivers_in_order_on_one_thread(mosquitto: Broker) -> None:
    echo = Recorder(["test/in/+"], echo=True)
    sink = Recorder(["test/out", "test/status"])
    with (
        NodeRunner(sink, RunnerConfig(mosquitto.url, "sink-1")) as sink_runner,
        NodeRunner(echo, RunnerConfig(mosquitto.url, "echo-1")),
    ):
        assert sink_runner.wait_connected(10)
        wait_for(lambda: echo.connects == 1 and sink.connects == 1, 10, "both nodes connected")
        count = 3000
        published = sink_runner.call(lambda: [Outgoing("test/in/a", b"%d" % i) for i in range(count)])
        assert len(published.result(10)) == count
        wait_for(lambda: sum(t == "test/out" for t, _ in sink.messages) == count, 20, "all echoes")
        wait_for(lambda: sink.ticks > 0 and echo.ticks > 0, 5, "ticks")
    out = [p for t, p in sink.messages if t == "test/out"]
    assert out == [b"%d" % i for i in range(count)]  # one publisher, one topic: order kept end to end
    assert b"online" in [p for t, p in sink.messages if t == "test/status"]
    assert max(echo.batches) > 1  # a read pass takes everything readable: batches
    assert echo.closed and sink.closed
    assert echo.threads == {"echo-1-node"} and sink.threads == {"sink-1-node"}  # one thread each


def publish_packet_size(message: Outgoing) -> int:
    """Bytes of the MQTT 3.1.1 PUBLISH (QoS1) that carries `message`."""
    remaining = 2 + len(message.topic.encode()) + 2 + len(message.payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining


def readable_bytes(runner: NodeRunner) -> int:
    sock = runner.connection.client.socket()
    if sock is None:
        return 0
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def hold_until_queued(runner: NodeRunner, messages: Sequence[Outgoing], send: Callable[[], object]) -> None:
    """Hold the runner's thread in a call while `send()` queues `messages` behind it: they wait in
    the socket (the runner's one thread is busy), all of them readable at once when it is released."""
    release = threading.Event()
    entered = threading.Event()

    def hold() -> list[Outgoing]:
        entered.set()
        release.wait(20)
        return []

    held = runner.call(hold)
    # Send only once the runner's thread is inside the call: sent earlier, a message can be read
    # before the call runs, and the backlog never reaches `size` (seen on a loaded machine).
    assert entered.wait(10), "the runner did not run the holding call"
    send()
    size = sum(publish_packet_size(m) for m in messages)
    wait_for(lambda: readable_bytes(runner) >= size, 10, "the backlog in the socket")  # test-only peek
    release.set()
    held.result(10)


def test_batch_window_spaces_batches_under_load(mosquitto: Broker) -> None:
    """Under load (a batch of several messages with more waiting behind it) the next batch starts
    no sooner than HOLD_SPACING x the last one's duration after it, at most the window (without
    it: back to back)."""
    window = 0.2
    node = Recorder(["test/win/+"])
    node.cost = window / HOLD_SPACING  # so the spacing is the whole window
    sender = Recorder([])
    count = 1000
    with (
        NodeRunner(sender, RunnerConfig(mosquitto.url, "win-sender")) as send,
        NodeRunner(node, RunnerConfig(mosquitto.url, "win-node",
                                      batching=BatchPolicy(window=window, max_messages=250))) as runner,
    ):
        wait_for(lambda: node.connects == 1 and sender.connects == 1, 10, "both nodes connected")
        outgoing = [Outgoing("test/win/a", b"%d" % i) for i in range(count)]
        hold_until_queued(runner, outgoing, lambda: send.call(lambda: outgoing).result(10))
        wait_for(lambda: len(node.messages) == count, 20, "the burst")
        assert [p for _t, p in node.messages] == [b"%d" % i for i in range(count)]
        assert runner.batches == len(node.batches) == 4 and runner.received == count
    starts = node.batch_starts
    gaps = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
    assert min(gaps) >= window / 2, gaps  # (half: the node stamps a little after the runner)


def test_batches_are_cut_by_payload_bytes(mosquitto: Broker) -> None:
    """A backlog of big messages is handed to the node in slices of about max_batch_bytes (at least
    one message each), so its first results go out before the whole backlog is processed."""
    node = Recorder(["test/big/+"])
    sender = Recorder([])
    count = 40
    with (
        NodeRunner(sender, RunnerConfig(mosquitto.url, "big-sender")) as send,
        NodeRunner(node, RunnerConfig(mosquitto.url, "big-node",
                                      batching=BatchPolicy(max_bytes=2500))) as runner,
    ):
        wait_for(lambda: node.connects == 1 and sender.connects == 1, 10, "both nodes connected")
        outgoing = [Outgoing("test/big/a", b"%04d" % i + b"x" * 996) for i in range(count)]
        hold_until_queued(runner, outgoing, lambda: send.call(lambda: outgoing).result(10))
        wait_for(lambda: len(node.messages) == count, 20, "the backlog")
    assert [p[:4] for _t, p in node.messages] == [b"%04d" % i for i in range(count)]
    # 2 x 1000 bytes < 2500 <= 3 x 1000: every third message ends a slice
    assert node.batches == [3] * (count // 3) + [count % 3]


def test_batch_window_never_delays_a_lone_message(mosquitto: Broker) -> None:
    """A batch of one message means nothing is queueing: the next message is not held back, however
    large the window (5 s here; each message must arrive well within 2 s)."""
    node = Recorder(["test/lone/+"])
    sender = Recorder([])
    with (
        NodeRunner(sender, RunnerConfig(mosquitto.url, "lone-sender")) as send,
        NodeRunner(node, RunnerConfig(mosquitto.url, "lone-node",
                                      batching=BatchPolicy(window=1.0))) as runner,
    ):
        wait_for(lambda: node.connects == 1 and sender.connects == 1, 10, "both nodes connected")
        for i in range(5):
            send.call(lambda i=i: [Outgoing("test/lone/a", b"%d" % i)]).result(5)
            wait_for(lambda i=i: len(node.messages) == i + 1, 0.5, f"message {i} (not held by the window)")
        assert node.batches == [1] * 5 and runner.batches == 5


def test_stop_interrupts_the_window(mosquitto: Broker) -> None:
    """A stop does not wait out the group-commit window, and what was queued before it still reaches
    the node."""
    node = Recorder(["test/stopwin/+"])
    sender = Recorder([])
    with NodeRunner(sender, RunnerConfig(mosquitto.url, "stopwin-sender")) as send:
        runner = NodeRunner(node, RunnerConfig(mosquitto.url, "stopwin-node",
                                               batching=BatchPolicy(window=1.0))).start()
        wait_for(lambda: node.connects == 1 and sender.connects == 1, 10, "both nodes connected")
        node.cost = 0.25  # so the spacing is the whole window (HOLD_SPACING x 0.25 s)
        several = [Outgoing("test/stopwin/a", b"%d" % i) for i in range(HOLD_AFTER)]
        hold_until_queued(runner, several, lambda: send.call(lambda: several).result(10))
        wait_for(lambda: node.batches == [HOLD_AFTER], 5, "a batch of several")
        send.call(lambda: [Outgoing("test/stopwin/a", b"last")]).result(5)
        wait_for(lambda: len(runner.driver.inbox) == 1, 5, "the last one read and held for the window")
        started = time.monotonic()
        runner.stop(5)
        assert time.monotonic() - started < 0.65 and node.closed  # its batch (0.25 s), not the window
        assert runner.received == HOLD_AFTER + 1


class Sleeper(Recorder):
    """A node without timers: next_deadline None."""

    def next_deadline(self, now: float) -> float | None:
        return None


def test_an_idle_node_sleeps_and_a_call_wakes_it(mosquitto: Broker) -> None:
    """No timer, no message: the runner's thread sits in select (no tick at all), and a call from
    another thread still gets in at once through the wakeup."""
    node = Sleeper([])
    with NodeRunner(node, RunnerConfig(mosquitto.url, "sleeper-1")) as runner:
        assert runner.wait_connected(10)
        for _ in range(20):
            started = time.monotonic()
            assert runner.call_with_result(lambda: (1, [])).result(5) == 1
            assert time.monotonic() - started < 0.5
        assert node.ticks == 0


def test_call_returns_values_and_errors(mosquitto: Broker) -> None:
    node = Recorder([])
    with NodeRunner(node, RunnerConfig(mosquitto.url, "caller-1")) as runner:
        assert runner.call_with_result(lambda: (42, [])).result(5) == 42
        thread = runner.call_with_result(lambda: (threading.current_thread().name, [])).result(5)
        assert thread == "caller-1-node"  # the thread that also reads and writes the socket

        def broken() -> list[Outgoing]:
            raise KeyError("nope")

        with pytest.raises(KeyError):
            runner.call(broken).result(5)
        assert runner.running  # a failing call is the caller's problem, not the node's
    with pytest.raises(RunnerError):
        runner.call(lambda: []).result(1)


def test_close_messages_are_published_on_stop(mosquitto: Broker) -> None:
    watcher = Recorder(["test/closing"])
    node = Recorder([])
    node.close = lambda: [Outgoing("test/closing", b"bye")]  # type: ignore[method-assign]
    with NodeRunner(watcher, RunnerConfig(mosquitto.url, "watcher-1")) as watcher_runner:
        assert watcher_runner.wait_connected(10)
        wait_for(lambda: watcher.connects == 1, 10, "watcher subscribed")
        runner = NodeRunner(node, RunnerConfig(mosquitto.url, "closer-1")).start()
        assert runner.wait_connected(10)
        runner.stop()
        assert runner.wait(1)
        wait_for(lambda: ("test/closing", b"bye") in watcher.messages, 10, "close() message")


def test_node_exception_stops_runner_and_fires_the_will(mosquitto: Broker) -> None:
    node = Recorder(["test/boom"], will=Outgoing("test/will", b"victim gone"))
    node.fail_on = b"boom"
    watcher = Recorder(["test/will"])
    with (
        NodeRunner(watcher, RunnerConfig(mosquitto.url, "will-watcher-1")),
        NodeRunner(Recorder([]), RunnerConfig(mosquitto.url, "bomber-1")) as sender,
    ):
        wait_for(lambda: watcher.connects == 1, 10, "will watcher subscribed")
        runner = NodeRunner(node, RunnerConfig(mosquitto.url, "victim-1")).start()
        assert runner.wait_connected(10)
        wait_for(lambda: node.connects == 1, 10, "victim subscribed")
        sender.call(lambda: [Outgoing("test/boom", b"boom")]).result(5)
        assert not runner.wait(10)
        assert isinstance(runner.error, RuntimeError)
        assert not runner.running
        wait_for(lambda: ("test/will", b"victim gone") in watcher.messages, 10, "the last will")


def test_failover_skips_dead_broker(mosquitto: Broker) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    node = Recorder([])
    with NodeRunner(node, RunnerConfig([dead, mosquitto.url], "failover-1", reconnect_min=0.05)) as runner:
        assert runner.wait_connected(10)
        assert runner.current_broker == parse_broker_url(mosquitto.url)


def test_reconnects_after_broker_restart(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    node = Recorder(["test/again"])
    try:
        config = RunnerConfig(broker.url, "phoenix-1", reconnect_min=0.05, reconnect_max=0.5)
        with NodeRunner(node, config) as runner:
            wait_for(lambda: node.connects == 1, 10, "first connect")
            broker.stop()
            wait_for(lambda: not runner.connected.is_set(), 10, "disconnect noticed")
            conf = next(tmp_path.glob("mosquitto-*.conf"))  # same port, same config
            proc = Proc([MOSQUITTO, "-c", str(conf)], tmp_path / "mosquitto-again.log")
            broker.procs = [proc]
            wait_for(lambda: port_open(broker.port), 10, "mosquitto restarted")
            wait_for(lambda: node.connects == 2, 20, "on_connected after reconnect")
            with NodeRunner(Recorder([]), RunnerConfig(broker.url, "poker-1")) as poker:
                poker.call(lambda: [Outgoing("test/again", b"x")]).result(5)
                wait_for(lambda: ("test/again", b"x") in node.messages, 10, "resubscribed delivery")
    finally:
        broker.stop()


def test_subscriptions_follow_the_node(mosquitto: Broker) -> None:
    """A node's subscriptions() changed by a node call: the runner unsubscribes what was dropped
    (the broker stops sending it) and subscribes what was added."""
    node = Recorder(["test/keep", "test/drop"])
    with (
        NodeRunner(node, RunnerConfig(mosquitto.url, "follows-1")) as runner,
        NodeRunner(Recorder([]), RunnerConfig(mosquitto.url, "poker-2")) as poker,
    ):
        wait_for(lambda: node.connects == 1, 10, "connect")
        poker.call(lambda: [Outgoing("test/drop", b"before"), Outgoing("test/keep", b"1")]).result(5)
        wait_for(lambda: ("test/keep", b"1") in node.messages, 10, "first delivery")
        assert ("test/drop", b"before") in node.messages

        def change() -> list[Outgoing]:
            node.subs = ["test/keep", "test/new"]
            return []

        runner.call(change).result(5)

        def probe_delivered() -> bool:  # the unsubscribe went first, so it is in effect by then
            poker.call(lambda: [Outgoing("test/new", b"probe")]).result(5)
            return ("test/new", b"probe") in node.messages

        wait_for(probe_delivered, 10, "the added subscription")
        poker.call(lambda: [Outgoing("test/drop", b"after"), Outgoing("test/keep", b"2")]).result(5)
        wait_for(lambda: ("test/keep", b"2") in node.messages, 10, "delivery after the change")
        assert ("test/drop", b"after") not in node.messages
        assert runner.unsolicited == 0  # not filtered out here: the broker no longer sent it


def test_runner_config_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scheme"):
        NodeRunner(Recorder([]), RunnerConfig("localhost:1883", "x"))
    with pytest.raises(ValueError, match="client id"):
        NodeRunner(Recorder([]), RunnerConfig("mqtt://localhost", ""))
    with pytest.raises(ValueError, match="batch window"):
        NodeRunner(Recorder([]), RunnerConfig("mqtt://localhost", "x", batching=BatchPolicy(window=-0.1)))
    with pytest.raises(ValueError, match="max_bytes"):
        NodeRunner(Recorder([]), RunnerConfig("mqtt://localhost", "x", batching=BatchPolicy(max_bytes=0)))
