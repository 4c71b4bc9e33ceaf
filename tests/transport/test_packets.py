"""MqttConnection's own handling of incoming PUBLISH and PUBACK packets (no broker): the same raw
bytes fed through paho's reader to a connection with it and to one left on paho's handlers must put
the same messages in the inbox, queue the same bytes to write back and leave paho's message state
(what a reconnect resends) the same."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest

from fastbook.transport.config import RunnerConfig
from fastbook.transport.connection import READ_CHUNK, BufferedRecv, MqttConnection, fast_packets_possible
from fastbook.transport.node import Outgoing, RetainedIncoming
from fastbook.transport.seam import Inbox

ORDERS = "fastbook/BTC-USD/orders/+"
LOG = "fastbook/BTC-USD/log"


def connection(fast: bool, max_inflight: int = 1000) -> MqttConnection:
    config = RunnerConfig("mqtt://127.0.0.1:1", "packets", max_inflight=max_inflight)
    conn = MqttConnection(config, Inbox("packets", lambda: None), None, [(ORDERS, 1), (LOG, 0)],
                          lambda _sock: None)
    assert conn.fast_packets
    conn._subscriptions.for_connect()  # (as on a connect: the filters that let messages through)
    if not fast:
        conn.client._packet_handle = conn._paho_packet_handle  # type: ignore[method-assign]
    return conn


def feed(conn: MqttConnection, data: bytes) -> list[Any]:
    """`data` as what the socket returns, read by paho's own `_packet_read` until it would block;
    the return codes (or the exception) it gave."""
    chunks = [data]

    def recv(_size: int) -> bytes:
        if not chunks:
            raise BlockingIOError
        return chunks.pop()

    conn.reader = BufferedRecv(recv)
    conn.client._sock_recv = conn.reader.recv  # type: ignore[method-assign]
    results: list[Any] = []
    while True:
        try:
            rc = conn.client._packet_read()
        except Exception as exc:  # paho's own exceptions (a callback's) must be the same
            results.append(type(exc).__name__)
            return results
        if rc == paho.MQTT_ERR_AGAIN:
            return results
        results.append(rc)


def publish_bytes(topic: bytes, payload: bytes, qos: int = 0, mid: int = 0, retain: bool = False,
                  dup: bool = False) -> bytes:
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"") + payload
    return bytes([0x30 | dup << 3 | qos << 1 | retain]) + remaining_length(len(body)) + body


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def written(conn: MqttConnection) -> list[tuple[int, int, int, bytes]]:
    return [(p["command"], p["mid"], p["qos"], bytes(p["packet"])) for p in conn.client._out_packet]


def inbox(conn: MqttConnection) -> list[tuple[str, str, bytes]]:
    return [(type(item).__name__, item[0], item[1]) for item in conn._inbox.items]  # type: ignore[index,misc]


ORDER = b'{"op":"new","id":"o-1","side":"buy","price":"100.00","qty":"1.000"}'
CASES: dict[str, bytes] = {
    "qos0": publish_bytes(LOG.encode(), b"log entries"),
    "qos1": publish_bytes(b"fastbook/BTC-USD/orders/alice", ORDER, qos=1, mid=258),
    "qos1 dup": publish_bytes(b"fastbook/BTC-USD/orders/alice", ORDER, qos=1, mid=7, dup=True),
    "qos1 mid 65535": publish_bytes(b"fastbook/BTC-USD/orders/bob", ORDER, qos=1, mid=65535),
    "retained qos0": publish_bytes(LOG.encode(), b"stored", retain=True),
    "retained qos1": publish_bytes(b"fastbook/BTC-USD/orders/a", ORDER, qos=1, mid=3, retain=True),
    "empty payload": publish_bytes(b"fastbook/BTC-USD/orders/a", b"", qos=1, mid=4),
    "long (3-byte length)": publish_bytes(LOG.encode(), bytes(range(256)) * 300),
    "unsolicited qos0": publish_bytes(b"fastbook/BTC-USD/book", b"book"),
    "unsolicited qos1": publish_bytes(b"fastbook/other/orders/a/b", ORDER, qos=1, mid=9),
    "non-ascii topic": publish_bytes("fastbook/BTC-USD/orders/é".encode(), ORDER, qos=1, mid=10),
    "several at once": publish_bytes(LOG.encode(), b"1")
    + publish_bytes(b"fastbook/BTC-USD/orders/a", ORDER, 1, 11) + publish_bytes(LOG.encode(), b"2")
    + b"\x40\x02\x00\x63" + b"\xd0\x00",  # a PUBACK (of nothing of ours), a PINGRESP
    # paho's: QoS 2 (kept for its PUBREL, a PUBREC queued), malformed, a topic not UTF-8
    "qos2": publish_bytes(b"fastbook/BTC-USD/orders/a", ORDER, qos=2, mid=12),
    "qos3 (invalid)": bytes([0x36]) + publish_bytes(LOG.encode(), b"x", qos=1, mid=13)[1:],
    "empty topic": publish_bytes(b"", b"payload"),
    "qos1 without a mid": bytes([0x32, 3, 0, 1]) + b"a",
    "truncated topic": bytes([0x30, 3, 0, 9]) + b"a",
    "topic not utf-8": publish_bytes(b"fastbook/\xff", b"x"),
}


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_publish_packets_reach_the_inbox_as_through_paho(data: bytes) -> None:
    ours, theirs = connection(True), connection(False)
    assert feed(ours, data) == feed(theirs, data)
    assert inbox(ours) == inbox(theirs)
    assert written(ours) == written(theirs)  # the PUBACK (PUBREC) bytes
    assert ours.unsolicited == theirs.unsolicited
    assert list(ours.client._in_messages) == list(theirs.client._in_messages)


def test_what_the_own_handler_delivers() -> None:
    """Not only the same as paho: the values themselves (a test that fails if both change)."""
    conn = connection(True)
    data = CASES["several at once"] + CASES["retained qos1"] + CASES["unsolicited qos0"]
    assert feed(conn, data) == [paho.MQTT_ERR_SUCCESS] * 7
    assert inbox(conn) == [("tuple", LOG, b"1"), ("tuple", "fastbook/BTC-USD/orders/a", ORDER),
                           ("tuple", LOG, b"2"), ("RetainedIncoming", "fastbook/BTC-USD/orders/a", ORDER)]
    assert all(type(item[1]) is bytes for item in conn._inbox.items)  # type: ignore[index]
    assert isinstance(conn._inbox.items[3], RetainedIncoming)
    assert written(conn) == [(paho.PUBACK, 11, 1, b"\x40\x02\x00\x0b"),
                             (paho.PUBACK, 3, 1, b"\x40\x02\x00\x03")]
    assert conn.unsolicited == 1


def feed_own_reader(conn: MqttConnection, chunks: list[bytes]) -> list[Any]:
    """`chunks` as what successive recvs return, read by the connection's own `_read_packet`
    (a packet the buffer holds whole is cut from it; paho's reader takes the rest) until it would
    block; the return codes (or the exception) it gave."""
    pending = list(chunks)

    def recv(_size: int) -> bytes:
        if not pending:
            raise BlockingIOError
        return pending.pop(0)

    conn.reader = BufferedRecv(recv)
    conn.client._sock_recv = conn.reader.recv  # type: ignore[method-assign]
    results: list[Any] = []
    while True:
        try:
            rc = conn._read_packet()
        except Exception as exc:
            results.append(type(exc).__name__)
            return results
        if rc == paho.MQTT_ERR_AGAIN:
            return results
        results.append(rc)


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_the_own_reader_reads_what_paho_s_reader_reads(data: bytes) -> None:
    ours, theirs = connection(True), connection(False)
    assert feed_own_reader(ours, [data]) == feed(theirs, data)
    assert inbox(ours) == inbox(theirs)
    assert written(ours) == written(theirs)
    assert ours.unsolicited == theirs.unsolicited
    # paho's reader state: fresh between packets; after a handler's exception, the packet's
    # (paho reads nothing of the length bytes it kept once it has the whole packet)
    kept = ("command", "have_remaining", "remaining_length", "packet", "to_process", "pos")
    assert [ours.client._in_packet[k] for k in kept] == [theirs.client._in_packet[k] for k in kept]


def test_the_own_reader_reads_packets_cut_anywhere_by_the_recvs() -> None:
    """However the stream is cut into recvs (a packet's head, length or body split), the same
    messages in the same order, the same PUBACKs: what the buffer does not hold whole is paho's."""
    data = CASES["several at once"] + CASES["long (3-byte length)"] + CASES["qos1 mid 65535"]
    whole = connection(True)
    assert feed_own_reader(whole, [data]) == [paho.MQTT_ERR_SUCCESS] * 7
    expected, acks = inbox(whole), written(whole)
    assert len(expected) == 5 and len(acks) == 2
    for cut in [*range(1, 40), *range(len(data) - 80, len(data))]:
        conn = connection(True)
        results = feed_own_reader(conn, [data[:cut]]) + feed_own_reader(conn, [data[cut:]])
        assert results == [paho.MQTT_ERR_SUCCESS] * 7, cut
        assert inbox(conn) == expected and written(conn) == acks, cut


def test_the_own_reader_reports_a_closed_stream_and_a_bad_length_as_paho_does() -> None:
    for data, rc in ((b"", paho.MQTT_ERR_CONN_LOST),  # the end of the stream
                     (b"\x30\xff\xff\xff\xff\x01", paho.MQTT_ERR_PROTOCOL)):  # a 5-byte length
        ours, theirs = connection(True), connection(False)
        assert feed_own_reader(ours, [data]) == feed(theirs, data) == [rc]


def message_state(conn: MqttConnection) -> list[tuple[int, int, bool, bool]]:
    return [(mid, m.state, m.dup, m.info._published) for mid, m in conn.client._out_messages.items()]


class QueueOnly:
    """A socket for paho to queue packets for (nothing is written: the register-write hook is set)."""

    def close(self) -> None:
        pass


REPORTS = [Outgoing(f"fastbook/BTC-USD/reports/c{i}", b"r%d" % i, qos=1, retain=i == 2) for i in range(3)]


def publishing(fast: bool) -> tuple[MqttConnection, list[paho.MQTTMessageInfo]]:
    """A connection with 3 QoS1 messages published, 2 in flight (max_inflight 2), 1 queued: `fast`
    through its own packet handler and `publish` (the driver's), else paho's for both."""
    conn = connection(fast, max_inflight=2)
    conn.client._sock = QueueOnly()  # type: ignore[assignment]
    if fast:
        conn.publish(REPORTS)
        infos = [m.info for m in conn.client._out_messages.values()]
    else:
        infos = conn._publish(REPORTS)  # (paho's publish())
    conn.client._out_packet.clear()
    return conn, infos


def test_a_qos1_publish_queues_what_paho_s_publish_queues() -> None:
    """The same PUBLISH bytes, mids and message state (what a PUBACK finishes and a reconnect
    resends), the inflight count and the message held back by the inflight limit."""
    conns = {fast: connection(True, max_inflight=2) for fast in (True, False)}
    for conn in conns.values():
        conn.client._sock = QueueOnly()  # type: ignore[assignment]
    conns[True].publish(REPORTS)
    conns[False]._publish(REPORTS)
    ours, theirs = conns[True].client, conns[False].client
    assert written(conns[True]) == written(conns[False])
    assert [p[0] for p in written(conns[True])] == [paho.PUBLISH, paho.PUBLISH]  # 2 in flight
    assert message_state(conns[True]) == message_state(conns[False])
    assert [m.state for m in ours._out_messages.values()] == [
        paho.mqtt_ms_wait_for_puback, paho.mqtt_ms_wait_for_puback, paho.mqtt_ms_queued]
    for a, b in zip(ours._out_messages.values(), theirs._out_messages.values(), strict=True):
        assert (a.topic, a.payload, a.qos, a.retain, a.dup, a.info.rc) == (
            b.topic, b.payload, b.qos, b.retain, b.dup, b.info.rc)
    assert ours._inflight_messages == theirs._inflight_messages == 2


def test_a_qos1_publish_without_a_socket_waits_for_the_next_connection_as_paho_s() -> None:
    conns = {fast: connection(True) for fast in (True, False)}
    conns[True].publish(REPORTS[:1])
    conns[False]._publish(REPORTS[:1])
    assert written(conns[True]) == written(conns[False]) == []
    assert message_state(conns[True]) == message_state(conns[False]) != []
    assert [(m.state, m.info.rc) for m in conns[True].client._out_messages.values()] == [
        (paho.mqtt_ms_publish, paho.MQTT_ERR_NO_CONN)]
    assert conns[True].client._inflight_messages == conns[False].client._inflight_messages == 0


def test_pubacks_leave_paho_state_as_paho_does_and_a_reconnect_resends_the_rest() -> None:
    runs = {fast: publishing(fast) for fast in (True, False)}
    mids = [info.mid for info in runs[True][1]]
    assert mids == [info.mid for info in runs[False][1]]

    def same(check: Callable[[MqttConnection], object]) -> object:
        value = check(runs[True][0])
        assert value == check(runs[False][0])
        return value

    assert same(lambda c: c.client._inflight_messages) == 2
    for data in (struct.pack("!BBH", paho.PUBACK, 2, mids[0]),  # the first: the queued third is sent
                 struct.pack("!BBH", paho.PUBACK, 2, 999)):  # unknown: nothing changes
        assert same(lambda c, data=data: feed(c, data)) == [paho.MQTT_ERR_SUCCESS]  # type: ignore[misc]
        same(message_state)
        same(written)
        same(lambda c: c.client._inflight_messages)
    assert [info.is_published() for info in runs[True][1]] == [True, False, False]
    assert [p[0] & 0xF0 for p in written(runs[True][0])] == [paho.PUBLISH]  # the third, let go
    assert same(lambda c: c.client._inflight_messages) == 2
    # The connection drops with two unacknowledged: the CONNACK of the next resends them (dup).
    for conn, _infos in runs.values():
        conn.client._out_packet.clear()
        conn.client._messages_reconnect_reset()
    assert same(lambda c: feed(c, b"\x20\x02\x00\x00")) == [paho.MQTT_ERR_SUCCESS]  # CONNACK
    resent = same(written)
    assert [(data[0], mid) for command, mid, _qos, data in resent  # type: ignore[attr-defined]
            if command == paho.PUBLISH] == [(paho.PUBLISH | 0x08 | 0x02, mids[1]),  # dup, QoS 1
                                            (paho.PUBLISH | 0x08 | 0x02 | 0x01, mids[2])]  # retained
    assert same(lambda c: feed(c, struct.pack("!BBH", paho.PUBACK, 2, mids[1])
                               + struct.pack("!BBH", paho.PUBACK, 2, mids[2]))) == [paho.MQTT_ERR_SUCCESS] * 2
    assert same(message_state) == [] and same(lambda c: c.client._inflight_messages) == 0
    assert all(info.is_published() for info in runs[True][1])


def test_a_puback_wakes_a_thread_waiting_for_the_message() -> None:
    conn, infos = publishing(True)
    waiter = threading.Thread(target=infos[1].wait_for_publish, daemon=True)
    waiter.start()
    deadline = time.monotonic() + 5
    while not infos[1]._condition._waiters:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the waiter never waited"
        time.sleep(0.001)
    feed(conn, struct.pack("!BBH", paho.PUBACK, 2, infos[1].mid))
    waiter.join(5)
    assert not waiter.is_alive() and infos[1].is_published()


def test_an_on_publish_callback_gets_paho_s_puback_handling() -> None:
    conn, infos = publishing(True)
    acked: list[int] = []
    conn.client.on_publish = lambda _c, _u, mid, _rc, _p: acked.append(mid)
    feed(conn, struct.pack("!BBH", paho.PUBACK, 2, infos[0].mid))
    assert acked == [infos[0].mid] and infos[0].is_published()


def test_without_paho_s_internals_paho_handles_every_packet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(paho.Client, "_handle_pubackcomp")  # a paho that dispatches otherwise
    config = RunnerConfig("mqtt://127.0.0.1:1", "old-paho")
    conn = MqttConnection(config, Inbox("old-paho", lambda: None), None, [(LOG, 0)], lambda _sock: None)
    assert not conn.fast_packets
    conn._subscriptions.for_connect()
    assert "_packet_handle" not in vars(conn.client)  # paho's own dispatch
    assert feed(conn, CASES["qos0"]) == [paho.MQTT_ERR_SUCCESS]
    assert inbox(conn) == [("tuple", LOG, b"log entries")]  # through paho's on_message


def test_fast_packets_only_for_what_they_cover() -> None:
    def client(**kwargs: Any) -> paho.Client:
        return paho.Client(paho.CallbackAPIVersion.VERSION2, **kwargs)

    assert fast_packets_possible(client(protocol=paho.MQTTv311))
    assert not fast_packets_possible(client(protocol=paho.MQTTv5))  # properties, reason codes
    assert not fast_packets_possible(client(protocol=paho.MQTTv311, manual_ack=True))
    logged = client(protocol=paho.MQTTv311)
    logged.enable_logger()  # paho logs every packet
    assert not fast_packets_possible(logged)


class CountingRecv:
    """paho's `_sock_recv` over one end of a socketpair, counting calls and EAGAINs."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self.calls = 0
        self.would_block = 0

    def __call__(self, size: int) -> bytes:
        self.calls += 1
        try:
            return self._recv(size)
        except BlockingIOError:
            self.would_block += 1
            raise


def test_read_stops_where_the_socket_was_drained_and_loses_nothing() -> None:
    """A read pass ends when the packets parsed end where an unfilled recv ended (no recv only to
    hear EAGAIN); bytes that come later, or a packet cut by the end of a recv, are read by the next
    pass (the socket stays readable for the selector)."""
    conn = connection(fast=True)
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        conn.client._sock = ours  # (paho 2.x: the socket its reads use)
        counted = CountingRecv(conn.client._sock_recv)
        conn.reader = BufferedRecv(counted)
        conn.client._sock_recv = conn.reader.recv  # type: ignore[method-assign]
        a, b = publish_bytes(LOG.encode(), b"a"), publish_bytes(LOG.encode(), b"b")
        theirs.sendall(a + b)
        conn.read()
        assert [m[1] for m in conn._inbox.items] == [b"a", b"b"]
        assert (counted.calls, counted.would_block) == (1, 0)  # two packets, one recv, no EAGAIN
        c = publish_bytes(LOG.encode(), b"c")
        theirs.sendall(c[:3])  # half a packet: paho must wait for the rest
        conn.read()
        assert len(conn._inbox.items) == 2 and counted.would_block == 1
        theirs.sendall(c[3:])
        assert select.select([ours], [], [], 5)[0], "the rest must make the socket readable"
        conn.read()
        assert [m[1] for m in conn._inbox.items] == [b"a", b"b", b"c"]
        assert counted.would_block == 1
        assert not select.select([ours], [], [], 0)[0] and not conn.read_pending
    finally:
        conn.client._sock = None
        ours.close()
        theirs.close()


def test_a_packet_larger_than_a_chunk_is_asked_of_the_socket_whole() -> None:
    """paho appends each piece of a packet to what it has (a new bytes object each time): once the
    first chunk is parsed, the rest of a packet larger than READ_CHUNK is asked for in one recv,
    not 64 KB at a time."""
    conn = connection(fast=True)
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        conn.client._sock = ours
        sizes: list[int] = []
        counted = CountingRecv(lambda size: (sizes.append(size), ours.recv(size))[1])
        conn.reader = BufferedRecv(counted)
        conn.client._sock_recv = conn.reader.recv  # type: ignore[method-assign]
        payload = bytes(range(256)) * 4096  # 1 MiB: sixteen chunks
        theirs.sendall(publish_bytes(LOG.encode(), payload))
        deadline = time.monotonic() + 5
        while not conn._inbox.items:
            assert time.monotonic() < deadline, "the packet did not arrive"
            select.select([ours], [], [], 1)
            conn.read()
        assert [m[1] for m in conn._inbox.items] == [payload]
        assert max(sizes) >= len(payload) - READ_CHUNK  # the rest asked for at once
        assert counted.calls - counted.would_block <= 4, sizes  # was 17 recvs of 64 KB
    finally:
        conn.client._sock = None
        ours.close()
        theirs.close()


def test_a_large_packet_is_written_from_a_view_and_arrives_whole() -> None:
    """paho writes `packet[pos:]` after each partial send: for a large packet that is a copy of
    what is left, every time, unless the packet is a memoryview (coalesce makes it one)."""
    conn = connection(fast=True)
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)  # partial sends
        conn.client._sock = ours
        conn.client._state = paho._ConnectionState.MQTT_CS_CONNECTED  # type: ignore[attr-defined]
        payload = bytes(range(256)) * 2048  # 512 KiB
        conn.client.publish("fastbook/BTC-USD/reports/a", payload, qos=1)
        head = conn.client._out_packet[0]
        assert isinstance(head["packet"], bytearray)  # as paho builds it
        received = bytearray()
        expected = publish_bytes(b"fastbook/BTC-USD/reports/a", payload, qos=1, mid=1)
        deadline = time.monotonic() + 5
        while len(received) < len(expected):
            assert time.monotonic() < deadline, "the packet was not written"
            conn.flush()
            assert isinstance(head["packet"], memoryview)
            while select.select([theirs], [], [], 0)[0]:
                received += theirs.recv(1 << 20)
        assert bytes(received) == expected
    finally:
        conn.client._sock = None
        ours.close()
        theirs.close()
