"""The MQTT side of a NodeRunner: one paho client on its own network thread.

`MqttConnection` connects (failing over across the broker URLs with backoff, `BrokerRotation`),
subscribes to the node's subscriptions on every (re)connect and follows their changes
(`SubscriptionSet`), hands what arrives to the Inbox and publishes the driver's output; it is the
driver's `Link` (fastbook.transport.seam).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from fastbook.transport.config import BrokerAddress, RunnerConfig
from fastbook.transport.node import Outgoing
from fastbook.transport.seam import Inbox, RunnerError

log = logging.getLogger(__name__)

CLOSE_FLUSH_SECONDS = 2.0  # how long a clean stop waits for close()'s messages to leave
LOOP_TIMEOUT = 0.05  # the network thread's poll (it also wakes when the driver publishes)

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


class SubscriptionSet:
    """What the node wants, what this connection subscribed to, and which topics to let through.

    The driver's thread calls `change()`; the network thread calls `for_connect()`, `is_change()` and
    `accepts()`. The subscribe/unsubscribe calls are made under the lock, so a SUBACK for a change is
    always recognised as one."""

    def __init__(self, initial: Sequence[Subscription]) -> None:
        self._lock = threading.Lock()
        self._wanted: list[Subscription] = list(initial)
        self._on_broker: list[Subscription] = []
        self._changes: set[int] = set()  # mids of subscriptions added while connected
        self._exact: frozenset[str] = frozenset()
        self._wildcards: tuple[str, ...] = ()

    def accepts(self, topic: str) -> bool:
        # amqtt 0.12.1 sends a (re)connecting client the retained messages of every topic anyone
        # subscribed to. A node only ever sees what it subscribed to.
        return topic in self._exact or any(paho.topic_matches_sub(f, topic) for f in self._wildcards)

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
        self._wildcards = tuple(f for f, _ in subs if "+" in f or "#" in f)


def _no_op_register_write(_client: paho.Client, _userdata: object, _sock: object) -> None:
    pass


class MqttConnection:
    """A paho client on its own network thread, the Link of one NodeRunner's driver.

    - The node's `will` is the MQTT last will.
    - A broker refusing the connection or a subscription counts as a failed connection: the node is
      told it is connected only once it holds all its subscriptions.
    - `publish()` (from the driver's thread) only queues: the network thread alone writes the socket.
    """

    def __init__(self, config: RunnerConfig, inbox: Inbox, will: Outgoing | None,
                 subscriptions: Sequence[Subscription]) -> None:
        self.config = config
        self.name = config.name
        self.connected = threading.Event()
        self.current_broker: BrokerAddress | None = None
        self.connect_count = 0
        self.unsolicited = 0  # messages on topics the node did not subscribe to (dropped)
        self.refusal: str | None = None  # the broker's last CONNACK refusal (bad credentials, ...)
        self._inbox = inbox
        self._subscriptions = SubscriptionSet(subscriptions)
        self._rotation = BrokerRotation(config.addresses, config.reconnect_min, config.reconnect_max)
        self._pending_subscribe: int | None = None
        self._stopping = threading.Event()  # no more reconnects
        self._done = threading.Event()  # disconnected for good: the network thread may exit
        self.client = self._make_client(config, will)
        self._thread = threading.Thread(target=self._network_loop, name=f"{self.name}-net", daemon=True)

    def _make_client(self, config: RunnerConfig, will: Outgoing | None) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id,
                             clean_session=config.clean_session, protocol=MQTTProtocolVersion.MQTTv311)
        client.max_inflight_messages_set(config.max_inflight)
        client.max_queued_messages_set(0)  # 0 = unbounded: the driver never drops its own output
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls_ca is not None:
            client.tls_set(ca_certs=config.tls_ca)
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        # Without this, paho's publish() called from the driver's thread writes to the socket itself
        # while the network thread may be writing too, which reorders packets (seen in tests). With a
        # register-write hook set, publish() only queues the packet and wakes the network thread, so
        # a single thread writes and QoS1 messages leave in publish order.
        client.on_socket_register_write = _no_op_register_write
        return client

    # ---- lifecycle (any thread) -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop_reconnecting(self) -> None:
        """A stop is coming: do not reconnect any more (the network loop keeps running until close)."""
        self._stopping.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- Link (the driver's thread) ---------------------------------------------------------------

    def publish(self, messages: Sequence[Outgoing]) -> None:
        self._publish(messages)

    def follow(self, subscriptions: list[Subscription]) -> None:
        self._subscriptions.change(subscriptions, self.connected.is_set(), self.client.unsubscribe,
                                   self._subscribe_change)

    def close(self, last: Sequence[Outgoing]) -> None:
        self._stopping.set()
        try:
            infos = self._publish(last)
            if self.connected.is_set():
                deadline = time.monotonic() + CLOSE_FLUSH_SECONDS
                for info in infos:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        info.wait_for_publish(remaining)
                    except (RuntimeError, ValueError):
                        break  # not connected any more: the last will covers an edge's status
        finally:
            try:
                self.client.disconnect()
            except Exception:  # already gone; nothing to flush
                pass
            self._done.set()

    def abort(self) -> None:
        self._stopping.set()
        self._done.set()
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

    # ---- paho callbacks (network thread) ----------------------------------------------------------

    def _on_connect(self, client: paho.Client, _userdata: object, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            self.refusal = str(reason)
            log.error("%s: broker %s refused the connection: %s", self.name, self.current_broker, reason)
            return
        self.refusal = None
        subs = self._subscriptions.for_connect()
        if not subs:
            self._mark_connected()
            return
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
            # connection, so the network loop reconnects (next broker URL, with backoff) and retries.
            log.error("%s: broker refused subscriptions: %s; reconnecting", self.name, failed)
            client.disconnect()
            return
        self._mark_connected()

    def _mark_connected(self) -> None:
        self.connect_count += 1
        log.info("%s: connected to %s", self.name, self.current_broker)
        self.connected.set()
        self._inbox.connected()

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        if not self._subscriptions.accepts(topic):
            self.unsolicited += 1
            return
        # paho types payload bytes | bytearray (one attribute for both directions); received, it is
        # the bytes struct.unpack cuts from the packet.
        self._inbox.deliver((topic, msg.payload))  # type: ignore[arg-type]

    def _on_disconnect(self, _client: paho.Client, _userdata: object, _flags: Any, reason: Any,
                       _props: Any) -> None:
        if self.connected.is_set() and not self._stopping.is_set():
            log.warning("%s: disconnected from %s (%s)", self.name, self.current_broker, reason)
        self.connected.clear()
        self._pending_subscribe = None

    # ---- network thread ---------------------------------------------------------------------------

    def _network_loop(self) -> None:
        client = self.client
        rotation = self._rotation
        try:
            while not self._stopping.is_set():
                broker = self.current_broker = rotation.current
                try:
                    client.connect(broker.host, broker.port, keepalive=self.config.keepalive)
                    sock = client.socket()
                    if isinstance(sock, socket.socket):
                        # paho leaves Nagle on: a small publish would wait for the ACK of the previous
                        # one (tens of ms with delayed ACKs). Latency matters more than packet count.
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except (OSError, ValueError) as exc:
                    log.warning("%s: cannot connect to %s: %s", self.name, broker, exc)
                    self._stopping.wait(rotation.connect_failed())
                    continue
                while not self._stopping.is_set():
                    if client.loop(timeout=LOOP_TIMEOUT) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                    if self.connected.is_set():
                        rotation.connected()
                if self._stopping.is_set():
                    break
                self.connected.clear()
                self._stopping.wait(rotation.connection_lost())
            # The driver publishes close()'s messages, then disconnects: keep the loop running for it.
            while not self._done.is_set():
                if client.loop(timeout=LOOP_TIMEOUT) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        except Exception:  # a bug here must not leave a silent zombie process
            log.exception("%s: network thread failed", self.name)
            self._stopping.set()
            self._inbox.stop(RunnerError("network thread failed"))
