"""The embedded amqtt broker (`fastbook-broker --no-sequencer`): what fastbook relies on it for."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fastbook.apps.status import read_status
from fastbook.transport.config import RunnerConfig
from fastbook.transport.node import Outgoing
from fastbook.transport.runner import NodeRunner
from tests.support.brokers import Broker, start_fastbook_broker, wait_for
from tests.transport.test_mqtt import Recorder

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def amqtt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    workdir = tmp_path_factory.mktemp("amqtt")
    broker, _proc = start_fastbook_broker(workdir, extra_args=["--no-sequencer"])
    yield broker
    broker.stop()


def test_persistent_session_gets_messages_sent_while_offline(amqtt: Broker) -> None:
    """amqtt's default auth marks sessions anonymous and drops their queue; ours must not."""
    node = Recorder(["test/offline"])
    with NodeRunner(node, RunnerConfig(amqtt.url, "persistent-1", clean_session=False)) as runner:
        wait_for(lambda: node.connects == 1, 10, "subscribed")
    assert not runner.running
    echo = Recorder(["test/offline"])
    with NodeRunner(echo, RunnerConfig(amqtt.url, "sender-1")) as sender:
        wait_for(lambda: echo.connects == 1, 10, "sender subscribed")
        sender.call(lambda: [Outgoing("test/offline", b"%d" % i) for i in range(20)]).result(5)
        # The broker has routed all 20 (to us too) before the persistent session comes back.
        wait_for(lambda: len(echo.messages) == 20, 10, "all 20 through the broker")
        later = Recorder(["test/offline"])
        with NodeRunner(later, RunnerConfig(amqtt.url, "persistent-1", clean_session=False)):
            wait_for(lambda: len(later.messages) == 20, 15, "queued messages after reconnect")
    assert [p for _, p in later.messages] == [b"%d" % i for i in range(20)]


def test_retained_and_large_payloads(amqtt: Broker) -> None:
    big = b"x" * (3 << 20)  # larger than the sequencer's 1 MiB limit: must reach it to be rejected
    with NodeRunner(Recorder([]), RunnerConfig(amqtt.url, "retainer-1")) as sender:
        assert sender.wait_connected(10)
        # retained only where docs/wire.md retains (book, snapshot, replicas/<id>), even when open
        status_topic = "fastbook/M/replicas/x"
        sender.call(lambda: [Outgoing("test/retained", b"not kept", retain=True),
                             Outgoing(status_topic, b"kept", retain=True), Outgoing("test/big", big)])
        # The broker handles one connection's publishes in order: once the status is retained,
        # test/retained was handled too. (A reader subscribed before that got it live: 1 run in 4.)
        barrier = Recorder([status_topic])
        with NodeRunner(barrier, RunnerConfig(amqtt.url, "barrier-1")):
            wait_for(lambda: (status_topic, b"kept") in barrier.messages, 10, "the status retained")
        reader = Recorder(["test/retained", status_topic])
        with NodeRunner(reader, RunnerConfig(amqtt.url, "reader-1")):
            wait_for(lambda: (status_topic, b"kept") in reader.messages, 10, "retained message")
        assert ("test/retained", b"not kept") not in reader.messages
        big_reader = Recorder(["test/big2"])
        with NodeRunner(big_reader, RunnerConfig(amqtt.url, "big-reader-1")) as r:
            wait_for(lambda: big_reader.connects == 1, 10, "subscribed")
            assert r.running
            sender.call(lambda: [Outgoing("test/big2", big)]).result(5)
            wait_for(lambda: len(big_reader.messages) == 1, 20, "3 MiB message")
    assert big_reader.messages[0][1] == big, big_reader.messages[0][0]


def test_broker_port_in_use_by_fastbook_broker(amqtt: Broker, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="already in use"):
        start_fastbook_broker(tmp_path, port=amqtt.port, extra_args=["--no-sequencer"])


def test_fastbook_broker_runs_a_sequencer_per_market(tmp_path: Path) -> None:
    markets = ["--market", "AAA-USD", "BBB-EUR:tick=0.5:lot=1"]
    broker, proc = start_fastbook_broker(tmp_path, extra_args=markets)
    try:
        for market in ("AAA-USD", "BBB-EUR"):
            status = read_status(broker.url, market, timeout=10)
            assert status.book_version == 0 and status.book_hash is not None
            assert (tmp_path / "data" / market / "journal.log").exists()
        assert read_status(broker.url, "CCC-USD", timeout=10).book_version is None
        assert proc.alive()
    finally:
        assert proc.stop() == 0


class QosRecorder:
    """A bare paho client subscribed at QoS 1 (as an edge subscribes): the QoS each message came at."""

    def __init__(self, url_port: int, client_id: str, topic_filter: str) -> None:
        self.received: list[tuple[str, bytes, int]] = []
        self.subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = lambda _c, _u, m: self.received.append((m.topic, m.payload, m.qos))
        client.connect("127.0.0.1", url_port)
        client.loop_start()
        self.client = client
        assert self.subscribed.wait(10), "not subscribed"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_message_goes_at_the_lower_of_its_and_the_subscriptions_qos(amqtt: Broker) -> None:
    """MQTT 3.1.1, 3.8.4: amqtt alone delivers at the subscription's QoS, so a QoS 0 message cost a
    QoS 1 subscriber a PUBACK and the broker an acknowledgement to wait for."""
    reader = QosRecorder(amqtt.port, "qos-reader-1", "test/qos/#")
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="qos-sender-1")
    try:
        sender.connect("127.0.0.1", amqtt.port)
        sender.loop_start()
        for i in range(3):
            sender.publish(f"test/qos/{i}", b"zero", qos=0)
            sender.publish(f"test/qos/{i}", b"one", qos=1).wait_for_publish(5)
        wait_for(lambda: len(reader.received) == 6, 10, "all six messages")
    finally:
        sender.loop_stop()
        sender.disconnect()
        reader.close()
    assert sorted({(payload, qos) for _t, payload, qos in reader.received}) == [(b"one", 1), (b"zero", 0)]


def test_the_in_process_sequencers_output_keeps_its_qos(tmp_path: Path) -> None:
    """The log and the book leave the sequencer at QoS 0 (a replica finds gaps itself); reports at
    QoS 1. Through amqtt every edge got all of them at QoS 1."""
    broker, proc = start_fastbook_broker(tmp_path, extra_args=["--market", "QQQ-USD"])
    reader = QosRecorder(broker.port, "qos-reader-2", "fastbook/QQQ-USD/#")
    sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="qos-sender-2")
    try:
        sender.connect("127.0.0.1", broker.port)
        sender.loop_start()
        order = b'{"op":"new","id":"q1","side":"buy","price":"1.00","qty":"1"}'
        sender.publish("fastbook/QQQ-USD/orders/carol", order, qos=1).wait_for_publish(5)
        wait_for(lambda: {"fastbook/QQQ-USD/log", "fastbook/QQQ-USD/reports/carol"}
                 <= {t for t, _p, _q in reader.received}, 10, "the order's log entry and report")
    finally:
        sender.loop_stop()
        sender.disconnect()
        reader.close()
        assert proc.stop() == 0
    qos = {topic: q for topic, _p, q in reader.received if not topic.endswith("/snapshot")}
    assert qos["fastbook/QQQ-USD/log"] == 0
    assert qos["fastbook/QQQ-USD/reports/carol"] == 1
    assert qos.get("fastbook/QQQ-USD/book", 0) == 0
