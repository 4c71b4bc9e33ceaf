"""MQTT transport: broker URLs and the NodeRunner that connects a Node to a broker.

The runner owns two threads. The *network* thread runs the paho client (connect, failover across the
broker URLs with backoff, read/write). The *worker* thread owns the node: it is the only thread that
ever calls into it, so nodes need no locks. Everything reaches the worker through one FIFO inbox,
which keeps incoming messages, "connected" markers and `call()` requests in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from fastbook.transport.node import Incoming, Node, Outgoing

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
TICK_INTERVAL = 0.1
MAX_BATCH = 2000  # messages per on_messages call at most
# ... and payload bytes (at least one message): a backlog of bulk messages is worked off in slices,
# so the first results are published (and replicas start applying) while the rest is processed.
MAX_BATCH_BYTES = 256 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://HOST[:PORT]` (port defaults to 1883). Anything else is a ValueError saying why."""
    text = url.strip()
    if not text:
        raise ValueError("empty broker URL (expected mqtt://HOST:PORT)")
    if "://" not in text:
        raise ValueError(f"broker URL {url!r} has no scheme (expected mqtt://HOST:PORT)")
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"broker URL {url!r}: unsupported scheme {parts.scheme!r} (expected mqtt://)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r}: unexpected path or query (expected mqtt://HOST:PORT)")
    if parts.username or parts.password:
        raise ValueError(f"broker URL {url!r}: credentials in the URL are not supported")
    host = parts.hostname
    if not host:
        raise ValueError(f"broker URL {url!r} has no host (expected mqtt://HOST:PORT)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker URL {url!r}: port must be a number from 1 to 65535") from None
    if port is None:
        port = DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise ValueError(f"broker URL {url!r}: port must be a number from 1 to 65535")
    return BrokerAddress(host, port)


def parse_broker_urls(urls: str | Sequence[str]) -> list[BrokerAddress]:
    """One or several broker URLs (a list, or one comma-separated string) tried in order for failover."""
    items = urls.split(",") if isinstance(urls, str) else [u for url in urls for u in url.split(",")]
    items = [u for u in (i.strip() for i in items) if u]
    if not items:
        raise ValueError("no broker URL given (expected mqtt://HOST:PORT)")
    return [parse_broker_url(u) for u in items]


class _Connected:
    """Inbox marker: connect + subscribe completed; the worker calls node.on_connected()."""


class _Stop:
    """Inbox marker: the worker closes the node and exits."""


_CONNECTED = _Connected()
_STOP = _Stop()


@dataclass(slots=True)
class _Call:
    fn: Callable[[], Any]
    future: Future[Any]
    returns_value: bool


def _no_op_register_write(_client: paho.Client, _userdata: object, _sock: object) -> None:
    pass


class RunnerError(RuntimeError):
    pass


class NodeRunner:
    """Runs one node against an MQTT broker until `stop()`.

    - `clean_session=False` with a fixed client id asks the broker to keep the subscriptions and queue
      QoS1 messages while disconnected (the sequencer uses it to lose less); correctness never relies on it.
    - The node's `will()` is the MQTT last will; `close()`'s messages are published before disconnecting.
    - An exception from the node stops the runner: `error` holds it and `wait()` returns False, so the
      program can exit non-zero (a restart recovers from the journal/snapshot; limping on could not).
    - `batch_window` (seconds, default 0) is a group-commit window for a node whose every batch costs
      much more than its messages (the sequencer: one fsync, one log message, one book, reports, each
      fanned out by the broker). Once a batch held more than one message (messages are arriving
      faster than batches complete), the next batch starts no sooner than `batch_window` after the
      previous one started, so it collects everything that arrived meanwhile. A lone message on a
      quiet connection is never delayed.
    - A node's `subscriptions()` may change: after every call into the node the runner subscribes
      and unsubscribes the difference (an edge drops the retained snapshot's topic while it follows
      the log), and every (re)connect subscribes to the current list.
    """

    def __init__(
        self,
        node: Node,
        broker_urls: str | Sequence[str],
        client_id: str,
        *,
        clean_session: bool = True,
        keepalive: int = 15,
        tick_interval: float = TICK_INTERVAL,
        max_batch: int = MAX_BATCH,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        max_inflight: int = 1000,
        batch_window: float = 0.0,
        name: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_ca: str | None = None,
    ) -> None:
        if not client_id or len(client_id.encode()) > 65535:
            raise ValueError("client id must be a non-empty string")
        if not 0.0 <= batch_window <= 1.0:
            raise ValueError("batch_window must be between 0 and 1 second")
        if max_batch < 1 or max_batch_bytes < 1:
            raise ValueError("max_batch and max_batch_bytes must be positive")
        self.node = node
        self.brokers = parse_broker_urls(broker_urls)
        self.client_id = client_id
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.tick_interval = tick_interval
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.batch_window = batch_window
        self.batches = 0  # on_messages calls so far (with `received`: the mean batch size)
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.name = name or client_id
        self.error: BaseException | None = None
        self.connected = threading.Event()
        self.current_broker: BrokerAddress | None = None
        self.connect_count = 0
        self.received = 0
        self.published = 0
        self.unsolicited = 0  # messages on topics the node did not subscribe to (dropped)
        self.refusal: str | None = None  # the broker's last CONNACK refusal (bad credentials, ...)
        self._exact_filters: frozenset[str] = frozenset()
        self._wildcard_filters: tuple[str, ...] = ()

        self._inbox: deque[Incoming | _Connected | _Stop | _Call] = deque()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._net_done = threading.Event()
        self._pending_subscribe: int | None = None
        self._later_subscribes: set[int] = set()  # mids of subscriptions changed while connected
        # What the node wants (read by the worker after each node call) and what this connection
        # subscribed to; both threads use them, under the lock.
        self._subs_lock = threading.Lock()
        self._wanted: list[tuple[str, int]] = list(node.subscriptions())
        self._on_broker: list[tuple[str, int]] = []
        self._started = False

        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self._client.max_inflight_messages_set(max_inflight)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls_ca is not None:
            # TLS to every broker URL, verifying the broker's certificate (and host name) against tls_ca.
            self._client.tls_set(ca_certs=tls_ca)
        self._client.max_queued_messages_set(0)  # 0 = unbounded: the worker never drops its own output
        will = node.will()
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        # Without this, paho's publish() called from the worker writes to the socket itself while the
        # network thread may be writing too, which reorders packets (seen in tests). With a
        # register-write hook set, publish() only queues the packet and wakes the network thread, so
        # a single thread writes and QoS1 messages leave in publish order.
        self._client.on_socket_register_write = _no_op_register_write

        self._net_thread = threading.Thread(target=self._network_loop, name=f"{self.name}-net", daemon=True)
        self._worker_thread = threading.Thread(
            target=self._worker_loop, name=f"{self.name}-node", daemon=True
        )

    # ---- public API -------------------------------------------------------------------------------

    def start(self) -> NodeRunner:
        if self._started:
            raise RunnerError("runner already started")
        self._started = True
        self._worker_thread.start()
        self._net_thread.start()
        return self

    def __enter__(self) -> NodeRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], list[Outgoing]]) -> Future[list[Outgoing]]:
        """Run fn on the worker thread and publish the messages it returns; resolves to that list."""
        return self._enqueue_call(fn, returns_value=False)

    def call_with_result(self, fn: Callable[[], tuple[T, list[Outgoing]]]) -> Future[T]:
        """Run fn on the worker thread; fn returns (value, messages): publish them, resolve to value."""
        return self._enqueue_call(fn, returns_value=True)

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Close the node (publishing its last messages), disconnect cleanly (no last will), join."""
        if not self._started or self._stopping.is_set():
            self._stopped.wait(timeout)
            return
        self._stopping.set()
        self._put(_STOP)
        self._worker_thread.join(timeout)
        if self._net_thread.is_alive():  # (an InProcessRunner never starts one)
            self._net_thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the runner stopped; True if it stopped without a node error."""
        self._stopped.wait(timeout)
        return self._stopped.is_set() and self.error is None

    @property
    def running(self) -> bool:
        return self._started and not self._stopped.is_set()

    # ---- inbox ------------------------------------------------------------------------------------

    def _put(self, item: Incoming | _Connected | _Stop | _Call) -> None:
        self._inbox.append(item)  # deque.append is atomic; the Event only wakes the worker
        self._wakeup.set()

    def _enqueue_call(self, fn: Callable[[], Any], returns_value: bool) -> Future[Any]:
        future: Future[Any] = Future()
        if self._stopped.is_set() or self._stopping.is_set():
            future.set_exception(RunnerError(f"runner {self.name} is stopped"))
            return future
        self._put(_Call(fn, future, returns_value))
        return future

    # ---- paho callbacks (network thread) -----------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, _userdata: object, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            self.refusal = str(reason)
            log.error("%s: broker %s refused the connection: %s", self.name, self.current_broker, reason)
            return
        self.refusal = None
        with self._subs_lock:
            subs = list(self._wanted)
            self._on_broker = subs
            self._set_filters(subs)
        if not subs:
            self._mark_connected()
            return
        rc, mid = client.subscribe(subs)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning("%s: subscribe failed (%s); reconnecting", self.name, rc)
            client.disconnect()
            return
        self._pending_subscribe = mid

    def _on_subscribe(
        self, _client: paho.Client, _userdata: object, mid: int, reasons: Any, _props: Any
    ) -> None:
        with self._subs_lock:  # (held by the worker while it subscribes: its mid is in the set)
            later = mid in self._later_subscribes
            self._later_subscribes.discard(mid)
        if later:
            if any(r.is_failure for r in reasons):
                log.error("%s: broker refused a subscription: %s; reconnecting", self.name, reasons)
                self._client.disconnect()  # the reconnect subscribes to the whole current list
            return
        if mid != self._pending_subscribe:
            return
        self._pending_subscribe = None
        failed = [r for r in reasons if r.is_failure]
        if failed:
            # A node without its subscriptions (log, reports) would wait forever: treat it as a failed
            # connection, so the network loop reconnects (next broker URL, with backoff) and retries.
            log.error("%s: broker refused subscriptions: %s; reconnecting", self.name, failed)
            self._client.disconnect()
            return
        self._mark_connected()

    def _set_filters(self, subs: list[tuple[str, int]]) -> None:
        self._exact_filters = frozenset(f for f, _ in subs if "+" not in f and "#" not in f)
        self._wildcard_filters = tuple(f for f, _ in subs if "+" in f or "#" in f)

    def _follow_subscriptions(self) -> None:
        """On the worker, after a node call: subscribe and unsubscribe what the node's
        subscriptions() changed. (Not connected: the next connect subscribes to the new list. A
        message already on its way for a dropped topic is not given to the node.)"""
        wanted = self.node.subscriptions()
        if wanted == self._wanted and wanted == self._on_broker:
            return
        with self._subs_lock:
            self._wanted = list(wanted)
            self._set_filters(self._wanted)
            if not self.connected.is_set():
                return
            before = dict(self._on_broker)
            after = dict(self._wanted)
            self._on_broker = list(self._wanted)
            added = [(f, qos) for f, qos in self._wanted if before.get(f) != qos]
            removed = [f for f in before if f not in after]
            if removed:  # first: the broker takes them in order
                self._client.unsubscribe(removed)
            if added:
                rc, mid = self._client.subscribe(added)
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                    self._later_subscribes.add(mid)

    def _mark_connected(self) -> None:
        self.connect_count += 1
        log.info("%s: connected to %s", self.name, self.current_broker)
        self.connected.set()
        self._put(_CONNECTED)

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        if topic not in self._exact_filters and not any(
            paho.topic_matches_sub(f, topic) for f in self._wildcard_filters
        ):
            # amqtt 0.12.1 sends a (re)connecting client the retained messages of every topic anyone
            # subscribed to. A node only ever sees what it subscribed to.
            self.unsolicited += 1
            return
        # paho types payload bytes | bytearray (one attribute for both directions); received, it is
        # the bytes struct.unpack cuts from the packet.
        self._put((topic, msg.payload))  # type: ignore[arg-type]

    def _on_disconnect(
        self, _client: paho.Client, _userdata: object, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if self.connected.is_set() and not self._stopping.is_set():
            log.warning("%s: disconnected from %s (%s)", self.name, self.current_broker, reason)
        self.connected.clear()
        self._pending_subscribe = None

    # ---- network thread ----------------------------------------------------------------------------

    def _network_loop(self) -> None:
        client = self._client
        delay = self.reconnect_min
        index = 0
        try:
            while not self._stopping.is_set():
                broker = self.brokers[index % len(self.brokers)]
                self.current_broker = broker
                try:
                    client.connect(broker.host, broker.port, keepalive=self.keepalive)
                    sock = client.socket()
                    if isinstance(sock, socket.socket):
                        # paho leaves Nagle on: a small publish would wait for the ACK of the previous
                        # one (tens of ms with delayed ACKs). Latency matters more than packet count.
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except (OSError, ValueError) as exc:
                    log.warning("%s: cannot connect to %s: %s", self.name, broker, exc)
                    index += 1
                    if index % len(self.brokers) == 0:  # a full round failed: back off
                        self._stopping.wait(delay)
                        delay = min(delay * 2, self.reconnect_max)
                    continue
                while not self._stopping.is_set():
                    rc = client.loop(timeout=0.05)
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                    if self.connected.is_set():
                        delay = self.reconnect_min
                if self._stopping.is_set():
                    break
                self.connected.clear()
                index += 1
                self._stopping.wait(delay)
                delay = min(delay * 2, self.reconnect_max)
            # The worker publishes close()'s messages, then disconnects: keep the loop running for it.
            while not self._net_done.is_set():
                rc = client.loop(timeout=0.05)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        except Exception:  # a bug here must not leave a silent zombie process
            log.exception("%s: network thread failed", self.name)
            self.error = self.error or RunnerError("network thread failed")
            self._stopping.set()
            self._put(_STOP)

    # ---- worker thread ----------------------------------------------------------------------------

    def _publish(self, messages: list[Outgoing]) -> list[paho.MQTTMessageInfo]:
        infos = []
        publish = self._client.publish
        for m in messages:
            infos.append(publish(m.topic, m.payload, qos=m.qos, retain=m.retain))
        self.published += len(messages)
        return infos

    def _worker_loop(self) -> None:
        inbox = self._inbox
        node = self.node
        next_tick = time.monotonic() + self.tick_interval
        window = self.batch_window
        max_batch_bytes = self.max_batch_bytes
        last_start = 0.0  # when the last batch started
        last_size = 0  # messages in the last batch
        try:
            while True:
                now = time.monotonic()
                if not inbox:
                    self._wakeup.wait(max(0.0, next_tick - now))
                    self._wakeup.clear()
                if window and last_size > 1 and inbox:
                    # Under load: let the window fill (a stop still interrupts the wait).
                    wait = window - (time.monotonic() - last_start)
                    if wait > 0:
                        self._stopping.wait(wait)
                batch: list[Incoming] = []
                batch_bytes = 0
                while inbox and len(batch) < self.max_batch and batch_bytes < max_batch_bytes:
                    item = inbox[0]
                    if isinstance(item, tuple):
                        inbox.popleft()
                        batch.append(item)
                        batch_bytes += len(item[1])
                        continue
                    if batch:
                        break  # flush the messages that arrived before this marker first
                    inbox.popleft()
                    if isinstance(item, _Stop):
                        self._close_node()
                        return
                    if isinstance(item, _Connected):
                        self._publish(node.on_connected())
                    else:
                        self._run_call(item)
                    self._follow_subscriptions()
                if batch:
                    last_start, last_size = time.monotonic(), len(batch)
                    self.received += len(batch)
                    self.batches += 1
                    self._publish(node.on_messages(batch))
                    self._follow_subscriptions()
                now = time.monotonic()
                if now >= next_tick:
                    self._publish(node.on_tick(now))
                    self._follow_subscriptions()
                    next_tick = now + self.tick_interval
        except Exception as exc:
            log.exception("%s: node failed; stopping", self.name)
            self.error = exc
            self._stopping.set()
            self._drop_connection()
            self._fail_pending_calls()
            self._stopped.set()

    def _run_call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            result = call.fn()
            if call.returns_value:
                value, messages = result
            else:
                value, messages = result, result
            self._publish(list(messages))
        except Exception as exc:  # the caller's bug, not the node's state: report it to the caller
            call.future.set_exception(exc)
            return
        call.future.set_result(value)

    def _close_node(self) -> None:
        try:
            infos = self._publish(self.node.close())
            deadline = time.monotonic() + 2.0
            if self.connected.is_set():
                for info in infos:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        info.wait_for_publish(remaining)
                    except (RuntimeError, ValueError):
                        break  # not connected any more: the last will covers an edge's status
        except Exception as exc:
            log.exception("%s: node close failed", self.name)
            self.error = exc
        finally:
            self._disconnect()
            self._fail_pending_calls()
            self._stopped.set()

    def _disconnect(self) -> None:
        try:
            self._client.disconnect()
        except Exception:  # already gone; nothing to flush
            pass
        self._net_done.set()

    def _drop_connection(self) -> None:
        """End the connection without a DISCONNECT packet, so the broker publishes the last will
        (a failed edge must not stay "online")."""
        self._net_done.set()
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _fail_pending_calls(self) -> None:
        while self._inbox:
            item = self._inbox.popleft()
            if isinstance(item, _Call) and not item.future.done():
                item.future.set_exception(RunnerError(f"runner {self.name} stopped"))


class InProcessRunner(NodeRunner):
    """Runs a node inside the embedded broker's process, without an MQTT client: messages on the
    node's subscriptions come straight from the broker (after its publish ACL, in the order it takes
    them) and the node's output goes straight into the broker. Same worker loop as NodeRunner."""

    def __init__(
        self,
        node: Node,
        broker: Any,  # fastbook.transport.broker.FastbookAmqttBroker
        loop: Any,  # the broker's asyncio loop
        *,
        name: str,
        batch_window: float = 0.0,
    ) -> None:
        # The base class's paho client is created but never connected.
        super().__init__(node, "mqtt://127.0.0.1:1", f"in-process-{name}", name=name,
                         batch_window=batch_window)
        self._broker = broker
        self._loop = loop
        self._filters = [topic_filter for topic_filter, _qos in node.subscriptions()]

    def start(self) -> InProcessRunner:
        if self._started:
            raise RunnerError("runner already started")
        self._started = True
        self._broker.add_ingress(self._filters, self._deliver)
        self.connected.set()
        self._put(_CONNECTED)
        self._worker_thread.start()
        return self

    def _deliver(self, topic: str, payload: bytes) -> None:
        self._put((topic, payload))

    def _follow_subscriptions(self) -> None:
        """An in-process node's filters are fixed when it starts (the sequencer's never change)."""

    def _publish(self, messages: list[Outgoing]) -> list[paho.MQTTMessageInfo]:
        if messages:
            # Scheduled in call order on the broker's loop, so the output keeps its order.
            publish = self._broker.publish_from_node(list(messages))
            done = asyncio.run_coroutine_threadsafe(publish, self._loop)
            done.add_done_callback(self._published)
            self.published += len(messages)
        return []

    def _published(self, done: Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("%s: the broker could not take the node's output: %s", self.name, done.exception())

    def _disconnect(self) -> None:
        self._broker.remove_ingress(self._deliver)
        self._net_done.set()

    def _drop_connection(self) -> None:
        self._disconnect()
