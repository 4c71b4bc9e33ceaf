"""The MQTT side of a NodeRunner: one paho client driven by the runner's event loop.

`MqttConnection` connects (failing over across the broker URLs with backoff, `BrokerRotation`),
subscribes to the node's subscriptions on every (re)connect and follows their changes
(`SubscriptionSet`), hands what arrives to the Inbox and publishes the driver's output; it is the
driver's `Link` (fastbook.transport.seam). It owns no thread: the runner's one thread selects on its
socket and calls `read()`, `flush()` and `misc()` (paho's external-loop API).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from fastbook.transport.config import BrokerAddress, RunnerConfig
from fastbook.transport.node import Outgoing, RetainedIncoming
from fastbook.transport.seam import Inbox

log = logging.getLogger(__name__)

CLOSE_FLUSH_SECONDS = 2.0  # how long a clean stop waits for close()'s messages to leave
MISC_INTERVAL = 1.0  # how often paho's keepalive bookkeeping (loop_misc) runs while connected
COALESCE_BYTES = 1 << 16  # queued packets joined into one socket write, up to this many bytes
READ_CHUNK = 1 << 16  # bytes asked of the socket at once (paho's reads are served from them)

Subscription = tuple[str, int]  # (topic filter, qos)


class BrokerRotation:
    """Which broker URL to try next, and how long to back off: after every failed round of all the
    URLs and after every lost connection, doubling from `reconnect_min` up to `reconnect_max`; a
    connection that got through resets it."""

    def __init__(self, addresses: Sequence[BrokerAddress], reconnect_min: float,
                 reconnect_max: float) -> None:
        if not addresses:
            raise ValueError("no broker address")
        self.addresses = tuple(addresses)
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._index = 0
        self._delay = reconnect_min

    @property
    def current(self) -> BrokerAddress:
        return self.addresses[self._index % len(self.addresses)]

    def connect_failed(self) -> float:
        """The current URL did not connect: move on; seconds to wait first (0 within a round)."""
        self._index += 1
        if self._index % len(self.addresses):
            return 0.0
        return self._back_off()

    def connection_lost(self) -> float:
        """A connection ended: move on to the next URL; seconds to wait first."""
        self._index += 1
        return self._back_off()

    def connected(self) -> None:
        self._delay = self.reconnect_min

    def _back_off(self) -> float:
        delay = self._delay
        self._delay = min(delay * 2, self.reconnect_max)
        return delay


def filter_matcher(topic_filter: str) -> Callable[[str], bool]:
    """Whether a topic matches `topic_filter` (MQTT 3.1.1 4.7, as paho's topic_matches_sub, which
    builds a matcher tree at every call: ~10 us a message on the sequencer's orders filter)."""
    levels = topic_filter.split("/")
    hash_tail = levels[-1] == "#"
    if hash_tail:
        levels.pop()
    fixed = tuple((i, level) for i, level in enumerate(levels) if level != "+")
    count = len(levels)
    wild_first = not levels or levels[0] == "+"  # a filter starting with a wildcard skips "$..." topics

    def matches(topic: str) -> bool:
        if wild_first and topic.startswith("$"):
            return False
        parts = topic.split("/")
        if len(parts) != count and not (hash_tail and len(parts) >= count):
            return False
        return all(parts[i] == level for i, level in fixed)

    return matches


class SubscriptionSet:
    """What the node wants, what this connection subscribed to, and which topics to let through.

    `change()` comes from the driver, `for_connect()`, `is_change()` and `accepts()` from paho's
    callbacks (all on the runner's thread today; the lock keeps it safe if they ever are not). The
    subscribe/unsubscribe calls are made under the lock, so a SUBACK for a change is always recognised
    as one."""

    def __init__(self, initial: Sequence[Subscription]) -> None:
        self._lock = threading.Lock()
        self._wanted: list[Subscription] = list(initial)
        self._on_broker: list[Subscription] = []
        self._changes: set[int] = set()  # mids of subscriptions added while connected
        self._exact: frozenset[str] = frozenset()
        self._wildcards: tuple[Callable[[str], bool], ...] = ()

    def accepts(self, topic: str) -> bool:
        # amqtt 0.12.1 sends a (re)connecting client the retained messages of every topic anyone
        # subscribed to. A node only ever sees what it subscribed to.
        return topic in self._exact or any(matches(topic) for matches in self._wildcards)

    def for_connect(self) -> list[Subscription]:
        """A new connection: it will subscribe to everything the node wants now."""
        with self._lock:
            self._on_broker = list(self._wanted)
            self._set_filters(self._on_broker)
            return list(self._on_broker)

    def is_change(self, mid: int) -> bool:
        """Whether this SUBACK answers a `change()` (not the connect's subscribe)."""
        with self._lock:
            if mid in self._changes:
                self._changes.discard(mid)
                return True
            return False

    def change(
        self,
        wanted: list[Subscription],
        connected: bool,
        unsubscribe: Callable[[list[str]], object],
        subscribe: Callable[[list[Subscription]], int | None],
    ) -> None:
        """The node's subscriptions now. Connected: unsubscribe what was dropped (first: the broker
        takes them in order), subscribe what was added or changed QoS. Not connected: the next
        connect subscribes to the new list. A message already on its way for a dropped topic is
        not let through."""
        if wanted == self._wanted and wanted == self._on_broker:
            return
        with self._lock:
            self._wanted = list(wanted)
            self._set_filters(self._wanted)
            if not connected:
                return
            before = dict(self._on_broker)
            after = dict(self._wanted)
            self._on_broker = list(self._wanted)
            added = [(f, qos) for f, qos in self._wanted if before.get(f) != qos]
            removed = [f for f in before if f not in after]
            if removed:
                unsubscribe(removed)
            if added:
                mid = subscribe(added)
                if mid is not None:
                    self._changes.add(mid)

    def _set_filters(self, subs: list[Subscription]) -> None:
        self._exact = frozenset(f for f, _ in subs if "+" not in f and "#" not in f)
        self._wildcards = tuple(filter_matcher(f) for f, _ in subs if "+" in f or "#" in f)


SocketHook = Callable[[socket.socket | None], None]  # the runner: the socket to select on (None: gone)


class MqttConnection:
    """A paho client on the runner's event loop, the Link of one NodeRunner's driver.

    - The node's `will` is the MQTT last will; given as a callable it is asked again before every
      (re)connect (an edge's will carries its current version and a count that tells a live
      process's messages from a stale retained one).
    - A broker refusing the connection or a subscription counts as a failed connection: the node is
      told it is connected only once it holds all its subscriptions.
    - `publish()` only queues (a register-write hook is set): the runner flushes the socket once per
      loop iteration, after the node's batch, so one write pass carries the whole batch's output.
    - Messages paho delivers go into the inbox without a wakeup: they arrive on the runner's thread.
    """

    def __init__(self, config: RunnerConfig, inbox: Inbox,
                 will: Outgoing | Callable[[], Outgoing | None] | None,
                 subscriptions: Sequence[Subscription], on_socket: SocketHook) -> None:
        self.config = config
        self.name = config.name
        self.connected = threading.Event()  # read by other threads (wait_connected)
        self.current_broker: BrokerAddress | None = None
        self.connect_count = 0
        self.unsolicited = 0  # messages on topics the node did not subscribe to (dropped)
        self.refusal: str | None = None  # the broker's last CONNACK refusal (bad credentials, ...)
        # What went wrong with the last attempt (cannot connect, CONNACK refusal, refused
        # subscriptions), in words; None once connected and subscribed.
        self.last_failure: str | None = None
        self.closing: list[paho.MQTTMessageInfo] | None = None  # close()'s messages, once asked
        self.close_deadline = 0.0
        self.aborted = False
        self.rotation = BrokerRotation(config.addresses, config.reconnect_min, config.reconnect_max)
        self._inbox = inbox
        self._on_socket = on_socket
        self._subscriptions = SubscriptionSet(subscriptions)
        self._pending_subscribe: int | None = None
        self._connect_filters: list[str] = []  # what the connect's SUBSCRIBE asked for, in order
        self._read_limit = config.batching.max_messages  # packets per read pass at most
        self._will = will
        self.client = self._make_client(config)
        self.reader = BufferedRecv(self.client._sock_recv)
        # A TLS socket holds decrypted bytes the selector cannot see: read it until it would block.
        self._stop_when_drained = config.tls_ca is None
        self.client._sock_recv = self.reader.recv  # type: ignore[method-assign]  # (paho 2.x's reader)
        self._paho_packet_handle = self.client._packet_handle
        self.fast_packets = fast_packets_possible(self.client)
        if self.fast_packets:
            self.client._packet_handle = self._packet_handle  # type: ignore[method-assign]

    def _make_client(self, config: RunnerConfig) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id,
                             clean_session=config.clean_session, protocol=MQTTProtocolVersion.MQTTv311)
        client.max_inflight_messages_set(config.max_inflight)
        client.max_queued_messages_set(0)  # 0 = unbounded: the driver never drops its own output
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls_ca is not None:
            client.tls_set(ca_certs=config.tls_ca)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_socket_open = self._socket_opened
        client.on_socket_close = self._socket_closed
        # With a register-write hook, publish() only queues the packet; without one it would write
        # each message at once (or, inside a callback, not until the next write pass anyway).
        client.on_socket_register_write = _no_op_socket_hook
        client.on_socket_unregister_write = _no_op_socket_hook
        return client

    # ---- the runner's loop ------------------------------------------------------------------------

    def connect(self) -> float | None:
        """Open a connection to the current broker URL (the CONNECT is queued; the CONNACK arrives on
        a later read). None on success, else the seconds to wait before the next attempt."""
        broker = self.current_broker = self.rotation.current
        self._set_will()
        try:
            self.client.connect(broker.host, broker.port, keepalive=self.config.keepalive)
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot connect to %s: %s", self.name, broker, exc)
            self.last_failure = f"cannot connect: {exc}"
            return self.rotation.connect_failed()
        return None

    def _set_will(self) -> None:
        will = self._will() if callable(self._will) else self._will
        self.client.will_clear()
        if will is not None:
            self.client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    @property
    def read_pending(self) -> bool:
        """Bytes already read from the socket that paho has not parsed (a read pass stopped at its
        limit): the runner must read again without waiting for the socket."""
        return self.reader.pending

    def read(self) -> None:
        """One read pass: every packet readable now (up to a batch's worth), each delivered to the
        inbox as paho parses it. paho's loop_read stops after one packet when nothing is in flight,
        so this uses the reader underneath it (paho's reads come from `BufferedRecv`: one recv for
        many packets) until the socket would block, or until the packets parsed end where a recv
        that was not filled ended: the socket was empty then, and whatever came since keeps it
        readable for the next select (level-triggered). That spares the recv that only says
        EAGAIN (a syscall and an exception) on every wakeup: a lone order's two."""
        client, reader = self.client, self.reader
        stop_when_drained = self._stop_when_drained
        for _ in range(self._read_limit):
            if client.socket() is None:
                return
            rc = self._read_packet()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                client._loop_rc_handle(rc)  # closes the socket and calls on_disconnect
                return
            if stop_when_drained and reader.drained:
                return

    def _read_packet(self) -> MQTTErrorCode:
        """One packet, as paho's `_packet_read` (what loop_read calls) reads it. A packet the
        buffer holds whole (the usual case: one recv brings a lone order's PUBLISH and the PUBACKs
        whole) is cut from it at once and handed to the packet handler, where paho asks the reader
        for its type byte, each byte of its length and its body, a call each, and appends them to a
        bytearray (a lone order's sequencer: 654k -> 631k instructions per order); a packet split
        across recvs, or one paho has begun, is paho's to read."""
        client = self.client
        if not self.fast_packets or client._in_packet["command"]:
            return client._packet_read()
        reader = self.reader
        if not reader.pending:
            try:
                if not reader.fill():
                    return MQTTErrorCode.MQTT_ERR_CONN_LOST  # the end of the stream, as paho's
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:  # (paho's errors: a reset connection, a closed socket, TLS)
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
        whole = reader.take_packet()
        if whole is None:
            return client._packet_read()
        command, body = whole
        client._in_packet = {"command": command, "have_remaining": 1, "remaining_count": [],
                             "remaining_mult": 1, "remaining_length": len(body),
                             "packet": body,  # type: ignore[typeddict-item]  # (bytes: paho's handlers only read it)
                             "to_process": 0, "pos": 0}  # fmt: skip
        try:
            rc = client._packet_handle()
        except paho.MalformedPacket:
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        client._in_packet = _fresh_in_packet()  # type: ignore[assignment]  # (paho's _InPacket)
        with client._msgtime_mutex:
            client._last_bytes_received = _time_func()
        return rc

    def flush(self) -> bool:
        """Write what is queued; True if some is left (the socket buffer is full: select for write)."""
        client = self.client
        if client.want_write() and client.socket() is not None:
            coalesce(client._out_packet)  # (paho 2.x: its queue of packets to write)
            client.loop_write()
        return client.want_write() and client.socket() is not None

    def misc(self) -> None:
        """paho's keepalive: a PINGREQ when due, and the connection dropped if PINGRESP is overdue."""
        if self.client.socket() is not None:
            self.client.loop_misc()

    def close_done(self, now: float) -> bool:
        """A clean stop: close()'s messages have left (acknowledged, for QoS1) or the wait is over."""
        infos = self.closing or []
        gone = self.client.socket() is None or not self.connected.is_set()
        return gone or now >= self.close_deadline or all(info.is_published() for info in infos)

    def disconnect(self) -> None:
        try:
            self.client.disconnect()  # queues DISCONNECT; the socket closes once it is written
        except Exception:  # already gone; nothing to flush
            pass

    # ---- Link (the driver, on the runner's thread) ------------------------------------------------

    def publish(self, messages: Sequence[Outgoing]) -> None:
        """Queue the driver's output. A QoS0 message goes straight into paho's write queue as the
        PUBLISH paho would build (nothing waits for it: no MQTTMessageInfo, no Condition, no mid;
        without a socket it is dropped, as paho drops it); QoS1 is `_queue_qos1`'s (or, without the
        fast packet path, paho's publish)."""
        client = self.client
        out: deque[Any] = client._out_packet  # (paho 2.x: its queue of packets to write)
        publish = client.publish
        fast = self.fast_packets
        for m in messages:
            if m.qos == 0:
                if client._sock is not None:
                    out.append(publish_packet(m))
            elif m.qos == 1 and fast:
                self._queue_qos1(m)
            else:
                publish(m.topic, m.payload, qos=m.qos, retain=m.retain)

    def _queue_qos1(self, m: Outgoing) -> None:
        """paho's `publish()` of a QoS1 message, MQTT 3.1.1, with the same state: the MQTTMessage
        in `_out_messages` (what a PUBACK finishes and a reconnect resends), the inflight count,
        the PUBLISH queued (or the message queued behind the inflight limit, or kept for the next
        connection when there is no socket). Without what does not apply to a node's output (its
        topics are the node's own and valid, its payloads bytes, no debug logging, the runner
        writes after every batch without a register-write call): 5.0 -> 2.9 us a message."""
        client = self.client
        mid = client._mid_generate()
        message = paho.MQTTMessage(mid, m.topic.encode())
        message.timestamp = _time_func()
        message.payload = m.payload
        message.qos = 1
        message.retain = m.retain
        with client._out_message_mutex:
            if mid in client._out_messages:  # 65,535 unacknowledged: paho refuses it the same way
                message.info.rc = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
                return
            client._out_messages[mid] = message
            limit = client._max_inflight_messages
            if limit and client._inflight_messages >= limit:
                message.state = paho.mqtt_ms_queued  # sent when a PUBACK frees a slot
            elif client._sock is None:
                message.state = paho.mqtt_ms_publish  # sent by the next connection's CONNACK
                message.info.rc = MQTTErrorCode.MQTT_ERR_NO_CONN
            else:
                client._inflight_messages += 1
                message.state = paho.mqtt_ms_wait_for_puback
                client._out_packet.append(publish_packet(m, mid, message.info))  # type: ignore[arg-type]

    def follow(self, subscriptions: list[Subscription]) -> None:
        self._subscriptions.change(subscriptions, self.connected.is_set(), self.client.unsubscribe,
                                   self._subscribe_change)

    def reconnect(self) -> None:
        """A clean DISCONNECT (no last will); the runner then connects again (after its backoff, to
        the next broker URL) and subscribes to everything afresh."""
        if self.connected.is_set() and self.closing is None:
            log.warning("%s: reconnecting to %s (asked by the node)", self.name, self.current_broker)
            self.disconnect()

    def close(self, last: Sequence[Outgoing]) -> None:
        """Queue `last`; the runner keeps its loop going until they left (at most
        CLOSE_FLUSH_SECONDS), then disconnects cleanly (no last will)."""
        self.closing = self._publish(last)
        self.close_deadline = time.monotonic() + CLOSE_FLUSH_SECONDS

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, so the broker publishes the last will."""
        self.aborted = True
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _publish(self, messages: Sequence[Outgoing]) -> list[paho.MQTTMessageInfo]:
        publish = self.client.publish
        return [publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in messages]

    def _subscribe_change(self, added: list[Subscription]) -> int | None:
        rc, mid = self.client.subscribe(added)
        return mid if rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

    # ---- paho callbacks ---------------------------------------------------------------------------

    def _socket_opened(self, _client: paho.Client, _userdata: object, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            # paho leaves Nagle on: a small publish would wait for the ACK of the previous one (tens
            # of ms with delayed ACKs). Latency matters more than packet count.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader.clear()
        self._on_socket(sock)

    def _socket_closed(self, _client: paho.Client, _userdata: object, _sock: Any) -> None:
        self.reader.clear()  # what the old connection left unparsed is not the new one's
        self._on_socket(None)

    def _on_connect(self, client: paho.Client, _userdata: object, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            self.refusal = str(reason)
            self.last_failure = f"refused the connection: {reason}"
            log.error("%s: broker %s refused the connection: %s", self.name, self.current_broker, reason)
            return
        self.refusal = None
        subs = self._subscriptions.for_connect()
        if not subs:
            self._mark_connected()
            return
        self._connect_filters = [topic_filter for topic_filter, _qos in subs]
        rc, mid = client.subscribe(subs)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning("%s: subscribe failed (%s); reconnecting", self.name, rc)
            client.disconnect()
            return
        self._pending_subscribe = mid

    def _on_subscribe(self, client: paho.Client, _userdata: object, mid: int, reasons: Any,
                      _props: Any) -> None:
        if self._subscriptions.is_change(mid):
            if any(r.is_failure for r in reasons):
                log.error("%s: broker refused a subscription: %s; reconnecting", self.name, reasons)
                client.disconnect()  # the reconnect subscribes to the whole current list
            return
        if mid != self._pending_subscribe:
            return
        self._pending_subscribe = None
        failed = [r for r in reasons if r.is_failure]
        if failed:
            # A node without its subscriptions (log, reports) would wait forever: treat it as a failed
            # connection, so the runner reconnects (next broker URL, with backoff) and retries.
            log.error("%s: broker refused subscriptions: %s; reconnecting", self.name, failed)
            refused = [f for f, r in zip(self._connect_filters, reasons, strict=False) if r.is_failure]
            self.last_failure = (f"accepted the connection but refused the subscription to "
                                 f"{', '.join(refused) or '?'} ({failed[0]})")
            client.disconnect()
            return
        self._mark_connected()

    def _mark_connected(self) -> None:
        self.last_failure = None
        self.connect_count += 1
        self.rotation.connected()
        log.info("%s: connected to %s", self.name, self.current_broker)
        self.connected.set()
        self._inbox.connected()

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        if not self._subscriptions.accepts(topic):
            self.unsolicited += 1
            return
        # paho types payload bytes | bytearray (one attribute for both directions); received, it is
        # the bytes struct.unpack cuts from the packet. No wakeup: this runs on the runner's thread,
        # which works off the inbox right after the read pass.
        if msg.retain:  # a stored copy sent on subscribing, not a message published now
            self._inbox.items.append(RetainedIncoming((topic, bytes(msg.payload))))
        else:
            self._inbox.items.append((topic, msg.payload))  # type: ignore[arg-type]

    def _on_disconnect(self, _client: paho.Client, _userdata: object, _flags: Any, reason: Any,
                       _props: Any) -> None:
        if self.connected.is_set() and self.closing is None and not self.aborted:
            log.warning("%s: disconnected from %s (%s)", self.name, self.current_broker, reason)
        self.connected.clear()
        self._pending_subscribe = None

    # ---- incoming PUBLISH and PUBACK without paho's objects -----------------------------------------

    def _packet_handle(self) -> MQTTErrorCode:
        """paho's packet dispatch (`Client._packet_handle`, called by `_packet_read` with the whole
        packet in `_in_packet`) for the two packets a lone order brings, without paho's per-packet
        objects; everything else, and anything unusual, goes to paho's own handler.

        - PUBLISH at QoS 0 or 1: paho builds an MQTTMessage (and its MQTTMessageInfo with a
          Condition), runs its callback matcher, then `_on_message`; here the topic and payload go
          straight to the inbox, filtered as `_on_message` does, and a QoS1 one's PUBACK is queued
          as the 4 bytes paho's `_send_puback` queues. QoS 2, a malformed packet (paho's error) and a
          topic that is not UTF-8 (paho's exception) are paho's.
        - PUBACK: paho parses a ReasonCode and a Properties, and marks the message published under a
          Condition; here the same state changes as its `_handle_pubackcomp`/`_do_on_publish`
          (out_messages, the inflight count and the queued messages it lets go), so a reconnect
          resends what is still unacknowledged as before. With an on_publish callback: paho's."""
        client = self.client
        packet = client._in_packet
        command = packet["command"]
        kind = command & 0xF0
        data = packet["packet"]
        if kind == _PUBLISH and not command & 0x04 and len(data) > 2:  # QoS 0 or 1, a topic length
            start = 2 + (data[0] << 8 | data[1])
            qos1 = command & 0x02
            if start > 2 and len(data) >= start + (2 if qos1 else 0):
                try:
                    topic = data[2:start].decode()
                except UnicodeDecodeError:
                    return self._paho_packet_handle()
                payload = bytes(data[start + 2:] if qos1 else data[start:])  # received: bytes, as paho's
                if not self._subscriptions.accepts(topic):
                    self.unsolicited += 1
                elif command & 0x01:  # retained: a stored copy sent on subscribing (see _on_message)
                    self._inbox.items.append(RetainedIncoming((topic, payload)))
                else:
                    self._inbox.items.append((topic, payload))
                if qos1:  # acknowledged after delivery, as paho does (no manual ack here)
                    ack = bytes((_PUBACK, 2, data[start], data[start + 1]))
                    client._out_packet.append({"command": _PUBACK, "mid": data[start] << 8 | data[start + 1],
                                               "qos": 1, "pos": 0, "to_process": 4, "packet": ack,
                                               "info": None})
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        elif kind == _PUBACK and len(data) == 2 and client._on_publish is None:
            with client._out_message_mutex:
                message = client._out_messages.pop(data[0] << 8 | data[1], None)
                if message is None:  # not ours (a duplicate PUBACK): paho ignores it too
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                _mark_published(message.info)
                if message.qos > 0:
                    client._inflight_messages -= 1
                    if client._max_inflight_messages > 0:
                        return client._update_inflight()  # sends what waited for an inflight slot
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._paho_packet_handle()


_PUBLISH = paho.PUBLISH
_PUBACK = paho.PUBACK
_time_func = paho.time_func  # (the clock paho 2.x keeps its keepalive times with)


def _fresh_in_packet() -> dict[str, Any]:
    """paho's reader state between packets (as `_packet_read` leaves it)."""
    return {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
            "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}


# What MqttConnection._packet_handle reads or changes in a paho 2.x Client, and the handlers whose
# work it does (a paho without them dispatches differently: leave its packets to it).
_PAHO_INTERNALS = ("_packet_handle", "_packet_read", "_msgtime_mutex", "_last_bytes_received",
                   "_handle_publish", "_handle_pubackcomp", "_update_inflight",
                   "_in_packet", "_out_packet", "_out_messages", "_out_message_mutex",
                   "_inflight_messages", "_max_inflight_messages", "_on_publish", "_manual_ack",
                   "_protocol", "_logger", "_on_log", "_mid_generate", "_sock")


def fast_packets_possible(client: paho.Client) -> bool:
    """Whether `MqttConnection._packet_handle` may handle this client's PUBLISH and PUBACK packets:
    the paho internals it relies on are there, the protocol is MQTT 3.1.1 (v5 packets carry
    properties and reason codes), and nothing it skips is in use: no manual acks, no debug logging
    (paho logs every packet). (MqttConnection adds no per-topic callbacks, which paho would run.)"""
    if not all(hasattr(client, name) for name in _PAHO_INTERNALS):
        return False
    if client._protocol != MQTTProtocolVersion.MQTTv311 or client._manual_ack:
        return False
    return client._logger is None and client._on_log is None


def _mark_published(info: paho.MQTTMessageInfo) -> None:
    """`info._set_as_published()` without taking its Condition when nobody waits on it (this
    connection only polls `is_published()`, from the runner's thread); a waiter gets paho's notify."""
    if info._condition._waiters:  # type: ignore[attr-defined]  # (threading.Condition's own list)
        info._set_as_published()
    else:
        info._published = True


class BufferedRecv:
    """paho reads a packet in three recv calls or more (its type byte, each byte of its length,
    the rest): a syscall each, nine or more for a lone order's PUBLISH and the two PUBACKs that
    follow it. This serves them from one recv of up to READ_CHUNK bytes, through paho's own
    `_sock_recv` (its TLS and closed-socket errors): `recv` returns at most `bufsize` bytes, raises
    what that raises when nothing is buffered, and b"" at the end of the stream."""

    __slots__ = ("_recv", "_data", "_pos", "_short")

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._data = b""
        self._pos = 0
        self._short = False  # the last recv returned less than it asked for

    @property
    def pending(self) -> bool:
        return self._pos < len(self._data)

    @property
    def drained(self) -> bool:
        """Everything read is served and the last recv was not filled: the socket had no more."""
        return self._short and self._pos >= len(self._data)

    def clear(self) -> None:
        self._data, self._pos, self._short = b"", 0, False

    def fill(self, want: int = READ_CHUNK) -> bool:
        """Read up to `want` bytes from the socket into the buffer (call when nothing is
        buffered); False at the end of the stream. Raises what the socket's recv raises."""
        data = self._recv(want)
        if not data:
            return False
        self._data, self._pos, self._short = data, 0, len(data) < want
        return True

    def take_packet(self) -> tuple[int, bytes] | None:
        """The next MQTT packet (its first byte, its body) if the buffer holds all of it, taken
        from the buffer; else None and nothing taken (a remaining length of more than 4 bytes,
        malformed, is left to paho, which refuses it)."""
        data, pos = self._data, self._pos
        end = len(data)
        at, length, shift = pos + 1, 0, 0
        while True:
            if at >= end or shift > 21:
                return None
            byte = data[at]
            at += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        stop = at + length
        if stop > end:
            return None
        self._pos = stop
        return data[pos], data[at:stop]

    def recv(self, bufsize: int) -> bytes:
        data, pos = self._data, self._pos
        if pos >= len(data):
            # Asked for the rest of a packet larger than a chunk: ask the socket for all of it.
            # paho appends each piece to the packet so far (`packet += data`, a new bytes object
            # each time): a 650 KB reports message read 64 KB at a time was ten copies of a
            # growing buffer, each fresh memory to fault in.
            if not self.fill(bufsize if bufsize > READ_CHUNK else READ_CHUNK):
                return b""
            data, pos = self._data, 0
        end = pos + bufsize
        self._pos = end
        if pos == 0 and end >= len(data):
            return data
        return data[pos:end]


class _Untracked:
    """The MQTTMessageInfo of a QoS0 PUBLISH nobody waits for: paho marks each one written, and its
    reconnect marks each one still queued lost (`info.rc = MQTT_ERR_CONN_LOST`). Both are no-ops:
    without an `rc` to set, that reconnect raised AttributeError and stopped the node's loop (a
    sequencer whose broker restarted while its log was queued exited)."""

    __slots__ = ()

    @property
    def rc(self) -> paho.MQTTErrorCode:
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    @rc.setter
    def rc(self, value: paho.MQTTErrorCode) -> None:
        pass  # nobody asks a fire-and-forget message how it went

    def _set_as_published(self) -> None:
        pass


_UNTRACKED = _Untracked()
_LENGTH = struct.Struct("!H")


def publish_packet(message: Outgoing, mid: int = 0, info: Any = _UNTRACKED) -> dict[str, Any]:
    """An entry of paho's write queue: the MQTT 3.1.1 PUBLISH of `message`, as paho's
    `_send_publish` builds it (fixed header, remaining length, topic, the packet identifier `mid`
    of a QoS1 one, payload): QoS0 when `mid` is 0, else QoS1 (`info`: its MQTTMessageInfo)."""
    topic = message.topic.encode()
    qos = 1 if mid else 0
    remaining = 2 + len(topic) + 2 * qos + len(message.payload)
    head = bytearray((paho.PUBLISH | qos << 1 | (1 if message.retain else 0),))
    while True:
        byte, remaining = remaining & 0x7F, remaining >> 7
        head.append(byte | 0x80 if remaining else byte)
        if not remaining:
            break
    ident = _LENGTH.pack(mid) if qos else b""
    data = b"".join((head, _LENGTH.pack(len(topic)), topic, ident, message.payload))
    return {"command": paho.PUBLISH, "mid": mid, "qos": qos, "pos": 0, "to_process": len(data),
            "packet": data, "info": info}


class _PublishedTogether:
    """Stands for the QoS0 messages' MQTTMessageInfo of a joined write: paho marks a QoS0 PUBLISH
    published once its packet is written; this marks each of them."""

    __slots__ = ("infos",)

    def __init__(self, infos: list[paho.MQTTMessageInfo]) -> None:
        self.infos = infos

    @property
    def rc(self) -> paho.MQTTErrorCode:
        return self.infos[0].rc if self.infos else paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    @rc.setter
    def rc(self, value: paho.MQTTErrorCode) -> None:
        """paho's reconnect marks each unwritten QoS0 PUBLISH lost (`info.rc = MQTT_ERR_CONN_LOST`,
        then `_set_as_published`): a joined write passes that on to each message it stands for."""
        for info in self.infos:
            info.rc = value

    def _set_as_published(self) -> None:
        for info in self.infos:
            info._set_as_published()  # (paho 2.x; what its write loop calls)


def coalesce(queue: deque[Any]) -> None:
    """Join the packets at the head of paho's write queue into one, so one `send()` carries a
    batch's output (a lone order's PUBACK, log, reports and book were four syscalls, each waking the
    broker). Up to COALESCE_BYTES, from an unwritten head, never past a DISCONNECT (paho closes the
    socket after writing one); the QoS0 PUBLISHes joined are marked published once the whole is
    written, as paho marks each (`MQTTMessageInfo.is_published`); paho calls no on_publish here
    (none is set)."""
    head = queue[0]["packet"] if queue else b""
    if len(head) > COALESCE_BYTES and not isinstance(head, memoryview):
        # paho writes `packet[pos:]` after each partial send: a copy of all that is left, each
        # time, when the packet is bytes or a bytearray (a bulk batch's reports, ~650 KB, left a
        # little at a time into a full socket buffer); a view of it is sliced without copying.
        queue[0]["packet"] = memoryview(head)
    if len(queue) < 2 or queue[0]["pos"]:
        return
    parts: list[bytes | bytearray] = []
    infos: list[paho.MQTTMessageInfo] = []
    size = 0
    for packet in queue:
        command = packet["command"] & 0xF0
        if command == paho.DISCONNECT or (parts and size + len(packet["packet"]) > COALESCE_BYTES):
            break
        parts.append(packet["packet"])
        size += len(packet["packet"])
        if command == paho.PUBLISH and packet["qos"] == 0 and packet["info"] is not None:
            infos.append(packet["info"])
    if len(parts) < 2:
        return
    for _ in parts:
        queue.popleft()
    data = b"".join(parts)
    queue.appendleft({"command": paho.PUBLISH, "mid": 0, "qos": 0, "pos": 0, "to_process": len(data),
                      "packet": data, "info": _PublishedTogether(infos)})


def _no_op_socket_hook(_client: paho.Client, _userdata: object, _sock: object) -> None:
    pass
