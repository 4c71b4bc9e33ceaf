"""The embedded broker's inline fan-out of an in-process node's output (fastbook.transport.fanout):
an EmbeddedBroker on a loop of its own thread, real paho subscribers, and the node's messages handed
to `publish_from_node` as InProcessLink hands them."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from amqtt.mqtt.publish import PublishPacket
from paho.mqtt.enums import CallbackAPIVersion

from fastbook.transport import broker as broker_module
from fastbook.transport import fanout as fanout_module
from fastbook.transport.broker import EmbeddedBroker, FastbookAmqttBroker, free_port
from fastbook.transport.fanout import publish_head
from fastbook.transport.node import Outgoing
from fastbook.transport.users import UsersFile
from tests.support.brokers import wait_for

LOG = "fastbook/M/log"
BOOK = "fastbook/M/book"
REPORTS = "fastbook/M/reports/"


class Embedded:
    """An EmbeddedBroker running on its own loop thread, as fastbook-broker runs it."""

    def __init__(self, users_file: Path | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="broker-loop", daemon=True)
        self.thread.start()
        self.port = free_port()
        self.embedded = EmbeddedBroker("127.0.0.1", self.port, users_file=users_file)
        self.run(self.embedded.start())
        broker = self.embedded._broker
        assert broker is not None
        self.broker: FastbookAmqttBroker = broker

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def on_loop() -> Any:
            return fn()
        return self.run(on_loop())

    def publish(self, *messages: Outgoing) -> None:
        """One batch of a node's output, on the broker's loop, as InProcessLink hands it over: what
        needs no await at once, the rest through publish_from_node."""
        async def on_loop() -> None:
            done = self.broker.publish_now(messages)
            await self.broker.publish_from_node(list(messages[done:]))
        self.run(on_loop())

    def close(self) -> None:
        self.run(self.embedded.stop(), 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Subscriber:
    """A paho client recording (topic, payload, qos) in arrival order."""

    def __init__(self, port: int, client_id: str, filters: list[tuple[str, int]], *, clean: bool = True,
                 user: tuple[str, str] | None = None, manual_ack: bool = False) -> None:
        self.received: list[tuple[str, bytes, int]] = []
        self.subscribed = threading.Event()
        self.suback: list[Any] = []
        self.client_id = client_id
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                             manual_ack=manual_ack)
        if user is not None:
            client.username_pw_set(*user)
        client.on_subscribe = self._on_subscribe
        client.on_message = lambda _c, _u, m: self.received.append((m.topic, m.payload, m.qos))
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client
        if filters:
            self.subscribe(filters)

    def _on_subscribe(self, _client: Any, _userdata: Any, _mid: Any, codes: Any, _props: Any) -> None:
        self.suback = list(codes)
        self.subscribed.set()

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        self.subscribed.clear()
        self.client.subscribe(filters)
        assert self.subscribed.wait(10), f"{self.client_id} not subscribed"

    def unsubscribe(self, topic_filter: str) -> None:
        done = threading.Event()
        self.client.on_unsubscribe = lambda *_: done.set()
        self.client.unsubscribe(topic_filter)
        assert done.wait(10), f"{self.client_id} not unsubscribed"

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p, _q in self.received if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def embedded() -> Iterator[Embedded]:
    broker = Embedded()
    yield broker
    broker.close()


def session_of(embedded: Embedded, client_id: str) -> Any:
    return embedded.call(lambda: embedded.broker._sessions.get(client_id, (None, None)))


def test_the_publish_head_is_amqtts_encoding() -> None:
    for qos in (0, 1):
        for size in (0, 1, 100, 127 - 20, 200, 16383, 20000, 3 << 20):
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            packet_id = 513 if qos else None
            expected = PublishPacket.build("fastbook/M/é", data, packet_id, False, qos, False).to_bytes()
            pid = packet_id.to_bytes(2, "big") if packet_id else b""
            assert publish_head("fastbook/M/é", qos, len(data)) + pid + data == expected, (qos, size)


def test_a_subscription_after_the_first_publish_gets_the_next(embedded: Embedded) -> None:
    first = Subscriber(embedded.port, "first", [(LOG, 1)])
    later: Subscriber | None = None
    try:
        embedded.publish(Outgoing(LOG, b"1", qos=0))
        wait_for(lambda: first.payloads(LOG) == [b"1"], 10, "the first message")
        builds = embedded.broker.fanout.builds
        embedded.publish(Outgoing(LOG, b"2", qos=0))  # cached: no new lookup
        wait_for(lambda: first.payloads(LOG) == [b"1", b"2"], 10, "the second message")
        assert embedded.broker.fanout.builds == builds
        later = Subscriber(embedded.port, "later", [(LOG, 1)])
        embedded.publish(Outgoing(LOG, b"3", qos=0))
        wait_for(lambda: later.payloads(LOG) == [b"3"], 10, "the later subscriber's message")
        wait_for(lambda: first.payloads(LOG) == [b"1", b"2", b"3"], 10, "the third message")
        assert all(q == 0 for _t, _p, q in first.received + later.received)  # delivery_qos: QoS 0
    finally:
        first.close()
        if later is not None:
            later.close()


def test_an_unsubscribed_topic_is_no_longer_delivered(embedded: Embedded) -> None:
    reader = Subscriber(embedded.port, "reader", [(LOG, 1), (BOOK, 0)])
    try:
        embedded.publish(Outgoing(LOG, b"1", qos=0), Outgoing(BOOK, b"b1", qos=0))
        wait_for(lambda: reader.payloads(BOOK) == [b"b1"], 10, "the first book")
        reader.unsubscribe(LOG)
        embedded.publish(Outgoing(LOG, b"2", qos=0), Outgoing(BOOK, b"b2", qos=0))
        wait_for(lambda: reader.payloads(BOOK) == [b"b1", b"b2"], 10, "the second book")
        assert reader.payloads(LOG) == [b"1"]
    finally:
        reader.close()


def test_a_client_reconnecting_with_a_clean_session_is_delivered_to(embedded: Embedded) -> None:
    """The clean reconnect replaces the amqtt Session the cache held (which stays disconnected)."""
    reader = Subscriber(embedded.port, "again", [(LOG, 1)])
    embedded.publish(Outgoing(LOG, b"1", qos=0))
    wait_for(lambda: reader.payloads(LOG) == [b"1"], 10, "the first message")
    old = session_of(embedded, "again")[0]
    reader.close()
    wait_for(lambda: old.transitions.state == "disconnected", 10, "the disconnect")
    embedded.publish(Outgoing(LOG, b"lost", qos=0))
    again = Subscriber(embedded.port, "again", [(LOG, 1)])
    try:
        assert session_of(embedded, "again")[0] is not old
        embedded.publish(Outgoing(LOG, b"2", qos=0))
        wait_for(lambda: again.payloads(LOG) == [b"2"], 10, "the message after the reconnect")
    finally:
        again.close()


def test_a_disconnected_persistent_session_gets_its_qos1_messages_later(embedded: Embedded) -> None:
    topic = REPORTS + "pat"
    pat = Subscriber(embedded.port, "pat", [(topic, 1), (LOG, 1)], clean=False)
    embedded.publish(Outgoing(topic, b"r1", qos=1), Outgoing(LOG, b"1", qos=0))
    wait_for(lambda: pat.payloads(topic) == [b"r1"] and pat.payloads(LOG) == [b"1"], 10, "live messages")
    session = session_of(embedded, "pat")[0]
    pat.close()
    wait_for(lambda: session.transitions.state == "disconnected", 10, "the disconnect")
    embedded.publish(Outgoing(topic, b"r2", qos=1), Outgoing(LOG, b"2", qos=0), Outgoing(topic, b"r3", qos=1))
    assert embedded.call(lambda: session.retained_messages.qsize()) == 2  # QoS 1 only, as amqtt
    back = Subscriber(embedded.port, "pat", [], clean=False)
    try:
        wait_for(lambda: back.payloads(topic) == [b"r2", b"r3"], 10, "the queued reports")
        embedded.publish(Outgoing(topic, b"r4", qos=1))
        wait_for(lambda: back.payloads(topic) == [b"r2", b"r3", b"r4"], 10, "a live report again")
        assert back.payloads(LOG) == []
        wait_for(lambda: not embedded.call(lambda: dict(session.inflight_out)), 10, "PUBACKs")
    finally:
        back.close()


def test_an_unacknowledged_qos1_delivery_times_out_as_amqtts(embedded: Embedded,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fanout_module, "PUBACK_TIMEOUT", 0.3)
    topic = REPORTS + "mute"
    mute = Subscriber(embedded.port, "mute", [(topic, 1)], manual_ack=True)
    try:
        session, handler = session_of(embedded, "mute")
        with caplog.at_level(logging.WARNING):
            embedded.publish(Outgoing(topic, b"r1", qos=1))
            wait_for(lambda: mute.payloads(topic) == [b"r1"], 10, "the report")
            assert embedded.call(lambda: (len(session.inflight_out), len(handler._puback_waiters))) == (1, 1)
            wait_for(lambda: embedded.call(lambda: (len(session.inflight_out), len(handler._puback_waiters)))
                     == (0, 0), 10, "the timeout")
        # logged in amqtt's words, so SlowConsumerLog counts it as one of amqtt's own
        assert any(r.getMessage().startswith("slow consumer") for r in caplog.records)
        embedded.publish(Outgoing(topic, b"r2", qos=1))  # the connection still takes deliveries
        wait_for(lambda: mute.payloads(topic) == [b"r1", b"r2"], 10, "the next report")
    finally:
        mute.close()


def test_a_subscriber_gets_the_nodes_messages_in_publish_order(embedded: Embedded) -> None:
    topic = REPORTS + "ord"
    reader = Subscriber(embedded.port, "ord", [(topic, 1), (LOG, 1), (BOOK, 0)])
    expected: list[tuple[str, bytes, int]] = []
    try:
        for batch in range(50):
            messages = [Outgoing(LOG, b"log %d" % batch, qos=0), Outgoing(topic, b"report %d" % batch, qos=1),
                        Outgoing(BOOK, b"book %d" % batch, qos=0, retain=True)]
            expected += [(m.topic, m.payload, m.qos) for m in messages]
            embedded.publish(*messages)
        wait_for(lambda: len(reader.received) == len(expected), 10, "every message")
        assert reader.received == expected
    finally:
        reader.close()
    assert embedded.call(lambda: embedded.broker._retained_messages[BOOK].data) == b"book 49"


def test_deliveries_behind_a_held_write_lock_keep_their_order(embedded: Embedded) -> None:
    """While amqtt writes to a connection (its write lock held: a drain waiting on a slow reader),
    the node's deliveries to it wait behind, in order; the other subscribers get theirs at once."""
    topic = REPORTS + "slow"
    slow = Subscriber(embedded.port, "slow", [(topic, 1), (LOG, 1)])
    quick = Subscriber(embedded.port, "quick", [(LOG, 1)])
    try:
        handler = session_of(embedded, "slow")[1]
        embedded.run(handler._write_lock.acquire())
        embedded.publish(Outgoing(LOG, b"1", qos=0), Outgoing(topic, b"r1", qos=1))
        embedded.publish(Outgoing(LOG, b"2", qos=0))
        wait_for(lambda: quick.payloads(LOG) == [b"1", b"2"], 10, "the quick subscriber's messages")
        assert slow.received == []
        embedded.call(handler._write_lock.release)
        embedded.publish(Outgoing(LOG, b"3", qos=0))
        wait_for(lambda: len(slow.received) == 4, 10, "the slow subscriber's messages")
        assert slow.received == [(LOG, b"1", 0), (topic, b"r1", 1), (LOG, b"2", 0), (LOG, b"3", 0)]
        wait_for(lambda: not embedded.call(lambda: embedded.broker.fanout._lanes), 10, "the lane ended")
    finally:
        slow.close()
        quick.close()


def test_a_dead_subscriber_does_not_stop_the_others(embedded: Embedded) -> None:
    dead = Subscriber(embedded.port, "dead", [(LOG, 1), (REPORTS + "dead", 1)])
    broken = Subscriber(embedded.port, "broken", [(LOG, 1)])
    alive = Subscriber(embedded.port, "alive", [(LOG, 1)])
    try:
        embedded.publish(Outgoing(LOG, b"0", qos=0))
        wait_for(lambda: alive.payloads(LOG) == [b"0"], 10, "the first message")
        # one connection gone under amqtt's feet, one whose writes fail
        embedded.call(lambda: handler_of(embedded, "dead").writer._writer.transport.abort())
        transport = embedded.call(lambda: handler_of(embedded, "broken").writer._writer.transport)

        def fail(_data: bytes) -> None:
            raise OSError("broken pipe")
        transport.write = fail
        for i in range(1, 20):
            embedded.publish(Outgoing(LOG, b"%d" % i, qos=0), Outgoing(REPORTS + "dead", b"r", qos=1))
        wait_for(lambda: len(alive.payloads(LOG)) == 20, 10, "every message to the live subscriber")
        assert alive.payloads(LOG) == [b"%d" % i for i in range(20)]
    finally:
        for s in (dead, broken, alive):
            s.close()


def handler_of(embedded: Embedded, client_id: str) -> Any:
    """The handler of `client_id` (on the loop)."""
    return embedded.broker._sessions[client_id][1]


def test_the_receive_acl_still_refuses_a_subscriber(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ACL's answer per subscriber is cached with the match, and a refusal holds."""
    users = UsersFile(tmp_path / "users.json")
    users.set("alice", "pw-alice")
    users.set("mallory", "pw-mallory")
    users.save()
    real = broker_module.may_receive
    monkeypatch.setattr(broker_module, "may_receive",
                        lambda user, role, topic: user != "mallory" and real(user, role, topic))
    embedded = Embedded(users_file=tmp_path / "users.json")
    alice = Subscriber(embedded.port, "alice", [(LOG, 1), (BOOK, 0)], user=("alice", "pw-alice"))
    mallory = Subscriber(embedded.port, "mallory", [(LOG, 1), (BOOK, 0)], user=("mallory", "pw-mallory"))
    try:
        assert [c.value for c in mallory.suback] == [1, 0]  # subscribing is allowed
        for i in range(3):
            embedded.publish(Outgoing(LOG, b"%d" % i, qos=0))
        wait_for(lambda: alice.payloads(LOG) == [b"0", b"1", b"2"], 10, "alice's messages")
        embedded.publish(Outgoing(BOOK, b"b", qos=0, retain=True))
        wait_for(lambda: alice.payloads(BOOK) == [b"b"], 10, "alice's book")
        embedded.run(asyncio.sleep(0.2))  # written in the same call as alice's
        assert mallory.received == []
    finally:
        alice.close()
        mallory.close()
        embedded.close()


def test_deliveries_that_await_the_acl_plugins_keep_their_order(embedded: Embedded) -> None:
    """With a topic plugin other than FastbookAclPlugin the ACL is asked per message (an await):
    the batch then goes through publish_from_node, still in order, and still retains."""
    topic = REPORTS + "plug"
    reader = Subscriber(embedded.port, "plug", [(topic, 1), (LOG, 1), (BOOK, 0)])
    try:
        embedded.publish(Outgoing(LOG, b"sync", qos=0))
        wait_for(lambda: reader.payloads(LOG) == [b"sync"], 10, "the first message")
        fanout = embedded.broker.fanout
        embedded.call(lambda: (setattr(fanout, "_receive_acl", lambda _s, _t: None), fanout.invalidate()))
        expected = [(LOG, b"sync", 0)]
        for batch in range(20):
            messages = [Outgoing(LOG, b"log %d" % batch, qos=0), Outgoing(topic, b"report %d" % batch, qos=1),
                        Outgoing(BOOK, b"book %d" % batch, qos=0, retain=True)]
            expected += [(m.topic, m.payload, m.qos) for m in messages]
            assert embedded.call(lambda messages=messages: embedded.broker.publish_now(messages)) == 0
            embedded.publish(*messages)
        wait_for(lambda: len(reader.received) == len(expected), 10, "every message")
        assert reader.received == expected
        assert embedded.call(lambda: embedded.broker._retained_messages[BOOK].data) == b"book 19"
    finally:
        reader.close()


def test_a_client_message_nobody_subscribed_to_skips_amqtts_broadcast(
    embedded: Embedded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's order is read by the in-process sequencer (its ingress) only: amqtt's broadcast
    queue, task and wait are skipped while no subscription matches, and a subscription made later
    gets the next one (the fan-out's cache follows subscriptions)."""
    broadcast: list[str] = []
    amqtt_broadcast = broker_module.Broker._broadcast_message

    async def counted(self: Any, session: Any, topic: Any, data: Any, force_qos: Any = None) -> None:
        broadcast.append(topic)
        await amqtt_broadcast(self, session, topic, data, force_qos)

    monkeypatch.setattr(broker_module.Broker, "_broadcast_message", counted)
    ingress: list[tuple[str, bytes]] = []
    embedded.call(lambda: embedded.broker.add_ingress(["fastbook/M/orders/+"],
                                                      lambda t, p: ingress.append((t, p))))
    topic = "fastbook/M/orders/alice"
    sender = Subscriber(embedded.port, "alice", [])
    watcher: Subscriber | None = None
    try:
        sender.client.publish(topic, b"o1", qos=1)
        wait_for(lambda: ingress == [(topic, b"o1")], 10, "the order at the ingress")
        assert broadcast == []
        watcher = Subscriber(embedded.port, "watcher", [("fastbook/M/orders/+", 1)])
        sender.client.publish(topic, b"o2", qos=1)
        wait_for(lambda: watcher is not None and watcher.payloads(topic) == [b"o2"], 10,
                 "the order at the later subscriber")
        assert ingress == [(topic, b"o1"), (topic, b"o2")] and broadcast == [topic]
    finally:
        sender.close()
        if watcher is not None:
            watcher.close()
