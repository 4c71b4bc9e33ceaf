"""The embedded MQTT broker (amqtt, MQTT 3.1.1) used by `fastbook-broker` and `fastbook demo`.

amqtt's default AnonymousAuthPlugin flags every session anonymous, and amqtt drops anonymous sessions
(with their offline queues) about a second after they disconnect. Edges may ask for persistent
sessions, so an open broker (no `--users`) authenticates everyone with `AllowAllAuthPlugin`, which
accepts without the anonymous flag. With a credentials file, `FastbookAuthPlugin` and
`FastbookAclPlugin` enforce docs/security.md.

The broker's own sequencers are not MQTT clients (`InProcessRunner`): `FastbookAmqttBroker` hands
them the client messages on their subscriptions as it broadcasts them (after the publish ACL, in
order) and delivers their output itself, inline on the loop (fastbook.transport.fanout: no broadcast
queue, no task per subscriber, each PUBLISH encoded once). Through a loopback MQTT client each order
cost amqtt a delivery with its PUBACK round trip and each output a second parse; without it
fastbook-broker carries about twice the orders per second (bench/README.md).
Retained messages (book, snapshot, replica status) live in memory: after a broker restart the
sequencer republishes book and snapshot when it starts, edges their status on reconnect.

Known amqtt 0.12.1 defects and what fastbook does about them:
- a connecting client is sent the retained messages of every topic *anyone* subscribed to, not just
  its own subscriptions (a mosquitto_sub on reports/alice would first print the book, statuses and
  the binary snapshot): `FastbookAmqttBroker` sends retained messages only for the client's own
  subscriptions, and NodeRunner also drops anything outside its node's subscriptions;
- unacknowledged QoS1 messages are not resent when a persistent session resumes (replicas detect
  the gap and replay it from the journal);
- a message is delivered at the subscription's QoS, not at the lower of the subscription's and the
  publisher's (MQTT 3.1.1, 3.8.4): the log and the book, published at QoS 0, went to every edge
  (subscribed at QoS 1) at QoS 1, each with a PUBACK to read and an acknowledgement to wait for.
  `FastbookAmqttBroker` delivers a QoS 0 message at QoS 0 (a QoS 1 message still goes at the
  subscription's QoS, so a QoS 2 subscriber gets it at QoS 2, as amqtt does).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents, MQTTEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id

from fastbook.transport.acl import (
    ANY_MARKET,
    MAX_CLIENT_MESSAGE,
    MAX_SEQUENCER_MESSAGE,
    TopicScope,
    is_retained_topic,
    may_publish,
    may_receive,
    may_retain,
    may_subscribe,
)
from fastbook.transport.config import DEFAULT_BATCHING, BatchPolicy
from fastbook.transport.connection import filter_matcher
from fastbook.transport.fanout import NodeFanout
from fastbook.transport.inprocess import InProcessRunner
from fastbook.transport.throttle import LoginBackoff, LogThrottle
from fastbook.transport.users import UsersFile, UsersFileError
from fastbook.wire.topics import DEFAULT_PREFIX

log = logging.getLogger(__name__)

# The QoS of the client message being broadcast. amqtt reads a PUBLISH and broadcasts it in the
# client's own task, awaiting in between, so the value is kept per task, not on the broker.
_published_qos: ContextVar[int | None] = ContextVar("published_qos", default=None)


def delivery_qos(published_qos: int | None) -> int | None:
    """The `force_qos` amqtt's broadcast needs for a message published at `published_qos`: 0 for
    a QoS 0 message (the lower of it and any subscription's), else None (amqtt's own choice, the
    subscription's QoS)."""
    return 0 if published_qos == 0 else None


class AllowAllAuthPlugin(BaseAuthPlugin):
    """Accepts every client and marks the session non-anonymous, so persistent sessions are kept."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool:
        session.is_anonymous = False
        return True


ROLE_ATTRIBUTE = "fastbook_role"  # set on an amqtt Session by FastbookAuthPlugin, read by the ACL
# Password checks (scrypt, about 50 ms of a core each) running at once, whatever the number of
# connecting clients: a login storm takes at most this many cores from the order flow.
CONCURRENT_PASSWORD_CHECKS = 2


def _scope(prefix: str, markets: list[str] | None) -> TopicScope:
    return TopicScope(prefix, frozenset(markets) if markets is not None else None)


class PacketTooLarge(Exception):
    """A client announced a packet over its size limit; its connection is closed unread."""


class BoundedStreamReader(StreamReaderAdapter):
    """amqtt's stream reader, refusing any single read over `limit` bytes: a PUBLISH payload is
    read in one call once its length is known, so an oversized one is refused (and the connection
    aborted) before a byte of it is buffered. The limit is raised once the client's role is known."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.WriteTransport, limit: int,
                 refused: Callable[[PacketTooLarge], None]) -> None:
        super().__init__(reader)
        self._transport = transport
        self._refused = refused
        self.limit = limit

    async def read(self, n: int = -1) -> bytes:
        if n > self.limit:
            self._transport.abort()
            exc = PacketTooLarge(f"a packet of {n} bytes, over the limit of {self.limit}")
            self._refused(exc)
            raise exc
        return bytes(await super().read(n))


class FastbookAuthPlugin(BaseAuthPlugin):
    """Authenticates against a `fastbook users` credentials file (re-read when it changes). The MQTT
    client id must be the user name, and a last will may only go to a topic the user may publish
    to. (The broker's own sequencers are not MQTT clients: see InProcessRunner.)"""

    @dataclass
    class Config:
        users_file: str = ""
        prefix: str = DEFAULT_PREFIX
        markets: list[str] | None = None

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._users = UsersFile(Path(self.config.users_file or os.devnull))
        self._stamp: tuple[int, int] | None = None
        self._scope = _scope(self.config.prefix, self.config.markets)
        self.backoff = LoginBackoff(free_failures=10)
        self._checks = asyncio.Semaphore(CONCURRENT_PASSWORD_CHECKS)
        self._refusals = LogThrottle(log)

    def _current_users(self) -> UsersFile:
        """The file as it is now: `fastbook users add/remove` take effect without a restart. A file
        that became unreadable keeps the last good version (logged)."""
        path = self._users.path
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._users, self._stamp = UsersFile.load(path), stamp
        except (OSError, UsersFileError) as exc:
            log.error("credentials file %s: %s (keeping the last good version)", path, exc)
        return self._users

    async def authenticate(self, *, session: Session) -> bool:
        source = session.remote_address or "unknown address"
        user, password = session.username, session.password
        wait = self.backoff.blocked(source)
        if wait > 0:  # no password check at all: a wrong-password flood costs no scrypt
            return self._refuse(source, user, f"too many failed logins from there ({wait:.0f} s left)",
                                failed=False)
        if user is None or password is None:
            return self._refuse(source, user, f"anonymous (client id {session.client_id!r})")
        users = self._current_users()
        async with self._checks:
            found = await asyncio.get_running_loop().run_in_executor(None, users.check, user, password)
        role = found.role if found is not None else None
        if role is None:
            return self._refuse(source, user, "wrong user name or password")
        if session.client_id != user:
            return self._refuse(source, user, f"client id {session.client_id!r} is not the user name")
        if session.will_flag and not may_publish(user, role, session.will_topic or "", self._scope):
            return self._refuse(source, user, f"last will on {session.will_topic!r} is not allowed")
        self.backoff.succeeded(source)
        setattr(session, ROLE_ATTRIBUTE, role)
        session.is_anonymous = False
        return True

    def _refuse(self, source: str, user: str | None, reason: str, failed: bool = True) -> bool:
        """Count a failed login of `source` and log it: one line per source per interval."""
        if failed:
            self.backoff.failed(source)
        self._refusals.log(logging.WARNING, source, "refused %r from %s: %s", user, source, reason)
        return False


class FastbookAclPlugin(BaseTopicPlugin):
    """The topic ACL of fastbook.transport.acl (bounded to the broker's prefix and markets) for
    publish, subscribe and each delivery."""

    @dataclass
    class Config:
        prefix: str = DEFAULT_PREFIX
        markets: list[str] | None = None

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._scope = _scope(self.config.prefix, self.config.markets)
        self._refusals = LogThrottle(log)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        return self.allows(session, topic, action)

    def allows(self, session: Session | None, topic: str | None, action: Action | None) -> bool:
        """The answer of `topic_filtering`, which depends on the session's user name and role, the
        topic and the action only (so the broker may cache it: see NodeFanout)."""
        role = getattr(session, ROLE_ATTRIBUTE, None) if session is not None else None
        user = session.username if session is not None else None
        if role is None or user is None or not topic:
            return False
        if action == Action.PUBLISH:
            allowed = may_publish(user, role, topic, self._scope)
        elif action == Action.SUBSCRIBE:
            allowed = may_subscribe(user, role, topic)
        else:
            allowed = may_receive(user, role, topic)
        if not allowed:
            self._refusals.log(logging.WARNING, user, "ACL: %s %r may not %s %r", role, user,
                               getattr(action, "value", action), topic)
        return allowed


class FastbookAmqttBroker(Broker):
    """amqtt's Broker, fixed to send a client only the retained messages of its own subscriptions,
    and (with credentials) to authenticate a connection before it can touch an existing session."""

    secured = False  # set by EmbeddedBroker when a FastbookAuthPlugin is configured
    scope = ANY_MARKET  # set by EmbeddedBroker: the prefix and markets clients may publish to

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._oversize = LogThrottle(log)  # refused packets and retained messages, per source
        self.fanout = NodeFanout(self, self._receive_acl)
    # In-process nodes' subscriptions: (a matcher per topic filter, deliver). Replaced, never mutated.
    _ingress: tuple[tuple[list[Callable[[str], bool]], Callable[[str, bytes], None]], ...] = ()

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        # Until the client's role is known it gets a trader's limit (an open broker has no roles:
        # everyone may be an external sequencer there).
        limit = MAX_CLIENT_MESSAGE if self.secured else MAX_SEQUENCER_MESSAGE
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) else "unknown address"
        bounded = BoundedStreamReader(reader, writer.transport, limit,
                                      lambda exc: self.note_oversize(source, exc))
        await self._client_connected(listener_name, bounded, StreamWriterAdapter(writer))

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        # amqtt 0.12.1's method, with one change: authenticate first. amqtt itself authenticates only
        # after deleting (clean session) or updating (persistent session: will, credentials) the
        # session of the same client id, so a refused client could still drop alice's session or
        # plant a last will in the sequencer's.
        try:
            handler, client_session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager)
        except PacketTooLarge as exc:  # logged by the reader
            raise MQTTError(f"connection refused: {exc} ({remote_address}:{remote_port})") from None
        except AMQTTError as exc:
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc
        if self.secured:
            client_session.remote_address = remote_address  # the login backoff is per source address
            if not await super()._authenticate(client_session, None):
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
                raise MQTTError(f"connection refused: not authorized ({remote_address}:{remote_port})")
            role = getattr(client_session, ROLE_ATTRIBUTE)
            if isinstance(reader, BoundedStreamReader) and role == "sequencer":
                reader.limit = MAX_SEQUENCER_MESSAGE

        if client_session.clean_session:
            if client_session.client_id is not None and client_session.client_id != "":
                await self._delete_session(client_session.client_id)
            else:
                client_session.client_id = gen_client_id()
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing_client_session, _ = self._sessions[client_session.client_id]
            existing_client_session.will_flag = client_session.will_flag
            existing_client_session.will_message = client_session.will_message
            existing_client_session.will_topic = client_session.will_topic
            existing_client_session.will_qos = client_session.will_qos
            existing_client_session.keep_alive = client_session.keep_alive
            existing_client_session.username = client_session.username
            existing_client_session.password = client_session.password
            client_session = existing_client_session
            client_session.parent = 1
        else:
            client_session.parent = 0
        if self.secured:
            setattr(client_session, ROLE_ATTRIBUTE, role)
        self.fanout.invalidate()  # a resumed session's user name and role may have changed (the ACL)

        timeout_disconnect_delay = self.config.get("timeout-disconnect-delay", 0)
        if client_session.keep_alive > 0 and isinstance(timeout_disconnect_delay, int):
            client_session.keep_alive += timeout_disconnect_delay
        return handler, client_session

    def note_oversize(self, source: str, exc: PacketTooLarge) -> None:
        self._oversize.log(logging.WARNING, source, "closed a connection from %s: %s", source, exc)

    async def retain_message(self, source_session: Session | None, topic_name: str | None,
                             data: bytes | bytearray | None, qos: int | None = None) -> None:
        """Keep a client's retained message only where the contract retains one (docs/wire.md),
        and (with credentials) only the sender's own, in scope and small enough (acl.may_retain).
        The message was still delivered live; only the stored copy is refused."""
        if source_session is not None and topic_name is not None:
            user = source_session.username or ""
            role = getattr(source_session, ROLE_ATTRIBUTE, None)
            size = len(data or b"")
            kept = (may_retain(user, role, topic_name, size, self.scope) if role is not None
                    else not self.secured and is_retained_topic(topic_name))
            if not kept:
                self._oversize.log(logging.WARNING, ("retain", user), "not retaining %r's message on %r "
                                   "(%d bytes): not a retained topic of %r", user, topic_name, size, user)
                return
        await super().retain_message(source_session, topic_name, data, qos)

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        # Secured: _initialize_client_session already authenticated this connection (and refused it
        # otherwise); running scrypt a second time would only cost time.
        if self.secured:
            return getattr(session, ROLE_ATTRIBUTE, None) is not None
        return bool(await super()._authenticate(session, listener))  # amqtt is untyped: Any

    # -- in-process nodes (the sequencers of fastbook-broker) ------------------------------------

    def add_ingress(self, filters: list[str], deliver: Callable[[str, bytes], None]) -> None:
        """Hand every client message on one of `filters` to `deliver` (on the event loop, in the
        order the broker takes them, after the publish ACL): an in-process node's subscription."""
        self._ingress = (*self._ingress, ([filter_matcher(f) for f in filters], deliver))

    def remove_ingress(self, deliver: Callable[[str, bytes], None]) -> None:
        self._ingress = tuple((f, d) for f, d in self._ingress if d != deliver)

    async def _handle_message_delivery(self, client_session: Session, handler: BrokerProtocolHandler,
                                       wait_deliver: asyncio.Future[Any]) -> bool:
        message = wait_deliver.result() if wait_deliver.done() and not wait_deliver.cancelled() \
            and wait_deliver.exception() is None else None
        _published_qos.set(getattr(message, "qos", None))
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)  # type: ignore[no-any-return]

    async def _broadcast_message(
        self, session: Session | None, topic: str | None, data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        if session is not None and topic is not None and data is not None:
            for filters, deliver in self._ingress:
                if any(matches(topic) for matches in filters):
                    deliver(topic, bytes(data))
            if not self.fanout.targets(topic):
                # No subscription matches (a client's order, read only by its in-process
                # sequencer): amqtt's broadcast would still queue it, start a task for it and wait
                # on it, only to find nobody. (The cache follows every subscription change.)
                return
            if force_qos is None:
                force_qos = delivery_qos(_published_qos.get())
        await super()._broadcast_message(session, topic, data, force_qos)

    def publish_now(self, messages: Sequence[Any]) -> int:
        """Deliver and retain an in-process node's first messages that need no await (see
        NodeFanout.deliver_now), in order; their number. InProcessLink hands the rest, and any batch
        while one is still in the broker, to `publish_from_node`."""
        callbacks = self.plugins_manager._event_plugin_callbacks
        if callbacks.get(MQTTEvents.PACKET_SENT) or callbacks.get(BrokerEvents.RETAINED_MESSAGE):
            return 0
        fanout = self.fanout
        done = 0
        try:
            for m in messages:
                if not fanout.deliver_now(m.topic, bytes(m.payload), delivery_qos(m.qos)):
                    break
                if m.retain:
                    # amqtt's retain_message for a message of the broker's own (source_session None,
                    # which ours passes on unchecked), without its RETAINED_MESSAGE event: no plugin
                    # handles one
                    if m.payload:
                        self._retained_messages[m.topic] = RetainedApplicationMessage(
                            None, m.topic, m.payload, m.qos)
                    else:
                        self._retained_messages.pop(m.topic, None)
                done += 1
        finally:
            fanout.flush()  # the batch's deliveries: one write per connection
        return done

    async def publish_from_node(self, messages: list[Any]) -> None:
        """An in-process node's output, as if published by a client the ACL trusts: delivered in
        order by NodeFanout (amqtt's broadcast if a plugin wants PACKET_SENT events)."""
        inline = not self.plugins_manager._event_plugin_callbacks.get(MQTTEvents.PACKET_SENT)
        fanout = self.fanout
        try:
            for m in messages:
                if inline:
                    await fanout.publish(m.topic, bytes(m.payload), delivery_qos(m.qos))
                else:
                    await super()._broadcast_message(None, m.topic, m.payload, delivery_qos(m.qos))
                if m.retain:
                    fanout.flush()
                    await self.retain_message(None, m.topic, m.payload, m.qos)
        finally:
            fanout.flush()  # the batch's deliveries: one write per connection

    def _receive_acl(self, session: Session, topic: str) -> bool | None:
        """amqtt's `_topic_filtering(session, topic, RECEIVE)` when it can be answered at once (no
        topic plugin, or only FastbookAclPlugin), else None."""
        plugins = self.plugins_manager
        if not plugins.is_topic_filtering_enabled():
            return True
        topic_plugins = plugins._topic_plugins
        if all(isinstance(p, FastbookAclPlugin) for p in topic_plugins):
            return all(p.allows(session, topic, Action.RECEIVE) for p in topic_plugins)
        return None

    # Every change of amqtt's _subscriptions (and Broker.start, which clears it) drops NodeFanout's
    # cache of who receives a topic. (_del_all_subscriptions, for a session deleted or expired, calls
    # _del_subscription per filter and then deletes the filters left empty; BrokerContext's
    # add_subscription, for plugins, calls add_subscription. A plugin that changed the dict it gets
    # from BrokerContext.subscriptions itself would leave the cache stale: fastbook configures none.)

    async def start(self) -> None:
        self.fanout.invalidate()
        await super().start()

    async def shutdown(self) -> None:
        self.fanout.close()
        await super().shutdown()

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        try:
            return await super().add_subscription(subscription, session)  # type: ignore[no-any-return]
        finally:
            self.fanout.invalidate()

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        try:
            return super()._del_subscription(a_filter, session)  # type: ignore[no-any-return]
        finally:
            self.fanout.invalidate()

    async def _del_all_subscriptions(self, session: Session) -> None:
        try:
            await super()._del_all_subscriptions(session)
        finally:
            self.fanout.invalidate()

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # amqtt calls this on SUBSCRIBE (after recording the subscription) and, wrongly, on every
        # connect for *every* filter any client subscribed to. Only a filter this client holds counts.
        topic_filter = subscription[0]
        for subscriber, qos in self._subscriptions.get(topic_filter, []):
            if subscriber.client_id == session.client_id:
                await super()._publish_retained_messages_for_subscription((topic_filter, qos), session)
                return


class BrokerStartError(RuntimeError):
    pass


def _plugin_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def broker_config(
    host: str,
    port: int,
    users_file: Path | None = None,
    tls: tuple[Path, Path] | None = None,
    scope: TopicScope = ANY_MARKET,
) -> dict[str, Any]:
    """amqtt's configuration. With `users_file` every connection authenticates and the ACL applies
    (publishing bounded to `scope`); without it the broker is open (AllowAllAuthPlugin). `tls` =
    (certificate, key) PEM files."""
    listener: dict[str, Any] = {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}
    if tls is not None:
        listener.update({"ssl": True, "certfile": str(tls[0]), "keyfile": str(tls[1])})
    listeners: dict[str, Any] = {"default": listener}
    plugins: dict[str, Any]
    if users_file is None:
        plugins = {_plugin_name(AllowAllAuthPlugin): {}}
    else:
        markets = sorted(scope.markets) if scope.markets is not None else None
        plugins = {
            _plugin_name(FastbookAuthPlugin): {"users_file": str(users_file), "prefix": scope.prefix,
                                               "markets": markets},
            _plugin_name(FastbookAclPlugin): {"prefix": scope.prefix, "markets": markets},
        }
    return {
        "listeners": listeners,
        # Keep persistent sessions (the sequencer's) for a day; anonymous ones never get here.
        "session_expiry_interval": 24 * 3600,
        "plugins": plugins,
    }


def is_loopback(host: str) -> bool:
    """True for a loopback address or localhost (what an open broker may listen on)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Raise BrokerStartError with a clear message if host:port cannot be bound (amqtt's own error
    is a long traceback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerStartError(
                    f"cannot listen on {host}:{port}: the port is already in use "
                    "(another MQTT broker?); choose another with --port"
                ) from None
            raise BrokerStartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral TCP port that was free a moment ago (for tests and the demo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _quiet_probe_connections(record: logging.LogRecord) -> bool:
    """A TCP connect without an MQTT CONNECT (port probes, health checks) is not an error worth a
    log line; amqtt logs it at ERROR. Refused logins and oversized packets are logged, rate-limited
    per source, by FastbookAuthPlugin and FastbookAmqttBroker.note_oversize: amqtt's own line for
    each (a WARNING per try) is dropped."""
    message = record.getMessage()
    return not (message.startswith("No data from") or "No data to decode MQTT packet" in message
                or "PacketTooLarge" in message or "connection refused: " in message)


SLOW_CONSUMER_LOGGERS = ("amqtt.broker", "amqtt.mqtt.protocol.handler")


class SlowConsumerLog(logging.Filter):
    """amqtt reports every QoS1 delivery a client does not acknowledge in time with a WARNING and
    an ERROR with a traceback (a client that stopped reading produced about 200 tracebacks a
    second): those become one line per interval with a count. Attached to amqtt's loggers; the
    event loop's handler passes the same failures (never-retrieved task exceptions) to `note`."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self._log = LogThrottle(log, interval)

    @staticmethod
    def is_puback_timeout(exc: object) -> bool:
        return isinstance(exc, TimeoutError) and "PUBACK" in str(exc)

    def note(self) -> None:
        self._log.log(logging.WARNING, "slow", "slow consumer: a QoS1 delivery was not acknowledged "
                      "within amqtt's timeout (a client that does not read; its messages are dropped)")

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if self.is_puback_timeout(exc) or message.startswith("Timeout waiting for PUBACK"):
            self.note()
            return False
        if "failed during shutdown" in message or "failed during broadcast shutdown" in message:
            # deliveries still queued for clients when the broker stops: one line, not one each
            self._log.log(logging.WARNING, "shutdown", "stopping: dropped deliveries still queued "
                          "for clients that were not reading")
            return False
        return True


def _exception_handler(slow: SlowConsumerLog) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """amqtt leaves connection tasks to be cancelled at shutdown and asyncio logs each with a
        traceback; those are expected, and PUBACK timeouts are counted by `slow`. Everything else
        goes to asyncio's default handler."""
        exc = context.get("exception")
        if isinstance(exc, asyncio.CancelledError):
            return
        if slow.is_puback_timeout(exc):
            slow.note()
            return
        loop.default_exception_handler(context)
    return handle


class EmbeddedBroker:
    """An amqtt broker on host:port inside the running asyncio loop. `scope`: the prefix and markets
    clients may publish to (with `users_file`); the default allows any market under `fastbook`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        users_file: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        scope: TopicScope = ANY_MARKET,
    ) -> None:
        self.host = host
        self.port = port
        self.users_file = users_file
        self.tls = tls
        self.scope = scope
        self._broker: FastbookAmqttBroker | None = None
        self._slow: SlowConsumerLog | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    async def start(self) -> None:
        check_port_free(self.host, self.port)
        # amqtt logs every connect/disconnect at INFO; fastbook's own logs say what matters.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        for name in SLOW_CONSUMER_LOGGERS:
            logging.getLogger(name).addFilter(_quiet_probe_connections)
        self._slow = slow = SlowConsumerLog()
        for name in SLOW_CONSUMER_LOGGERS:
            logging.getLogger(name).addFilter(slow)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_exception_handler(slow))
        if self.users_file is not None:
            UsersFile.load(self.users_file)  # a missing or malformed file: UsersFileError, before listening
        if self.tls is not None:
            for pem in self.tls:
                if not Path(pem).is_file():
                    raise BrokerStartError(f"TLS: {pem} is not a readable file")
        config = broker_config(self.host, self.port, self.users_file, self.tls, self.scope)
        self._broker = FastbookAmqttBroker(config, loop=loop)
        self._broker.secured = self.users_file is not None
        self._broker.scope = self.scope
        try:
            await self._broker.start()
        except Exception as exc:
            raise BrokerStartError(f"cannot start the MQTT broker on {self.url}: {exc}") from None
        log.info("MQTT broker listening on %s", self.url)

    def in_process_runner(self, node: Any, name: str,
                          batching: BatchPolicy = DEFAULT_BATCHING) -> InProcessRunner:
        """A runner for `node` inside this broker (started broker only): see InProcessRunner."""
        assert self._broker is not None, "start the broker first"
        loop = asyncio.get_running_loop()
        return InProcessRunner(node, self._broker, loop, name=name, batching=batching)

    async def stop(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            try:
                await broker.shutdown()
            except Exception:  # shutting down anyway; amqtt may complain about half-closed sessions
                log.debug("broker shutdown raised", exc_info=True)
        if self._slow is not None:  # after the shutdown, which reports the deliveries it drops
            for name in SLOW_CONSUMER_LOGGERS:
                logging.getLogger(name).removeFilter(self._slow)
            self._slow = None
