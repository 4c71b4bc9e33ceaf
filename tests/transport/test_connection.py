"""The pure parts of MqttConnection, without a broker: failover/backoff and subscription following."""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

import paho.mqtt.client as paho
import pytest

from fastbook.transport.config import BrokerAddress
from fastbook.transport.connection import (
    COALESCE_BYTES,
    READ_CHUNK,
    BrokerRotation,
    BufferedRecv,
    SubscriptionSet,
    coalesce,
    filter_matcher,
    publish_packet,
)
from fastbook.transport.node import Outgoing

A, B, C = BrokerAddress("a", 1), BrokerAddress("b", 2), BrokerAddress("c", 3)


def test_rotation_backs_off_after_a_failed_round_only() -> None:
    rotation = BrokerRotation([A, B, C], reconnect_min=0.1, reconnect_max=0.5)
    assert rotation.current == A
    assert rotation.connect_failed() == 0.0 and rotation.current == B
    assert rotation.connect_failed() == 0.0 and rotation.current == C
    assert rotation.connect_failed() == 0.1 and rotation.current == A  # a full round failed
    assert [rotation.connect_failed() for _ in range(6)] == [0.0, 0.0, 0.2, 0.0, 0.0, 0.4]
    assert [rotation.connect_failed() for _ in range(6)] == [0.0, 0.0, 0.5, 0.0, 0.0, 0.5]  # capped


def test_rotation_moves_on_after_a_lost_connection_and_resets_on_success() -> None:
    rotation = BrokerRotation([A, B], reconnect_min=0.1, reconnect_max=5.0)
    assert rotation.connection_lost() == 0.1 and rotation.current == B
    assert rotation.connection_lost() == 0.2 and rotation.current == A
    rotation.connected()
    assert rotation.connection_lost() == 0.1
    with pytest.raises(ValueError):
        BrokerRotation([], 0.1, 1.0)


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.next_mid = 10

    def unsubscribe(self, topics: list[str]) -> None:
        self.calls.append(("unsubscribe", topics))

    def subscribe(self, subs: list[tuple[str, int]]) -> int:
        self.calls.append(("subscribe", subs))
        self.next_mid += 1
        return self.next_mid


def test_subscriptions_follow_the_node_while_connected() -> None:
    subs = SubscriptionSet([("log", 1), ("snap", 1), ("reports/+", 1)])
    assert not subs.accepts("log")  # nothing subscribed yet
    assert subs.for_connect() == [("log", 1), ("snap", 1), ("reports/+", 1)]
    assert subs.accepts("log") and subs.accepts("reports/alice") and not subs.accepts("book")
    client = FakeClient()
    subs.change([("log", 1), ("snap", 1), ("reports/+", 1)], True, client.unsubscribe, client.subscribe)
    assert client.calls == []  # nothing changed: no traffic
    subs.change([("log", 1), ("reports/+", 0), ("book", 1)], True, client.unsubscribe, client.subscribe)
    assert client.calls == [("unsubscribe", ["snap"]), ("subscribe", [("reports/+", 0), ("book", 1)])]
    assert not subs.accepts("snap") and subs.accepts("book")
    assert subs.is_change(11) and not subs.is_change(11)  # the SUBACK of the change, once
    assert not subs.is_change(99)  # (the connect's own subscribe)


def test_subscriptions_changed_while_disconnected_apply_on_the_next_connect() -> None:
    subs = SubscriptionSet([("log", 1), ("snap", 1)])
    subs.for_connect()
    client = FakeClient()
    subs.change([("log", 1)], False, client.unsubscribe, client.subscribe)
    assert client.calls == [] and not subs.accepts("snap")
    assert subs.for_connect() == [("log", 1)]
    subs.change([("log", 1)], True, client.unsubscribe, client.subscribe)
    assert client.calls == []


def queued(command: int, data: bytes, qos: int = 0, pos: int = 0) -> dict[str, object]:
    """An entry of paho's write queue (paho 2.x `_packet_queue`), with its MQTTMessageInfo."""
    info = paho.MQTTMessageInfo(1)
    return {"command": command, "mid": 1, "qos": qos, "pos": pos, "to_process": len(data) - pos,
            "packet": data, "info": info}


def test_coalesce_joins_queued_packets_into_one_write() -> None:
    first = queued(paho.PUBLISH, b"log")
    second = queued(paho.PUBLISH | 2, b"report", qos=1)
    third = queued(paho.PUBACK, b"ack")
    queue: deque[Any] = deque([first, second, third])
    coalesce(queue)
    assert len(queue) == 1
    joined = queue[0]
    assert joined["packet"] == b"logreportack" and joined["to_process"] == 12 and joined["pos"] == 0
    # paho marks a QoS0 PUBLISH published once written: the joined write marks the QoS0 one(s) only
    assert joined["command"] & 0xF0 == paho.PUBLISH and joined["qos"] == 0
    assert not first["info"].is_published()  # type: ignore[attr-defined]
    joined["info"]._set_as_published()
    assert first["info"].is_published() and not second["info"].is_published()  # type: ignore[attr-defined]


def test_a_joined_write_lost_in_a_reconnect_marks_each_message_lost() -> None:
    """paho's reconnect sets `info.rc` on every unwritten QoS0 PUBLISH (an AttributeError on the
    joined write's stand-in once stopped a node's loop when its broker went away)."""
    first = queued(paho.PUBLISH, b"log")
    second = queued(paho.PUBLISH, b"book")
    queue: deque[Any] = deque([first, second])
    coalesce(queue)
    joined = queue[0]
    joined["info"].rc = paho.MQTT_ERR_CONN_LOST  # as paho.Client.reconnect does
    joined["info"]._set_as_published()
    for packet in (first, second):
        assert packet["info"].rc == paho.MQTT_ERR_CONN_LOST  # type: ignore[attr-defined]
        assert packet["info"]._published  # (is_published() raises for a lost message)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: a connect there is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_paho_reconnect_over_our_queued_publish_packets_fails_only_to_connect() -> None:
    """A broker restart while a node's QoS0 output is queued: paho's reconnect marks every queued
    QoS0 PUBLISH lost before it opens the new socket. Our own entries (`publish_packet`'s, alone and
    joined by `coalesce`) must take that; an AttributeError there once stopped a sequencer's loop
    for good (the fault suite's mosquitto SIGKILL caught it)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    lone = publish_packet(Outgoing("fastbook/BTC-USD/book", b"b", retain=True, qos=0))
    tracked = queued(paho.PUBLISH, b"report")
    queue: deque[Any] = deque([publish_packet(Outgoing("fastbook/BTC-USD/log", b"l", qos=0)), tracked])
    coalesce(queue)
    client._out_packet = deque([queue[0], lone])
    with pytest.raises(ConnectionRefusedError):  # the connect itself, and nothing before it
        client.connect("127.0.0.1", closed_port())
    assert not client._out_packet  # paho dropped the old connection's queue
    assert tracked["info"].rc == paho.MQTT_ERR_CONN_LOST  # type: ignore[attr-defined]


def test_coalesce_stops_at_a_disconnect_a_partial_write_and_the_size_cap() -> None:
    queue: deque[Any] = deque([queued(paho.PUBLISH, b"a"), queued(paho.DISCONNECT, b"d"),
                               queued(paho.PUBLISH, b"b")])
    coalesce(queue)
    assert [p["packet"] for p in queue] == [b"a", b"d", b"b"]  # DISCONNECT ends what may be joined
    queue = deque([queued(paho.PUBLISH, b"xyz", pos=1), queued(paho.PUBLISH, b"b")])
    coalesce(queue)
    assert [p["packet"] for p in queue] == [b"xyz", b"b"]  # a head half written stays as it is
    big = b"x" * (COALESCE_BYTES - 1)
    queue = deque([queued(paho.PUBLISH, b"a"), queued(paho.PUBLISH, big), queued(paho.PUBLISH, b"bc")])
    coalesce(queue)
    assert [len(p["packet"]) for p in queue] == [COALESCE_BYTES, 2]


def test_buffered_recv_serves_small_reads_from_one_recv() -> None:
    chunks: list[bytes] = [b"\x30\x05hello\x40\x02", b"\x00\x01"]
    asked: list[int] = []

    def recv(size: int) -> bytes:
        asked.append(size)
        if not chunks:
            raise BlockingIOError
        return chunks.pop(0)

    reader = BufferedRecv(recv)
    assert not reader.pending
    assert [reader.recv(1), reader.recv(1), reader.recv(5), reader.recv(1), reader.recv(1)] == [
        b"\x30", b"\x05", b"hello", b"\x40", b"\x02"]
    assert asked == [READ_CHUNK] and not reader.pending  # one recv for five of paho's reads
    assert reader.recv(4) == b"\x00\x01"  # at most what is there: paho reads the rest later
    with pytest.raises(BlockingIOError):
        reader.recv(1)  # nothing buffered: the socket's own answer
    chunks.append(b"abc")
    assert reader.recv(2) == b"ab" and reader.pending
    reader.clear()  # a new connection: the old one's bytes are gone
    assert not reader.pending
    chunks.append(b"")
    assert reader.recv(1) == b""  # the end of the stream


@pytest.mark.parametrize("topic_filter", [
    "a/b", "a/+", "+/b", "a/#", "#", "+", "+/+", "a/+/c", "a/+/#", "/+", "+/", "$SYS/#", "$SYS/+",
])
@pytest.mark.parametrize("topic", [
    "a", "a/b", "a/c", "a/b/c", "a/x/c", "b", "a/", "/a", "/", "", "$SYS/x", "$SYS", "x/b", "a/b/c/d",
])
def test_filter_matcher_agrees_with_paho(topic_filter: str, topic: str) -> None:
    assert filter_matcher(topic_filter)(topic) == paho.topic_matches_sub(topic_filter, topic)


@pytest.mark.parametrize("size", [0, 5, 120, 200, 20_000, 3_000_000])
@pytest.mark.parametrize("retain", [False, True])
def test_publish_packet_is_the_publish_paho_builds(size: int, retain: bool) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client._sock = object()  # (a socket to queue for; nothing is written)
    client.on_socket_register_write = lambda *_a: None
    client.publish("fastbook/BTC-USD/log", b"x" * size, qos=0, retain=retain)
    built = publish_packet(Outgoing("fastbook/BTC-USD/log", b"x" * size, retain=retain, qos=0))
    theirs = client._out_packet[0]
    assert bytes(built["packet"]) == bytes(theirs["packet"])
    assert (built["command"], built["qos"]) == (theirs["command"], 0)
    assert built["to_process"] == theirs["to_process"]
    qos1 = publish_packet(Outgoing("fastbook/BTC-USD/log", b"x" * size, retain=retain), mid=513)
    client._last_mid = 512  # (paho's next mid: 513)
    client.publish("fastbook/BTC-USD/log", b"x" * size, qos=1, retain=retain)
    theirs = client._out_packet[1]
    assert bytes(qos1["packet"]) == bytes(theirs["packet"])
    assert (qos1["command"], qos1["mid"], qos1["qos"]) == (theirs["command"], 513, 1)
    client._sock = None
