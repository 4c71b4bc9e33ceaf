"""The embedded broker's delivery of an in-process node's output (FastbookAmqttBroker.publish_from_node),
inline on the event loop instead of amqtt's broadcast.

amqtt 0.12.1 broadcasts every message through a queue and a task per message, matches it against
every subscription filter, awaits the ACL plugins per subscriber (a task each) and starts a task per
subscriber that builds and encodes its own PUBLISH packet. For the sequencer's output (a log entry,
reports, the book after every batch) that machinery cost more than the sequencer itself. `NodeFanout`
does the same deliveries directly, in publish order:

- the subscribers of a topic (amqtt's `_matches` over `_subscriptions`, in amqtt's order: one
  delivery per matching filter) and their receive-ACL answers are cached per topic; the broker calls
  `invalidate()` at every change of `_subscriptions` and at every connection (a resumed persistent
  session may change its user name and role, which the ACL answers depend on);
- a QoS 0 delivery is the PUBLISH bytes, encoded once per message, for each subscriber's connection;
  a batch's deliveries to one connection go out in one write (one send) at its end (`flush`);
- a QoS 1 delivery takes a packet id, records the message in the session's `inflight_out` and writes
  its PUBLISH as amqtt's `mqtt_publish` does, then waits for the PUBACK with a future and a timer
  (amqtt's 5 s, logged as amqtt logs it) instead of a task;
- a QoS 2 delivery (a QoS 1 message to a QoS 2 subscription) goes through amqtt's `mqtt_publish`;
- a disconnected persistent non-anonymous session gets a QoS 1/2 delivery queued
  (`_retain_broadcast_message`), as amqtt's `_run_broadcast` does; other disconnected ones none.

Writes keep each connection's order with amqtt's own writes: amqtt writes a whole packet per
`write()` under the handler's `_write_lock` and then drains. A delivery is written in the batch's
write (nothing suspends before it: `flush` comes before any await that could) only when that lock is
free with nobody waiting for it and the transport is below its high-water mark; else it
joins the connection's lane, written in order by one task under the lock with amqtt's drain, and
every later delivery to that connection follows it there until the lane is empty. A closed or
closing connection is skipped (its reader ends the session), and no failure of one delivery reaches
the node or the other subscribers. amqtt's `_send_packet` also re-arms a keep-alive timer whose
callback is a no-op in the broker's handler, and fires PACKET_SENT, which no configured plugin
handles (the broker falls back to amqtt's broadcast if one does).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from amqtt.adapters import StreamWriterAdapter
from amqtt.contexts import Action
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import OutgoingApplicationMessage, Session

log = logging.getLogger(__name__)

PUBACK_TIMEOUT = 5.0  # amqtt's wait for a QoS 1 delivery's PUBACK (handler._handle_qos1_message_flow)
MAX_CACHED_TOPICS = 4096  # reports/<user> is one topic per user: bound the cache, not the users


def publish_head(topic: str, qos: int, payload_length: int) -> bytes:
    """The bytes of a PUBLISH packet (not retained, not a duplicate) before its packet id (QoS > 0)
    and its payload: the fixed header and the topic name (MQTT 3.1.1, 3.3)."""
    name = topic.encode()
    remaining = 2 + len(name) + (2 if qos else 0) + payload_length
    length = bytearray()
    while True:
        digit, remaining = remaining & 0x7F, remaining >> 7
        length.append(digit | 0x80 if remaining else digit)
        if not remaining:
            break
    return bytes((0x30 | qos << 1,)) + length + len(name).to_bytes(2, "big") + name


@dataclass(frozen=True, slots=True)
class Target:
    """One subscription a topic matches: amqtt delivers once per matching filter."""

    session: Session
    qos: int  # the subscription's QoS
    allowed: bool | None  # the receive ACL's answer; None: ask the topic plugins per message


@dataclass(slots=True)
class _Lane:
    """Deliveries to one connection that wait behind a write amqtt has not finished."""

    items: deque[tuple[int, str, bytes, bytes]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class NodeFanout:
    """Delivers a node's messages to the broker's subscribers (see the module docstring). `broker`
    is the FastbookAmqttBroker; `receive_acl(session, topic)` answers for the ACL plugins (None:
    they must be asked per message)."""

    def __init__(self, broker: Any, receive_acl: Callable[[Session, str], bool | None]) -> None:
        self._broker = broker
        self._receive_acl = receive_acl
        self._targets: dict[str, tuple[Target, ...]] = {}
        self._lanes: dict[BrokerProtocolHandler, _Lane] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        # Deliveries of the batch so far, written by flush() in one write per connection (before
        # anything can suspend, so nothing of amqtt's is written in between)
        self._pending: dict[asyncio.WriteTransport, list[bytes]] = {}
        self.builds = 0  # how many times a topic's subscribers were looked up (for tests)

    def invalidate(self) -> None:
        self._targets.clear()

    def flush(self) -> None:
        """Write the deliveries `publish` took so far: one write (a send) per connection."""
        pending, self._pending = self._pending, {}
        for transport, chunks in pending.items():
            try:
                transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except Exception:  # one subscriber's failure is not the node's, nor the others'
                log.warning("a delivery failed", exc_info=True)

    def close(self) -> None:
        """The broker stops: drop the deliveries still waiting in lanes (amqtt cancels its own)."""
        for lane in self._lanes.values():
            lane.items.clear()
        for task in list(self._tasks):
            task.cancel()

    def targets(self, topic: str) -> tuple[Target, ...]:
        targets = self._targets.get(topic)
        if targets is None:
            broker = self._broker
            self.builds += 1
            targets = tuple(Target(session, qos, self._receive_acl(session, topic))
                            for topic_filter, subscriptions in broker._subscriptions.items()
                            if broker._matches(topic, topic_filter)
                            for session, qos in subscriptions)
            if len(self._targets) >= MAX_CACHED_TOPICS:
                self._targets.clear()
            self._targets[topic] = targets
        return targets

    def deliver_now(self, topic: str, data: bytes, force_qos: int | None) -> bool:
        """Deliver one message as amqtt's `_run_broadcast` would (at `force_qos` if not None, else at
        each subscription's QoS) if no subscriber needs an await: an ACL answer to ask the plugins
        for, or a message to queue for a disconnected session. False, with nothing done, if one does."""
        targets = self.targets(topic)
        for target in targets:
            if target.allowed is None:
                return False
            session = target.session
            if (target.allowed and session.transitions.state != "connected"
                    and _queued_offline(session, target.qos if force_qos is None else force_qos)):
                return False
        message = _Message(topic, data)
        for target in targets:
            if target.allowed:
                self._deliver(target.session, target.qos if force_qos is None else force_qos, message)
        return True

    async def publish(self, topic: str, data: bytes, force_qos: int | None) -> None:
        """`deliver_now`, with the awaits it cannot do."""
        if self.deliver_now(topic, data, force_qos):
            return
        broker = self._broker
        message = _Message(topic, data)
        for target in self.targets(topic):
            session = target.session
            allowed = target.allowed
            if allowed is None:
                self.flush()  # amqtt's plugin map runs tasks: its own writes may come in between
                allowed = await broker._topic_filtering(session, topic=topic, action=Action.RECEIVE)
            if not allowed:
                continue
            qos = target.qos if force_qos is None else force_qos
            if session.transitions.state != "connected" and _queued_offline(session, qos):
                self.flush()
                await broker._retain_broadcast_message({"session": None, "topic": topic, "data": data},
                                                       qos, session)
                continue
            self._deliver(session, qos, message)

    def _deliver(self, session: Session, qos: int, message: _Message) -> None:
        """One delivery to a connected session (none to a disconnected one)."""
        if session.transitions.state != "connected" or not session.client_id:
            return
        handler = self._broker._sessions.get(session.client_id, (None, None))[1]
        if handler is None:
            return
        try:
            if qos == 0:
                self._send(handler, 0, message.topic, message.data, message.qos0())
            elif qos == 1:
                self._send(handler, 1, message.topic, message.data, message.head1())
            else:
                self._send(handler, qos, message.topic, message.data, b"")
        except Exception:  # one subscriber's failure is not the node's, nor the others'
            log.warning("delivery of %r to %r failed", message.topic, session.client_id, exc_info=True)

    # -- one delivery ----------------------------------------------------------------------------

    def _send(self, handler: BrokerProtocolHandler, qos: int, topic: str, data: bytes, packet: bytes) -> None:
        """Write now if nothing of amqtt's is in the way, else queue on the connection's lane.
        `packet`: QoS 0, the whole PUBLISH; QoS 1, its head (`publish_head`)."""
        lane = self._lanes.get(handler)
        if lane is None and qos != 2:
            writer = handler.writer
            if type(writer) is StreamWriterAdapter:
                if writer.is_closed:
                    return
                transport = writer._writer.transport
                if transport.is_closing():
                    return
                lock = handler._write_lock
                if (not lock.locked() and not lock._waiters
                        and transport.get_write_buffer_size() <= transport.get_write_buffer_limits()[1]):
                    if qos == 1:
                        message = self._outgoing(handler, topic, data)
                        packet = packet + _packet_id(message) + data
                        self._expect_puback(handler, message)
                    chunks = self._pending.get(transport)
                    if chunks is None:
                        self._pending[transport] = [packet]
                    else:
                        chunks.append(packet)
                    return
        if lane is None:
            lane = self._lanes[handler] = _Lane()
            lane.task = self._spawn(self._drain_lane(handler, lane))
        lane.items.append((qos, topic, data, packet))

    async def _drain_lane(self, handler: BrokerProtocolHandler, lane: _Lane) -> None:
        """Write the lane's deliveries in order, each under the handler's write lock and drained as
        amqtt's `_send_packet` writes; the lane ends (later deliveries are written at once again)
        when it is empty. A connection that fails drops the rest."""
        message: OutgoingApplicationMessage | None = None
        try:
            while lane.items:
                qos, topic, data, packet = lane.items[0]
                writer = handler.writer
                if qos == 2:  # amqtt's QoS 2 flow; its first step takes the lock behind what waits
                    self._spawn(handler.mqtt_publish(topic, data, qos, retain=False))
                    await asyncio.sleep(0)
                elif writer is not None:
                    if qos == 1:
                        message = self._outgoing(handler, topic, data)
                        packet = packet + _packet_id(message) + data
                    async with handler._write_lock:
                        writer.write(packet)
                        await writer.drain()
                    if message is not None:
                        self._expect_puback(handler, message)
                        message = None
                lane.items.popleft()
        except (ConnectionResetError, BrokenPipeError):
            await handler.handle_connection_closed()  # as amqtt's _send_packet does
        except Exception:  # not the node's failure: the session ends through its reader
            client_id = getattr(handler.session, "client_id", None)
            log.debug("a delivery lane to %r failed", client_id, exc_info=True)
        finally:
            if message is not None and handler.session is not None:
                handler.session.inflight_out.pop(message.packet_id, None)
            lane.items.clear()
            if self._lanes.get(handler) is lane:
                del self._lanes[handler]

    # -- QoS 1: amqtt's outgoing flow without its task -----------------------------------------------

    @staticmethod
    def _outgoing(handler: BrokerProtocolHandler, topic: str, data: bytes) -> OutgoingApplicationMessage:
        """A packet id and the in-flight record of a QoS 1 delivery, as amqtt's `mqtt_publish`."""
        session = handler.session
        assert session is not None
        packet_id = session.next_packet_id
        message = OutgoingApplicationMessage(packet_id, topic, 1, data, False)
        session.inflight_out[packet_id] = message
        return message

    def _expect_puback(self, handler: BrokerProtocolHandler, message: OutgoingApplicationMessage) -> None:
        """Wait for the PUBACK as amqtt's QoS 1 flow does: the handler's reader resolves the waiter,
        stopping the handler cancels it; either way (or the timeout) the in-flight record goes."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        packet_id = message.packet_id
        assert packet_id is not None
        handler._puback_waiters[packet_id] = waiter
        timer = loop.call_later(PUBACK_TIMEOUT, _puback_timeout, handler, packet_id, waiter)

        def done(waiter: asyncio.Future[Any]) -> None:
            timer.cancel()
            if not waiter.cancelled():
                message.puback_packet = waiter.result()
            if handler._puback_waiters.get(packet_id) is waiter:
                del handler._puback_waiters[packet_id]
            session = handler.session
            if session is not None and session.inflight_out.get(packet_id) is message:
                del session.inflight_out[packet_id]

        waiter.add_done_callback(done)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # amqtt's broadcast loop logs a failed delivery task the same way (SlowConsumerLog counts
            # a PUBACK timeout instead)
            log.warning("delivery task failed: %r", task.exception(), exc_info=task.exception())


def _queued_offline(session: Session, qos: int) -> bool:
    """Whether amqtt queues a delivery at `qos` for `session` while it is disconnected."""
    return not session.clean_session and qos in (1, 2) and not session.is_anonymous


class _Message:
    """One message of the node and its PUBLISH bytes, encoded when first needed."""

    __slots__ = ("data", "topic", "_head1", "_qos0")

    def __init__(self, topic: str, data: bytes) -> None:
        self.topic = topic
        self.data = data
        self._qos0 = b""
        self._head1 = b""

    def qos0(self) -> bytes:
        """The whole QoS 0 PUBLISH."""
        if not self._qos0:
            self._qos0 = publish_head(self.topic, 0, len(self.data)) + self.data
        return self._qos0

    def head1(self) -> bytes:
        """A QoS 1 PUBLISH up to its packet id."""
        if not self._head1:
            self._head1 = publish_head(self.topic, 1, len(self.data))
        return self._head1


def _packet_id(message: OutgoingApplicationMessage) -> bytes:
    packet_id: int | None = message.packet_id
    assert packet_id is not None
    return packet_id.to_bytes(2, "big")


def _puback_timeout(handler: BrokerProtocolHandler, packet_id: int, waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        # amqtt's own words, so SlowConsumerLog counts it like amqtt's own timeouts
        handler.logger.warning(f"Timeout waiting for PUBACK for packet ID {packet_id}")
        waiter.cancel()
